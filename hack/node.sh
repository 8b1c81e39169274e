#!/usr/bin/env bash
# Builds the parts of flopwise's real NODE for the tests (tests/node.py): kubelet and kube-scheduler from the same
# Debian `kubernetes` source as hack/control-plane.sh's kube-apiserver (same recipe, same Go build cache), a static
# `pause`, and the container images, built with buildah from a Debian base made by mmdebstrap (no registry, no
# Docker): the operator image from operator/Dockerfile and the trainer image from trainer_image/Dockerfile, both
# unmodified. Everything lives OUTSIDE the checkout, in ${FLOPWISE_CACHE:-$HOME/.cache/flopwise}. See hack/README.md.
#
#   hack/node.sh build    install packages, build and cache kubelet, kube-scheduler and pause (no-op when cached)
#   hack/node.sh images   build and cache the images as docker-archive tars (no-op when their inputs are unchanged)
#   hack/node.sh all      both (images first: they need no build lock): what scripts/test.sh runs
#   hack/node.sh paths    print the folder holding kubelet, kube-scheduler and pause
#   hack/node.sh list     print the cached images, one "NAME REFERENCE TAR" line each (pause, operator, trainer)
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/control-plane.sh
source "$HACK/control-plane.sh"  # CACHE_ROOT, REPO_ROOT, ensure_pkgs, prepare_source_tree, version_ldflags, ...
log() { echo "node.sh: $*" >&2; }

# Bump when the node binaries' recipe changes: cached ones built by an older recipe are rebuilt.
NODE_RECIPE=1
# Bump when an image recipe below changes: every image is rebuilt.
IMAGE_RECIPE=1
PAUSE_REF=localhost/pause:3.4.1
TORCH_SPEC="torch==2.13.0"
IMAGES=$CACHE_ROOT/images
NODE_PKGS=(containerd runc containernetworking-plugins buildah mmdebstrap gcc libc6-dev iproute2 util-linux)

node_bin_complete() {
  [[ -x $1/kubelet && -x $1/kube-scheduler && -x $1/pause && $(cat "$1/RECIPE" 2>/dev/null) == "$NODE_RECIPE" ]]
}

# The node binaries' folder beside the control plane's (k8s-<version>/node-bin), or nothing.
node_bin_dir() {
  local cp; cp=$(cached_bin_dir) || return 1
  local d; d=$(dirname "$cp")/node-bin
  node_bin_complete "$d" && echo "$d"
}

