"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager as subprocesses.

The binaries come from ``hack/control-plane.sh build`` (Debian bookworm's kubernetes 1.20.2 source package, built
once and cached outside the checkout). Nothing here is mocked: the API server validates, stores and serves objects,
and the controllers (job, garbagecollector, namespace, serviceaccount, serviceaccount-token, ttl-after-finished,
clusterrole-aggregation: what puts aggregated rules into the built-in edit/view roles) act on them. This control
plane has no node: a test that needs a Pod to finish plays the node itself by patching the Pod's ``status``
subresource as a kubelet would (tests/node.py adds a real node, in namespaces of its own).

Everything listens on loopback ports chosen free at start; state, keys, kubeconfigs and one log per component live
in a temporary folder (kept when FLOPWISE_KEEP_CLUSTER=1).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "hack" / "control-plane.sh"

CONTROLLERS = ("job,garbagecollector,namespace,serviceaccount,serviceaccount-token,ttl-after-finished,"
               "clusterrole-aggregation")


class ControlPlaneError(RuntimeError):
    pass


def script(*args: str, timeout: float | None = None) -> str:
    """Runs hack/control-plane.sh and returns its stdout's last line (a path). Its stderr passes through."""
    out = subprocess.run(
        ["bash", str(SCRIPT), *args], check=True, stdout=subprocess.PIPE, text=True, timeout=timeout
    ).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    if not lines:
        raise ControlPlaneError(f"hack/control-plane.sh {' '.join(args)} printed nothing")
    return lines[-1].strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: a component must not outlive a killed pytest on a shared machine.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ControlPlane:
    """Starts and owns one etcd, one kube-apiserver and one kube-controller-manager.

    >>> cp = ControlPlane.from_cache(); cp.start()
    >>> cp.kubectl("get", "ns")            # admin kubeconfig: cp.kubeconfig
    >>> cp.close()
    """

    def __init__(
        self,
        bin_dir: str | Path,
        *,
        etcd: str | Path = "etcd",
        kubectl: str | Path = "kubectl",
        workdir: str | Path | None = None,
        ready_timeout: float = 90.0,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self.apiserver_bin = self.bin_dir / "kube-apiserver"
        self.kcm_bin = self.bin_dir / "kube-controller-manager"
        self.etcd_bin = str(shutil.which(str(etcd)) or etcd)
        self.kubectl_bin = str(shutil.which(str(kubectl)) or kubectl)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="flopwise-cp-"))
        self.ready_timeout = ready_timeout
        self.admin_token = secrets.token_hex(16)
        self.controllers = CONTROLLERS
        self._pick_ports()
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self.audit_log: Path | None = None  # set by enable_audit_log()
        self._started = False
        self._closed = False

    def _pick_ports(self) -> None:
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.apiserver_port = free_port()
        self.kcm_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"

    @classmethod
    def from_cache(cls, **kwargs) -> ControlPlane:
        """Uses the binaries cached by ``hack/control-plane.sh build`` (which must have run)."""
        return cls(script("paths"), etcd=script("etcd"), kubectl=script("kubectl"), **kwargs)

    # ----------------------------------------------------------------------------------------- life cycle
    def start(self, attempts: int = 3) -> ControlPlane:
        atexit.register(self.close)
        for attempt in range(1, attempts + 1):
            t0 = time.monotonic()
            try:
                self._write_files()
                self.start_etcd()
                t1 = time.monotonic()
                self._start_apiserver()
                t2 = time.monotonic()
                self._start_kcm()
                t3 = time.monotonic()
                break
            except BaseException as e:
                logs = self.logs()
                # Free ports are picked before they are bound: another process (a parallel test session) may
                # have taken one meanwhile. Then start over on new ports.
                if isinstance(e, ControlPlaneError) and "address already in use" in logs and attempt < attempts:
                    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
                        self._stop(name, grace=0)
                    for child in self.workdir.iterdir():
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                    self._pick_ports()
                    continue
                self.close()
                raise ControlPlaneError(f"control plane did not start ({e}); logs:\n{logs}") from None
        self.timings.update(etcd=t1 - t0, apiserver=t2 - t1, controller_manager=t3 - t2, total=t3 - t0)
        self._started = True
        return self

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops every component (SIGTERM, then SIGKILL) and waits for them; removes the temp dir unless kept."""
        if self._closed:
            return
        self._closed = True
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop(name)
        if self._own_workdir and os.environ.get("FLOPWISE_KEEP_CLUSTER") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    def _write_files(self) -> None:
        w = self.workdir
        (w / "etcd").mkdir(exist_ok=True)
        (w / "certs").mkdir(exist_ok=True)
        subprocess.run(
            ["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        (w / "tokens.csv").write_text(f"{self.admin_token},admin,admin,system:masters\n")

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate and its CA (made at first start, kept on restarts)."""
        return self.workdir / "certs" / "apiserver.crt"

    def write_kubeconfig(self, path: str | Path, token: str, *, user: str, namespace: str | None = None) -> Path:
        """Writes a token kubeconfig for this API server, trusting its self-signed CA (embedded)."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        context: dict = {"cluster": "flopwise-test", "user": user}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "flopwise-test", "cluster": {"server": self.server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "flopwise-test", "context": context}],
            "current-context": "flopwise-test",
        }
        path = Path(path)
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(args)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def _stop(self, name: str, grace: float | None = None) -> None:
        # kube-apiserver 1.20 stops listening at once on SIGTERM but then hangs on open watches for a minute:
        # it gets a short grace. It keeps no local state, so SIGKILL is safe.
        if grace is None:
            grace = 3.0 if name == "kube-apiserver" else 15.0
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate() if grace > 0 else proc.kill()
        try:
            proc.wait(max(grace, 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def _wait(self, name: str, probe, what: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode} while waiting for {what}")
            try:
                if probe():
                    return
            except Exception as e:
                last = repr(e)
            time.sleep(0.25)
        raise ControlPlaneError(f"{name}: {what} not reached in {self.ready_timeout:.0f} s (last error: {last})")

    def _get(self, url: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx if url.startswith("https") else None) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    # ----------------------------------------------------------------------------------------- etcd
    def start_etcd(self) -> None:
        if "etcd" in self.procs and self.procs["etcd"].poll() is None:
            return
        c, p = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                self.etcd_bin,
                "--name",
                "flopwise",
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                c,
                "--advertise-client-urls",
                c,
                "--listen-peer-urls",
                p,
                "--initial-advertise-peer-urls",
                p,
                "--initial-cluster",
                f"flopwise={p}",
            ],
        )
        self._wait("etcd", lambda: '"health":"true"' in self._get(f"{c}/health")[1], "/health")

    def stop_etcd(self, grace: float | None = None) -> None:
        """Stops etcd (its data stays; grace=0 kills it): the API server keeps running but cannot read or write."""
        self._stop("etcd", grace)

    # ----------------------------------------------------------------------------------------- kube-apiserver
    bind_address = "127.0.0.1"  # where kube-apiserver listens and what it advertises (tests/node.py moves both)
    advertise_address = "127.0.0.1"

    def apiserver_extra_args(self) -> list[str]:
        return []

    def _start_apiserver(self) -> None:
        w = self.workdir
        self._spawn(
            "kube-apiserver",
            [
                str(self.apiserver_bin),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.advertise_address}",
                f"--secure-port={self.apiserver_port}",
                "--insecure-port=0",
                f"--cert-dir={w / 'certs'}",
                f"--service-account-key-file={w / 'sa.key'}",
                f"--service-account-signing-key-file={w / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--token-auth-file={w / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/12",
                "--profiling=false",
                *self._audit_args(),
                *self.apiserver_extra_args(),
            ],
        )
        self._wait("kube-apiserver", self.apiserver_ready, "/readyz")
        if not self.kubeconfig.exists():
            self.write_kubeconfig(self.kubeconfig, self.admin_token, user="admin")

    # A Metadata-level policy for ServiceAccounts only (who called which verb on which resource, never a body):
    # what a test needs to compare an operator's real calls with its RBAC rules.
    AUDIT_POLICY: ClassVar[dict] = {
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}]}

    def _audit_args(self) -> list[str]:
        if self.audit_log is None:
            return []
        policy = self.workdir / "audit-policy.json"
        policy.write_text(json.dumps(self.AUDIT_POLICY))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json",
                "--audit-log-mode=blocking", "--audit-log-maxsize=0"]

    def enable_audit_log(self) -> Path:
        """Opt-in: restarts kube-apiserver (same port and state) with an audit log of every ServiceAccount
        request at Metadata level, one JSON event per line; it stays on across later restarts."""
        if self.audit_log is None:
            self.audit_log = self.workdir / "audit.log"
            self.restart_apiserver()
        return self.audit_log

    def apiserver_ready(self) -> bool:
        return self._get(f"{self.server}/readyz", self.admin_token)[0] == 200

    def restart_apiserver(self, grace: float | None = None) -> float:
        """Stops (SIGTERM, SIGKILL after ``grace`` s; 0 = crash) and starts kube-apiserver on the same port and
        state; returns the seconds until it is ready again."""
        t0 = time.monotonic()
        self._stop("kube-apiserver", grace)
        self._start_apiserver()
        return time.monotonic() - t0

    # ----------------------------------------------------------------------------------------- controller-manager
    def _start_kcm(self) -> None:
        w = self.workdir
        self._spawn(
            "kube-controller-manager",
            [
                str(self.kcm_bin),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={self.controllers}",
                f"--service-account-private-key-file={w / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                # The 1.20 insecure health port (default 10252): moved to a free loopback port for readiness.
                "--address=127.0.0.1",
                f"--port={self.kcm_port}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        self._wait(
            "kube-controller-manager",
            lambda: self._get(f"http://127.0.0.1:{self.kcm_port}/healthz")[0] == 200,
            "/healthz",
        )
        # The serviceaccount controller has run once the default namespace has its `default` ServiceAccount.
        self._wait(
            "kube-controller-manager",
            lambda: (
                self._get(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", self.admin_token)[0]
                == 200
            ),
            "ServiceAccount default/default",
        )

    def restart_controller_manager(self) -> None:
        self._stop("kube-controller-manager")
        self._start_kcm()

    # ----------------------------------------------------------------------------------------- clients
    client_prefix: ClassVar[list[str]] = []  # a client command's prefix (tests/node.py: enter its network namespace)

    def env(self, kubeconfig: str | Path | None = None) -> dict[str, str]:
        """An environment for a client process (kopf, the Python client, kubectl) talking to this cluster."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: str | Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess:
        """Runs kubectl against this cluster; with check, a failure raises ControlPlaneError with its stderr."""
        cmd = [*self.client_prefix, self.kubectl_bin, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
        return res

    def kubectl_json(self, *args: str, **kwargs) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json", **kwargs).stdout)

    def apply_yaml(self, text: str, *, namespace: str | None = None, **kwargs) -> subprocess.CompletedProcess:
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text, **kwargs)

    def wait_established(self, crd: str, timeout: float = 30.0) -> None:
        """Wait for a CRD to serve. Polls instead of `kubectl wait`, which fails outright (rather than waiting)
        while a just-created CRD has no status.conditions yet."""
        def established() -> bool:
            body = self.kubectl_json("get", "crd", crd)
            return any(c["type"] == "Established" and c["status"] == "True"
                       for c in body.get("status", {}).get("conditions") or [])

        self.wait_for(established, timeout=timeout, what=f"CRD {crd} Established")

    def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.25, what: str = "condition"):
        """Polls predicate() until it returns something truthy; returns that value."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as e:
                last_exc = e
            time.sleep(interval)
        raise TimeoutError(f"{what} not met in {timeout} s" + (f" (last error: {last_exc!r})" if last_exc else ""))

    def service_account_token(self, namespace: str, name: str, *, create: bool = True, timeout: float = 30.0) -> str:
        """The bearer token of ServiceAccount namespace/name, from the token Secret that 1.20's
        serviceaccount-token controller creates for it (the SA is created first when ``create``)."""
        if create and self.kubectl("get", "serviceaccount", "-n", namespace, name, check=False).returncode != 0:
            self.kubectl("create", "serviceaccount", "-n", namespace, name)

        def token() -> str | None:
            sa = self.kubectl_json("get", "serviceaccount", "-n", namespace, name)
            for ref in sa.get("secrets") or []:
                secret = self.kubectl_json("get", "secret", "-n", namespace, ref["name"])
                if secret.get("type") == "kubernetes.io/service-account-token" and secret.get("data", {}).get("token"):
                    return base64.b64decode(secret["data"]["token"]).decode()
            return None

        return self.wait_for(token, timeout=timeout, what=f"token Secret of ServiceAccount {namespace}/{name}")

    def service_account_kubeconfig(self, namespace: str, name: str, path: str | Path | None = None, **kw) -> Path:
        """Writes (and returns) a kubeconfig that authenticates as ServiceAccount namespace/name."""
        token = self.service_account_token(namespace, name, **kw)
        path = Path(path) if path else self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return self.write_kubeconfig(path, token, user=f"system:serviceaccount:{namespace}:{name}", namespace=namespace)

    # ----------------------------------------------------------------------------------------- diagnostics
    def logs(self, lines: int = 60) -> str:
        parts = []
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"----- {name} ({path}), last {lines} lines -----\n{_tail(path, lines)}")
        return "\n".join(parts) or "(no logs)"
