"""Bad input, generated: hypothesis mutates the tiny campaign (random types, extreme numbers, huge and unicode
strings, shell and path tricks, missing and extra fields) and sends it through each door a campaign comes in by.

* `flopwise validate`: exit 0 with a plan within budget, or exit 2 with every line naming a field — never a
  traceback or an internal error;
* the models behind it: an accepted spec renders Jobs whose names and labels the API server takes, whose
  command is exec form (no shell but the user's own override) and whose Pods pass the restricted profile;
* the CRD schema on the real API server (server-side dry run): accepted, or refused with a message naming the
  field;
* the operator: specs the schema accepted, applied together to one operator, each end planned within budget or
  Failed / conditioned with a message naming a spec field — never stuck, and the operator never crashes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from flopwise.api.load import CampaignError, describe, parse_campaign
from flopwise.api.spec import TrainingCampaignSpec
from flopwise.cli import main
from flopwise.engine.machine import reconcile
from flopwise.kube import jobs
from flopwise.planning.plan import plan_campaign
from pod_security import name_and_label_violations, restricted_violations

BASE = yaml.safe_load((Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text())
BASE["spec"]["dataset"] = {"path": "/datasets/tiny", "claimName": "tiny-tokens"}
UID = "0b6c7a52-1111-2222-3333-444455556666"
FIELD = re.compile(r"^(spec|metadata|apiVersion|kind|status)\b|^\(top level\)")


def _leaf_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of the spec models, by wire (camelCase) name: objects and their leaves."""
    out = []
    for name, info in model.model_fields.items():
        path = (*prefix, info.alias or name)
        out.append(path)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.extend(_leaf_paths(sub, path))
    return out


PATHS = _leaf_paths(TrainingCampaignSpec)
NASTY = ["$(reboot)", "`id`", "; rm -rf / #", "a\nb", "\u202eevil",
         "../../etc/passwd",  # path-scan: not a path (a hostile name, never opened)
         "💥" * 20, "\x00", "-", "UPPER_case.dots", "x" * 64, "ünïcödé", "'\"", "--help", "0", " leading", "a" * 300]
ATOMS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 2, 3, 8, 64, 1000, 4096, 1e-300, 5e-324, 1e9, 1e10, 1e15, 1e18, 1e21, 1e25, 1e300,
                     2**31, 2**63, 2**64, 0.5, 0.999, 1.0]),
    st.text(max_size=24),
    st.sampled_from(NASTY),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=3), st.integers(500, 40_000)),
)
# maps of strings, as a node selector or resources are: keys and values that are (or almost are) label syntax
STRING_MAPS = st.dictionaries(st.sampled_from([*NASTY, "pool", "nvidia.com/gpu.product", "a/b/c", "/x", "x/", ""]),
                              st.sampled_from([*NASTY, "a100", "", "A100-SXM4-80GB"]), min_size=1, max_size=3)
VALUES = st.recursive(ATOMS | STRING_MAPS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _set(doc: dict, path: tuple[str, ...], value) -> None:
    node = doc["spec"]
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def _delete(doc: dict, path: tuple[str, ...]) -> None:
    node = doc["spec"]
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


MUTATION = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), VALUES),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("extra"), st.sampled_from([(), *PATHS]), st.tuples(st.text(min_size=1, max_size=12), ATOMS)),
)


@st.composite
def campaigns(draw, name: str = "fuzz") -> dict:
    """The tiny campaign with 0-4 random mutations (0: the valid base, so accepted specs are drawn too)."""
    doc = copy.deepcopy(BASE)
    doc["metadata"] = {"name": name}
    for op, path, value in draw(st.lists(MUTATION, max_size=4)):
        if op == "set":
            _set(doc, path, value)
        elif op == "delete":
            _delete(doc, path)
        else:
            key, atom = value
            _set(doc, (*path, key), atom)
    return doc


