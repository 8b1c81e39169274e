"""The Kubernetes Pod Security Standards' "restricted" profile (which includes "baseline") as a checker of a rendered
Pod template, rule by rule, after https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.20+
fields only: this is what a namespace labelled `pod-security.kubernetes.io/enforce: restricted` admits).

Each rule returns the violations it finds as strings naming the field, so a failing test says which rule broke.
Also: the DNS-1123 / label validators the API server applies to names and label values.
"""

from __future__ import annotations

import re
from typing import Any

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
VOLUME_SOURCE_KEYS = RESTRICTED_VOLUMES | {"hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs",
                                           "iscsi", "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
                                           "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
                                           "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos"}


def valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not all(DNS_LABEL.match(p) for p in prefix.split("."))):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_NAME.match(name))


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """Every violation of the baseline and restricted profiles by a Pod template ({metadata, spec})."""
    meta, pod = template.get("metadata") or {}, template["spec"]
    psc = pod.get("securityContext") or {}
    out: list[str] = []
    containers = _containers(pod)
    # ---- baseline
    if psc.get("windowsOptions", {}).get("hostProcess") or any(
            (c.get("securityContext") or {}).get("windowsOptions", {}).get("hostProcess") for c in containers):
        out.append("baseline/HostProcess: windowsOptions.hostProcess")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"baseline/host namespaces: spec.{key}")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f"baseline/privileged: {name}")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"baseline/capabilities: {name} adds {sorted(added - BASELINE_CAPABILITIES)}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"baseline/host ports: {name}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"baseline/procMount: {name}")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t") or se.get(
                "user") or se.get("role"):
            out.append(f"baseline/SELinux: {name}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"baseline/seccomp: {name} Unconfined")
    se = psc.get("seLinuxOptions") or {}
    if se.get("type") not in (None, "", "container_t", "container_init_t", "container_kvm_t") or se.get(
            "user") or se.get("role"):
        out.append("baseline/SELinux: pod")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("baseline/seccomp: pod Unconfined")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            out.append(f"baseline/hostPath volume: {volume['name']}")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value != "runtime/default" \
                and not value.startswith("localhost/"):
            out.append(f"baseline/AppArmor: {key}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"baseline/sysctls: {sysctl.get('name')}")
    # ---- restricted
    for volume in pod.get("volumes") or []:
        kinds = set(volume) & VOLUME_SOURCE_KEYS
        if not kinds or not kinds <= RESTRICTED_VOLUMES:
            out.append(f"restricted/volume types: {volume['name']} is {sorted(set(volume) - {'name'})}")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        out.append("restricted/runAsUser: pod runs as 0")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"restricted/allowPrivilegeEscalation: {name} must set false")
        if sc.get("runAsNonRoot") is False or not (sc.get("runAsNonRoot") is True or pod_non_root):
            out.append(f"restricted/runAsNonRoot: {name}")
        if sc.get("runAsUser") == 0:
            out.append(f"restricted/runAsUser: {name} runs as 0")
        kind = (sc.get("seccompProfile") or {}).get("type")
        if not (kind in ("RuntimeDefault", "Localhost") or (kind is None and pod_seccomp)):
            out.append(f"restricted/seccomp: {name} has no RuntimeDefault/Localhost profile")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"restricted/capabilities: {name} does not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"restricted/capabilities: {name} adds {caps.get('add')}")
    return out


def name_and_label_violations(obj: dict[str, Any], *, name_limit: int = 63) -> list[str]:
    """A name that is not a DNS-1123 label (≤ 63: a Job's name becomes its Pods' `job-name` label), or a
    label key or value the API server would refuse, on the object and on its Pod template if it has one."""
    out = []
    meta = obj["metadata"]
    if len(meta["name"]) > name_limit or not DNS_LABEL.match(meta["name"]):
        out.append(f"name {meta['name']!r}")
    templates = [meta, ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}]
    for m in templates:
        for key, value in (m.get("labels") or {}).items():
            if not valid_label_key(key) or not valid_label_value(value):
                out.append(f"label {key}={value!r}")
    selector = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get("nodeSelector") or {}
    for key, value in selector.items():
        if not valid_label_key(key) or not valid_label_value(value):
            out.append(f"nodeSelector {key}={value!r}")
    return out
