"""A clone of the repository alone passes its tests: nothing tracked refers to a path outside the checkout.

The scanner looks at every tracked text file for three kinds of escape:
* a relative path (``../x``, ``../../x``) that, resolved from the file's folder, lands outside the repository;
* ``Path(__file__)`` climbing above the repository (``.parents[k]`` or a ``.parent`` chain longer than the
  file's depth), or a repository-root variable's ``.parent``;
* the old location of the anchor data (``shared/anchors``), or this workplace's absolute paths.
A line carrying ``path-scan: not a path`` is skipped (hostile input strings in the bad-input tests), and so is
this file, which holds the patterns themselves and plants escapes in a throwaway tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_MARK = "path-scan: not a path"
TEXT_SUFFIXES = {".py", ".sh", ".md", ".yaml", ".yml", ".toml", ".json", ".tpl", ".txt", ".cfg", ".ini", ""}
RELATIVE = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.\-/]*)")
PARENTS_INDEX = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"__file__\)\.resolve\(\)((?:\.parent)+)")
ROOT_PARENT = re.compile(r"\b(?:REPO|REPO_ROOT|ROOT|PROJECT_ROOT)\.parent\b")
FORBIDDEN = ("shared/anchors", "/work/main", "/work/shared")


def tracked_files(root: Path) -> list[Path]:
    """The files git tracks (every file under ``root`` when it is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [root / n for n in names]


def escapes(root: Path, path: Path) -> list[str]:
    """Each reference in ``path`` (a file under ``root``) to something outside ``root``, as 'file:line: text'."""
    if path.suffix not in TEXT_SUFFIXES or not path.is_file():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return []
    rel = path.relative_to(root)
    depth = len(rel.parts) - 1  # folders between the repository root and the file
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if SKIP_MARK in line:
            continue
        reasons = []
        for match in RELATIVE.finditer(line):
            target = (path.parent / match.group(1)).resolve()
            if not target.is_relative_to(root):
                reasons.append(f"{match.group(1)!r} resolves outside the repository")
        for match in PARENTS_INDEX.finditer(line):
            if int(match.group(1)) >= depth + 1:
                reasons.append(f"parents[{match.group(1)}] climbs above the repository")
        for match in PARENT_CHAIN.finditer(line):
            if match.group(1).count(".parent") > depth + 1:
                reasons.append("a .parent chain climbs above the repository")
        if ROOT_PARENT.search(line):
            reasons.append("the repository root's parent")
        reasons += [f"refers to {needle!r}" for needle in FORBIDDEN if needle in line]
        found += [f"{rel}:{number}: {reason}" for reason in reasons]
    return found


def test_no_tracked_file_refers_outside_the_checkout():
    problems = [p for f in tracked_files(REPO) if f.resolve() != Path(__file__).resolve() for p in escapes(REPO, f)]
    assert not problems, "references outside the checkout:\n" + "\n".join(problems)


def test_the_scanner_finds_each_kind_of_escape(tmp_path):
    """The scan above can fail: each kind of escape, planted in a throwaway tree, is reported."""
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "tests" / "t.py").write_text(
        "A = Path(__file__).resolve().parents[2] / 'x'\n"
        "B = Path(__file__).resolve().parent.parent.parent\n"
        "C = REPO.parent / 'shared'\n"
        "D = open('../../elsewhere.csv')\n"
        "E = 'shared/anchors/chinchilla'\n"
        "F = Path(__file__).resolve().parents[1]  # the repository itself: fine\n"
        "G = '../docs/ok.md'\n"
        "H = '../../etc/passwd'  # path-scan: not a path\n")
    (root / "docs" / "d.md").write_text("[ok](../tests/t.py) [bad](../../shared/docs/domain.md)\n")
    found = escapes(root, root / "tests" / "t.py") + escapes(root, root / "docs" / "d.md")
    assert [f.split(":")[1] for f in found if f.startswith("tests")] == ["1", "2", "3", "4", "5"]
    assert len([f for f in found if f.startswith("docs")]) == 1


def test_anchor_files_match_their_checksums():
    """Every shipped anchor file is listed in its folder's SHA256SUMS and matches it."""
    from flopwise.fitting.anchors import verified

    anchors = REPO / "tests" / "data" / "anchors"
    data = [p for p in anchors.rglob("*.csv")]
    assert {p.parent.name for p in data} == {"chinchilla", "hitchhiker"}
    for path in data:
        verified(path)
        assert (path.parent / "SOURCE.md").is_file(), f"{path.parent} needs a SOURCE.md"


def test_a_changed_anchor_file_is_refused(tmp_path):
    from flopwise.fitting.anchors import verified
    from flopwise.fitting.points import FitInputError

    source = REPO / "tests" / "data" / "anchors" / "hitchhiker"
    (tmp_path / "SHA256SUMS").write_text((source / "SHA256SUMS").read_text())
    changed = tmp_path / "opt_trajectories.csv"
    changed.write_bytes((source / "opt_trajectories.csv").read_bytes() + b"\n")
    with pytest.raises(FitInputError, match="sha256"):
        verified(changed)
