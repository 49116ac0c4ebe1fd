"""The pure half of the rollout watcher: snapshot -> status (forgegen.runtime.rollout.assess).

Snapshots are built by hand here, object by object, in the shape the API returns, so every
branch of the verdict is pinned without a cluster. The loop is tested against the stand-in in
test_rollout_watch.py.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC

import pytest

from forgegen.errors import RolloutFailed, RolloutTimeout
from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.present import rollout_report as render_report
from forgegen.runtime.rollout import (
    FATAL_WAITING,
    RolloutResult,
    Snapshot,
    assess,
    raise_for_outcome,
    same_image,
)

NOW = 1_700_000_000.0
POLICY = RolloutPlan(deadline=None, restarts_tolerated=0, readiness_grace=60, scheduling_grace=30,
                     rollback_on_failure=False)
DEPLOY = WorkloadPlan(kind="Deployment", name="api", container="api")


def ts(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def template(image: str = "reg/api:v2") -> dict:
    return {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": image}]}}


def deployment(*, replicas: int = 2, updated: int = 2, total: int = 2, available: int = 2, generation: int = 2,
               observed: int = 2, image: str = "reg/api:v2", progressing: str = "NewReplicaSetAvailable") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "prod", "uid": "d-uid", "generation": generation,
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "api"}}, "template": template(image),
                     "progressDeadlineSeconds": 600},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "availableReplicas": available, "readyReplicas": available,
                       "conditions": [{"type": "Progressing", "status": "False" if progressing == "ProgressDeadlineExceeded" else "True",
                                       "reason": progressing, "message": 'ReplicaSet "api-new" has timed out progressing.'}]}}


def replicaset(name: str, uid: str, image: str, revision: str, *, replicas: int = 2, available: int = 2) -> dict:
    t = template(image)
    t["metadata"]["labels"]["pod-template-hash"] = name.split("-")[-1]
    return {"metadata": {"name": name, "namespace": "prod", "uid": uid,
                         "annotations": {"deployment.kubernetes.io/revision": revision},
                         "ownerReferences": [{"uid": "d-uid", "kind": "Deployment", "name": "api", "controller": True}]},
            "spec": {"replicas": replicas, "template": t},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}


def container(*, image: str = "reg/api:v2", ready: bool = True, restarts: int = 0, state: dict | None = None,
              last: dict | None = None) -> dict:
    return {"name": "api", "image": image, "imageID": "", "ready": ready, "restartCount": restarts,
            "state": state if state is not None else {"running": {"startedAt": ts(NOW - 100)}},
            "lastState": last or {}}


def pod(name: str, owner_uid: str, *, ready: bool = True, containers: list[dict] | None = None,
        conditions: list[dict] | None = None, deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "prod", "uid": f"uid-{name}", "creationTimestamp": ts(NOW - 100),
            "labels": {"app": "api"}, "ownerReferences": [{"uid": owner_uid, "kind": "ReplicaSet", "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = ts(NOW)
    conds = conditions if conditions is not None else [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "spec": {"containers": [{"name": "api", "image": "reg/api:v2"}]},
            "status": {"phase": "Running", "conditions": conds,
                       "containerStatuses": containers if containers is not None else [container(ready=ready)]}}


def event(pod_name: str, reason: str, message: str, at: float, *, type_: str = "Warning", n: int = 0) -> dict:
    return {"metadata": {"name": f"{pod_name}.{reason}.{n}", "uid": f"ev-{pod_name}-{reason}-{n}"},
            "involvedObject": {"kind": "Pod", "name": pod_name, "uid": f"uid-{pod_name}",
                               "fieldPath": "spec.containers{api}"},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": ts(at), "lastTimestamp": ts(at)}


def snapshot(d: dict, pods: list[dict], *, old_pods: list[dict] = (), events: list[dict] = ()) -> Snapshot:
    snap = Snapshot()
    snap.replace("workload", [d])
    snap.replace("replicasets", [replicaset("api-new", "rs-new", "reg/api:v2", "2"),
                                 replicaset("api-old", "rs-old", "reg/api:v1", "1", replicas=0, available=0)])
    snap.replace("pods", list(pods) + list(old_pods))
    snap.replace("events", list(events))
    return snap


def healthy() -> list[dict]:
    return [pod("api-new-a", "rs-new"), pod("api-new-b", "rs-new")]


# -- success and waiting ----------------------------------------------------------------------


def test_done_when_counts_pods_and_image_agree() -> None:
    st = assess(snapshot(deployment(), healthy()), DEPLOY, POLICY, "reg/api:v2", NOW)
    assert st.state == "done" and st.message == 'deployment "api" successfully rolled out'
    assert st.revision == "2" and st.new_pods == ("api-new-a", "api-new-b")


def test_waits_until_the_spec_update_is_observed() -> None:
    st = assess(snapshot(deployment(observed=1), healthy()), DEPLOY, POLICY, None, NOW)
    assert (st.state, st.message) == ("progressing", "Waiting for deployment spec update to be observed...")


@pytest.mark.parametrize(("counts", "message"), [
    (dict(updated=1), 'Waiting for deployment "api" rollout to finish: 1 out of 2 new replicas have been updated...'),
    (dict(total=3), 'Waiting for deployment "api" rollout to finish: 1 old replicas are pending termination...'),
    (dict(available=1), 'Waiting for deployment "api" rollout to finish: 1 of 2 updated replicas are available...'),
])
def test_progress_messages_use_kubectl_wording(counts: dict, message: str) -> None:
    st = assess(snapshot(deployment(**counts), healthy()), DEPLOY, POLICY, None, NOW)
    assert (st.state, st.message) == ("progressing", message)


def test_not_done_while_an_old_pod_is_still_active_even_if_counts_say_so() -> None:
    old = [pod("api-old-x", "rs-old")]
    assert assess(snapshot(deployment(), healthy(), old_pods=old), DEPLOY, POLICY, None, NOW).state == "progressing"
    terminating = [pod("api-old-x", "rs-old", deleting=True)]
    assert assess(snapshot(deployment(), healthy(), old_pods=terminating), DEPLOY, POLICY, None, NOW).state == "done"


def test_not_done_when_the_pod_view_lags_the_status() -> None:
    """A replaced pod that is not ready yet keeps the rollout open although the status says done."""
    pods = [pod("api-new-a", "rs-new"), pod("api-new-c", "rs-new", ready=False,
                                            containers=[container(ready=False, state={"running": {"startedAt": ts(NOW - 1)}})])]
    st = assess(snapshot(deployment(), pods), DEPLOY, POLICY, None, NOW)
    assert st.state == "progressing" and "1 of 2 updated replicas are ready" in st.message


def test_waits_for_the_expected_image_then_checks_the_running_one() -> None:
    st = assess(snapshot(deployment(image="reg/api:v1"), healthy()), DEPLOY, POLICY, "reg/api:v2", NOW)
    assert st.state == "progressing" and "to use image reg/api:v2" in st.message
    wrong = [pod("api-new-a", "rs-new", containers=[container(image="reg/api:v0")]), pod("api-new-b", "rs-new")]
    st = assess(snapshot(deployment(), wrong), DEPLOY, POLICY, "reg/api:v2", NOW)
    assert st.state == "failed" and st.failure.reason == "ImageMismatch" and st.failure.pod == "api-new-a"


def test_missing_container_name_fails_with_the_names_it_has() -> None:
    st = assess(snapshot(deployment(), healthy()), WorkloadPlan(kind="Deployment", name="api", container="web"),
                POLICY, None, NOW)
    assert st.failure.reason == "ContainerNotFound" and "(it has: api)" in st.failure.message


def test_workload_missing_is_waiting() -> None:
    st = assess(Snapshot(), DEPLOY, POLICY, None, NOW)
    assert st.state == "progressing" and st.message == 'Waiting for deployment "api" to exist...'


# -- failures ---------------------------------------------------------------------------------


def test_progress_deadline_exceeded_fails() -> None:
    st = assess(snapshot(deployment(available=1, progressing="ProgressDeadlineExceeded"), healthy()),
                DEPLOY, POLICY, None, NOW)
    assert st.failure.reason == "ProgressDeadlineExceeded"
    assert st.failure.message.startswith('deployment "api" exceeded its progress deadline')


@pytest.mark.parametrize("reason", FATAL_WAITING)
def test_fatal_waiting_reasons_fail_at_once(reason: str) -> None:
    bad = pod("api-new-b", "rs-new", ready=False,
              containers=[container(ready=False, state={"waiting": {"reason": reason, "message": f"why {reason}"}})])
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), bad]), DEPLOY, POLICY, None, NOW)
    assert st.state == "failed"
    assert (st.failure.reason, st.failure.pod, st.failure.container, st.failure.message) == (
        reason, "api-new-b", "api", f"why {reason}")


def crashing(restarts: int, *, code: int = 1, reason: str = "Error") -> dict:
    return pod("api-new-b", "rs-new", ready=False, containers=[container(
        ready=False, restarts=restarts,
        state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
        last={"terminated": {"exitCode": code, "reason": reason}})])


def test_crash_loop_fails_with_exit_code_and_restarts() -> None:
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), crashing(1, code=3)]),
                DEPLOY, POLICY, None, NOW)
    f = st.failure
    assert (f.reason, f.pod, f.container, f.exit_code, f.restart_count) == ("CrashLoopBackOff", "api-new-b", "api", 3, 1)


def test_restarts_within_tolerance_keep_waiting_beyond_fail() -> None:
    tolerant = dataclasses.replace(POLICY, restarts_tolerated=3)
    assert assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), crashing(3)]),
                  DEPLOY, tolerant, None, NOW).state == "progressing"
    assert assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), crashing(4)]),
                  DEPLOY, tolerant, None, NOW).failure.reason == "CrashLoopBackOff"


def test_first_non_zero_exit_fails_before_crash_loop_back_off() -> None:
    exited = pod("api-new-b", "rs-new", ready=False, containers=[container(
        ready=False, state={"terminated": {"exitCode": 2, "reason": "Error"}})])
    f = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), exited]), DEPLOY, POLICY, None, NOW).failure
    assert (f.reason, f.exit_code, f.restart_count) == ("ContainerExited", 2, 0)
    assert f.message == "container api exited with code 2; restarted 0 times"


def test_oom_killed_is_named() -> None:
    oom = pod("api-new-b", "rs-new", containers=[container(
        restarts=1, last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})])
    f = assess(snapshot(deployment(), [pod("api-new-a", "rs-new"), oom]), DEPLOY, POLICY, None, NOW).failure
    assert (f.reason, f.exit_code, f.restart_count) == ("OOMKilled", 137, 1)
    assert "too much memory" in f.message


def test_unschedulable_fails_after_the_scheduling_grace() -> None:
    def pending(since: float) -> dict:
        return pod("api-new-b", "rs-new", ready=False, containers=[], conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient cpu.", "lastTransitionTime": ts(since)}])
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), pending(NOW - 10)]), DEPLOY, POLICY, None, NOW)
    assert st.state == "progressing" and "(Warning: Unschedulable - 0/3 nodes" in st.message
    assert st.wake_at == pytest.approx(NOW - 10 + 30)
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), pending(NOW - 31)]), DEPLOY, POLICY, None, NOW)
    assert (st.failure.reason, st.failure.message) == ("Unschedulable", "0/3 nodes are available: 3 Insufficient cpu.")


def test_readiness_fails_after_the_grace_with_the_newest_probe_message() -> None:
    def unready(started: float) -> dict:
        return pod("api-new-b", "rs-new", ready=False, containers=[container(
            ready=False, state={"running": {"startedAt": ts(started)}})])
    # events arrive in any order: the newest by timestamp is the one shown
    events = [event("api-new-b", "Unhealthy", "Readiness probe failed: 503", NOW - 5, n=2),
              event("api-new-b", "Unhealthy", "Readiness probe failed: connection refused", NOW - 50, n=1)]
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), unready(NOW - 20)], events=events),
                DEPLOY, POLICY, None, NOW)
    assert st.state == "progressing" and st.message.endswith("(Warning: Unhealthy - Readiness probe failed: 503)")
    assert st.wake_at == pytest.approx(NOW - 20 + 60)
    st = assess(snapshot(deployment(available=1), [pod("api-new-a", "rs-new"), unready(NOW - 61)], events=events),
                DEPLOY, POLICY, None, NOW)
    assert (st.failure.reason, st.failure.message) == ("ReadinessProbeFailed", "Readiness probe failed: 503")


OLD_POD_STATES = {
    "crash-loop": dict(ready=False, containers=[container(ready=False, restarts=9, state={"waiting": {"reason": "CrashLoopBackOff"}},
                                                          last={"terminated": {"exitCode": 1, "reason": "Error"}})]),
    "image-pull": dict(ready=False, containers=[container(ready=False, state={"waiting": {"reason": "ImagePullBackOff"}})]),
    "oom": dict(containers=[container(restarts=4, last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})]),
    "unschedulable": dict(ready=False, containers=[], conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": ts(NOW - 999)}]),
    "unready": dict(ready=False, containers=[container(ready=False, state={"running": {"startedAt": ts(NOW - 999)}})]),
}


@pytest.mark.parametrize(("first", "second"), list(itertools.combinations_with_replacement(sorted(OLD_POD_STATES), 2)))
def test_old_replicaset_pods_never_count_against_the_rollout(first: str, second: str) -> None:
    olds = [pod(f"api-old-{i}", "rs-old", deleting=True, **OLD_POD_STATES[s]) for i, s in enumerate((first, second))]
    events = [event(p["metadata"]["name"], "BackOff", "Back-off restarting failed container", NOW - 1) for p in olds]
    st = assess(snapshot(deployment(), healthy(), old_pods=olds, events=events), DEPLOY, POLICY, None, NOW)
    assert st.state == "done"
    active = [pod(f"api-old-{i}", "rs-old", **OLD_POD_STATES[s]) for i, s in enumerate((first, second))]
    st = assess(snapshot(deployment(total=4), healthy(), old_pods=active, events=events), DEPLOY, POLICY, None, NOW)
    assert st.state == "progressing"


# -- StatefulSet and DaemonSet ----------------------------------------------------------------


def statefulset(*, ready: int = 3, updated: int = 3, partition: int = 0, strategy: str = "RollingUpdate") -> dict:
    return {"metadata": {"name": "db", "uid": "s-uid", "generation": 2},
            "spec": {"replicas": 3, "template": template(), "updateStrategy": {
                "type": strategy, **({"rollingUpdate": {"partition": partition}} if strategy == "RollingUpdate" else {})}},
            "status": {"observedGeneration": 2, "readyReplicas": ready, "updatedReplicas": updated,
                       "currentRevision": "db-new" if updated == 3 else "db-old", "updateRevision": "db-new"}}


def sts_pod(i: int, rev: str, **kw: object) -> dict:
    p = pod(f"db-{i}", "s-uid", **kw)
    p["metadata"]["labels"]["controller-revision-hash"] = rev
    return p


STS = WorkloadPlan(kind="StatefulSet", name="db", container="api")


def test_statefulset_done_waiting_and_partition() -> None:
    snap = Snapshot()
    snap.replace("workload", [statefulset()])
    snap.replace("pods", [sts_pod(i, "db-new") for i in range(3)])
    st = assess(snap, STS, POLICY, None, NOW)
    assert (st.state, st.message) == ("done", "statefulset rolling update complete 3 pods at revision db-new...")
    snap.replace("workload", [statefulset(ready=2, updated=2)])
    snap.replace("pods", [sts_pod(0, "db-old"), sts_pod(1, "db-new"), sts_pod(2, "db-new", ready=False,
                 containers=[container(ready=False, state={"running": {"startedAt": ts(NOW)}})])])
    assert assess(snap, STS, POLICY, None, NOW).message == "Waiting for 1 pods to be ready..."
    snap.replace("workload", [statefulset(updated=1, partition=2)])
    snap.replace("pods", [sts_pod(0, "db-old"), sts_pod(1, "db-old"), sts_pod(2, "db-new")])
    st = assess(snap, STS, POLICY, None, NOW)
    assert (st.state, st.message) == ("done", "partitioned roll out complete: 1 new pods have been updated...")


def test_statefulset_failure_in_new_revision_pod_and_on_delete_strategy() -> None:
    snap = Snapshot()
    snap.replace("workload", [statefulset(ready=2, updated=1)])
    bad = sts_pod(2, "db-new", ready=False, containers=[container(ready=False, state={"waiting": {"reason": "ErrImagePull"}})])
    snap.replace("pods", [sts_pod(0, "db-old"), sts_pod(1, "db-old"), bad])
    assert assess(snap, STS, POLICY, None, NOW).failure.pod == "db-2"
    snap.replace("workload", [statefulset(strategy="OnDelete")])  # a new-revision pod fails, OnDelete or not
    assert assess(snap, STS, POLICY, None, NOW).failure.reason == "ErrImagePull"


def test_daemonset_done_and_waiting() -> None:
    ds = {"metadata": {"name": "agent", "uid": "ds-uid", "generation": 3},
          "spec": {"template": template(), "updateStrategy": {"type": "RollingUpdate"}},
          "status": {"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                     "numberAvailable": 2, "numberReady": 2}}
    pods = []
    for i in range(2):
        p = pod(f"agent-{i}", "ds-uid")
        p["metadata"]["labels"].update({"controller-revision-hash": "h3", "pod-template-generation": "3"})
        pods.append(p)
    snap = Snapshot()
    snap.replace("workload", [ds])
    snap.replace("pods", pods)
    wl = WorkloadPlan(kind="DaemonSet", name="agent", container="api")
    assert assess(snap, wl, POLICY, None, NOW).message == 'daemon set "agent" successfully rolled out'
    ds["status"]["numberAvailable"] = 1
    assert assess(snap, wl, POLICY, None, NOW).message == \
        'Waiting for daemon set "agent" rollout to finish: 1 of 2 updated pods are available...'


# -- small pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize(("running", "wanted", "image_id", "same"), [
    ("docker.io/library/nginx:1.25", "nginx:1.25", "", True),
    ("nginx", "docker.io/library/nginx:latest", "", True),
    ("reg.example:5000/team/api:abc", "reg.example:5000/team/api:abc", "", True),
    ("reg.example:5000/team/api:abc", "reg.example:5000/team/api:abd", "", False),
    ("reg/api:abc", "reg/api@sha256:" + "a" * 64, "reg/api@sha256:" + "a" * 64, True),
    ("reg/api:abc", "reg/api@sha256:" + "a" * 64, "reg/api@sha256:" + "b" * 64, False),
])
def test_same_image(running: str, wanted: str, image_id: str, same: bool) -> None:
    assert same_image(running, wanted, image_id) is same


def test_snapshot_keeps_the_newer_version_of_an_object() -> None:
    snap = Snapshot()
    newer = pod("p", "rs-new")
    newer["metadata"]["resourceVersion"] = "20"
    older = pod("p", "rs-new", ready=False)
    older["metadata"]["resourceVersion"] = "10"
    snap.apply("pods", "MODIFIED", newer)
    snap.apply("pods", "MODIFIED", older)
    assert snap.pods["uid-p"]["metadata"]["resourceVersion"] == "20"
    snap.apply("pods", "DELETED", older)
    assert snap.pods == {}


def failed_result(**kw: object) -> RolloutResult:
    base = dict(outcome="failed", message="container api keeps exiting with code 3", namespace="prod",
                kind="Deployment", name="api", container="api", reason="CrashLoopBackOff", pod="api-new-b",
                failed_container="api", exit_code=3, restart_count=2,
                logs={"current": ["starting"], "previous": ["starting", "panic: db"]},
                events=[{"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
                         "object": "Pod/api-new-b", "count": 3, "first_seen": "t0", "last_seen": "t1"}])
    base.update(kw)
    return RolloutResult(**base)


def test_failure_raises_with_what_where_and_next_step() -> None:
    with pytest.raises(RolloutFailed) as err:
        raise_for_outcome(failed_result())
    assert str(err.value) == (
        "rollout of prod/Deployment/api failed: CrashLoopBackOff (pod api-new-b, container api): "
        "container api keeps exiting with code 3\n"
        "  hint: read the logs above (`kubectl -n prod logs api-new-b --previous`), fix the service, and deploy again")
    with pytest.raises(RolloutTimeout):
        raise_for_outcome(failed_result(outcome="timeout", reason="DeadlineExceeded"))
    raise_for_outcome(failed_result(outcome="success"))  # no exception


def test_report_shows_logs_of_both_containers_and_events() -> None:
    doc = failed_result().to_json()
    assert doc["logs"] == {"current": ["starting"], "previous": ["starting", "panic: db"], "errors": {}}
    text = render_report(doc)
    assert "rollout of prod/Deployment/api FAILED: CrashLoopBackOff" in text
    assert "pod api-new-b, container api, exit code 3, restarts 2" in text
    assert "    | panic: db" in text and "Pod/api-new-b  BackOff: Back-off restarting failed container (x3)" in text
