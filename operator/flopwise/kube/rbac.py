"""The least the operator needs from the API server, as RBAC objects (a namespaced Role, or a ClusterRole for
`--all-namespaces`). The cluster test runs the operator as a ServiceAccount bound to exactly these rules."""

from __future__ import annotations

from typing import Any

from flopwise.api.spec import GROUP, PLURAL

NAME = "flopwise-operator"


def operator_rules() -> list[dict[str, Any]]:
    return [
        # campaigns: watched (kopf's on.event only: it writes nothing on them), read again after a conflict
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
        # owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
        # Jobs: created per run; deleted when a run is cancelled; patched to suspend or resume one (spec.suspend)
        # and to lower a preempted one's deadline, read first to see which
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch",
                                                                  "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        # ConfigMaps (a run's RunSpec; one an earlier attempt left is replaced) and rendezvous Services of multi-node
        # (Indexed Job) runs: deleted by spec.cleanup once the run's result is in the status
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "create", "update", "delete"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    ]


def leader_election_rules() -> list[dict[str, Any]]:
    """`--leader-election`: the Lease replicas elect a leader with, in the Lease's namespace only."""
    return [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]


def scanning_rules() -> list[dict[str, Any]]:
    """What kopf needs to follow namespaces and CRDs as they come and go: `--all-namespaces` or namespace
    patterns only (with plain `--namespace` names the operator turns kopf's scanning off)."""
    return [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "verbs": ["list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]


def operator_role(namespace: str | None = None, name: str = NAME) -> dict[str, Any]:
    """A Role in ``namespace``, or a ClusterRole (with kopf's scanning rules) when it is None."""
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": NAME}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role" if namespace else "ClusterRole",
            "metadata": meta, "rules": operator_rules() + ([] if namespace else scanning_rules())}


def operator_binding(service_account: str, sa_namespace: str, namespace: str | None = None,
                     name: str = NAME) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role" if namespace else "ClusterRole",
                        "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": sa_namespace}]}