def _check_accepted(doc: dict) -> None:
    """An accepted campaign: planned within budget, its first Jobs valid, exec form and restricted."""
    campaign = parse_campaign(doc)
    spec = campaign.spec
    plan = plan_campaign(spec)
    assert plan.planned_flops <= plan.budget_flops * (1 + 1e-9), (plan.planned_flops, plan.budget_flops)
    decision = reconcile(spec, None, [], now=1000.0, seed=1)
    ledger = decision.status.ledger
    assert ledger.reserved_flops + ledger.spent_flops <= plan.budget_flops * (1 + 1e-9)
    for record in decision.launches:
        job = jobs.run_job(campaign.metadata.name, UID, "research", record, spec)
        assert name_and_label_violations(job) == [], name_and_label_violations(job)
        assert restricted_violations(job["spec"]["template"]) == []
        (container,) = job["spec"]["template"]["spec"]["containers"]
        if not spec.trainer.command:  # none, or empty: the default trainer
            assert container["command"][0] in ("flopwise-train", "torchrun")
            assert container["command"][-1] == jobs.SPEC_PATH
        else:
            assert container["command"] == spec.trainer.command  # the user's own exec form, untouched


VALIDATE_FIGURES = {"examples": 0, "accepted": 0, "rejected": 0}


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(doc=campaigns())
def test_validate_accepts_and_plans_or_names_the_field(doc: dict) -> None:
    """`flopwise validate FILE`, in process (as the console script runs it)."""
    VALIDATE_FIGURES["examples"] += 1
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f, allow_unicode=True)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", f.name])
    Path(f.name).unlink()
    assert code in (0, 2), (code, err.getvalue())
    if code == 0:
        VALIDATE_FIGURES["accepted"] += 1
        assert "valid" in out.getvalue()
        _check_accepted(doc)
        return
    VALIDATE_FIGURES["rejected"] += 1
    message = err.getvalue().removeprefix("error: ").strip()
    assert message and "Traceback" not in message
    for line in message.splitlines():  # a field, or the file itself (too large, not YAML)
        assert FIELD.match(line) or line.startswith(f"{f.name}: "), f"a problem that names no field: {line!r}"


def test_node_selector_and_toleration_syntax_is_checked_where_the_field_is_named() -> None:
    """Found by the property above: a node selector or toleration the API server refuses in a Pod (not label
    syntax) used to pass validate and the operator, and every Job of the campaign was then refused. Now the
    models refuse it, naming the field."""
    cases = {("nodeSelector", "bad key"): {"nodeSelector": {"bad key": "x"}},
             ("nodeSelector", "value"): {"nodeSelector": {"pool": "a100; reboot"}},
             ("nodeSelector", "prefix"): {"nodeSelector": {"a/b/c": "x"}},
             ("tolerations[0].key", ""): {"tolerations": [{"key": "$(id)", "operator": "Exists"}]},
             ("tolerations[0].value", ""): {"tolerations": [{"key": "k", "operator": "Equal", "value": "a b"}]}}
    for (field, _), pool in cases.items():
        doc = copy.deepcopy(BASE)
        doc["metadata"] = {"name": "labels"}
        doc["spec"]["gpuPool"].update(pool)
        try:
            parse_campaign(doc)
        except CampaignError as error:
            assert str(error).startswith(f"spec.gpuPool.{field}: "), str(error)
        else:
            raise AssertionError(f"accepted {pool}")
    doc = copy.deepcopy(BASE)
    doc["metadata"] = {"name": "labels"}
    doc["spec"]["gpuPool"].update(nodeSelector={"nvidia.com/gpu.product": "A100-SXM4-80GB", "pool": ""},
                                  tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    _check_accepted(doc)


def test_validate_reads_numbers_exactly_as_the_api_server_does(tmp_path) -> None:
    """Found by the CRD property: validate coerced what the server refuses (a boolean or a quoted number for a
    number field) — and PyYAML read `1e21` as a string, which kubectl reads as a number. Now both agree."""
    text = (Path(__file__).parent / "data" / "tiny-campaign.yaml").read_text()
    cases = {"flops: 6.0e+10": ("flops: 6e10", 0), "round1: 0.25": ("round1: false", 2),
             "spread: 6": ("spread: '6'", 2), "lrGridPoints: 3": ("lrGridPoints: 3.5", 2)}
    for before, (after, expected) in cases.items():
        path = tmp_path / "campaign.yaml"
        path.write_text(text.replace(before, after))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert main(["validate", str(path)]) == expected, (after, err.getvalue())
        if expected:
            assert err.getvalue().startswith("error: spec."), err.getvalue()


def test_validate_figures_were_collected() -> None:
    """Reports how many generated campaigns validate accepted and rejected (runs after the property)."""
    if VALIDATE_FIGURES["examples"]:
        sys.stderr.write(f"\n[bad input] validate: {VALIDATE_FIGURES}\n")
        assert VALIDATE_FIGURES["accepted"] > 0, "no generated campaign was valid: the generator is too wild"


NAMES = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z", fullmatch=True).filter(
    lambda n: ".." not in n and len(n) <= 253 and all(p and p[0].isalnum() and p[-1].isalnum()
                                                      for p in n.split(".")))


