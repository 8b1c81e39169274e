"""Security promises, checked rather than stated:

* trainer Pods pass the "restricted" Pod Security Standard (every rule, tests/pod_security.py) for CPU, GPU and
  multi-node pools, with and without a trainer command override, tolerations, a Kueue queue and a claim;
* the operator's RBAC is least privilege: the kube-apiserver's audit log (tests/cluster.py's opt-in) records every
  (verb, resource) the operator's ServiceAccount really calls during a campaign, and that set is compared with
  `flopwise.kube.rbac.operator_rules()` both ways;
* no secret, token or credential is ever written to the campaign's status, its events or the operator's log.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from flopwise.api.load import parse_campaign
from flopwise.engine.machine import reconcile
from flopwise.kube import jobs, rbac
from pod_security import name_and_label_violations, restricted_violations

METRICS = (Path(__file__).resolve().parents[1] / "operator" / "flopwise" / "kube" / "metrics.py").exists()
UID = "0b6c7a52-1111-2222-3333-444455556666"
TINY = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())

POOLS = {
    "cpu": {"gpuType": "cpu", "peakFlops": 1e10},
    "gpu": {"gpuType": "H100", "peakFlops": None, "gpusPerRun": 8, "maxConcurrentGpus": 16},
    "multi-node": {"gpuType": "H100", "peakFlops": None, "gpusPerRun": 16, "gpusPerNode": 8,
                   "maxConcurrentGpus": 32},
}
EXTRAS = {
    "plain": {},
    "override": {"trainer": {"command": ["python", "-m", "my_trainer"], "args": ["--fast"],
                             "resources": {"limits": {"memory": "4Gi"}}},
                 "dataset": {"path": "tokens", "claimName": "shards"}},
    "scheduled": {"gpuPool": {"nodeSelector": {"pool": "a100"}, "queueName": "research", "priorityClass": "low",
                              "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}},
    "overlay": {"trainer": {"podTemplate": {"metadata": {"annotations": {"example.com/a": "b"}},
                                            "spec": {"priorityClassName": "high", "containers": [{
                                                "name": "trainer", "env": [{"name": "X", "value": "1"}],
                                                "securityContext": {"runAsUser": 20000}}],
                                                     "volumes": [{"name": "scratch", "emptyDir": {}}]}}}},
}


def rendered_jobs(pool: dict, extra: dict) -> list[dict]:
    doc = copy.deepcopy(TINY)
    doc["spec"]["gpuPool"].update({k: v for k, v in pool.items() if v is not None})
    for key in [k for k, v in pool.items() if v is None]:
        doc["spec"]["gpuPool"].pop(key, None)
    for section, values in extra.items():
        doc["spec"].setdefault(section, {}).update(values)
    spec = parse_campaign(doc).spec
    decision = reconcile(spec, None, [], now=1000.0, seed=1)
    assert decision.launches, decision.status.message
    return [jobs.run_job("tiny", UID, "research", record, spec) for record in decision.launches]


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("pool", POOLS)
def test_trainer_pods_pass_the_restricted_pod_security_standard(pool: str, extra: str) -> None:
    for job in rendered_jobs(POOLS[pool], EXTRAS[extra]):
        template = job["spec"]["template"]
        assert restricted_violations(template) == [], job["metadata"]["name"]
        assert name_and_label_violations(job) == []
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False  # the trainer never holds an API credential
        assert not pod.get("serviceAccountName")
        (container,) = pod["containers"]
        assert not any("token" in (m.get("mountPath") or "").lower() for m in container["volumeMounts"])
        if pool == "multi-node":
            assert job["spec"]["completionMode"] == "Indexed"
        expected = "python" if extra == "override" else "torchrun" if pool != "cpu" else "flopwise-train"
        assert container["command"][0] == expected  # exec form: no shell unless the user's own override is one


def test_the_restricted_checker_catches_each_rule() -> None:
    """The checker itself must fail on each rule it claims to check (a checker that passes everything proves
    nothing): each mutation of a compliant template breaks exactly the named rule."""
    template = rendered_jobs(POOLS["cpu"], {})[0]["spec"]["template"]
    mutations = {
        "baseline/host namespaces": lambda p: p["spec"].update(hostNetwork=True),
        "baseline/privileged": lambda p: p["spec"]["containers"][0]["securityContext"].update(privileged=True),
        "baseline/capabilities": lambda p: p["spec"]["containers"][0]["securityContext"]["capabilities"].update(
            add=["SYS_ADMIN"]),
        "baseline/hostPath volume": lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "baseline/host ports": lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": 1,
                                                                                     "hostPort": 1}]),
        "baseline/seccomp": lambda p: p["spec"]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "baseline/sysctls": lambda p: p["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax",
                                                                                    "value": "1"}]),
        "restricted/allowPrivilegeEscalation": lambda p: p["spec"]["containers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation"),
        "restricted/runAsNonRoot": lambda p: p["spec"]["containers"][0]["securityContext"].update(
            runAsNonRoot=False),
        "restricted/runAsUser": lambda p: p["spec"]["containers"][0]["securityContext"].update(runAsUser=0),
        "restricted/capabilities": lambda p: p["spec"]["containers"][0]["securityContext"].update(capabilities={}),
    }
    for rule, mutate in mutations.items():
        broken = copy.deepcopy(template)
        mutate(broken)
        found = restricted_violations(broken)
        assert found and all(v.startswith(rule.split(":")[0]) or rule in v for v in found[:1]), (rule, found)


# ------------------------------------------------------------------------------------------ against the cluster
def audit_events(cp, user: str, offset: int) -> list[dict]:
    """The requests of ``user`` logged after byte ``offset``, one event per request (its audit ID): a WATCH is
    logged when its response starts and again only when it ends."""
    with open(cp.audit_log, "rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    events: dict[str, dict] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("user", {}).get("username") == user:
            events[event["auditID"]] = event  # the last stage seen wins (its response code is final)
    return list(events.values())


def calls_of(events: list[dict]) -> dict[tuple[str, str, str], int]:
    """(api group, resource[/subresource], verb) → count; non-resource URLs (discovery) as ("", URL, verb)."""
    calls: dict[tuple[str, str, str], int] = {}
    for event in events:
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            key = ("", event["requestURI"].split("?")[0], event["verb"])
        else:
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            key = (ref.get("apiGroup", ""), resource, event["verb"])
        calls[key] = calls.get(key, 0) + 1
    return calls


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


# Rules the operator holds without a campaign exercising them here, each with its reason.
UNUSED_BY_DESIGN = {
    ("flopwise.dev", "trainingcampaigns/finalizers", "update"): "checked by OwnerReferencesPermissionEnforcement "
    "when a Job's blockOwnerDeletion owner reference is set (not enabled on this test server)",
    ("flopwise.dev", "trainingcampaigns", "get"): "a campaign is read again after a 409 conflict (test_faults_cluster"
    "'s other writer)",
    ("batch", "jobs", "delete"): "cancelling a run (executor.cancel) when a campaign ends with runs in flight, and "
    "suspending one where the server has no Job suspension (test_spend_cluster)",
    ("batch", "jobs", "get"): "reading a Job before resuming it or lowering its deadline (test_spend_cluster: "
    "spec.suspend, Kueue preemption)",
    ("batch", "jobs", "patch"): "suspending or resuming a Job (spec.suspend, Kubernetes 1.22+) and lowering a "
    "preempted Job's deadline (test_spend_cluster)",
    ("", "configmaps", "list"): "listed only when a run's Job is missing, to tell lost (its ConfigMap exists) from "
    "never launched (the chaos and Job-deleted tests)",
    ("", "services", "create"): "rendezvous Services of multi-node runs, which need Indexed Jobs (Kubernetes 1.22+; "
    "this server is 1.20)",
    ("", "services", "delete"): "spec.cleanup of a multi-node run (Kubernetes 1.22+)",
    ("", "configmaps", "delete"): "spec.cleanup of a finished run (test_cleanup_cluster)",
    ("", "configmaps", "update"): "replacing a ConfigMap an earlier attempt at the run left behind "
                                  "(test_operator_queue.py)",
    ("events.k8s.io", "events", "create"): "events.k8s.io/v1: newer clients post events there",
}


def test_rbac_is_what_the_operator_calls_and_no_more(crd, apis, tmp_path) -> None:
    """Plays the node (Pod status) for a whole campaign run by the operator as a ServiceAccount bound to exactly
    `rbac.operator_role`; the API server's audit log then lists what that user called."""
    if getattr(crd, "audit_log", None) is None:
        crd.enable_audit_log()
    from conftest import run_operator
    from operator_harness import Node, check_finished, drive, tiny_campaign

    core, batch, _ = apis
    gen = run_operator(crd, tmp_path, as_service_account=True)
    operator = next(gen)
    try:
        ns = operator.namespace
        user = f"system:serviceaccount:{ns}:flopwise-operator"
        doc = tiny_campaign("audited", ns)
        crd.apply_yaml(yaml.safe_dump(doc))
        status = drive(crd, Node(core, batch, ns), ns, "audited", timeout=150)
        check_finished(status, doc["spec"]["budget"]["flops"])
    finally:
        next(gen, None)  # stops the operator: its WATCHes end, and are logged (a WATCH may log only then)
    crd.wait_for(lambda: any(e["verb"] == "watch" for e in audit_events(crd, user, 0)), timeout=20,
                 what="the operator's WATCHes in the audit log")
    events = audit_events(crd, user, 0)  # from the start: the operator's first LISTs and WATCHes too
    calls = calls_of(events)
    forbidden = [e for e in events if (e.get("responseStatus") or {}).get("code") == 403]
    sys.stderr.write(f"\n[rbac] {sum(calls.values())} requests by {user}: "
                     + ", ".join(f"{g or 'core'}/{r} {v}×{n}" for (g, r, v), n in sorted(calls.items())) + "\n")
    assert not forbidden, [(e["verb"], e.get("objectRef")) for e in forbidden[:5]]
    rules = granted(rbac.operator_rules())
    used = {key for key in calls if key[0] != "" or not key[1].startswith("/")}
    assert used <= rules, f"called without a rule (worked only by luck): {sorted(used - rules)}"
    assert set(UNUSED_BY_DESIGN) <= rules, f"reasons for rules no longer granted: {set(UNUSED_BY_DESIGN) - rules}"
    unused = rules - used - set(UNUSED_BY_DESIGN)
    assert not unused, f"granted but never used and not documented: {sorted(unused)}"
    assert calls, "the audit log recorded nothing for the operator"


