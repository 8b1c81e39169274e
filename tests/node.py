"""A real node for tests: kubelet + containerd + runc + CNI and a kube-scheduler, beside a real control plane
(tests/cluster.py), all inside namespaces the harness makes. Nothing is played: Pods are scheduled, their images
(built by hack/node.sh from the project's own Dockerfiles) run under runc, and the kubelet reports their status.

Where things live, so that nothing leaks onto the shared machine:

* **a network namespace** of its own holds every address the cluster uses: etcd, kube-apiserver (listening on
  443 on the node address and on the `kubernetes` Service's ClusterIP, so a Pod's in-cluster config reaches it
  with no kube-proxy), the kubelet, the Pod bridge and the Pods. Clients enter it (`nsenter --net`, or a thread
  that joined it: ``NodeCluster.call``). Its `net.ipv4.ip_forward` (the CNI bridge turns it on) is its own.
* **a mount namespace** of its own holds every mount the kubelet, containerd and runc make (the kubelet's root
  bind mount, volumes, overlay root filesystems, Pod network namespaces), and binds private folders over the
  host paths they use regardless of flags (/run/containerd, /run/netns, /var/lib/kubelet, /var/lib/cni,
  /var/log/pods, /var/log/containers). The kernel tunables the kubelet would otherwise set machine-wide
  (kernel.panic_on_oops=1 among them) read, in there, as the values it wants, so it changes none.
* **a cgroup root** of its own (`/flopwise-node-<pid>-<hex>` in every hierarchy, the kubelet's cgroupRoot) holds
  every Pod; teardown kills what is in it and removes it. A run killed before its teardown is reaped by the next.

The binaries and images come from ``hack/node.sh all`` (cached outside the checkout); the images are imported
into this node's own containerd at start. Logs, one per component, are in the temp folder
(FLOPWISE_KEEP_CLUSTER=1 keeps it).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from cluster import CONTROLLERS, REPO_ROOT, ControlPlane, ControlPlaneError, _die_with_parent, _tail, free_port, script

NODE_SCRIPT = REPO_ROOT / "hack" / "node.sh"
NODE_NAME = "flopwise-node"
NODE_IP = "10.250.0.1"  # a /32 on the namespace's lo: the kubelet refuses a loopback node IP
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service's ClusterIP (first of 10.96.0.0/12), also on that lo
POD_SUBNET = "10.244.0.0/24"
BRIDGE = "fw-node0"
APISERVER_PORT = 443  # the Service's port: inside the namespace nothing else can hold it
CGROUP_PREFIX = "flopwise-node-"
WORKDIR_PREFIX = "flopwise-node-"
CGROUP_FS = Path("/sys/fs/cgroup")
# kubelet 1.20 needs nodelifecycle (only it lifts the not-ready taint a new node registers with); the chart's
# Deployment needs deployment and replicaset, Prometheus' discovery of its Service endpoint, the PVCs the
# persistentvolume-binder.
NODE_CONTROLLERS = CONTROLLERS + ",nodelifecycle,deployment,replicaset,endpoint,persistentvolume-binder"
# What kubelet 1.20 sets when it differs (setupKernelTunables): shown to it as already set, inside its namespace.
KERNEL_TUNABLES = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
PRIVATE_PATHS = ("/run/containerd", "/run/netns", "/var/lib/kubelet", "/var/lib/cni", "/var/log/pods",
                 "/var/log/containers")
CLONE_NEWNET = 0x40000000
CACHE_ROOT = Path(os.environ.get("FLOPWISE_CACHE") or Path.home() / ".cache" / "flopwise")
GOLDEN_ROOT = CACHE_ROOT / "containerd-golden"  # containerd's root right after importing the images (see below)


class NodeError(ControlPlaneError):
    pass


def node_script(*args: str, timeout: float | None = None) -> str:
    """Runs hack/node.sh and returns its stdout; its stderr passes through."""
    return subprocess.run(["bash", str(NODE_SCRIPT), *args], check=True, stdout=subprocess.PIPE, text=True,
                          timeout=timeout).stdout


def images_from(listing: str) -> dict[str, tuple[str, Path]]:
    """``hack/node.sh list`` output → {name: (reference, tar)}."""
    images = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3:
            images[parts[0]] = (parts[1], Path(parts[2]))
    missing = {"pause", "operator", "trainer"} - images.keys()
    if missing:
        raise NodeError(f"hack/node.sh list named no {sorted(missing)} image:\n{listing}")
    return images


# ------------------------------------------------------------------------------------------------ processes
def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ns(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids_naming(text: str) -> set[int]:
    """Processes whose command line contains ``text``."""
    found = set()
    for pid in _pids():
        with contextlib.suppress(OSError):
            if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all(pids: set[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        for pid in pids:  # reap those that are our children
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


# -------------------------------------------------------------------------------------------------- cgroups
def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named systemd one and the v2 unified one)."""
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, target, fstype, *_ = line.split()
            if fstype in ("cgroup", "cgroup2") and target.startswith(str(CGROUP_FS) + "/"):
                found.append(Path(target))
    return found


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for folder, _, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in Path(folder, "cgroup.procs").read_text().split())
    return pids


