"""`flopwise fit`: the happy path through the real entry point, and every bad CSV as one clean error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fitting_helpers import TRUE_LAW, campaign
from flopwise.cli import cli

ENTRY = [sys.executable, "-c", "import sys; from flopwise.cli import main; sys.exit(main())"]


def write_campaign(path: Path, noise: float = 0.005) -> Path:
    points = campaign(noise=noise, seed=11)
    rows = ["params,tokens,loss,run,step"]
    assert points.step is not None
    rows += [f"{n:.6g},{d:.6g},{y:.6f},{r},{int(s)}"
             for n, d, y, r, s in zip(points.params, points.tokens, points.loss, points.run, points.step, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fit_json_end_to_end(tmp_path: Path) -> None:
    csv = write_campaign(tmp_path / "points.csv")
    result = subprocess.run(
        [*ENTRY, "fit", str(csv), "--json", "--bootstrap", "40", "--budget-flops", "1e21", "--holdout-largest",
         "--min-tokens", "auto", "--balance", "--seed", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("E", "A", "B", "alpha", "beta", "n_points", "ci", "optimum", "backtest", "hygiene"):
        assert key in report, key
    assert report["n_points"] == 72 and report["mode"] == "full"
    assert set(report["ci"]) == {"E", "A", "B", "alpha", "beta"}
    for name, (low, high) in report["ci"].items():
        assert low <= report[name] <= high, name
    assert report["bootstrap"]["by_run"] is True
    truth = TRUE_LAW.compute_optimal(1e21)
    assert report["optimum"]["params"] == pytest.approx(truth.params, rel=0.5)
    low, high = report["optimum"]["ci"]["loss"]
    assert low <= report["optimum"]["loss"] <= high
    assert 0 <= report["backtest"]["are"] < 0.02


def test_fit_table_output(tmp_path: Path) -> None:
    csv = write_campaign(tmp_path / "points.csv")
    result = CliRunner().invoke(cli, ["fit", str(csv), "--budget-flops", "1e20"])
    assert result.exit_code == 0, result.output
    for text in ("param", "alpha", "72 points, mode full", "N_opt", "D_opt"):
        assert text in result.output


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("params,tokens\n1e7,2e8\n", "missing column(s) 'loss'"),
        ("", "empty file"),
        ("params,tokens,loss\n1e7,2e8,3.1\n2e7,4e8,x\n", "line 3, column 'loss' is 'x'"),
        ("params,tokens,loss\n1e7,2e8,3.1\n2e7,4e8,nan\n", "column 'loss' is nan"),
        ("params,tokens,loss\n1e7,0,3.1\n", "column 'tokens' must be > 0"),
        ("params,tokens,loss\n1e7,2e8,3.1\n2e7,4e8,3.0\n", "only 2 point(s)"),
        ("params,tokens,loss\n" + "".join(f"{n},{20 * n},{3 - k / 10}\n" for k, n in enumerate([1e7, 2e7] * 4)),
         "only 2 distinct model size(s)"),
    ],
)
def test_bad_csv_is_one_clean_error(tmp_path: Path, text: str, names: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["fit", str(path), "--json"])
    assert result.exit_code == 2
    assert names in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output and result.stdout == ""


def test_missing_file_through_the_entry_point(tmp_path: Path) -> None:
    result = subprocess.run([*ENTRY, "fit", str(tmp_path / "nope.csv")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr + result.stdout