QUEUES = NAMES.filter(lambda n: len(n) <= 63)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(name=NAMES, run_id=st.text(min_size=1, max_size=200), queue=st.none() | QUEUES, extra=st.text(max_size=30))
def test_any_name_run_id_or_queue_makes_valid_names_and_labels(name: str, run_id: str, queue: str | None,
                                                               extra: str) -> None:
    """Any campaign name the API server accepts (a DNS subdomain up to 253 characters), any run id and any Kueue
    queue or priority-class name the models accept become a Job and ConfigMap whose names and label values the API
    server takes, and distinct run ids never collide."""
    doc = copy.deepcopy(BASE)
    doc["spec"]["gpuPool"]["queueName"] = queue
    doc["spec"]["gpuPool"]["priorityClass"] = queue
    spec = TrainingCampaignSpec.model_validate(doc["spec"])
    record = reconcile(spec, None, [], now=1000.0, seed=1).launches[0]
    for rid in (run_id, run_id + extra):
        record = record.model_copy(update={"run_id": rid})
        job = jobs.run_job(name, UID, "research", record, spec)
        assert name_and_label_violations(job) == []
        assert job["metadata"]["annotations"][jobs.ANNOTATION_RUN_ID] == rid  # the exact id is kept
    if extra:
        assert jobs.job_name(name, run_id) != jobs.job_name(name, run_id + extra)
        assert jobs.label_value(run_id) != jobs.label_value(run_id + extra)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(queue=st.text(min_size=1, max_size=80), field=st.sampled_from(["queueName", "priorityClass"]))
def test_a_kueue_name_that_is_no_kubernetes_name_is_refused_naming_the_field(queue: str, field: str) -> None:
    """Kueue reads the queue and priority class from labels: anything that is not an object name usable as a label
    value is refused by validation, naming the field, instead of by the API server at every Job."""
    doc = copy.deepcopy(BASE)
    doc["spec"]["gpuPool"][field] = queue
    valid = len(queue) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                                               queue) is not None
    try:
        TrainingCampaignSpec.model_validate(doc["spec"])
    except ValidationError as error:
        assert not valid, queue
        assert any(f"spec.gpuPool.{field}" in line for line in describe(error, ("spec",))), describe(error, ("spec",))
        return
    assert valid, queue


# ------------------------------------------------------------------------------------------ the API server
def _dry_run(custom, ns: str, doc: dict) -> tuple[bool, str]:
    from kubernetes.client.exceptions import ApiException

    body = copy.deepcopy(doc)
    body["metadata"]["namespace"] = ns
    try:
        custom.create_namespaced_custom_object("flopwise.dev", "v1alpha1", ns, "trainingcampaigns", body,
                                               dry_run="All")
        return True, ""
    except ApiException as error:
        assert error.status in (400, 422), (error.status, error.body[:500])
        return False, json.loads(error.body).get("message", "")


def _json_safe(doc: dict) -> bool:
    try:
        json.dumps(doc, allow_nan=False)
        return True
    except ValueError:
        return False