def remove_cgroup_root(name: str, timeout: float = 20.0) -> list[str]:
    """Kills every process in cgroup ``name`` (in all hierarchies) and removes its tree; returns what stayed."""
    roots = [h / name for h in cgroup_hierarchies() if (h / name).is_dir()]
    deadline = time.monotonic() + timeout
    left: list[str] = []
    while roots and time.monotonic() < deadline:
        pids = set().union(*(_cgroup_pids(r) for r in roots))
        if pids:
            _kill_all(pids, timeout=5.0)
        left = []
        for root in roots:
            for folder, _, _ in os.walk(root, topdown=False):
                try:
                    os.rmdir(folder)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(folder)
        roots = [r for r in roots if r.exists()]
        if roots:
            time.sleep(0.2)
    return left


def _owner_alive(name: str) -> bool:
    match = re.match(rf"{CGROUP_PREFIX}(\d+)-", name)
    return bool(match) and _alive(int(match.group(1)))


def reap_stale() -> list[str]:
    """Cleans what a killed test run left: cgroup roots and temp folders whose owning process is gone."""
    reaped = []
    for hierarchy in cgroup_hierarchies():
        for folder in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            if folder.is_dir() and not _owner_alive(folder.name):
                remove_cgroup_root(folder.name)
                reaped.append(str(folder))
    for folder in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = folder / "owner"
        with contextlib.suppress(OSError, ValueError):
            if owner.exists() and not _alive(int(owner.read_text().split()[0])):
                _kill_all(_pids_naming(str(folder)))  # containerd's shims (their -address is in the folder)
                shutil.rmtree(folder, ignore_errors=True)
                reaped.append(str(folder))
    return reaped


