"""What `forge` shows people (forgegen.runtime.present): text rendered from the reports' JSON."""

from __future__ import annotations

from forgegen.runtime.present import rollout_report
from forgegen.runtime.rollout import RolloutResult

UID = "4c7e2a51-9b0d-4f3e-8a61-0d2f5c9e7b13"


def crash_loop_report() -> dict:
    """A crash-looping pod as the kubelet words it: the waiting message and the BackOff event
    both name the pod as NAME_NAMESPACE(UID) (`bash .ci/demo` showed this)."""
    return RolloutResult(
        outcome="failed", namespace="prod", kind="Deployment", name="api", container="api",
        reason="CrashLoopBackOff", pod="api-7d9f-x2k", failed_container="api", exit_code=3, restart_count=2,
        message=("container api keeps exiting with code 3 (Error); restarted 2 times since the rollout began. "
                 f"back-off 20s restarting failed container=api pod=api-7d9f-x2k_prod({UID})"),
        logs={"current": [], "previous": ["panic: db"]},
        events=[{"type": "Warning", "reason": "BackOff", "object": "Pod/api-7d9f-x2k", "count": 3,
                 "message": f"Back-off restarting failed container api in pod api-7d9f-x2k_prod({UID})",
                 "first_seen": "t0", "last_seen": "t1"}],
    ).to_json()


def test_rollout_failure_block_names_the_pod_once_and_never_its_uid() -> None:
    doc = crash_loop_report()
    text = rollout_report(doc)
    assert UID not in text
    assert "  pod api-7d9f-x2k, container api, exit code 3, restarts 2" in text
    assert "back-off 20s restarting failed container=api\n" in text
    assert "Pod/api-7d9f-x2k  BackOff: Back-off restarting failed container api (x3)" in text
    assert UID in doc["message"] and UID in doc["events"][0]["message"]  # the JSON keeps the kubelet's words
