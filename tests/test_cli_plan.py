"""`flopwise validate / plan / size / crd` through the real console script: bad input names the field and the
fix, exits non-zero, and never prints a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
FLOPWISE = [sys.executable, "-m", "flopwise"]


def flopwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOPWISE, *args], capture_output=True, text=True, timeout=120)


def write(tmp_path: Path, doc: object, name: str = "campaign.yaml") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


def quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def test_examples_validate_and_plan() -> None:
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        result = flopwise("validate", str(example))
        assert result.returncode == 0, result.stderr
        assert "valid" in result.stdout
    result = flopwise("plan", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    for text in ("target:", "ladder-c0-00", "round1-00", "round2-00", "total"):
        assert text in result.stdout


def test_a_plan_never_shows_a_published_law_loss_as_the_campaigns() -> None:
    """Chinchilla's loss is per SentencePiece token of MassiveText: for the byte-level quickstart it is no
    prediction at all (12.1 nats per byte), so the plan says why there is none; for a campaign with Chinchilla's
    vocabulary size it is shown as the prior's."""
    def loss_line(doc: dict) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            result = flopwise("plan", write(Path(tmp), doc))
        assert result.returncode == 0, result.stderr
        return next(x for x in result.stdout.splitlines() if x.startswith("predicted loss:"))

    for law in ("chinchilla-3", "epoch", "chinchilla-1"):  # with a loss law or an allocation rule alone
        doc = quickstart()
        doc["spec"]["law"] = law
        line = loss_line(doc)
        assert line.startswith("predicted loss: none until the campaign's own fit"), line
        assert not re.search(r"\d+\.\d{3}", line), line
        assert law == "chinchilla-1" or ("256" in line and "32,000" in line), line
    assert json.loads(flopwise("plan", "--json", str(QUICKSTART)).stdout)["target"].get("predictedLoss") is None
    doc = yaml.safe_load((ROOT / "examples" / "cluster-h100-50k.yaml").read_text())
    doc["spec"]["model"]["vocabSize"] = 32000
    line = loss_line(doc)
    assert "under the chinchilla-3 prior" in line and "not this campaign's" in line
    size = flopwise("size", "--flops", "1e21")
    assert "per token of MassiveText, SentencePiece with a 32,000-token vocabulary" in size.stdout


def test_plan_json_is_the_status_plan() -> None:
    result = flopwise("plan", "--json", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    from flopwise.api.status import Plan

    parsed = Plan.model_validate(plan)
    assert len(parsed.ladder.runs) >= 5 and parsed.planned_flops <= parsed.budget_flops


def _mutate(doc: dict, path: str, value: object) -> dict:
    node = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return doc


BAD_INPUTS = [
    ("negative budget", "spec.budget.flops", -1.0, "spec.budget.flops", "greater than 0"),
    ("infinite budget", "spec.budget.flops", float("inf"), "spec.budget.flops", "finite"),
    ("unknown GPU without peak", "spec.gpuPool", {"gpuType": "TPU-v9"}, "spec.gpuPool", "peakFlops"),
    ("shares over one", "spec.budget.split", {"ladder": 0.5, "round1": 0.3, "round2": 0.2, "final": 0.5},
     "spec.budget.split", "at most 1"),
    ("share above one", "spec.budget.split", {"ladder": 1.5}, "spec.budget.split.ladder", "less than or equal to 1"),
    ("budget too small", "spec.budget.flops", 1e8, "spec.budget", "raise the budget"),
    ("unknown field", "spec.budget.flopz", 1e20, "spec.budget.flopz", "remove it or fix its spelling"),
    ("missing dataset", "spec.dataset", None, "spec.dataset", ""),
    ("wrong type", "spec.gpuPool.gpusPerRun", "eight", "spec.gpuPool.gpusPerRun", "integer"),
    ("no budget at all", "spec.budget", {"split": {"ladder": 0.1}}, "spec.budget", "budget.flops and/or budget.usd"),
    ("dollars without price", "spec.budget", {"usd": 100}, "spec.budget.usd", "pricePerGpuHour"),
]


@pytest.mark.parametrize(("case", "path", "value", "field", "fix"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_the_field(tmp_path: Path, case: str, path: str, value: object, field: str, fix: str) -> None:
    doc = quickstart()
    if value is None:
        parent, _, key = path.rpartition(".")
        node = doc
        for part in parent.split("."):
            node = node[part]
        del node[key]
    else:
        _mutate(doc, path, value)
    for command in ("validate", "plan"):
        result = flopwise(command, write(tmp_path, doc))
        assert result.returncode != 0, (case, result.stdout)
        assert "Traceback" not in result.stderr + result.stdout, case
        assert field in result.stderr, (case, result.stderr)
        assert fix in result.stderr, (case, result.stderr)


@pytest.mark.parametrize(("case", "text"), [
    ("not yaml", "spec: [unclosed"),
    ("a list", "- 1\n- 2\n"),
    ("two documents", "a: 1\n---\nb: 2\n"),
    ("empty", ""),
    ("binary", "\x00\x01"),
])
def test_garbage_files_are_refused_cleanly(tmp_path: Path, case: str, text: str) -> None:
    result = flopwise("validate", write(tmp_path, text))
    assert result.returncode != 0, case
    assert "Traceback" not in result.stderr and result.stderr.strip(), case


def test_missing_file_is_refused_cleanly(tmp_path: Path) -> None:
    result = flopwise("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0 and "Traceback" not in result.stderr and "nope.yaml" in result.stderr


def test_size_json_matches_the_published_optimum() -> None:
    result = flopwise("size", "--flops", "5.76e23", "--law", "chinchilla-3", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert 38e9 <= out["params"] <= 43e9 and out["flops"] == 5.76e23
    assert out["tokens"] == pytest.approx(5.76e23 / (6 * out["params"]))


def test_size_from_dollars() -> None:
    result = flopwise("size", "--usd", "50000", "--gpu", "H100", "--mfu", "0.4", "--price", "2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["flops"] == pytest.approx(50000 / 2 * 3600 * 989e12 * 0.4)
    assert out["gpu_hours"] == pytest.approx(25000)
    assert out["params"] > 0 and out["tokens"] > 0


@pytest.mark.parametrize("args", [["--flops", "-5"], ["--usd", "10", "--gpu", "TPU"], [],
                                  ["--flops", "1e20", "--mfu", "2"]])
def test_size_bad_arguments(args: list[str]) -> None:
    result = flopwise("size", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr and result.stderr.strip()


def test_crd_command_prints_the_committed_file() -> None:
    result = flopwise("crd")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "crds" / "trainingcampaign.yaml").read_text()
