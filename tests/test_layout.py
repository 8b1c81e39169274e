"""The design card's layout rules: the operator image never needs torch, the trainer image never needs kopf,
and nothing shadows Python's standard `operator` module."""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["flopwise.kube.handlers", "flopwise.kube.executor", "flopwise.engine.machine",
                                    "flopwise.cli", "flopwise.fitting.fit", "flopwise.planning.plan"])
def test_operator_side_never_imports_torch(module: str) -> None:
    modules = imported_after(f"import {module}")
    assert "torch" not in modules, module


@pytest.mark.parametrize("module", ["flopwise_trainer.train", "flopwise_trainer.cli"])
def test_trainer_never_imports_kopf_or_the_kubernetes_client(module: str) -> None:
    modules = imported_after(f"import {module}")
    assert "kopf" not in modules and "kubernetes" not in modules, module


def test_standard_operator_module_is_not_shadowed() -> None:
    out = subprocess.run([sys.executable, "-c", "import operator; print(operator.__file__)"], capture_output=True,
                         text=True, check=True, cwd=__import__("pathlib").Path(__file__).resolve().parents[1])
    assert "site-packages" not in out.stdout and out.stdout.strip().endswith("operator.py")
    assert "/operator/" not in out.stdout.replace("lib/python", "")


def test_every_module_imports_on_its_own() -> None:
    """Each module of the operator's package imports first, in an interpreter where no other flopwise module is
    loaded: an import cycle that only works in one order (`flopwise status` once met one) fails here."""
    code = """
import importlib, pkgutil, sys
import flopwise
names = sorted(m.name for m in pkgutil.walk_packages(flopwise.__path__, "flopwise.") if not m.name.endswith("__main__"))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "flopwise" or m.startswith("flopwise.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001
        failed.append(f"{name}: {error!r}")
print(len(names)); print("\\n".join(failed))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, *failed = out.stdout.strip().split("\n")
    assert int(count) > 50 and not [f for f in failed if f], failed
