"""The rollout watch loop against the Kubernetes stand-in, with the real ``kubernetes`` client.

Every failure the issue lists is scripted in the stand-in's kubelet and must be reported with
its reason, pod, container and evidence; successes must wait for the new pods; and the faults
(dropped watch, 410 Gone, API server restart, events out of order, a pod deleted and
replaced) must neither hide a failure nor let a success through early. No test asserts
wall-clock time: every wait is bounded by a deadline well above the scripted timings.
"""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api  # noqa: F401 - loaded here, not inside the first watch

from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.rollout import RolloutResult, watch_rollout
from tests.fixtures.kube import Kube, wait_until
from tests.kube_standin import (
    crash,
    create_container_error,
    image_pull_error,
    invalid_image_name,
    missing_secret,
    oom_killed,
    readiness_failing,
    ready,
    run_container_error,
    slow_start,
    unschedulable,
)

pytestmark = pytest.mark.kube

SAFETY = 25.0  # an upper bound so a broken watcher fails the test instead of hanging it
SURGE_ONE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def policy(**kw: Any) -> RolloutPlan:
    base = dict(deadline=SAFETY, restarts_tolerated=0, readiness_grace=30.0, scheduling_grace=30.0,
                rollback_on_failure=False)
    base.update(kw)
    return RolloutPlan(**base)


def watch(kube: Kube, kind: str = "Deployment", name: str = "web", *, image: str | None = None,
          pol: RolloutPlan | None = None, context: str | None = None, deadline: float | None = None,
          lines: list[str] | None = None) -> RolloutResult:
    return watch_rollout(kube.api(context), namespace="default",
                         workload=WorkloadPlan(kind=kind, name=name, container=name), expected_image=image,
                         policy=pol or policy(), deadline=deadline,
                         progress=None if lines is None else lines.append)


def in_background(fn: Callable[[], RolloutResult]) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