def test_crd_schema_accepts_or_names_the_field(crd, apis) -> None:
    """Server-side dry runs of generated campaigns: accepted, or refused with a message naming a spec field."""
    _, _, custom = apis
    ns = "default"
    seen = {"accepted": 0, "rejected": 0, "validate_passes_server_refuses": 0, "server_prunes_validate_refuses": 0}

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(doc=campaigns())
    @example(doc={**BASE, "metadata": {"name": "fuzz"},  # found by CI: an empty quantity the server refuses
                  "spec": {**BASE["spec"], "trainer": {"resources": {"requests": {"0": ""}}}}})
    def property_(doc: dict) -> None:
        ok, message = _dry_run(custom, ns, doc)
        seen["accepted" if ok else "rejected"] += 1
        if not ok:
            assert "spec." in message or "spec:" in message or "spec " in message, message[:400]
        try:
            parse_campaign(doc)
        except CampaignError as error:
            # The server drops unknown fields of a structural schema silently (1.20 has no field validation),
            # where validate refuses them: counted and reported, not a failure.
            if ok and "Extra inputs" in str(error):
                seen["server_prunes_validate_refuses"] += 1
            return
        if not ok:
            seen["validate_passes_server_refuses"] += 1
            raise AssertionError(f"`flopwise validate` passes what the API server refuses: {message[:400]}")

    t0 = time.monotonic()
    property_()
    sys.stderr.write(f"\n[bad input] CRD schema dry runs: {seen} in {time.monotonic() - t0:.1f} s\n")
    assert seen["accepted"] and seen["rejected"]


def test_operator_plans_or_names_the_field_for_generated_campaigns(crd, operator, apis) -> None:
    """Campaigns the schema accepted, applied together to one operator: each ends planned within its budget,
    or Failed / held by a condition whose message names a spec field; none is left without a status, and the
    operator process never dies."""
    _, _, custom = apis
    ns = operator.namespace
    picked: list[dict] = []

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(doc=campaigns())
    def collect(doc: dict) -> None:
        if len(picked) < 16 and _json_safe(doc) and _dry_run(custom, ns, doc)[0]:
            picked.append(doc)

    collect()
    assert len(picked) >= 8, len(picked)
    t0 = time.monotonic()
    for i, doc in enumerate(picked):
        doc["metadata"] = {"name": f"fuzz-{i:02d}", "namespace": ns}
        custom.create_namespaced_custom_object("flopwise.dev", "v1alpha1", ns, "trainingcampaigns", doc)

    def outcome(i: int) -> str | None:
        body = custom.get_namespaced_custom_object("flopwise.dev", "v1alpha1", ns, "trainingcampaigns",
                                                   f"fuzz-{i:02d}")
        status = body.get("status") or {}
        ledger = status.get("ledger") or {}
        if status.get("plan") and status.get("phase") not in (None, "Pending", "Failed"):
            budget = status["plan"]["budgetFlops"]
            used = ledger.get("reservedFlops", 0) + ledger.get("spentFlops", 0)
            assert used <= budget * (1 + 1e-9), (i, used, budget)
            assert math.isfinite(status["plan"]["plannedFlops"])
            return "planned"
        for condition in status.get("conditions") or []:
            blocking = (condition["type"] == "Failed" and condition["status"] == "True") or (
                condition["type"] in ("MultiNodeUnavailable",) and condition["status"] == "True")
            if blocking:
                assert "spec." in condition["message"], (i, condition)
                return "failed" if condition["type"] == "Failed" else "held"
        return None

    outcomes = crd.wait_for(lambda: (o := [outcome(i) for i in range(len(picked))]) and all(o) and o,
                            timeout=120, interval=1.0, what="every generated campaign planned or refused")
    assert operator.proc.poll() is None, "the operator died"
    log = operator.log.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    figures = {k: outcomes.count(k) for k in ("planned", "failed", "held")}
    sys.stderr.write(f"\n[bad input] operator: {len(picked)} generated campaigns → {figures} in "
                     f"{time.monotonic() - t0:.1f} s; tracebacks in its log: {tracebacks}\n")
    failing = sorted(set(re.findall(r"reconciling \('[^']+', '(fuzz-\d\d)'\) failed", log)))
    if tracebacks:
        stored = [custom.get_namespaced_custom_object("flopwise.dev", "v1alpha1", ns, "trainingcampaigns", n)
                  for n in failing]
        detail = "\n".join(json.dumps({"name": b["metadata"]["name"], "spec": b["spec"], "status": {
            k: v for k, v in (b.get("status") or {}).items() if k in ("phase", "message", "conditions", "runs")}})
            for b in stored)
        first = log.index("Traceback")
        raise AssertionError(f"the operator raised on {failing}:\n{log[max(0, first - 300):first + 2500]}\n{detail}")
