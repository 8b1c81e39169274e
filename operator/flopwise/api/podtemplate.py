"""`trainer.podTemplate`: a partial Pod template merged into every trainer Pod (env, volumes, affinity,
priorityClassName, imagePullSecrets, annotations, sidecars…), which can never weaken its restricted security.

Pure functions: `problems` refuses an overlay that tries (named by field, so `flopwise validate` and the operator say
what to remove), and `merge` applies one and then imposes the restricted settings again on the Pod and on every
container, so even an overlay that slipped past validation cannot loosen them. Merging follows strategic merge's
keys for the lists that matter: containers, env, volumes, volumeMounts and ports by name; tolerations and
imagePullSecrets appended; other lists replaced, maps merged key by key.
"""

from __future__ import annotations

import copy
from typing import Any

MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "envFrom": None}
APPENDED = {"tolerations", "imagePullSecrets", "topologySpreadConstraints", "hostAliases"}
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}
ALLOWED_CAPABILITIES = {"NET_BIND_SERVICE"}
TOP_KEYS = {"metadata", "spec"}
METADATA_KEYS = {"labels", "annotations"}


def problems(overlay: dict[str, Any]) -> list[tuple[str, str]]:
    """(field relative to the overlay, why) for everything that would loosen the restricted profile or that an
    overlay may not set; empty when it is fine."""
    out: list[tuple[str, str]] = []
    for key in overlay:
        if key not in TOP_KEYS:
            out.append((key, "a Pod template has only metadata and spec"))
    meta = overlay.get("metadata") or {}
    if not isinstance(meta, dict):
        return [*out, ("metadata", "must be an object")]
    for key in meta:
        if key not in METADATA_KEYS:
            out.append((f"metadata.{key}", "only labels and annotations may be added"))
    for key, value in (meta.get("annotations") or {}).items():
        if str(key).startswith(("container.apparmor.security.beta.kubernetes.io/", "seccomp.security.alpha")):
            out.append((f"metadata.annotations.{key}", "the trainer Pod keeps its AppArmor and seccomp profiles"))
        if not isinstance(value, str):
            out.append((f"metadata.annotations.{key}", "annotation values are strings"))
    spec = overlay.get("spec") or {}
    if not isinstance(spec, dict):
        return [*out, ("spec", "must be an object")]
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        if spec.get(key):
            out.append((f"spec.{key}", "host namespaces break the restricted Pod Security profile"))
    for key in ("restartPolicy", "automountServiceAccountToken", "serviceAccountName", "serviceAccount",
                "nodeName", "subdomain", "hostname", "ephemeralContainers"):
        if key in spec:
            out.append((f"spec.{key}", "set by flopwise (the Job's semantics, no service-account token)"))
    out += [(f"spec.securityContext.{k}", why) for k, why in _security_problems(spec.get("securityContext") or {},
                                                                                pod=True)]
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = [k for k in volume if k != "name"]
        if any(k not in ALLOWED_VOLUMES for k in kinds):
            out.append((f"spec.volumes[{i}]", f"{', '.join(kinds)}: only {', '.join(sorted(ALLOWED_VOLUMES))} "
                        "volumes are allowed (restricted profile)"))
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            where = f"spec.{kind}[{i}]"
            if not isinstance(container, dict) or not container.get("name"):
                out.append((where, "every container needs a name (trainer: the trainer's own)"))
                continue
            out += [(f"{where}.securityContext.{k}", why)
                    for k, why in _security_problems(container.get("securityContext") or {}, pod=False)]
            for j, port in enumerate(container.get("ports") or []):
                if isinstance(port, dict) and port.get("hostPort"):
                    out.append((f"{where}.ports[{j}].hostPort", "host ports break the baseline profile"))
            if container.get("name") == "trainer":
                for key in ("image", "command", "args"):
                    if key in container:
                        out.append((f"{where}.{key}", f"set it with trainer.{key}"))
    return out


def _security_problems(context: dict[str, Any], *, pod: bool) -> list[tuple[str, str]]:
    out = []
    if context.get("privileged"):
        out.append(("privileged", "privileged containers break the baseline profile"))
    if context.get("allowPrivilegeEscalation"):
        out.append(("allowPrivilegeEscalation", "must stay false (restricted profile)"))
    if context.get("runAsNonRoot") is False:
        out.append(("runAsNonRoot", "must stay true (restricted profile)"))
    if context.get("runAsUser") == 0:
        out.append(("runAsUser", "0 is root (restricted profile)"))
    added = set((context.get("capabilities") or {}).get("add") or [])
    if added - ALLOWED_CAPABILITIES:
        out.append(("capabilities.add", f"{', '.join(sorted(added - ALLOWED_CAPABILITIES))}: only "
                    "NET_BIND_SERVICE may be added (restricted profile)"))
    seccomp = (context.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(("seccompProfile.type", "must be RuntimeDefault or Localhost (restricted profile)"))
    if context.get("procMount") not in (None, "Default"):
        out.append(("procMount", "must stay Default (baseline profile)"))
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        out.append(("windowsOptions.hostProcess", "breaks the baseline profile"))
    if pod and context.get("sysctls"):
        out.append(("sysctls", "set none: the trainer needs no kernel tuning from its Pod"))
    return out


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a Pod template {metadata, spec}) with ``overlay`` merged in, then the restricted settings imposed
    again. ``base`` is not changed."""
    merged = _merge(copy.deepcopy(base), copy.deepcopy(overlay), "")
    _impose_restricted(merged["spec"])
    return merged


def _merge(base: Any, over: Any, key: str) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        for k, v in over.items():
            base[k] = _merge(base[k], v, k) if k in base else v
        return base
    if isinstance(base, list) and isinstance(over, list):
        if key in APPENDED:
            return base + [v for v in over if v not in base]
        merge_key = MERGE_KEYS.get(key)
        if merge_key:
            out = list(base)
            for item in over:
                match = next((i for i, b in enumerate(out) if isinstance(b, dict) and isinstance(item, dict)
                              and b.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    out.append(item)
                else:
                    out[match] = _merge(out[match], item, "")
            return out
    return over


def _impose_restricted(pod: dict[str, Any]) -> None:
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        pod.pop(key, None)
    context = pod.setdefault("securityContext", {})
    context.update(runAsNonRoot=True, seccompProfile={"type": (context.get("seccompProfile") or {}).get(
        "type") if (context.get("seccompProfile") or {}).get("type") == "Localhost" else "RuntimeDefault"})
    if context.get("runAsUser") == 0:
        del context["runAsUser"]
    context.pop("sysctls", None)
    pod["volumes"] = [v for v in pod.get("volumes") or [] if all(k == "name" or k in ALLOWED_VOLUMES for k in v)]
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        sc = container.setdefault("securityContext", {})
        for key in ("privileged", "procMount", "windowsOptions"):
            sc.pop(key, None)
        added = [c for c in (sc.get("capabilities") or {}).get("add") or [] if c in ALLOWED_CAPABILITIES]
        sc["capabilities"] = {"drop": ["ALL"], **({"add": added} if added else {})}
        sc.update(allowPrivilegeEscalation=False, runAsNonRoot=True)
        if sc.get("runAsUser") == 0:
            del sc["runAsUser"]
        profile = (sc.get("seccompProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            sc["seccompProfile"] = {"type": "RuntimeDefault"}
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.pop("hostPort", None)