def ready_pods(kube: Kube, image: str) -> list[dict]:
    return [p for p in kube.pods() if p["spec"]["containers"][0]["image"] == image
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def lists_of(kube: Kube, resource: str) -> int:
    return sum(1 for _, method, path, q in kube.standin.requests()
               if method == "GET" and path.endswith(f"/{resource}") and q.get("watch") not in ("true", "1"))


# -- success ----------------------------------------------------------------------------------


def test_deployment_success_reports_kubectl_lines_and_the_running_image(kube: Kube) -> None:
    kube.deployment("web", "app:1", replicas=3, strategy=SURGE_ONE)
    kube.script("app:2", slow_start(0.2))
    kube.set_image("Deployment", "web", "app:2")
    lines: list[str] = []
    result = watch(kube, image="app:2", lines=lines)
    assert result.outcome == "success" and result.reason is None
    assert result.message == 'deployment "web" successfully rolled out'
    assert lines[-1] == 'deployment "web" successfully rolled out'
    assert any(line.startswith('Waiting for deployment "web" rollout to finish') for line in lines)
    # the verdict came when the new pods were really there, and the old ones gone
    assert len(ready_pods(kube, "app:2")) == 3 and not [p for p in kube.pods() if p["spec"]["containers"][0]["image"] == "app:1"
                                                       and not p["metadata"].get("deletionTimestamp")]
    doc = result.to_json()
    assert doc["image"] == "app:2" and doc["workload"]["revision"] == "2" and len(doc["workload"]["pods"]) == 3


def test_only_warning_events_are_listed_and_watched(kube: Kube) -> None:
    """A namespace holds many Normal events (Scheduled, Pulled, Started, ScalingReplicaSet...) that
    no verdict or report reads; the events stream asks the server for warnings only."""
    kube.deployment("web", "app:1", replicas=2)
    before = len(kube.standin.requests())
    kube.set_image("Deployment", "web", "app:2")
    assert watch(kube, image="app:2").outcome == "success"
    queries = [q for _, method, path, q in kube.standin.requests()[before:] if method == "GET" and path.endswith("/events")]
    assert queries and all(q.get("fieldSelector") == "type=Warning" for q in queries), queries
    assert any(e["type"] == "Normal" for e in kube.list("events"))  # there were Normal events to leave out


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_statefulset_and_daemonset_success(kube: Kube, kind: str) -> None:
    if kind == "StatefulSet":
        kube.statefulset("web", "app:1", replicas=2)
    else:
        kube.daemonset("web", "app:1")
    kube.script("app:2", slow_start(0.1))
    kube.set_image(kind, "web", "app:2")
    result = watch(kube, kind, image="app:2")
    assert result.outcome == "success", result.to_json()
    assert all(p["spec"]["containers"][0]["image"] == "app:2" for p in kube.pods() if not p["metadata"].get("deletionTimestamp"))


def test_slow_start_within_the_readiness_grace_succeeds(kube: Kube) -> None:
    kube.deployment("web", "app:1")
    kube.script("app:2", slow_start(0.6))
    kube.set_image("Deployment", "web", "app:2")
    lines: list[str] = []
    result = watch(kube, image="app:2", pol=policy(readiness_grace=10), lines=lines)
    assert result.outcome == "success"
    assert any("(Warning: Unhealthy - Readiness probe failed" in line for line in lines)


def test_restarts_within_the_tolerance_succeed(kube: Kube) -> None:
    kube.deployment("web", "app:1")
    kube.script("app:2", crash(after=0.05, exits=1, ready_after=0.05))
    kube.set_image("Deployment", "web", "app:2")
    assert watch(kube, image="app:2", pol=policy(restarts_tolerated=1)).outcome == "success"


def test_waits_for_the_expected_image_to_be_applied(kube: Kube) -> None:
    kube.deployment("web", "app:1")
    lines: list[str] = []
    fut = in_background(lambda: watch(kube, image="app:2", lines=lines))
    # Wait until the watcher has judged app:1 (listing pods is not enough: it may read the
    # Deployment after set_image and never see the old image).
    wait_until(lambda: any("to use image app:2" in line for line in list(lines)))
    kube.set_image("Deployment", "web", "app:2")  # Flux applies it after we started watching
    result = fut.result(SAFETY + 5)
    assert result.outcome == "success" and result.image == "app:2"
    assert any("to use image app:2" in line for line in result.progress)


def test_old_replicaset_pods_failing_do_not_fail_the_rollout(kube: Kube) -> None:
    kube.deployment("web", "app:1", replicas=2, strategy=SURGE_ONE)
    kube.script("app:2", slow_start(0.4))
    kube.set_image("Deployment", "web", "app:2")
    old = [p["metadata"]["name"] for p in kube.pods() if p["spec"]["containers"][0]["image"] == "app:1"]

    def crash_loop(p: dict) -> None:
        cs = p["status"]["containerStatuses"][0]
        cs.update(ready=False, restartCount=5, state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                  lastState={"terminated": {"exitCode": 1, "reason": "Error"}})
    for name in old:
        kube.standin.mutate("pods", "default", name, crash_loop, subresource="status")
    assert watch(kube, image="app:2").outcome == "success"


# -- failures ---------------------------------------------------------------------------------


SCENARIOS = {
    "crash": (crash(after=0.05, exit_code=3, logs=("starting api",), exit_logs=("panic: no DATABASE_URL",)),
              {"ContainerExited", "CrashLoopBackOff"}),
    "image-pull": (image_pull_error("not found"), {"ErrImagePull", "ImagePullBackOff"}),
    "invalid-name": (invalid_image_name(), {"InvalidImageName"}),
    "missing-secret": (missing_secret("db"), {"CreateContainerConfigError"}),
    "create-error": (create_container_error(), {"CreateContainerError"}),
    "run-error": (run_container_error(), {"RunContainerError"}),
    "oom": (oom_killed(after=0.05), {"OOMKilled"}),
    "unschedulable": (unschedulable(), {"Unschedulable"}),
    "readiness": (readiness_failing(), {"ReadinessProbeFailed"}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_failure_is_reported_with_reason_pod_and_evidence(kube: Kube, scenario: str) -> None:
    script, reasons = SCENARIOS[scenario]
    kube.deployment("web", "app:1", replicas=2)
    kube.script("app:bad", script)
    kube.set_image("Deployment", "web", "app:bad")
    # Times in pod status have whole seconds (metav1.Time), so a grace is at least ~2 s to mean
    # anything; short graces only where they are the point.
    result = watch(kube, image="app:bad", pol=policy(readiness_grace=2.0 if scenario == "readiness" else 20.0,
                                                     scheduling_grace=0.3))
    doc = result.to_json()
    assert doc["outcome"] == "failed" and doc["reason"] in reasons, doc
    new_pods = {p["metadata"]["name"] for p in kube.pods() if p["spec"]["containers"][0]["image"] == "app:bad"}
    assert doc["pod"] in new_pods and doc["container"] == "web"
    assert doc["workload"] == {"namespace": "default", "kind": "Deployment", "name": "web", "container": "web",
                               "revision": "2", "pods": doc["workload"]["pods"]}
    if scenario == "crash":
        assert doc["exit_code"] == 3 and doc["restart_count"] is not None
        assert "panic: no DATABASE_URL" in doc["logs"]["previous"] + doc["logs"]["current"]
    if scenario == "oom":
        assert doc["exit_code"] == 137
    if scenario in ("image-pull", "missing-secret"):
        assert "waiting to start" in doc["logs"]["errors"]["current"]
        assert any(e["reason"] == "Failed" for e in doc["events"])
    if scenario == "unschedulable":
        assert "Insufficient memory" in doc["message"]
    if scenario == "readiness":
        assert doc["message"].startswith("Readiness probe failed")


def test_progress_deadline_exceeded_is_reported(kube: Kube) -> None:
    kube.deployment("web", "app:1", progress_deadline=1)
    kube.script("app:stuck", readiness_failing())
    kube.set_image("Deployment", "web", "app:stuck")
    result = watch(kube, image="app:stuck", pol=policy(readiness_grace=SAFETY))
    assert (result.outcome, result.reason) == ("failed", "ProgressDeadlineExceeded")
    assert result.pod is None or result.pod.startswith("web-")


def test_statefulset_crash_is_reported(kube: Kube) -> None:
    kube.statefulset("web", "app:1", replicas=3)
    kube.script("app:bad", crash(after=0.05))
    kube.set_image("StatefulSet", "web", "app:bad")
    result = watch(kube, "StatefulSet", image="app:bad")
    assert result.outcome == "failed" and result.pod == "web-2"  # the first replaced, from the top


def test_deadline_ends_the_watch_with_the_evidence(kube: Kube) -> None:
    kube.deployment("web", "app:1")
    kube.script("app:stuck", readiness_failing())
    kube.set_image("Deployment", "web", "app:stuck")
    result = watch(kube, image="app:stuck", pol=policy(readiness_grace=SAFETY), deadline=0.5)
    assert (result.outcome, result.reason) == ("timeout", "DeadlineExceeded")
    assert result.pod is not None and result.logs["current"] == ["listening on :8080"]


def test_unreachable_api_times_out_saying_so(kube: Kube) -> None:
    result = watch(kube, context="elsewhere", deadline=2.0)  # room for a loaded machine to try
    assert (result.outcome, result.reason) == ("timeout", "ApiUnavailable")
    assert "could not be watched" in result.message


# -- faults -----------------------------------------------------------------------------------


def slow_rollout(kube: Kube, new_script: Any, *, replicas: int = 2) -> None:
    kube.deployment("web", "app:1", replicas=replicas, strategy=SURGE_ONE)
    kube.script("app:2", new_script)
    kube.set_image("Deployment", "web", "app:2")


def started_watching(kube: Kube) -> None:
    wait_until(lambda: kube.standin.call(lambda: len(kube.standin.api.active_watches)) >= 4)


def pod_watches(kube: Kube) -> list[dict]:
    return [q for _, _, path, q in kube.standin.requests() if path.endswith("/pods") and q.get("watch") == "true"]


def test_dropped_watch_connections_resume_from_the_last_version(kube: Kube) -> None:
    slow_rollout(kube, slow_start(0.5))
    fut = in_background(lambda: watch(kube, image="app:2"))
    started_watching(kube)
    for i in range(3):
        kube.standin.drop_watches()
        wait_until(lambda: len(pod_watches(kube)) >= i + 2)  # the watcher came back
    result = fut.result(SAFETY + 5)
    assert result.outcome == "success" and len(ready_pods(kube, "app:2")) == 2
    assert lists_of(kube, "pods") == 1  # resumed from the resourceVersion: no re-list needed
    resumed = pod_watches(kube)
    assert len(resumed) >= 4 and all(q.get("resourceVersion") for q in resumed)


def test_410_gone_relists_and_still_catches_the_failure(kube: Kube) -> None:
    slow_rollout(kube, crash(after=0.6, exit_code=4))
    fut = in_background(lambda: watch(kube, image="app:2"))
    started_watching(kube)
    kube.standin.create("configmaps", {"metadata": {"name": "bump"}}, "default")  # the watched versions fall behind
    kube.standin.compact()
    kube.standin.drop_watches()
    result = fut.result(SAFETY + 5)
    assert (result.outcome, result.exit_code) == ("failed", 4)
    assert lists_of(kube, "pods") >= 2


def test_api_server_restart_during_the_rollout(kube: Kube) -> None:
    slow_rollout(kube, crash(after=0.3, exit_code=5))
    fut = in_background(lambda: watch(kube, image="app:2"))
    started_watching(kube)
    kube.standin.restart(down_for=0.6)  # the crash happens while the API is down
    result = fut.result(SAFETY + 5)
    assert (result.outcome, result.exit_code) == ("failed", 5)


def test_api_server_restart_does_not_report_success_early(kube: Kube) -> None:
    slow_rollout(kube, slow_start(0.4), replicas=3)
    fut = in_background(lambda: watch(kube, image="app:2"))
    started_watching(kube)
    kube.standin.restart(down_for=0.3)
    result = fut.result(SAFETY + 5)
    assert result.outcome == "success" and len(ready_pods(kube, "app:2")) == 3
    assert set(result.pods) == {p["metadata"]["name"] for p in ready_pods(kube, "app:2")}


def test_events_out_of_order_still_give_the_right_verdict(kube: Kube) -> None:
    kube.standin.set_settings(event_jitter=(0.0, 0.4), seed=7)
    kube.deployment("web", "app:1", replicas=2)
    kube.script("app:sick", readiness_failing("Readiness probe failed: HTTP probe failed with statuscode: 500"))
    kube.set_image("Deployment", "web", "app:sick")
    result = watch(kube, image="app:sick", pol=policy(readiness_grace=2.0))
    assert (result.outcome, result.reason) == ("failed", "ReadinessProbeFailed")
    assert result.message == "Readiness probe failed: HTTP probe failed with statuscode: 500"
    assert all(e["object"] != "Pod/" + p["metadata"]["name"] for e in result.events
               for p in kube.pods() if p["spec"]["containers"][0]["image"] == "app:1")


def test_late_warning_events_about_old_pods_do_not_fail_a_good_rollout(kube: Kube) -> None:
    kube.standin.set_settings(event_jitter=(0.2, 0.5), seed=3)
    kube.script("app:1", readiness_failing())  # the old version was unhealthy: its events trickle in late
    kube.deployment("web", "app:1", replicas=2, wait=False)
    kube.script("app:2", ready(0.05))
    kube.set_image("Deployment", "web", "app:2")
    result = watch(kube, image="app:2", pol=policy(readiness_grace=2.0))
    assert result.outcome == "success"


def test_a_pod_deleted_and_replaced_mid_rollout_is_waited_for(kube: Kube) -> None:
    slow_rollout(kube, slow_start(0.5))
    fut = in_background(lambda: watch(kube, image="app:2"))
    first = wait_until(lambda: ready_pods(kube, "app:2"))[0]["metadata"]["name"]
    kube.standin.delete("pods", "default", first)
    result = fut.result(SAFETY + 5)
    assert result.outcome == "success"
    assert first not in result.pods and len(result.pods) == 2
    assert {p["metadata"]["name"] for p in ready_pods(kube, "app:2")} == set(result.pods)


def test_a_crashing_pod_deleted_and_replaced_still_fails(kube: Kube) -> None:
    slow_rollout(kube, crash(after=0.4, exit_code=6), replicas=1)
    fut = in_background(lambda: watch(kube, image="app:2"))
    victim = wait_until(lambda: [p for p in kube.pods() if p["spec"]["containers"][0]["image"] == "app:2"])[0]
    kube.standin.delete("pods", "default", victim["metadata"]["name"])
    result = fut.result(SAFETY + 5)
    assert (result.outcome, result.exit_code) == ("failed", 6)
    assert result.pod != victim["metadata"]["name"]


# -- the command entry point ------------------------------------------------------------------


def test_run_rollout_prints_progress_and_returns_the_report(kube: Kube) -> None:
    from forgegen.runtime.rollout import run_rollout
    from tests.test_rollout_cli_plan import plan_for

    kube.deployment("api", "app:1")
    kube.script("app:bad", crash(after=0.05, exit_logs=("boom",)))
    kube.set_image("Deployment", "api", "app:bad")
    err = io.StringIO()
    doc = run_rollout(plan_for(kube.kubeconfig), "api", "staging", json_output=False, stream=err).to_json()
    assert doc["outcome"] == "failed" and doc["service"] == "api" and doc["environment"] == "staging"
    text = err.getvalue()
    assert "rollout of default/Deployment/api FAILED" in text and "| boom" in text
    assert "\x1b[" not in text  # not a terminal: plain lines, no live display


# -- issue 11: re-watching, OnDelete ----------------------------------------------------------


def test_a_re_watch_does_not_count_restarts_from_before_it_began(kube: Kube) -> None:
    kube.deployment("web", "app:1")
    kube.script("app:2", crash(after=0.05, exits=1, ready_after=0.05))
    kube.set_image("Deployment", "web", "app:2")
    assert watch(kube, image="app:2", pol=policy(restarts_tolerated=1)).outcome == "success"
    # `forge rollout` later, with no tolerance: the pod restarted once before this watch began
    assert watch(kube, image="app:2", pol=policy(restarts_tolerated=0)).outcome == "success"


def test_on_delete_daemonset_is_pending_until_its_pods_are_deleted(kube: Kube) -> None:
    from forgegen.errors import EXIT_PENDING, RolloutPending, exit_code
    from forgegen.runtime.rollout import raise_for_outcome

    kube.daemonset("web", "app:1")
    kube.standin.mutate("daemonsets", "default", "web",
                        lambda o: o["spec"].__setitem__("updateStrategy", {"type": "OnDelete"}))
    kube.script("app:2", ready())
    kube.set_image("DaemonSet", "web", "app:2")
    result = watch(kube, "DaemonSet", image="app:2")
    assert result.outcome == "pending-on-delete" and "replaced only when deleted" in result.message
    with pytest.raises(RolloutPending) as err:
        raise_for_outcome(result)
    assert exit_code(err.value) == EXIT_PENDING == 4
    for p in kube.pods("web"):
        kube.standin.delete("pods", "default", p["metadata"]["name"])
    result = watch(kube, "DaemonSet", image="app:2")
    assert result.outcome == "success", result.to_json()
