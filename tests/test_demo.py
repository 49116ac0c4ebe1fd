"""README's first command runs the example's main job: keep it working (examples/demo.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.fixtures.nixenv import ROOT

pytestmark = [pytest.mark.nix, pytest.mark.kube, pytest.mark.registry]


def test_demo_deploys_the_example_and_shows_a_failed_rollout_rolled_back() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "forge deploy api:staging: success" in proc.stderr
    # Which of the two the watcher sees first depends on timing: both name the crash.
    assert re.search(r"rollout of shop/Deployment/api FAILED: (CrashLoopBackOff|ContainerExited)", proc.stderr)
    assert "exit code 3" in proc.stderr
    assert "| api: fatal: DATABASE_URL is not set" in proc.stderr
    assert "rolled back to amd64-" in proc.stderr and ": success" in proc.stderr
    assert "GIT TAG" in proc.stdout
    # .ci/setup built the real control plane, so the demo runs on it and says so
    assert "runs on: real control plane: kube-apiserver/controller-manager/scheduler v1.34" in proc.stderr
    # Each step says when it started, each command how long it took, the failure how fast it came.
    assert re.search(r"^=== \[ *\d+\.\d s\] nix run \.#deploy:api$", proc.stderr, re.MULTILINE)
    assert re.search(r"^\(exit code 1, \d+\.\d s\)$", proc.stderr, re.MULTILINE)
    assert re.search(r"^verdict: rollout FAILED \d+\.\d s after Flux applied the commit$", proc.stderr, re.MULTILINE)
    # The error line is short, names the step and the outcome; the details are below it.
    error = next(line for line in proc.stderr.splitlines() if line.startswith("forge: error:"))
    assert len(error) <= 120, error
    assert re.fullmatch(r"forge: error: deploy of api to staging: rollout failed \(\w+\); rolled back to amd64-\w{7}", error)
    assert not re.search(r"pod=\S+\([0-9a-f-]{36}\)", proc.stderr.split("forge: error:")[1])
    # The failure block names the pod on its own line: the kubelet's NAME_NAMESPACE(UID) is shown nowhere.
    assert not re.search(r"\S+_\S+\([0-9a-f-]{36}\)", proc.stderr)
    # The last line says what was shown and that it ended as expected.
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("demo: ended as expected") and "rolled back" in last and len(last) <= 120