cmd_node_build() {
  ensure_pkgs "${NODE_PKGS[@]}"
  local d
  if d=$(node_bin_dir); then log "cached: $d"; echo "$d"; return 0; fi
  # The control plane first: its build fills the Go cache that kubelet and kube-scheduler share most packages with.
  local cp; cp=$(cmd_build)
  local root; root=$(dirname "$cp")
  d=$root/node-bin
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/build.lock"
  log "waiting for the build lock $CACHE_ROOT/build.lock"
  flock 9
  if node_bin_complete "$d"; then log "cached: $d"; echo "$d"; return 0; fi
  local t0=$SECONDS ver=${root##*/k8s-}
  local tarball; tarball=$(source_tarball "$root" "$ver")
  prepare_source_tree "$root" "$tarball"
  cd "$GOPATH/src/k8s.io/kubernetes"
  # Neither imports pkg/generated/openapi: no openapi-gen step. The same paths and flags as the control plane's
  # build, so the packages they share come from the Go cache.
  local ldflags p; ldflags=$(version_ldflags "$ver")
  rm -rf "$root/node-bin.tmp"; mkdir -p "$root/node-bin.tmp"
  for p in kubelet kube-scheduler; do
    log "building $p"
    nice -n 10 go build -ldflags "$ldflags" -o "$root/node-bin.tmp/$p" "./cmd/$p"
  done
  # The Pod sandbox's process: static, so the pause image is that one file.
  log "building pause"
  gcc -Os -static -o "$root/node-bin.tmp/pause" build/pause/linux/pause.c
  echo "$NODE_RECIPE" >"$root/node-bin.tmp/RECIPE"
  rm -rf "$d"; mv "$root/node-bin.tmp" "$d"
  cd /
  rm -rf "$root/src" "$root/gopath"
  log "built in $((SECONDS - t0)) s: $d"
  echo "$d"
}

# ------------------------------------------------------------------------------------------------------- images
bah() { buildah --root "$IMAGES/buildah/root" --runroot "$IMAGES/buildah/run" --storage-driver vfs "$@"; }

# The files of these repository paths that a build context holds (git's view when this is a checkout: tracked and
# untracked, never ignored ones; else every file but caches), sorted.
context_files() {
  if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO_ROOT" && git ls-files -co --exclude-standard -- "$@")
  else
    (cd "$REPO_ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' 2>/dev/null)
  fi | LC_ALL=C sort -u
}

# A short hash of the given repository paths' contents and of the extra words in $KEY.
inputs_hash() {
  local f
  {
    echo "recipe $IMAGE_RECIPE ${KEY:-}"
    if [[ $# -gt 0 ]]; then  # (no paths: no files; git ls-files would list the whole checkout)
      context_files "$@" | while IFS= read -r f; do
        [[ -f $REPO_ROOT/$f ]] && printf '%s  %s\n' "$(sha256sum <"$REPO_ROOT/$f" | cut -c1-64)" "$f"
      done
    fi
  } | sha256sum | cut -c1-16
}

# pip inside a build: this machine's CA bundle, index and wheel folders are mounted for the build only (nothing of
# the build machine ends up in an image). Fills PIP_MOUNTS with buildah -v arguments.
pip_mounts() {
  local conf=$1 cert="" key value d
  local -A seen=()
  local -a order=() dirs=()
  PIP_MOUNTS=()
  for cert in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do [[ -n $cert && -f $cert ]] && break; done
  # index-url, extra-index-url and find-links as this machine's pip sees them (config files and PIP_* variables,
  # each value once); local folders are mounted at the same path.
  while IFS='=' read -r key value; do
    value=${value#\'}; value=${value%\'}
    key=${key#global.}; key=${key#:env:.}
    case $key in index-url|extra-index-url|find-links) ;; *) continue ;; esac
    for d in $value; do
      [[ -n ${seen[$key $d]:-} ]] && continue
      seen[$key $d]=1
      order+=("$key $d")
      d=${d#file://}
      [[ ${d%/} == */simple ]] && d=$(dirname "${d%/}")  # a local index links two folders up: mount its root
      [[ -d $d ]] && dirs+=("$d")
    done
  done < <(python3 -m pip config list 2>/dev/null)
  {
    echo "[global]"
    if [[ -n $cert && -f $cert ]]; then
      PIP_MOUNTS+=(-v "$cert:/etc/ssl/certs/host-ca-bundle.crt:ro")
      echo "cert = /etc/ssl/certs/host-ca-bundle.crt"
    fi
    for key in index-url extra-index-url find-links; do
      value=$(printf '%s\n' "${order[@]}" | sed -n "s|^$key ||p" | paste -sd' ' -)
      [[ -n $value ]] && echo "$key = $value"
    done
  } >"$conf"
  PIP_MOUNTS+=(-v "$conf:/etc/pip.conf:ro")
  for d in $(printf '%s\n' "${dirs[@]}" | sort -u); do PIP_MOUNTS+=(-v "$d:$d:ro"); done
}

image_present() { bah inspect --type image "$1" >/dev/null 2>&1; }

# Saves an image of buildah's store as a docker-archive tar (what `ctr images import` reads), atomically.
save_tar() {
  local ref=$1 tar=$2
  rm -f "$tar.tmp"
  bah push -q "$ref" "docker-archive:$tar.tmp:$ref" >/dev/null
  mv "$tar.tmp" "$tar"
}

# Makes sure image $1 is in buildah's store, loading it from its tar $2 when the store lost it.
ensure_loaded() {
  image_present "$1" && return 0
  [[ -f $2 ]] || return 1
  log "loading $1 from $2"
  bah pull -q "docker-archive:$2" >/dev/null
  image_present "$1"
}

# Keeps the newest $2 tars of image $1 (another worktree may be testing other sources) and drops the rest, from the
# tar folder and from buildah's store.
prune() {
  local name=$1 keep=$2 tar ref
  # shellcheck disable=SC2012
  for tar in $(ls -1t "$IMAGES"/tars/"$name"-*.tar 2>/dev/null | tail -n +$((keep + 1))); do
    ref="localhost/$name:$(basename "$tar" .tar | sed "s/^$name-//")"
    log "pruning $ref"
    rm -f "$tar"
    bah rmi -f "$ref" >/dev/null 2>&1 || true
  done
}

build_pause() {
  local bin=$1 tar=$2 c
  c=$(bah from scratch)
  bah copy "$c" "$bin" /pause >/dev/null
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  bah commit -q --rm "$c" "$PAUSE_REF" >/dev/null
  save_tar "$PAUSE_REF" "$tar"
}

# Debian with Python and a venv at /opt/venv first in PATH: Debian's Python refuses a plain `pip install` (PEP 668)
# and the Dockerfiles' `pip install` work as written in the venv. mmdebstrap uses this machine's apt sources.
build_base() {
  local ref=$1 tar=$2 suite=$3 tmp c sources=/etc/apt/sources.list.d/debian.sources
  [[ -f $sources ]] || sources=/etc/apt/sources.list
  tmp=$(mktemp -d "$IMAGES/tmp.XXXXXX")
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$tmp/rootfs.tar" "$sources" </dev/null >&2
  c=$(bah from scratch)
  bah add "$c" "$tmp/rootfs.tar" / >/dev/null
  rm -rf "$tmp"
  bah run --network host "$c" -- python3 -m venv /opt/venv
  bah config --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd '["python3"]' "$c"
  bah commit -q --rm "$c" "$ref" >/dev/null
  save_tar "$ref" "$tar"
}

# The base with torch, which trainer_image/Dockerfile expects its BASE_IMAGE to hold (a source change then rebuilds
# the trainer image in about a minute, not torch's install).
build_torch() {
  local base=$1 ref=$2 tar=$3 c
  pip_mounts "$IMAGES/pip.conf"
  c=$(bah from --pull=never "$base")
  quietly "$IMAGES/torch-build.log" bah run --network host "${PIP_MOUNTS[@]}" "$c" -- \
    pip install -q --no-cache-dir "$TORCH_SPEC"
  bah commit -q --rm "$c" "$ref" >/dev/null
  save_tar "$ref" "$tar"
}

# One of the project's Dockerfiles, as written: the base given by --from (operator) or BASE_IMAGE (trainer).
build_dockerfile() {
  local dockerfile=$1 ref=$2 tar=$3; shift 3
  pip_mounts "$IMAGES/pip.conf"
  quietly "$IMAGES/$(basename "$(dirname "$dockerfile")")-build.log" \
    bah bud -q --pull=never --network host "${PIP_MOUNTS[@]}" "$@" -f "$REPO_ROOT/$dockerfile" -t "$ref" "$REPO_ROOT"
  save_tar "$ref" "$tar"
  bah rmi -f "$ref" >/dev/null  # the tar is the cache: vfs keeps a full copy of every layer (GBs for the trainer)
}

quietly() {  # quietly LOG CMD...: CMD's output goes to LOG (pip's warnings are many); on failure its tail is shown
  local out=$1; shift
  "$@" >"$out" 2>&1 || { tail -n 40 "$out" >&2; die "failed: $* (whole log: $out)"; }
}

timed() {  # timed WHAT CMD...: runs CMD, logs how long it took
  local what=$1 t0=$SECONDS; shift
  "$@"
  log "$what in $((SECONDS - t0)) s"
}

cmd_images() {
  ensure_pkgs "${NODE_PKGS[@]}"
  mkdir -p "$IMAGES/tars"
  exec 8>"$IMAGES/images.lock"
  flock 8
  rm -rf "$IMAGES"/tmp.*
  local suite; suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  local sources=(pyproject.toml 'README*' .dockerignore operator trainer_image)
  local h_pause h_base h_torch h_src h_op h_tr
  h_base=$(KEY="base $suite minbase python3 python3-venv python3-pip ca-certificates venv=/opt/venv" inputs_hash)
  h_torch=$(KEY="torch $h_base $TORCH_SPEC" inputs_hash)
  h_src=$(KEY=sources inputs_hash "${sources[@]}")
  h_op=$(KEY="operator $h_base $h_src" inputs_hash operator/Dockerfile)
  h_tr=$(KEY="trainer $h_torch $h_src" inputs_hash trainer_image/Dockerfile)
  local base=localhost/flopwise-base:$h_base torch=localhost/flopwise-torch:$h_torch
  local op=localhost/flopwise-operator:$h_op tr=localhost/flopwise-trainer:$h_tr
  local t_base=$IMAGES/tars/flopwise-base-$h_base.tar
  local t_torch=$IMAGES/tars/flopwise-torch-$h_torch.tar
  local t_op=$IMAGES/tars/flopwise-operator-$h_op.tar t_tr=$IMAGES/tars/flopwise-trainer-$h_tr.tar

  if [[ ! -f $t_op || ! -f $t_tr ]]; then
    ensure_loaded "$base" "$t_base" || timed "base image ($base)" build_base "$base" "$t_base" "$suite"
  fi
  if [[ ! -f $t_op ]]; then
    timed "operator image ($op)" build_dockerfile operator/Dockerfile "$op" "$t_op" --from "$base"
  fi
  if [[ ! -f $t_tr ]]; then
    ensure_loaded "$torch" "$t_torch" || timed "torch base image ($torch)" build_torch "$base" "$torch" "$t_torch"
    timed "trainer image ($tr)" build_dockerfile trainer_image/Dockerfile "$tr" "$t_tr" --build-arg "BASE_IMAGE=$torch"
  fi
  # The pause image needs the node binaries' build (the k8s source tree): last, so the images above need not wait
  # for the build lock.
  local bin; bin=$(cmd_node_build)
  h_pause=$(KEY="pause $(sha256sum <"$bin/pause" | cut -c1-64)" inputs_hash)
  local t_pause=$IMAGES/tars/pause-$h_pause.tar
  [[ -f $t_pause ]] || timed "pause image" build_pause "$bin/pause" "$t_pause"
  prune flopwise-operator 2
  prune flopwise-trainer 2
  prune flopwise-base 1
  prune flopwise-torch 1
  prune pause 1
  printf '%s %s %s\n' pause "$PAUSE_REF" "$t_pause" operator "$op" "$t_op" trainer "$tr" "$t_tr" >"$IMAGES/list.$$"
  cat "$IMAGES/list.$$"
  rm -f "$IMAGES/list.$$"
}

case ${1:-} in
  build) cmd_node_build ;;
  images) cmd_images ;;
  all) cmd_images ;;
  paths) node_bin_dir || die "no cached kubelet/kube-scheduler under $CACHE_ROOT; run: $0 build" ;;
  list) cmd_images ;;
  *) echo "usage: $0 {build|images|all|paths|list}" >&2; exit 2 ;;
esac
