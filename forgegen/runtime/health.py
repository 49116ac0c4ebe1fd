"""The one health judgement of a workload, shared by the rollout verdict, ``forge status`` and
the release gate.

A workload is healthy exactly when :func:`forgegen.runtime.rollout.assess` says ``done`` for
the image GitOps deploys: the controller's counts (kubectl's wording, old replicas pending
termination included), the pods of the current revision (none crash-looping, failing to pull,
unready), and the image each of them runs, compared by digest when one is known (so
``repo:tag@sha256:…`` after ``forge deploy --pin-digest`` is the image it names).

The rollout watch feeds ``assess`` from its watches; here one list of each collection makes the
snapshot, and restarts count as the watch counts them: those of a pod Ready by now happened
before this look (a pod that restarted days ago is healthy); a container crash-looping or
terminated now, or a pod not Ready, is not healthy.

The API is reached through :mod:`forgegen.runtime.kubeapi` (imported inside functions).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from forgegen.runtime.rollout import Snapshot, Status, assess, selector, take_baseline

if TYPE_CHECKING:
    from forgegen.plan import RolloutPlan, WorkloadPlan

TIMEOUT = (5, 15)


def healthy(status: Status) -> bool:
    """The predicate: rolled out, to the expected image, by the counts and by the pods."""
    return status.state == "done"


def judge(snap: Snapshot, workload: WorkloadPlan, policy: RolloutPlan, expected_image: str | None,
          expected_digest: str | None = None, now: float | None = None) -> Status:
    """:func:`assess` at one moment, restarts counted from now (see the module docstring)."""
    now = time.time() if now is None else now
    take_baseline(snap, now + 1.0)  # every pod Ready by now (timestamps are whole seconds)
    return assess(snap, workload, policy, expected_image, now, expected_digest=expected_digest)


def snapshot_now(api: Any, namespace: str, workload: WorkloadPlan) -> Snapshot:
    """One list of the workload, its ReplicaSets / ControllerRevisions and its pods.

    Raises the client's ``ApiException`` (and connection errors) to the caller."""
    from forgegen.runtime import kubeapi

    apps, core = kubeapi.AppsV1Api(api), kubeapi.CoreV1Api(api)
    kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}
    read = {"Deployment": apps.list_namespaced_deployment, "StatefulSet": apps.list_namespaced_stateful_set,
            "DaemonSet": apps.list_namespaced_daemon_set}[workload.kind]
    snap = Snapshot()
    snap.replace("workload", _items(read(namespace, field_selector=f"metadata.name={workload.name}", **kw)))
    if snap.workload is None:
        return snap
    sel = selector(snap.workload)
    snap.replace("pods", _items(core.list_namespaced_pod(namespace, label_selector=sel, **kw)))
    if workload.kind == "Deployment":
        snap.replace("replicasets", _items(apps.list_namespaced_replica_set(namespace, label_selector=sel, **kw)))
    elif workload.kind == "DaemonSet":
        snap.replace("controllerrevisions",
                     _items(apps.list_namespaced_controller_revision(namespace, label_selector=sel, **kw)))
    return snap


def _items(resp: Any) -> list[dict[str, Any]]:
    doc = json.loads(resp.data)
    kind = (doc.get("kind") or "").removesuffix("List")
    return [{"kind": kind, **item} for item in doc.get("items") or []]
