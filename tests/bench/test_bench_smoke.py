"""`python -m bench --quick` runs end to end and writes the documented results format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_eventstore_bench_writes_its_figures(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "eventstore", "--quick", "--results", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: a figure missed its target
    figures = json.loads((tmp_path / "eventstore.json").read_text())["figures"]
    assert len(figures) == 7
    for f in figures:
        assert set(f) >= {"name", "value", "unit", "target", "meets"}
        op, bound = f["target"].split()
        assert f["meets"] == (
            f["value"] >= float(bound) if op == ">=" else f["value"] <= float(bound)
        )
    assert (proc.returncode == 0) == all(f["meets"] for f in figures)


def test_an_unknown_benchmark_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope"], cwd=REPO, capture_output=True, timeout=60
    )
    assert proc.returncode == 2
