"""The CRD is generated from the pydantic models, and the committed file is exactly that output."""

from __future__ import annotations

from pathlib import Path

import yaml

from flopwise.api.crd import crd_manifest, crd_yaml, reference_markdown

CRD_FILE = Path(__file__).resolve().parents[1] / "crds" / "trainingcampaign.yaml"
REFERENCE_FILE = Path(__file__).resolve().parents[1] / "docs" / "crd-reference.md"


def test_committed_reference_is_current() -> None:
    stale = "docs/crd-reference.md is stale: run `flopwise crd --reference > docs/crd-reference.md`"
    assert REFERENCE_FILE.read_text() == reference_markdown(), stale
    for field in ("spec.budget.flops", "spec.gpuPool.peakFlops", "spec.dataset.tokens", "spec.tuning.lrGridPoints"):
        assert f"`{field}`" in REFERENCE_FILE.read_text()


def test_committed_crd_is_what_the_models_generate() -> None:
    stale = "crds/trainingcampaign.yaml is stale: run `flopwise crd > crds/trainingcampaign.yaml`"
    assert CRD_FILE.read_text() == crd_yaml(), stale


def _walk(node, path="schema"):
    yield path, node
    for key in ("properties",):
        for name, child in node.get(key, {}).items():
            yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural() -> None:
    """Every node typed, no $ref / anyOf / oneOf / allOf, OpenAPI v3.0 boolean exclusive bounds."""
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "const", "title"):
            assert banned not in node, (path, banned)
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, True), bool), path


def test_schema_states_bounds_defaults_and_columns() -> None:
    crd = yaml.safe_load(crd_yaml())
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    budget = spec["properties"]["budget"]["properties"]
    assert budget["flops"]["minimum"] == 0 and budget["flops"]["exclusiveMinimum"] is True
    assert budget["usd"]["exclusiveMinimum"] is True
    split = budget["split"]["properties"]
    for share in ("ladder", "round1", "round2", "final"):
        assert split[share]["minimum"] == 0 and split[share]["maximum"] == 1
        assert 0 <= split[share]["default"] <= 1
    assert sum(split[s]["default"] for s in split) <= 1
    pool = spec["properties"]["gpuPool"]
    assert pool["properties"]["expectedMfu"]["maximum"] == 1
    assert "peakFlops" in pool["properties"]
    assert "x-kubernetes-validations" not in pool  # kubectl refuses CEL rules on servers before 1.25
    cel_pool = crd_manifest(cel=True)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["gpuPool"]
    assert any("peakFlops" in rule["rule"] for rule in cel_pool["x-kubernetes-validations"])
    assert spec["properties"]["gpuPool"]["default"] == {}  # so nested defaults apply when gpuPool is omitted
    assert set(spec["required"]) == {"budget", "dataset"}
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"] == ["tc", "campaign"]
    assert "flopwise" in crd["spec"]["names"]["categories"]
    columns = {c["name"]: (c["jsonPath"], c["type"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]}
    assert columns == {  # display strings (status.display) beside the numbers, never raw floats
        "Phase": (".status.phase", "string", 0), "Budget-Used": (".status.display.budgetUsed", "string", 0),
        "Target-Params": (".status.display.targetParams", "string", 0),
        "Predicted-Loss": (".status.display.predictedLoss", "string", 0),
        "Runs": (".status.display.runs", "string", 1), "Spent": (".status.display.spent", "string", 1),
        "Backtest-ARE": (".status.display.backtestAre", "string", 1),
        "Age": (".metadata.creationTimestamp", "date", 0)}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for field in ("phase", "conditions", "plan", "ledger", "law", "prediction", "runs", "runCounts",
                  "observedGeneration", "tuning", "recommendation"):
        assert field in status, field
    condition = status["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "observedGeneration"} <= set(condition)
