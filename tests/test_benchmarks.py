"""Every benchmark script still finds what it imports from the project (the regroup once moved
``make_engine`` from under ``bench_gateway.py``, and nothing ran it until a re-measure)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
PROJECT = ("medimg_hub", "medimg_kernel", "medimg_federated", "medimg_voila", "benchlib")


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_a_benchmarks_project_imports_resolve(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT:
                    importlib.import_module(alias.name)
    assert not missing, f"{script.name} imports what the project no longer has: {missing}"
