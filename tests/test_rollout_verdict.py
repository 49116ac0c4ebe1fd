"""The rollout verdict on real-shaped objects: one test per class of wrong verdict (issue 11).

Every object here has the shape kube-apiserver returns (the fields the controllers really set,
the labels and annotations they really write), so a test pins what happens on a real cluster,
not on a simplified model of it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.rollout import Snapshot, assess

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = RolloutPlan(deadline=None, restarts_tolerated=0, readiness_grace=60, scheduling_grace=30,
                     rollback_on_failure=False)
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# -- Deployment objects, as kube-apiserver returns them ---------------------------------------

D_UID = "0b6f2d4e-3c1a-4f7e-9a8b-7d6c5e4f3a21"
API = WorkloadPlan(kind="Deployment", name="api", container="api")
REPO = "registry.example:5000/shop/api"
DIGEST = "sha256:" + "4f" * 32
OTHER_DIGEST = "sha256:" + "9e" * 32


def d_template(image: str) -> dict:
    return {"metadata": {"creationTimestamp": None, "labels": {"app.kubernetes.io/name": "api"}},
            "spec": {"containers": [{"name": "api", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "ports": [{"containerPort": 8080, "protocol": "TCP"}], "resources": {},
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File"}],
                     "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "securityContext": {}, "terminationGracePeriodSeconds": 30}}


def deployment(image: str, *, replicas: int = 2, updated: int = 2, available: int = 2, total: int | None = None,
               conditions: list[dict] | None = None, revision: str = "3", uid: str | None = D_UID) -> dict:
    meta = {"name": "api", "namespace": "shop", "generation": 3, "resourceVersion": "91822",
            "creationTimestamp": ts(NOW - 86400), "labels": {"app.kubernetes.io/name": "api"},
            "annotations": {"deployment.kubernetes.io/revision": revision}}
    if uid is not None:
        meta["uid"] = uid
    if conditions is None:
        conditions = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": ts(NOW - 300),
             "lastTransitionTime": ts(NOW - 300)},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": 'ReplicaSet "api-7d9c6b5f4" has successfully progressed.', "lastUpdateTime": ts(NOW - 60),
             "lastTransitionTime": ts(NOW - 900)}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "template": d_template(image)},
            "status": {"observedGeneration": 3, "replicas": updated if total is None else total,
                       "updatedReplicas": updated, "readyReplicas": available, "availableReplicas": available,
                       **({"unavailableReplicas": replicas - available} if available < replicas else {}),
                       "conditions": conditions}}


def replicaset(hash_: str, image: str, revision: str, *, replicas: int, available: int | None = None,
               conditions: list[dict] = (), owner_uid: str | None = D_UID) -> dict:
    tpl = d_template(image)
    tpl["metadata"]["labels"]["pod-template-hash"] = hash_
    available = replicas if available is None else available
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "controller": True, "blockOwnerDeletion": True}
    if owner_uid is not None:
        owner["uid"] = owner_uid
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"api-{hash_}", "namespace": "shop", "uid": f"rs-{hash_}", "generation": 1,
                         "labels": {"app.kubernetes.io/name": "api", "pod-template-hash": hash_},
                         "annotations": {"deployment.kubernetes.io/desired-replicas": "2",
                                         "deployment.kubernetes.io/max-replicas": "3",
                                         "deployment.kubernetes.io/revision": revision},
                         "ownerReferences": [owner]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": "api",
                                                                        "pod-template-hash": hash_}},
                     "template": tpl},
            "status": {"observedGeneration": 1, "replicas": replicas, "fullyLabeledReplicas": replicas,
                       "readyReplicas": available, "availableReplicas": available, "conditions": list(conditions)}}


def status_of(image: str, *, image_id: str = "", ready: bool = True, restarts: int = 0,
              state: dict | None = None, last: dict | None = None) -> dict:
    return {"name": "api", "image": image, "imageID": image_id or f"{REPO}@{DIGEST}", "ready": ready,
            "started": ready, "restartCount": restarts, "containerID": "containerd://" + "f" * 64,
            "state": state or {"running": {"startedAt": ts(NOW - 200)}}, "lastState": last or {}}


def d_pod(name: str, hash_: str, statuses: list[dict], *, phase: str = "Running", reason: str | None = None,
          message: str | None = None, created: float = NOW - 210, conditions: list[dict] | None = None) -> dict:
    ready = all(s.get("ready") for s in statuses) and phase == "Running"
    st: dict = {"phase": phase, "hostIP": "10.0.0.5", "podIP": "10.244.0.17", "qosClass": "BestEffort",
                "startTime": ts(created),
                "conditions": conditions if conditions is not None else [
                    {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": ts(created + 2)},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": ts(created)},
                    {"type": "Ready", "status": str(ready), "lastTransitionTime": ts(created + 5)},
                    {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": ts(created + 5)},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": ts(created)}],
                "containerStatuses": statuses}
    if reason:
        st["reason"] = reason
    if message:
        st["message"] = message
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "generateName": f"api-{hash_}-", "namespace": "shop", "uid": f"uid-{name}",
                         "resourceVersion": "91800", "creationTimestamp": ts(created),
                         "labels": {"app.kubernetes.io/name": "api", "pod-template-hash": hash_},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"api-{hash_}",
                                              "uid": f"rs-{hash_}", "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"containers": [{"name": "api", "image": statuses[0]["image"] if statuses else ""}],
                     "nodeName": "node-a", "restartPolicy": "Always"},
            "status": st}


def d_snapshot(d: dict, rss: list[dict], pods: list[dict], events: list[dict] = ()) -> Snapshot:
    snap = Snapshot()
    snap.replace("workload", [d])
    snap.replace("replicasets", rss)
    snap.replace("pods", pods)
    snap.replace("events", list(events))
    return snap


NEW, OLD = "7d9c6b5f4", "5f8b7c6d9"
V3 = f"{REPO}:x86_64-c0ffee1"


def settled(image: str = V3, **kw: object) -> list[dict]:
    return [d_pod(f"api-{NEW}-{s}", NEW, [status_of(image, **kw)]) for s in ("k2x9p", "m7q4w")]


def two_rss(image: str = V3, **kw: object) -> list[dict]:
    return [replicaset(NEW, image, "3", replicas=2, **kw), replicaset(OLD, f"{REPO}:x86_64-badc0de", "2", replicas=0)]


# -- Failed/Evicted pods left in the current ReplicaSet ---------------------------------------

def evicted(name: str, image: str = V3) -> dict:
    """A pod evicted under node memory pressure, as the kubelet leaves it (phase Failed)."""
    term = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                           "message": "The container could not be located when the pod was terminated",
                           "startedAt": None, "finishedAt": None}}
    return d_pod(name, NEW, [status_of(image, ready=False, state=term)], phase="Failed", reason="Evicted",
                 message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 71208Ki. "
                         "Container api was using 148Mi, request is 0, has larger consumption of memory.",
                 created=NOW - 3600)


def test_an_evicted_pod_left_in_the_current_replicaset_does_not_fail_a_finished_rollout() -> None:
    snap = d_snapshot(deployment(V3), two_rss(), settled() + [evicted(f"api-{NEW}-zz8rt")])
    st = assess(snap, API, POLICY, V3, NOW)
    assert (st.state, st.failure) == ("done", None)


def test_a_pod_that_failed_for_its_own_reasons_before_it_became_terminal_still_counts() -> None:
    # Evicted for exceeding its own ephemeral-storage limit: the new revision's own doing.
    own = evicted(f"api-{NEW}-zz8rt")
    own["status"]["message"] = "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. "
    st = assess(d_snapshot(deployment(V3), two_rss(), settled() + [own]), API, POLICY, V3, NOW)
    assert (st.state, st.failure.reason, st.failure.pod) == ("failed", "Evicted", f"api-{NEW}-zz8rt")
    # Crash-looped, then evicted: the restarts it made count like those of a running pod.
    crashed = evicted(f"api-{NEW}-zz8rt")
    crashed["metadata"]["creationTimestamp"] = ts(NOW - 100)
    crashed["status"]["containerStatuses"][0].update(
        restartCount=4, lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ts(NOW - 40)}})
    st = assess(d_snapshot(deployment(V3), two_rss(), settled() + [crashed]), API, POLICY, V3, NOW)
    assert (st.state, st.failure.pod, st.failure.exit_code) == ("failed", f"api-{NEW}-zz8rt", 1)


# -- the same image under another tag ---------------------------------------------------------

SIBLING = f"{REPO}:x86_64-0ldc0de"  # the commit before: same Nix output, same digest, other tag


def test_the_same_image_under_a_sibling_tag_is_the_expected_image_when_the_digest_matches() -> None:
    pods = settled(image=SIBLING, image_id=f"{REPO}@{DIGEST}")
    st = assess(d_snapshot(deployment(V3), two_rss(), pods), API, POLICY, V3, NOW, expected_digest=DIGEST)
    assert (st.state, st.failure) == ("done", None)


def test_a_known_digest_is_compared_before_the_reference() -> None:
    # The node still has an older image under the very tag (IfNotPresent): the reference matches,
    # the digest does not.
    pods = settled(image=V3, image_id=f"{REPO}@{OTHER_DIGEST}")
    st = assess(d_snapshot(deployment(V3), two_rss(), pods), API, POLICY, V3, NOW, expected_digest=DIGEST)
    assert (st.state, st.failure.reason) == ("failed", "ImageMismatch")
    assert DIGEST in st.failure.message and OTHER_DIGEST in st.failure.message
    # A pinned template (repo:tag@digest, after --pin-digest) is compared by its digest.
    pinned = f"{V3}@{DIGEST}"
    pods = settled(image=SIBLING, image_id=f"{REPO}@{DIGEST}")
    st = assess(d_snapshot(deployment(pinned), two_rss(pinned), pods), API, POLICY, pinned, NOW)
    assert (st.state, st.failure) == ("done", None)


# -- restarts since the rollout began ---------------------------------------------------------

def test_restarts_from_before_the_rollout_do_not_fail_a_re_watch() -> None:
    old_crash = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": ts(NOW - 5 * 86400),
                                "finishedAt": ts(NOW - 4 * 86400)}}
    pods = settled(restarts=2, last=old_crash)
    snap = d_snapshot(deployment(V3), two_rss(), pods)
    snap.restart_baseline = {p["metadata"]["uid"]: {"api": 2} for p in pods}
    st = assess(snap, API, POLICY, None, NOW)
    assert (st.state, st.failure) == ("done", None)
    # A restart after the watch began counts, and the report says which count it is.
    pods[0]["status"]["containerStatuses"][0]["restartCount"] = 3
    st = assess(snap, API, POLICY, None, NOW)
    assert (st.state, st.failure.reason, st.failure.restart_count) == ("failed", "OOMKilled", 1)
    assert "since the rollout began" in st.failure.message


# -- ProgressDeadlineExceeded and ReplicaFailure ----------------------------------------------

SA_MISSING = ('pods "api-7d9c6b5f4-" is forbidden: error looking up service account shop/api: '
              'serviceaccount "api" not found')


def test_replica_failure_is_reported_before_the_progress_deadline() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": SA_MISSING,
               "lastUpdateTime": ts(NOW - 700), "lastTransitionTime": ts(NOW - 700)}
    conditions = [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
         "message": "Deployment does not have minimum availability.", "lastUpdateTime": ts(NOW - 700),
         "lastTransitionTime": ts(NOW - 700)},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "api-7d9c6b5f4" has timed out progressing.', "lastUpdateTime": ts(NOW - 100),
         "lastTransitionTime": ts(NOW - 100)},
        failure]
    d = deployment(V3, updated=0, available=0, conditions=conditions)
    rss = [replicaset(NEW, V3, "3", replicas=2, available=0, conditions=[
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": SA_MISSING,
         "lastTransitionTime": ts(NOW - 700)}])]
    rss[0]["status"].update(replicas=0, readyReplicas=0, availableReplicas=0, fullyLabeledReplicas=0)
    st = assess(d_snapshot(d, rss, []), API, POLICY, V3, NOW)
    assert (st.state, st.failure.reason, st.failure.message) == ("failed", "FailedCreate", SA_MISSING)
    assert any("ProgressDeadlineExceeded" in e for e in st.failure.evidence)
    # The ReplicaSet not in view (not listed yet, or a status-only object): the Deployment's own
    # ReplicaFailure condition names the cause.
    st = assess(d_snapshot(d, [], []), API, POLICY, V3, NOW)
    assert (st.failure.reason, st.failure.message) == ("FailedCreate", SA_MISSING)


# -- OnDelete ---------------------------------------------------------------------------------

def test_on_delete_daemonset_is_pending_until_its_pods_are_deleted_never_failed() -> None:
    ds = daemonset(generation=4, template_generation=4, updated=0, available=2)
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    pods = [ds_pod(f"node-agent-{n}", f"node-{n}", hash_="5c8d7b6f4", template_generation=3,
                   statuses=[running(V1)]) for n in ("a1b2c", "d3e4f")]
    st = assess(ds_snapshot(ds, pods), AGENT, POLICY, V2, NOW)
    assert (st.state, st.failure) == ("pending-on-delete", None)
    assert "replaced only when deleted" in st.message and "0 of 2" in st.message
    # Once every pod was deleted and replaced, the new image runs: done, honestly.
    ds["status"].update(updatedNumberScheduled=2)
    pods = [ds_pod(f"node-agent-{n}", f"node-{n}", hash_="6d4b9c7f8", template_generation=4,
                   statuses=[running(V2)]) for n in ("g5h6j", "k7l8m")]
    assert assess(ds_snapshot(ds, pods), AGENT, POLICY, V2, NOW).state == "done"


def test_on_delete_statefulset_pod_replaced_by_hand_is_still_judged() -> None:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "db", "namespace": "shop", "uid": "sts-uid", "generation": 2},
           "spec": {"replicas": 2, "serviceName": "db", "template": d_template(V3),
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
                    "updateStrategy": {"type": "OnDelete"}, "podManagementPolicy": "OrderedReady"},
           "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 1, "currentReplicas": 1,
                      "updatedReplicas": 1, "currentRevision": "db-5f8b7c6d9", "updateRevision": "db-7d9c6b5f4",
                      "availableReplicas": 1}}

    def sts_pod(i: int, rev: str, statuses: list[dict]) -> dict:
        p = d_pod(f"db-{i}", NEW, statuses)
        p["metadata"]["labels"] = {"app.kubernetes.io/name": "api", "controller-revision-hash": rev,
                                   "statefulset.kubernetes.io/pod-name": f"db-{i}"}
        p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                             "uid": "sts-uid", "controller": True, "blockOwnerDeletion": True}]
        return p
    crash = status_of(V3, ready=False, restarts=2, state={"waiting": {"reason": "CrashLoopBackOff"}},
                      last={"terminated": {"exitCode": 1, "reason": "Error"}})
    snap = Snapshot()
    snap.replace("workload", [sts])
    snap.replace("pods", [sts_pod(0, "db-5f8b7c6d9", [status_of(V1)]), sts_pod(1, "db-7d9c6b5f4", [crash])])
    st = assess(snap, WorkloadPlan(kind="StatefulSet", name="db", container="api"), POLICY, V3, NOW)
    assert (st.state, st.failure.reason, st.failure.pod) == ("failed", "CrashLoopBackOff", "db-1")
    snap.replace("pods", [sts_pod(0, "db-5f8b7c6d9", [status_of(V1)]), sts_pod(1, "db-7d9c6b5f4", [status_of(V3)])])
    sts["status"]["readyReplicas"] = 2
    st = assess(snap, WorkloadPlan(kind="StatefulSet", name="db", container="api"), POLICY, V3, NOW)
    assert st.state == "pending-on-delete" and "1 of 2" in st.message


# -- malformed or early objects ---------------------------------------------------------------

def test_a_workload_without_uid_is_judged_by_owner_name() -> None:
    d = deployment(V3, uid=None)
    rss = [replicaset(NEW, V3, "3", replicas=2, owner_uid=None)]
    st = assess(d_snapshot(d, rss, settled()), API, POLICY, V3, NOW)
    assert (st.state, st.new_pods) == ("done", (f"api-{NEW}-k2x9p", f"api-{NEW}-m7q4w"))


def test_a_daemonset_status_without_desired_count_is_not_done() -> None:
    ds = daemonset(generation=1, template_generation=1)
    ds["status"] = {"observedGeneration": 1, "currentNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}
    st = assess(ds_snapshot(ds, []), AGENT, POLICY, None, NOW)
    assert st.state == "progressing"


# -- the one health predicate (forge status, the release gate) --------------------------------

def test_health_of_a_pinned_image_compares_the_digest() -> None:
    from forgegen.runtime import health

    pinned = f"{V3}@{DIGEST}"
    snap = d_snapshot(deployment(pinned), two_rss(pinned), settled(image=V3, image_id=f"{REPO}@{DIGEST}"))
    assert health.healthy(health.judge(snap, API, POLICY, pinned, DIGEST, now=NOW))
    snap = d_snapshot(deployment(pinned), two_rss(pinned), settled(image=V3, image_id=f"{REPO}@{OTHER_DIGEST}"))
    assert not health.healthy(health.judge(snap, API, POLICY, pinned, DIGEST, now=NOW))


def test_health_waits_for_old_replicas_pending_termination() -> None:
    # updated == desired == ready == available, but a third (old) replica is still there
    from forgegen.runtime import health

    old = d_pod(f"api-{OLD}-t5v8n", OLD, [status_of(f"{REPO}:x86_64-badc0de")])
    snap = d_snapshot(deployment(V3, total=3), two_rss(), settled() + [old])
    st = health.judge(snap, API, POLICY, V3, now=NOW)
    assert not health.healthy(st) and "1 old replicas are pending termination" in st.message


def test_health_does_not_count_restarts_from_before_it_looked() -> None:
    from forgegen.runtime import health

    long_ago = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ts(NOW - 3 * 86400)}}
    snap = d_snapshot(deployment(V3), two_rss(), settled(restarts=5, last=long_ago))
    assert health.healthy(health.judge(snap, API, POLICY, V3, now=NOW))
    crashing_now = settled(restarts=5, ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}}, last=long_ago)
    snap = d_snapshot(deployment(V3, available=0), two_rss(), crashing_now)
    assert not health.healthy(health.judge(snap, API, POLICY, V3, now=NOW))