# ----------------------------------------------------------------------------------------- network namespace
class NetNamespaceThread:
    """A worker thread that joined a network namespace: what it runs opens its sockets in there (setns is per
    thread for network namespaces), so test code can call HTTP endpoints and the Python client in the cluster."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, initializer=self._enter,
                                                          thread_name_prefix="netns")

    def _enter(self) -> None:
        if ctypes.CDLL("libc.so.6", use_errno=True).setns(self.fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the node's network namespace failed")

    def call(self, fn, *args, **kwargs):
        return self.pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class NodeCluster(ControlPlane):
    """A control plane plus one real node, inside their own network and mount namespaces.

    >>> nc = NodeCluster.from_cache(); nc.start()
    >>> nc.kubectl("get", "nodes")          # kubectl runs inside the network namespace
    >>> nc.call(urllib.request.urlopen, f"http://{pod_ip}:9090/metrics")
    >>> nc.close()                          # everything stopped; mounts, cgroups, bridge and addresses gone
    """

    bind_address = "0.0.0.0"  # inside the namespace only: its lo (node IP, Service IP) and the Pod bridge
    advertise_address = NODE_IP

    def __init__(self, bin_dir: str | Path, node_bin_dir: str | Path, images: dict[str, tuple[str, Path]], **kw):
        kw.setdefault("workdir", Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")))
        self._own_node_workdir = True
        super().__init__(bin_dir, **kw)
        self._own_workdir = False  # close() removes it, after the mounts and cgroups are gone
        self.controllers = NODE_CONTROLLERS
        self.node_bin_dir = Path(node_bin_dir)
        self.images = images
        self.cgroup_root = f"{CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.holder: subprocess.Popen | None = None
        self.netns: NetNamespaceThread | None = None
        self.client_prefix = []
        self._enter: list[str] = []
        self.host_ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        (self.workdir / "owner").write_text(f"{os.getpid()}\n")

    def _pick_ports(self) -> None:
        super()._pick_ports()
        self.apiserver_port = APISERVER_PORT
        self.server = f"https://{NODE_IP}:{APISERVER_PORT}"
        self.scheduler_port = free_port()
        self.kubelet_port = free_port()
        self.kubelet_healthz_port = free_port()
        self.stream_port = free_port()

    @classmethod
    def from_cache(cls, **kwargs) -> NodeCluster:
        """Uses what ``hack/control-plane.sh build`` and ``hack/node.sh all`` cached (they must have run)."""
        return cls(script("paths"), node_script("paths").strip(), images_from(node_script("list")),
                   etcd=script("etcd"), kubectl=script("kubectl"), **kwargs)

    @property
    def sock(self) -> Path:
        return self.workdir / "containerd.sock"

    # ------------------------------------------------------------------------------------------- life cycle
    def start(self, attempts: int = 1) -> NodeCluster:
        t0 = time.monotonic()
        reaped = reap_stale()
        if reaped:
            self.timings["reaped"] = float(len(reaped))
        try:
            self._start_namespaces()
            self._make_cgroup_root()
            super().start(attempts=1)
            t1 = time.monotonic()
            self._start_scheduler()
            self._start_containerd()
            t2 = time.monotonic()
            self._import_images()
            t3 = time.monotonic()
            self._start_kubelet()
            self.wait_node_ready()
            t4 = time.monotonic()
        except BaseException as e:
            logs = self.logs()
            self.close()
            raise NodeError(f"the node did not start ({e}); logs:\n{logs}") from None
        self.timings.update(control_plane=t1 - t0, containerd=t2 - t1, images=t3 - t2, kubelet=t4 - t3,
                            node_total=t4 - t0)
        return self

    def _start_namespaces(self) -> None:
        """The holder: a process that made the network and mount namespaces, set them up and sleeps."""
        w = self.workdir
        lines = ["set -e", "ip link set lo up", f"ip addr add {NODE_IP}/32 dev lo",
                 f"ip addr add {SERVICE_IP}/32 dev lo"]
        for target in PRIVATE_PATHS:
            private = w / "private" / target.strip("/").replace("/", "_")
            private.mkdir(parents=True)
            lines += [f"mkdir -p {target}", f"mount --bind {private} {target}"]
        (w / "sysctl").mkdir()
        for key, value in KERNEL_TUNABLES.items():
            fake = w / "sysctl" / key.replace("/", "_")
            fake.write_text(value + "\n")
            lines.append(f"mount --bind {fake} /proc/sys/{key}")
        lines += [f"touch {w / 'holder.ready'}", "exec sleep infinity"]
        (w / "holder.sh").write_text("\n".join(lines) + "\n")
        log = open(w / "holder.log", "wb")  # noqa: SIM115 - owned by the child
        try:
            self.holder = subprocess.Popen(
                ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", str(w / "holder.sh")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=w, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while not (w / "holder.ready").exists():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"namespace holder failed ({self.holder.poll()}): {_tail(w / 'holder.log', 20)}")
            time.sleep(0.05)
        pid = self.holder.pid
        self._enter = ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--"]
        self.client_prefix = ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
        self.netns = NetNamespaceThread(f"/proc/{pid}/ns/net")
        self._holder_ns = {kind: _ns(pid, kind) for kind in ("net", "mnt")}

    def _make_cgroup_root(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy; a cpuset child starts with no CPUs or memory
        nodes, so it gets its parent's."""
        for hierarchy in cgroup_hierarchies():
            folder = hierarchy / self.cgroup_root
            folder.mkdir()
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / name).exists():
                    (folder / name).write_text((hierarchy / name).read_text())

    def close(self) -> None:
        """Stops the kubelet, every container, containerd and the control plane; removes the cgroup root, the
        namespaces (with every mount, the bridge and the addresses in them) and the temp folder."""
        if self._closed:
            return
        keep = os.environ.get("FLOPWISE_KEEP_CLUSTER") == "1"
        problems = []
        for name in ("kubelet", "kube-scheduler"):
            self._stop(name, grace=10.0)
        left = remove_cgroup_root(self.cgroup_root)  # every Pod's processes
        if left:
            problems.append(f"cgroups not removed: {left}")
        self._stop("containerd", grace=10.0)
        super().close()  # kube-controller-manager, kube-apiserver, etcd
        if self.holder is not None:
            ours = {p for p in _pids() if p != self.holder.pid and p != os.getpid()
                    and (_ns(p, "mnt") == self._holder_ns["mnt"] or _ns(p, "net") == self._holder_ns["net"])}
            _kill_all(ours)  # containerd's shims and anything else started in the namespaces
            self.holder.kill()
            self.holder.wait(10)
        if self.netns is not None:
            self.netns.close()
        left = remove_cgroup_root(self.cgroup_root)
        if left:
            problems.append(f"cgroups not removed: {left}")
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        if forward.read_text().strip() != self.host_ip_forward:  # never expected: the bridge's is the namespace's
            forward.write_text(self.host_ip_forward + "\n")
            problems.append("the host's net.ipv4.ip_forward had changed; restored")
        if keep:
            with contextlib.suppress(OSError):
                (self.workdir / "owner").unlink()
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.cleanup_problems = problems

    # ------------------------------------------------------------------------------------------- spawning
    def _spawn(self, name: str, args) -> subprocess.Popen:
        # nsenter without --pid execs the command itself: the Popen is the component (signals reach it)
        return super()._spawn(name, [*self._enter, *args])

    def call(self, fn, *args, **kwargs):
        """Runs fn in a thread inside the cluster's network namespace (HTTP to Pods, the Python client)."""
        if self.netns is None:
            raise NodeError("the node's namespaces are not up")
        return self.netns.call(fn, *args, **kwargs)

    def _get(self, url: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
        return self.call(super()._get, url, token, timeout)

    def apiserver_extra_args(self) -> list[str]:
        return ["--kubelet-preferred-address-types=InternalIP,Hostname"]

    # ------------------------------------------------------------------------------------------- scheduler
    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", [
            str(self.node_bin_dir / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0", "--address=127.0.0.1", f"--port={self.scheduler_port}",
            "--profiling=false"])
        self._wait("kube-scheduler", lambda: self._get(f"http://127.0.0.1:{self.scheduler_port}/healthz")[0] == 200,
                   "/healthz")

    # ------------------------------------------------------------------------------------------- containerd
    # ------------------------------------------------------------------------------------------- images
    # Importing the images takes minutes on a busy 2-core machine (the trainer image is 1.3 GB, unpacked on
    # import). The first run stores containerd's root right after its import as a golden copy in the cache, keyed
    # by the images' tars; later runs start from a hard-linked copy of it (seconds): image layers, blobs and unpacked
    # snapshots are never written in place, and the files that are (the bolt databases) are copied for real.
    def _golden(self) -> Path:
        key = hashlib.sha256(" ".join(f"{ref}={tar}" for ref, tar in sorted(self.images.values())).encode())
        return GOLDEN_ROOT / key.hexdigest()[:16]

    def _link_tree(self, source: Path, target: Path) -> None:
        subprocess.run(["cp", "-a", "--link", str(source), str(target)], check=True, capture_output=True)
        for db in target.rglob("*.db"):  # written in place: each copy its own
            db.unlink()
            shutil.copy2(source / db.relative_to(target), db)

    def _root_from_golden(self) -> None:
        golden = self._golden()
        root = self.workdir / "containerd" / "root"
        if (golden / "READY").exists() and not root.exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            try:
                self._link_tree(golden / "root", root)
                self.timings["containerd_root_linked"] = time.monotonic() - t0
            except (subprocess.CalledProcessError, OSError):  # another filesystem, say: import instead
                shutil.rmtree(root, ignore_errors=True)

    def _save_golden(self) -> None:
        golden = self._golden()
        GOLDEN_ROOT.mkdir(parents=True, exist_ok=True)
        with open(GOLDEN_ROOT / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (golden / "READY").exists():
                return
            self._stop("containerd", grace=10.0)  # its databases closed and consistent
            tmp = GOLDEN_ROOT / f"tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                self._link_tree(self.workdir / "containerd" / "root", tmp / "root")
                (tmp / "READY").write_text(" ".join(ref for ref, _ in self.images.values()) + "\n")
                shutil.rmtree(golden, ignore_errors=True)
                tmp.rename(golden)
                for other in GOLDEN_ROOT.iterdir():  # one golden copy: the images of this checkout
                    if other.is_dir() and other != golden:
                        shutil.rmtree(other, ignore_errors=True)
            except (subprocess.CalledProcessError, OSError):
                shutil.rmtree(tmp, ignore_errors=True)
            finally:
                self._spawn_containerd()

    def _start_containerd(self) -> None:
        w = self.workdir
        (w / "cni" / "net.d").mkdir(parents=True)
        (w / "cni" / "net.d" / "10-node.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "node", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(w / "cni" / "ipam")}},
                {"type": "loopback"}]}))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{w / 'containerd' / 'root'}"
