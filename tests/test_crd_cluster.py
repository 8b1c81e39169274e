"""The generated TrainingCampaign CRD on the real kube-apiserver: accepted as a structural schema, defaults
applied, invalid campaigns rejected with the field named, printer columns served."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def crd(control_plane):
    control_plane.kubectl("apply", "-f", str(ROOT / "crds" / "trainingcampaign.yaml"))
    control_plane.wait_established("trainingcampaigns.flopwise.dev")
    control_plane.kubectl("create", "namespace", "crd-test", check=False)
    control_plane.kubectl("create", "namespace", "research", check=False)
    return control_plane


def example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def test_examples_are_accepted_and_defaulted(crd) -> None:
    for name in ("quickstart.yaml", "cluster-h100-50k.yaml"):
        doc = example(name)
        doc["metadata"]["namespace"] = doc["metadata"].get("namespace", "crd-test")
        crd.apply_yaml(yaml.safe_dump(doc))
    stored = crd.kubectl_json("get", "trainingcampaign", "quickstart", "-n", "crd-test")
    spec = stored["spec"]
    # defaults from the pydantic models, applied by the API server itself
    assert spec["gpuPool"]["gpuType"] == "cpu" and spec["gpuPool"]["gpusPerRun"] == 1
    assert spec["tuning"]["maxRetries"] == 1
    assert spec["trainer"]["image"].startswith("ghcr.io/flopwise/trainer")
    assert spec["ladder"]["sizes"] == 5
    assert spec["final"]["enabled"] is False
    # the short name and the category work
    names = crd.kubectl("get", "tc", "-A", "-o", "name").stdout.split()
    assert "trainingcampaign.flopwise.dev/quickstart" in names and "trainingcampaign.flopwise.dev/llm-50k" in names
    assert "quickstart" in crd.kubectl("get", "flopwise", "-A").stdout


@pytest.mark.parametrize(("path", "value", "field"), [
    ("budget.flops", -1.0, "spec.budget.flops"),
    ("budget.split", {"ladder": 1.5}, "spec.budget.split.ladder"),
    ("gpuPool.expectedMfu", 2.0, "spec.gpuPool.expectedMfu"),
    ("ladder.sizes", 2, "spec.ladder.sizes"),
    ("law", "kaplan", "spec.law"),
])
def test_invalid_campaigns_are_rejected_by_the_api_server_naming_the_field(crd, path, value, field) -> None:
    doc = copy.deepcopy(example("quickstart.yaml"))
    doc["metadata"]["name"] = "bad"
    node = doc["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    result = crd.apply_yaml(yaml.safe_dump(doc), namespace="crd-test", check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert crd.kubectl("get", "tc", "bad", "-n", "crd-test", check=False).returncode != 0


def test_status_subresource_and_printer_columns(crd) -> None:
    status = {"phase": "Ladder", "ledger": {"usedPercent": 12.5}, "targetParams": 482320, "predictedLoss": 1.93,
              "display": {"budgetUsed": "12.5%", "targetParams": "482K", "predictedLoss": "1.930", "runs": "3/19",
                          "spent": "$1,234", "backtestAre": "-"}}
    crd.kubectl("patch", "tc", "quickstart", "-n", "crd-test", "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}))
    table = crd.kubectl("get", "tc", "quickstart", "-n", "crd-test").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header == ["NAME", "PHASE", "BUDGET-USED", "TARGET-PARAMS", "PREDICTED-LOSS", "AGE"]
    assert row[:5] == ["quickstart", "Ladder", "12.5%", "482K", "1.930"]
    wide = crd.kubectl("get", "tc", "quickstart", "-n", "crd-test", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "PHASE", "BUDGET-USED", "TARGET-PARAMS", "PREDICTED-LOSS", "RUNS", "SPENT",
                               "BACKTEST-ARE", "AGE"]
    assert wide[1].split()[:8] == ["quickstart", "Ladder", "12.5%", "482K", "1.930", "3/19", "$1,234", "-"]
