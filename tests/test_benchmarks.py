"""The benchmarks run (smallest sizes, one round) and print their figures as JSON: a benchmark that
crashes is caught here, not when someone next measures. Nothing about time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.nixenv import ROOT

pytestmark = pytest.mark.registry


def test_the_push_benchmark_runs_and_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "benchmarks/push.py", "--rounds", "1", "--base-mib", "1", "--payload-mib", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert figures["repush_unchanged_layer_bytes"] == 0  # re-push of an unchanged image uploads no layer
    for key in ("overhead_ratio", "overhead_ratio_push_with_skopeo", "overhead_ratio_vs_gunzip_plus_skopeo",
                "one_changed_layer_ratio_max"):
        assert figures[key] > 0, key