state = "{w / 'containerd' / 'state'}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{w / 'containerd' / 'opt'}"
[{cri}]
  sandbox_image = "{self.images['pause'][0]}"
  # root here lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 cannot be set (runc then fails every Pod)
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "{self.stream_port}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{w / 'cni' / 'net.d'}"
    max_conf_num = 1
"""
        (w / "containerd.toml").write_text(config)
        self._root_from_golden()
        self._spawn_containerd()

    def _spawn_containerd(self) -> None:
        self._spawn("containerd", ["containerd", f"--config={self.workdir / 'containerd.toml'}"])
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, "its socket")

    def ctr(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess:
        res = subprocess.run([*self._enter, "ctr", f"--address={self.sock}", "--namespace=k8s.io", *args],
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr}{res.stdout}")
        return res

    def _import_images(self) -> None:
        imported = False
        for name in ("pause", "operator", "trainer"):
            ref, tar = self.images[name]
            if ref in self.ctr("images", "ls", "-q").stdout.split():
                continue  # from the golden copy
            t0 = time.monotonic()
            self.ctr("images", "import", str(tar))
            self.timings[f"import_{name}"] = time.monotonic() - t0
            imported = True
            if ref not in self.ctr("images", "ls", "-q").stdout.split():
                raise NodeError(f"{tar} imported, but containerd has no image {ref}")
        if imported:
            self._save_golden()

    # ------------------------------------------------------------------------------------------- kubelet
    def _write_kubelet_config(self) -> Path:
        w = self.workdir
        (w / "resolv.conf").write_text("# the node's Pods resolve nothing: no cluster DNS, no network outside\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.kubelet_healthz_port,
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_root}", "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"], "failSwapOn": False, "makeIPTablesUtilChains": False,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # a small shared disk: evict only when nearly full; never collect the imported images
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "resolvConf": str(w / "resolv.conf"), "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
        }
        path = w / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _start_kubelet(self) -> None:
        w = self.workdir
        if not (w / "kubelet.yaml").exists():
            self._write_kubelet_config()
            (w / "kubelet" / "volume-plugins").mkdir(parents=True, exist_ok=True)
        self._spawn("kubelet", [
            str(self.node_bin_dir / "kubelet"), f"--config={w / 'kubelet.yaml'}", f"--kubeconfig={self.kubeconfig}",
            "--container-runtime=remote", f"--container-runtime-endpoint=unix://{self.sock}",
            f"--image-service-endpoint=unix://{self.sock}", f"--pod-infra-container-image={self.images['pause'][0]}",
            f"--root-dir={w / 'kubelet'}", f"--cert-dir={w / 'kubelet' / 'pki'}",
            f"--volume-plugin-dir={w / 'kubelet' / 'volume-plugins'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", "--v=1"])
        self._wait("kubelet", lambda: self._get(f"http://127.0.0.1:{self.kubelet_healthz_port}/healthz")[0] == 200,
                   "/healthz")

    def node_ready(self) -> bool:
        node = json.loads(self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False).stdout or "{}")
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        tainted = any(t["key"].startswith("node.kubernetes.io/") for t in (node.get("spec") or {}).get("taints") or [])
        return ready and not tainted

    def wait_node_ready(self, timeout: float = 120.0) -> None:
        self._wait("kubelet", self.node_ready, f"node {NODE_NAME} Ready and untainted")

    def restart_kubelet(self, down_s: float = 0.0) -> float:
        """Stops the kubelet (SIGTERM; its containers keep running under containerd), waits ``down_s``, starts
        it again; returns the seconds until the node is Ready again."""
        self._stop("kubelet", grace=10.0)
        time.sleep(down_s)
        t0 = time.monotonic()
        self._start_kubelet()
        self.wait_node_ready()
        return time.monotonic() - t0

    # ------------------------------------------------------------------------------------------- helpers
    def pod_ip(self, namespace: str, selector: str) -> str:
        pods = self.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        if not running:
            raise NodeError(f"no running Pod with {selector} in {namespace}")
        return running[0]["status"]["podIP"]

    def logs(self, lines: int = 60) -> str:
        parts = [super().logs(lines)]
        for name in ("holder", "kube-scheduler", "containerd", "kubelet"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"----- {name} ({path}), last {lines} lines -----\n{_tail(path, lines)}")
        return "\n".join(parts)
