"""The rollout verdict on real-shaped objects: one test per class of wrong verdict (issue 11).

Every object here has the shape kube-apiserver returns (the fields the controllers really set,
the labels and annotations they really write), so a test pins what happens on a real cluster,
not on a simplified model of it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.rollout import Snapshot, assess

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = RolloutPlan(deadline=None, restarts_tolerated=0, readiness_grace=60, scheduling_grace=30,
                     rollback_on_failure=False)
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- DaemonSet: which pods are new ------------------------------------------------------------

DS_UID = "5e9a3c1e-7d0b-4a51-9c3e-2f9d7b6f1a10"
AGENT = WorkloadPlan(kind="DaemonSet", name="node-agent", container="agent")


def ds_template(image: str) -> dict:
    return {"metadata": {"creationTimestamp": None, "labels": {"app.kubernetes.io/name": "node-agent"}},
            "spec": {"containers": [{"name": "agent", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "resources": {}, "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File"}],
                     "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "securityContext": {}, "terminationGracePeriodSeconds": 30}}


def daemonset(*, generation: int, template_generation: int | None, image: str = "reg.example/agent:v2",
              desired: int = 2, updated: int = 2, available: int = 2, max_unavailable: str | int = 1) -> dict:
    """A DaemonSet as kube-apiserver returns it: the template generation is an annotation that
    moves only when spec.template changes; metadata.generation moves on every spec change."""
    annotations = {} if template_generation is None else {TEMPLATE_GENERATION: str(template_generation)}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": "infra", "uid": DS_UID, "generation": generation,
                     "resourceVersion": "48213", "creationTimestamp": ts(NOW - 86400), "annotations": annotations,
                     "labels": {"app.kubernetes.io/name": "node-agent"}},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "node-agent"}},
                 "template": ds_template(image), "revisionHistoryLimit": 10,
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": max_unavailable}}},
        "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                   "numberAvailable": available, "numberMisscheduled": 0, "numberReady": available,
                   "numberUnavailable": desired - available, "observedGeneration": generation,
                   "updatedNumberScheduled": updated},
    }


def controller_revision(hash_: str, revision: int, image: str) -> dict:
    """A ControllerRevision as the DaemonSet controller writes it (pkg/controller/daemon/update.go)."""
    tpl = ds_template(image)
    tpl["$patch"] = "replace"
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": f"node-agent-{hash_}", "namespace": "infra", "uid": f"cr-{hash_}",
                         "labels": {"app.kubernetes.io/name": "node-agent", "controller-revision-hash": hash_},
                         "annotations": {TEMPLATE_GENERATION: str(revision)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent",
                                              "uid": DS_UID, "controller": True, "blockOwnerDeletion": True}]},
            "data": {"spec": {"template": tpl}}, "revision": revision}


def running(image: str, *, ready: bool = True, restarts: int = 0, name: str = "agent") -> dict:
    return {"name": name, "image": image, "ready": ready, "started": True, "restartCount": restarts,
            "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{'a' * 64}", "containerID": "containerd://" + "c" * 64,
            "state": {"running": {"startedAt": ts(NOW - 120)}}, "lastState": {}}


def crashing(image: str, restarts: int = 3) -> dict:
    return {"name": "agent", "image": image, "ready": False, "started": False, "restartCount": restarts,
            "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{'a' * 64}", "containerID": "containerd://" + "d" * 64,
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": "back-off 40s restarting failed container=agent pod=node-agent-x"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": ts(NOW - 50),
                                         "finishedAt": ts(NOW - 49), "containerID": "containerd://" + "e" * 64}}}


def ds_pod(name: str, node: str, *, hash_: str, template_generation: int, statuses: list[dict],
           extra_containers: list[dict] = ()) -> dict:
    """A DaemonSet pod: the controller labels it with the revision hash and the template generation."""
    ready = all(s.get("ready") for s in statuses)
    containers = [{"name": s["name"], "image": s["image"]} for s in statuses] + list(extra_containers)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "generateName": "node-agent-", "namespace": "infra", "uid": f"uid-{name}",
                     "resourceVersion": "48200", "creationTimestamp": ts(NOW - 130),
                     "labels": {"app.kubernetes.io/name": "node-agent", "controller-revision-hash": hash_,
                                "pod-template-generation": str(template_generation)},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-agent",
                                          "uid": DS_UID, "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": node, "containers": containers},
        "status": {"phase": "Running", "hostIP": "10.0.0.7", "podIP": "10.244.1.9", "qosClass": "BestEffort",
                   "startTime": ts(NOW - 130),
                   "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(NOW - 130)},
                                  {"type": "Initialized", "status": "True", "lastTransitionTime": ts(NOW - 130)},
                                  {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": ts(NOW - 60)},
                                  {"type": "Ready", "status": str(ready), "lastTransitionTime": ts(NOW - 60)}],
                   "containerStatuses": statuses},
    }


def ds_snapshot(ds: dict, pods: list[dict], revisions: list[dict] = ()) -> Snapshot:
    snap = Snapshot()
    snap.replace("workload", [ds])
    snap.replace("pods", pods)
    snap.replace("controllerrevisions", list(revisions))
    snap.replace("events", [])
    return snap


V2 = "reg.example/agent:v2"
V1 = "reg.example/agent:v1"


def test_daemonset_new_pods_follow_the_template_generation_annotation_not_metadata_generation() -> None:
    # Template changed at template-generation 3 (metadata.generation 3), then maxUnavailable was
    # raised (metadata.generation 4, template generation still 3). The new pod crash-loops.
    ds = daemonset(generation=4, template_generation=3, updated=1, available=1, max_unavailable=2)
    pods = [ds_pod("node-agent-x7k2p", "node-a", hash_="6d4b9c7f8", template_generation=3, statuses=[crashing(V2)]),
            ds_pod("node-agent-q9w4z", "node-b", hash_="5c8d7b6f4", template_generation=2, statuses=[running(V1)])]
    st = assess(ds_snapshot(ds, pods), AGENT, POLICY, None, NOW)
    assert (st.state, st.failure.reason, st.failure.pod) == ("failed", "CrashLoopBackOff", "node-agent-x7k2p")
    assert st.new_pods == ("node-agent-x7k2p",)


def test_daemonset_with_an_injected_sidecar_completes() -> None:
    # A mutating webhook added a sidecar to every pod; all pods are at the current template generation.
    ds = daemonset(generation=5, template_generation=3)
    sidecar = [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0"}]
    pods = [ds_pod(f"node-agent-{n}", f"node-{n}", hash_="6d4b9c7f8", template_generation=3,
                   statuses=[running(V2)], extra_containers=sidecar) for n in ("a1b2c", "d3e4f")]
    st = assess(ds_snapshot(ds, pods), AGENT, POLICY, V2, NOW)
    assert (st.state, st.message) == ("done", 'daemon set "node-agent" successfully rolled out')


def test_daemonset_pods_match_the_current_controller_revision_hash() -> None:
    # No template-generation annotation (an object written before the apiserver set it, or a
    # recording that dropped it): the ControllerRevision whose data is the current template names
    # the hash, as kubectl rollout history and util.IsPodUpdated use it.
    ds = daemonset(generation=7, template_generation=None, updated=1, available=1)
    revisions = [controller_revision("5c8d7b6f4", 2, V1), controller_revision("6d4b9c7f8", 3, V2)]
    pods = [ds_pod("node-agent-x7k2p", "node-a", hash_="6d4b9c7f8", template_generation=3, statuses=[crashing(V2)]),
            ds_pod("node-agent-q9w4z", "node-b", hash_="5c8d7b6f4", template_generation=2, statuses=[running(V1)])]
    st = assess(ds_snapshot(ds, pods, revisions), AGENT, POLICY, None, NOW)
    assert (st.state, st.failure.reason, st.failure.pod) == ("failed", "CrashLoopBackOff", "node-agent-x7k2p")