def test_no_token_in_status_events_logs_or_metrics(crd, apis, tmp_path) -> None:
    """The operator authenticates with its ServiceAccount's bearer token: after a campaign (the test plays the
    node), that token, the admin's token and anything that looks like a credential must appear nowhere the
    operator writes — the campaign object, its events, its log, its metrics page (when it serves one)."""
    from cluster import free_port
    from conftest import run_operator
    from operator_harness import Node, campaign, drive, tiny_campaign

    core, batch, _ = apis
    metrics_port = free_port()
    gen = run_operator(crd, tmp_path, as_service_account=True, extra_args=(
        ["--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port)] if METRICS else []))
    operator = next(gen)
    try:
        cp, ns = crd, operator.namespace
        token = cp.service_account_token(ns, "flopwise-operator", create=False)
        doc = tiny_campaign("secretive", ns)
        cp.apply_yaml(yaml.safe_dump(doc))
        drive(cp, Node(core, batch, ns), ns, "secretive", timeout=150)
        places = {"campaign object": json.dumps(campaign(cp, ns, "secretive")),
                  "events": json.dumps(cp.kubectl_json("get", "events", "-n", ns))}
        if METRICS:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
                places["metrics"] = response.read().decode(errors="replace")
            assert "flopwise_" in places["metrics"]
    finally:
        next(gen, None)
    places["operator log"] = operator.log.read_text(errors="replace")
    payload = token.split(".")[1] if token.count(".") == 2 else token  # a JWT's claims, even without its signature
    for secret in (token, cp.admin_token, payload):
        for where, text in places.items():
            assert secret not in text, f"a credential leaked into the {where}"
    for where, text in places.items():
        lowered = text.lower()
        assert "bearer " not in lowered and "authorization" not in lowered and "eyj" not in lowered, where
    sys.stderr.write("\n[secrets] scanned " + ", ".join(f"{len(t)} B of {w}" for w, t in places.items())
                     + ": no token\n")
