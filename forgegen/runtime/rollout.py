"""Watching a rollout: say within moments whether it worked, and if not, why, with the evidence.

Two pieces (STYLE.md point 31, after kubectl's ``rollout_status.go`` and kopf):

* :func:`assess` — pure: a :class:`Snapshot` of the workload, its ReplicaSets, pods and events,
  plus what we expect, to a :class:`Status` (``progressing`` / ``done`` / ``failed`` with a
  :class:`Failure`). It speaks kubectl's wording for progress and adds what kubectl never
  checks: the pods of the *new* revision (old-revision pods never count against a rollout),
  their container states, restarts, scheduling and readiness within the service's grace windows,
  and the image actually running.
* :func:`watch_rollout` — the thin loop: one thread per collection lists, then watches from the
  list's ``resourceVersion``, resumes from the last version seen when a connection drops,
  re-lists on ``410 Gone``, and feeds one queue; the loop re-assesses after every batch and at
  the moment a grace window ends, and stops at the deadline.

Judged on the new revision only: restarts since the rollout began (a pod Ready before it began
keeps its old restarts out), terminal (evicted) pods only when their own status blames them,
the running image by digest whenever one is known, the most specific failure reason first
(others as ``evidence``). An OnDelete StatefulSet/DaemonSet whose pods still run the old
template is ``pending-on-delete``: neither success nor failure, never rolled back (exit 4).

``watch_rollout`` returns a :class:`RolloutResult` for every outcome (success, failed, timeout, pending-on-delete)
and raises nothing for a failed rollout: the caller decides (``raise_for_outcome`` turns a
result into :class:`~forgegen.errors.RolloutFailed` / :class:`~forgegen.errors.RolloutTimeout`).
It raises :class:`~forgegen.errors.RolloutFailed` only when it cannot watch at all (RBAC
forbids it, the API has no such resource).

Deadline: ``deadline`` seconds if given, else the plan's ``rollout.deadline``; without either,
the rollout fails after the workload's ``progressDeadlineSeconds`` (600 s by default, also for
StatefulSets and DaemonSets, which have none) *without progress*, as the Deployment controller
counts it, so a long but steadily progressing rollout is not cut short.

The API is reached through :mod:`forgegen.runtime.kubeapi` (imported inside functions); objects
are read as the typed views of :mod:`forgegen.runtime.k8stypes`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from forgegen.errors import RolloutFailed, RolloutPending, RolloutTimeout
from forgegen.runtime.k8stypes import ContainerStateTerminated, ControllerRevision, Event, Pod, ReplicaSet, Workload
from forgegen.runtime.kube import api_error, iso
from forgegen.runtime.reports import RolloutReport
from forgegen.runtime.watch import Fatal, Streams, rv, watch_until

if TYPE_CHECKING:
    from forgegen.plan import Plan, RolloutPlan, WorkloadPlan

log = logging.getLogger(__name__)

# Container waiting reasons that mean the container will not start without a change from us.
FATAL_WAITING = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError")
DEFAULT_PROGRESS_DEADLINE = 600.0
LOG_LINES = 50
EVENT_LIMIT = 20
REVISION = "deployment.kubernetes.io/revision"
# The DaemonSet's template generation: kube-apiserver moves it only when spec.template changes, and
# the controller labels new pods with it (pod-template-generation) and with the revision hash.
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"

# "pending-on-delete": an OnDelete StatefulSet/DaemonSet whose template is applied, while some of
# its pods still run the old one; the controller replaces them only when they are deleted.
State = Literal["progressing", "done", "failed", "pending-on-delete"]


# =============================================================================================
# The pure part: snapshot -> status


@dataclass
class Snapshot:
    """What the watches have seen so far, by ``metadata.uid``."""

    workload: Workload | None = None
    replicasets: dict[str, ReplicaSet] = field(default_factory=dict)
    controllerrevisions: dict[str, ControllerRevision] = field(default_factory=dict)  # DaemonSets only
    # Restart counts when the watch began, by pod uid and container name: restarts before the
    # rollout began never count against it (filled by the watch loop at its first pod list).
    restart_baseline: dict[str, dict[str, int]] = field(default_factory=dict)
    # Judge by the workload's status alone (no pod evidence): published reference objects only.
    status_only: bool = False
    pods: dict[str, Pod] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        """Apply one watch event (``ADDED``/``MODIFIED``/``DELETED``) of ``resource``."""
        if resource == "workload":
            self.workload = None if kind == "DELETED" else cast(Workload, obj)
            return
        bucket: dict[str, dict[str, Any]] = getattr(self, resource)
        uid = _id(obj)
        if kind == "DELETED":
            bucket.pop(uid, None)
            return
        held = bucket.get(uid)
        if held is not None and rv(held) > rv(obj):
            return  # an older version (two streams racing after a re-list): keep the newer
        bucket[uid] = obj

    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        """Replace a whole collection with a fresh list (after the first list or a 410)."""
        items = list(items)
        if resource == "workload":
            self.workload = cast(Workload, items[0]) if items else None
            return
        setattr(self, resource, {_id(o): o for o in items})


def _id(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{obj.get('kind', '')}/{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    pod: str | None = None
    container: str | None = None
    exit_code: int | None = None
    restart_count: int | None = None  # restarts since the rollout began
    evidence: tuple[str, ...] = ()  # other reasons seen at the same time ("Reason: message")


@dataclass(frozen=True)
class Progress:
    desired: int
    updated: int
    ready: int
    available: int
    old: int


@dataclass(frozen=True)
class Status:
    state: State
    message: str  # kubectl's wording, plus a "(Warning: ...)" for a problem still within grace
    failure: Failure | None = None
    revision: str | None = None
    new_pods: tuple[str, ...] = ()
    image: str | None = None  # the template's image for the watched container
    wake_at: float | None = None  # wall-clock time at which a grace window ends
    progress: Progress | None = None


def assess(snap: Snapshot, workload: WorkloadPlan, policy: RolloutPlan, expected_image: str | None,
           now: float, *, expected_digest: str | None = None) -> Status:
    """Where the rollout stands, from one snapshot. ``now`` is wall-clock (server timestamps).

    ``expected_digest`` (``sha256:…``, from the push) makes the running-image check compare
    digests: the same image under a sibling tag is the expected image, and an older image still
    cached under the very tag is not.
    """
    w = snap.workload
    kind_word = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemon set"}[workload.kind]
    if w is None:
        return Status("progressing", f'Waiting for {kind_word} "{workload.name}" to exist...')
    if w.get("metadata", {}).get("deletionTimestamp"):
        return Status("failed", f'{kind_word} "{workload.name}" is being deleted',
                      Failure("WorkloadDeleted", f"{workload.kind} {workload.name} is being deleted"))
    view = {"Deployment": _deployment_view, "StatefulSet": _statefulset_view, "DaemonSet": _daemonset_view}[
        workload.kind](w, snap)
    template_containers = (((w.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    container = next((c for c in template_containers if c.get("name") == workload.container), None)
    if container is None and snap.status_only and not template_containers:
        container = {}  # a status-only reference object without a pod template
    if container is None:
        names = ", ".join(c.get("name", "?") for c in template_containers) or "none"
        return Status("failed", view.message, Failure(
            "ContainerNotFound",
            f"{workload.kind} {workload.name} has no container {workload.container!r} (it has: {names})"))
    image = container.get("image", "")
    problem, warning, wake = _new_pod_problems(snap, view, policy, now)
    if view.failure is not None:
        return _status(view, "failed", view.message, _most_specific(view, problem), image)
    if problem is not None:
        return _status(view, "failed", view.message, problem, image)
    if view.new_rs_failure is not None:  # the ReplicaSet cannot create pods (quota, admission)
        failure, at = view.new_rs_failure
        if at <= now - policy.scheduling_grace:
            return _status(view, "failed", view.message, failure, image)
        wake.append(at + policy.scheduling_grace)
        warning = warning or f"{failure.reason} - {failure.message}"

    message = view.message if warning is None else f"{view.message.rstrip('.').rstrip()}... (Warning: {warning})"
    wake_at = min(wake) if wake else None
    if expected_image and not same_image(image, expected_image):
        return _status(view, "progressing", f'Waiting for {kind_word} "{workload.name}" to use image '
                       f"{expected_image} (container {workload.container} has {image})...", None, image, wake_at)
    if view.on_delete and not view.done and view.progress is not None and view.progress.old:
        p = view.progress
        return _status(view, "pending-on-delete", (
            f'{kind_word} "{workload.name}" uses the OnDelete update strategy: {p.updated} of {p.desired} pods run '
            f"the new template; the others are replaced only when deleted (`kubectl delete pod`)"), None, image)
    if not view.done:
        return _status(view, "progressing", message, None, image, wake_at)
    # Done by the controller's counts and by the pods we see: check what actually runs.
    mismatch = _image_mismatch(view, workload, image, expected_digest or _digest(image))
    if mismatch is not None:
        return _status(view, "failed", view.message, mismatch, image)
    return _status(view, "done", view.message, None, image)


def _new_pod_problems(snap: Snapshot, view: _View, policy: RolloutPlan,
                      now: float) -> tuple[Failure | None, str | None, list[float]]:
    """(the first problem of a new pod, the first warning still within grace, when graces end)."""
    events = _relevant_events(snap, view)
    wake: list[float] = []
    warning: str | None = None
    for pod in sorted(view.new_pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        baseline = snap.restart_baseline.get(pod["metadata"].get("uid") or "", {})
        if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            # A terminal pod (evicted, node shut down) is left for garbage collection and
            # replaced: it counts only when it failed for the new revision's own reasons.
            problem = _terminal_problem(pod, policy, baseline)
            if problem is not None:
                return problem, None, wake
            continue
        problem, pending, at = _pod_problem(pod, policy, now, events, baseline)
        if problem is not None:
            return problem, None, wake
        if pending and warning is None:
            warning = pending
        if at is not None:
            wake.append(at)
    return None, warning, wake


def _most_specific(view: _View, problem: Failure | None) -> Failure:
    """The most specific reason a rollout failed; the others ride along as evidence.

    A pod's own problem beats the ReplicaSet's creation failure, which beats the controller's
    ``ProgressDeadlineExceeded`` (which says only that *something* did not progress)."""
    assert view.failure is not None
    found = [f for f in (problem, view.new_rs_failure[0] if view.new_rs_failure else None) if f is not None]
    if not found:
        return view.failure
    others = [f"{f.reason}: {f.message}" for f in found[1:] + [view.failure]]
    return replace(found[0], evidence=tuple(found[0].evidence) + tuple(others))


def _image_mismatch(view: _View, workload: WorkloadPlan, image: str, digest: str | None) -> Failure | None:
    for pod in _active(view.new_pods):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != workload.container or same_image(cs.get("image", ""), image, cs.get("imageID", ""),
                                                                   digest=digest):
                continue
            running = cs.get("image")
            have = _digest(cs.get("image", "")) or _digest(cs.get("imageID", ""))
            if digest and have:
                running = f"{running} ({have})"
            wanted = f"{image} ({digest})" if digest and digest not in image else image
            return Failure("ImageMismatch", f"pod {pod['metadata']['name']} runs {running} in container "
                           f"{workload.container}, but the {workload.kind} asks for {wanted}",
                           pod=pod["metadata"]["name"], container=workload.container)
    return None


def _status(view: _View, state: State, message: str, failure: Failure | None, image: str,
            wake_at: float | None = None) -> Status:
    return Status(state, message, failure, view.revision,
                  tuple(sorted(p["metadata"]["name"] for p in view.new_pods)), image, wake_at, view.progress)


@dataclass
class _View:
    """What one workload kind says: kubectl's message and verdict, plus new/old pods."""

    message: str
    done: bool = False
    failure: Failure | None = None
    revision: str | None = None
    new_pods: list[Pod] = field(default_factory=list)
    new_owner_uids: set[str] = field(default_factory=set)
    progress: Progress | None = None
    new_rs_failure: tuple[Failure, float] | None = None
    on_delete: bool = False  # OnDelete strategy: the controller replaces a pod only once it is deleted


def _observed(w: Workload) -> bool:
    gen = w["metadata"].get("generation", 0)
    obs = (w.get("status") or {}).get("observedGeneration")
    return obs is not None and gen <= obs


def _key(obj: Mapping[str, Any], kind: str) -> str:
    """How owner references name ``obj``: its uid, or ``Kind/name`` for an object without one
    (some published objects lack ``metadata.uid``)."""
    meta = obj.get("metadata") or {}
    return meta.get("uid") or f"{obj.get('kind') or kind}/{meta.get('name', '')}"


def _owned_by(obj: Mapping[str, Any], keys: set[str]) -> bool:
    return any(r.get("uid") in keys or f"{r.get('kind')}/{r.get('name')}" in keys
               for r in obj["metadata"].get("ownerReferences") or [])


def _active(pods: Iterable[Pod]) -> list[Pod]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def _ready(pod: Pod) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _strip_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = json.loads(json.dumps(template))
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return t


def _deployment_view(d: Workload, snap: Snapshot) -> _View:
    name = d["metadata"]["name"]
    spec, st = d.get("spec") or {}, d.get("status") or {}
    desired = spec.get("replicas", 1)
    uid = _key(d, "Deployment")
    rss = [r for r in snap.replicasets.values() if _owned_by(r, {uid})]
    template = spec.get("template") or {}
    new_rs = next((r for r in rss if _strip_hash((r.get("spec") or {}).get("template") or {}) == template), None)
    if new_rs is None:
        rev = (d["metadata"].get("annotations") or {}).get(REVISION)
        new_rs = next((r for r in rss if rev and (r["metadata"].get("annotations") or {}).get(REVISION) == rev
                       and _observed(d)), None)
    old_uids = {_key(r, "ReplicaSet") for r in rss if r is not new_rs}
    new_uids = {_key(new_rs, "ReplicaSet")} if new_rs else set()
    pods = list(snap.pods.values())
    new_pods = [p for p in pods if new_uids and _owned_by(p, new_uids)]
    old_pods = _active(p for p in pods if _owned_by(p, old_uids))
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    progress = Progress(desired, st.get("updatedReplicas", 0), len(ready_new), st.get("availableReplicas", 0), len(old_pods))
    revision = (new_rs["metadata"].get("annotations") or {}).get(REVISION) if new_rs else None
    view = _View("", revision=revision, new_pods=new_pods, new_owner_uids=new_uids | {uid}, progress=progress)
    # The new ReplicaSet cannot create pods. The Deployment mirrors a ReplicaSet's FailedCreate
    # (an old one's too), so its own condition is read only when no new ReplicaSet is in view.
    conds = ((new_rs or {}).get("status") or {}).get("conditions") or []
    if new_rs is None:
        conds = [c for c in st.get("conditions") or [] if c.get("reason") == "FailedCreate"]
    c = next((c for c in conds if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)
    if c is not None:
        view.new_rs_failure = (Failure(c.get("reason") or "FailedCreate", c.get("message") or ""),
                               _time(c.get("lastTransitionTime")) or 0.0)
    if not _observed(d):
        view.message = "Waiting for deployment spec update to be observed..."
        return view
    cond = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
        view.message = f'deployment "{name}" exceeded its progress deadline'
        view.failure = Failure("ProgressDeadlineExceeded", f'deployment "{name}" exceeded its progress deadline: '
                               f'{cond.get("message", "")}'.rstrip(": "))
        return view
    updated, replicas, available = st.get("updatedReplicas", 0), st.get("replicas", 0), st.get("availableReplicas", 0)
    if updated < desired:
        view.message = f'Waiting for deployment "{name}" rollout to finish: {updated} out of {desired} new replicas have been updated...'
    elif replicas > updated:
        view.message = f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old replicas are pending termination...'
    elif available < updated:
        view.message = f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} updated replicas are available...'
    elif snap.status_only:
        view.message, view.done = f'deployment "{name}" successfully rolled out', True
    elif new_rs is None and desired > 0:
        view.message = f'Waiting for deployment "{name}" rollout to finish: waiting for its new replica set...'
    elif old_pods:
        view.message = f'Waiting for deployment "{name}" rollout to finish: {len(old_pods)} old replicas are pending termination...'
    elif len(ready_new) < desired or (new_rs is not None and (new_rs.get("status") or {}).get("availableReplicas", 0) < desired):
        view.message = f'Waiting for deployment "{name}" rollout to finish: {len(ready_new)} of {desired} updated replicas are ready...'
    else:
        view.message = f'deployment "{name}" successfully rolled out'
        view.done = True
    return view


def _ordinal(pod: Pod) -> int:
    try:
        return int(pod["metadata"]["name"].rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _statefulset_view(s: Workload, snap: Snapshot) -> _View:
    spec, st = s.get("spec") or {}, s.get("status") or {}
    uid = _key(s, "StatefulSet")
    strategy = spec.get("updateStrategy") or {}
    replicas = spec.get("replicas", 1)
    partition = (strategy.get("rollingUpdate") or {}).get("partition", 0) or 0
    update_rev = st.get("updateRevision")
    # updatedReplicas is omitted when 0; once the revisions agree, every current pod is updated.
    updated = st.get("updatedReplicas", st.get("currentReplicas", 0) if st.get("currentRevision") == update_rev else 0)
    owned = [p for p in snap.pods.values() if _owned_by(p, {uid})]
    def rev(p: Pod) -> str | None:
        return (p["metadata"].get("labels") or {}).get("controller-revision-hash")
    new_pods = [p for p in owned if update_rev and rev(p) == update_rev]
    old_pods = _active(p for p in owned if rev(p) != update_rev and _ordinal(p) >= partition)
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    want_new = max(replicas - partition, 0)
    old = len(old_pods) if not snap.status_only else max(want_new - updated, 0)
    progress = Progress(replicas, updated, len(ready_new), st.get("availableReplicas", 0), old)
    view = _View("", revision=update_rev, new_pods=new_pods, new_owner_uids={uid}, progress=progress)
    view.on_delete = strategy.get("type", "RollingUpdate") == "OnDelete"
    if not st.get("observedGeneration") or not _observed(s):
        view.message = "Waiting for statefulset spec update to be observed..."
        return view
    ready = st.get("readyReplicas", 0)
    if snap.status_only:  # kubectl's judgement, plus pods beyond spec.replicas still there
        waiting = not partition and (st.get("currentRevision") != update_rev or st.get("replicas", 0) > replicas)
    else:
        waiting = bool(old_pods) or len(ready_new) < want_new
    if ready < replicas:
        view.message = f"Waiting for {replicas - ready} pods to be ready..."
    elif updated < want_new:
        view.message = f"Waiting for partitioned roll out to finish: {updated} out of {want_new} new pods have been updated..."
    elif waiting:
        view.message = (f"waiting for statefulset rolling update to complete "
                        f"{updated if snap.status_only else len(ready_new)} pods at revision {update_rev}...")
    else:
        view.done = True
        view.message = (f"partitioned roll out complete: {updated} new pods have been updated..." if partition else
                        f"statefulset rolling update complete {updated} pods at revision {update_rev}...")
    return view


def _daemonset_revision(ds: Workload, snap: Snapshot) -> tuple[str | None, str | None]:
    """(the current revision hash, the template generation) of a DaemonSet, where known.

    As the controller decides (``util.IsPodUpdated``): a pod is new when its
    ``controller-revision-hash`` is the hash of the ControllerRevision holding the current
    template, or its ``pod-template-generation`` is the template-generation annotation (which,
    unlike ``metadata.generation``, moves only when the template changes).
    """
    tgen = (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)
    uid = _key(ds, "DaemonSet")
    template = (ds.get("spec") or {}).get("template") or {}
    matching = []
    for cr in snap.controllerrevisions.values():
        data = (((cr.get("data") or {}).get("spec") or {}).get("template")) or {}
        if _owned_by(cr, {uid}) and {k: v for k, v in data.items() if k != "$patch"} == template:
            matching.append(cr)
    best = max(matching, key=lambda cr: cr.get("revision") or 0, default=None)
    hash_ = ((best or {}).get("metadata", {}).get("labels") or {}).get("controller-revision-hash") if best else None
    return hash_, tgen


def _daemonset_new_pods(ds: Workload, owned: list[Pod], snap: Snapshot) -> tuple[list[Pod], str | None]:
    hash_, tgen = _daemonset_revision(ds, snap)
    def labels(p: Pod) -> dict[str, str]:
        return p["metadata"].get("labels") or {}
    if hash_ or tgen:
        return [p for p in owned if (hash_ and labels(p).get("controller-revision-hash") == hash_)
                or (tgen and labels(p).get("pod-template-generation") == tgen)], tgen or hash_
    # Neither is known (no annotation, no ControllerRevisions seen): a pod is new when every
    # template container runs in it with the template's image (injected sidecars do not matter).
    st = ds.get("status") or {}
    if not (_observed(ds) and "desiredNumberScheduled" in st
            and st.get("updatedNumberScheduled", 0) >= st["desiredNumberScheduled"]):
        return [], None
    want = {c.get("name"): c.get("image") for c in (((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
            .get("containers") or []}
    def have(p: Pod) -> dict[str | None, str | None]:
        return {c.get("name"): c.get("image") for c in (p.get("spec") or {}).get("containers") or []}
    return [p for p in owned if all(have(p).get(n) == i for n, i in want.items())], None


def _daemonset_view(ds: Workload, snap: Snapshot) -> _View:
    name = ds["metadata"]["name"]
    spec, st = ds.get("spec") or {}, ds.get("status") or {}
    uid = _key(ds, "DaemonSet")
    owned = [p for p in snap.pods.values() if _owned_by(p, {uid})]
    new_pods, revision = _daemonset_new_pods(ds, owned, snap)
    desired = st.get("desiredNumberScheduled", 0)
    new_uids = {_id(p) for p in new_pods}
    old_pods = _active(p for p in owned if _id(p) not in new_uids)
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    old = len(old_pods) if not snap.status_only else max(desired - st.get("updatedNumberScheduled", 0), 0)
    progress = Progress(desired, st.get("updatedNumberScheduled", 0), len(ready_new), st.get("numberAvailable", 0), old)
    view = _View("", revision=revision, new_pods=new_pods, new_owner_uids={uid}, progress=progress)
    view.on_delete = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") == "OnDelete"
    if not _observed(ds):
        view.message = "Waiting for daemon set spec update to be observed..."
        return view
    if "desiredNumberScheduled" not in st:  # the controller has not counted the nodes yet
        view.message = f'Waiting for daemon set "{name}" status to be reported...'
        return view
    updated, available = st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0)
    if updated < desired:
        view.message = f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} new pods have been updated...'
    elif available < desired:
        view.message = f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} updated pods are available...'
    elif (old_pods or len(ready_new) < desired) if not snap.status_only else st.get("numberReady", desired) < desired:
        view.message = (f'Waiting for daemon set "{name}" rollout to finish: '
                        f'{st.get("numberReady", 0) if snap.status_only else len(ready_new)} of {desired} updated pods are ready...')
    else:
        view.done = True
        view.message = f'daemon set "{name}" successfully rolled out'
    return view


def _relevant_events(snap: Snapshot, view: _View) -> list[Event]:
    """Events about the new pods, the new ReplicaSet or the workload, oldest first."""
    uids = {p["metadata"].get("uid") for p in view.new_pods} - {None} | view.new_owner_uids
    names = {("Pod", p["metadata"]["name"]) for p in view.new_pods}
    out = []
    for ev in snap.events.values():
        io = ev.get("involvedObject") or {}
        if io.get("uid") in uids or (not io.get("uid") and (io.get("kind"), io.get("name")) in names):
            out.append(ev)
    return sorted(out, key=_event_time)


def _event_time(ev: Event) -> str:
    return ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") or \
        (ev.get("metadata") or {}).get("creationTimestamp") or ""


def _time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _terminal_problem(pod: Pod, policy: RolloutPlan, baseline: Mapping[str, int]) -> Failure | None:
    """Why a terminal (Failed) pod of the new revision fails the rollout, if it does.

    Workload pods restart always, so only the node ends them: eviction under node pressure, a
    node shutdown or loss, preemption. Those are not the revision's doing and the controller
    replaces the pod. It counts when its own status blames it: evicted for exceeding its own
    limits (ephemeral storage, emptyDir), killed at its ``activeDeadlineSeconds``, or restarted
    beyond tolerance (since the rollout began) before it was ended.
    """
    st, name = pod.get("status") or {}, pod["metadata"]["name"]
    reason, message = st.get("reason") or "", st.get("message") or ""
    lowered = message.lower()
    if reason == "Evicted" and "limit" in lowered and ("exceeds" in lowered or "exceeded" in lowered):
        return Failure("Evicted", message.strip(), name)
    if reason == "DeadlineExceeded":
        return Failure("DeadlineExceeded", message.strip() or "the pod ran past its activeDeadlineSeconds", name)
    for cs in st.get("containerStatuses") or []:
        total = cs.get("restartCount", 0) or 0
        restarts = max(total - baseline.get(cs.get("name") or "", 0), 0)
        last = (cs.get("lastState") or {}).get("terminated")
        if last and restarts > policy.restarts_tolerated:
            return _exit_failure(name, cs.get("name") or "", last, restarts, total)
    return None


def _pod_problem(pod: Pod, policy: RolloutPlan, now: float, events: list[Event],
                 baseline: Mapping[str, int]) -> tuple[Failure | None, str | None, float | None]:
    """(a failure, a warning still within grace, when that grace ends) for one new pod.

    Restarts count from ``baseline`` (the counts when the watch began), except for a container
    waiting in ``CrashLoopBackOff`` now: that state is itself current evidence."""
    name = pod["metadata"]["name"]
    st = pod.get("status") or {}
    uid = pod["metadata"].get("uid")
    pod_events = [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid
                  or (e.get("involvedObject") or {}).get("name") == name]
    statuses = [(cs, True) for cs in st.get("initContainerStatuses") or []] + \
               [(cs, False) for cs in st.get("containerStatuses") or []]
    for cs, _init in statuses:
        cname = cs.get("name")
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        total = cs.get("restartCount", 0) or 0
        restarts = max(total - baseline.get(cname or "", 0), 0)
        waiting, term, last_term = state.get("waiting"), state.get("terminated"), last.get("terminated")
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return Failure(waiting["reason"], waiting.get("message") or _event_message(pod_events, cname, waiting["reason"]),
                           name, cname, None, restarts), None, None
        if waiting and waiting.get("reason") == "CrashLoopBackOff" and total > policy.restarts_tolerated:
            exit_code = (last_term or {}).get("exitCode")
            why = (last_term or {}).get("reason")
            msg = f"container {cname} keeps exiting" + (f" with code {exit_code}" if exit_code is not None else "") + \
                  (f" ({why})" if why else "") + f"; {_restarted(restarts, total)}. {waiting.get('message', '')}".rstrip()
            return Failure("CrashLoopBackOff", msg, name, cname, exit_code, restarts), None, None
        if term and not (_init and term.get("exitCode") == 0) and restarts + 1 > policy.restarts_tolerated:
            return _exit_failure(name, cname, term, restarts, total), None, None
        if last_term and not _init and restarts > policy.restarts_tolerated:
            return _exit_failure(name, cname, last_term, restarts, total), None, None
    # Scheduling, within its grace window.
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            since = _time(cond.get("lastTransitionTime")) or _time(pod["metadata"].get("creationTimestamp")) or now
            msg = cond.get("message") or _event_message(pod_events, None, "FailedScheduling")
            if now - since >= policy.scheduling_grace:
                return Failure("Unschedulable", msg, name, None, None, None), None, None
            return None, f"Unschedulable - {msg}", since + policy.scheduling_grace
    # Readiness, within its grace window (from the container's start).
    pending, wake = None, None
    for cs in st.get("containerStatuses") or []:
        running = (cs.get("state") or {}).get("running")
        if running and not cs.get("ready"):
            since = _time(running.get("startedAt")) or now
            probe = _event_message(pod_events, cs.get("name"), "Unhealthy", default="")
            if now - since >= policy.readiness_grace:
                msg = probe or f"container {cs.get('name')} has been running {now - since:.0f}s without becoming ready"
                return Failure("ReadinessProbeFailed", msg, name, cs.get("name"), None, cs.get("restartCount", 0)), None, None
            if probe:
                pending = pending or f"Unhealthy - {probe}"
            end = since + policy.readiness_grace
            wake = end if wake is None else min(wake, end)
    return None, pending, wake


def _restarted(restarts: int, total: int) -> str:
    text = f"restarted {restarts} time{'s' if restarts != 1 else ''}"
    return text if total == restarts else f"{text} since the rollout began ({total} in all)"


def _exit_failure(pod: str, container: str | None, term: ContainerStateTerminated, restarts: int,
                  total: int) -> Failure:
    code = term.get("exitCode")
    reason = term.get("reason") or "Error"
    if reason not in ("OOMKilled", "Error", "Completed", "ContainerCannotRun", "StartError"):
        reason = "Error"
    if reason == "OOMKilled":
        msg = f"container {container} was killed for using too much memory (OOMKilled, exit code {code})"
    else:
        msg = f"container {container} exited with code {code}" + ("" if reason in ("Error", "Completed") else f" ({reason})")
    msg += f"; {_restarted(restarts, total)}"
    if term.get("message"):
        msg += f": {term['message'].strip()}"
    return Failure("OOMKilled" if reason == "OOMKilled" else ("ContainerExited" if reason in ("Error", "Completed") else reason),
                   msg, pod, container, code, restarts)


def _event_message(events: list[Event], container: str | None, reason: str, *, default: str | None = None) -> str:
    for ev in reversed(events):
        if ev.get("reason") == reason or (reason in FATAL_WAITING and ev.get("type") == "Warning"):
            fp = (ev.get("involvedObject") or {}).get("fieldPath") or ""
            if container is None or not fp or container in fp:
                return ev.get("message") or ""
    return reason if default is None else default


def same_image(running: str, wanted: str, image_id: str = "", *, digest: str | None = None) -> bool:
    """Whether ``running`` (a pod status's ``image``, with its ``imageID``) is the image ``wanted``.

    By digest whenever one is known (``digest``, or pinned in ``wanted``) and the pod's status
    names one: the same image under a sibling tag is the same image, another image under the
    very tag is not. Only then by reference (registry, repository, tag)."""
    if not running or not wanted:
        return False
    want = digest or _digest(wanted)
    if want:
        have = _digest(running) or _digest(image_id)
        if have:
            return have == want
        if _digest(wanted):
            return False  # pinned, and nothing says which digest runs
    return _normalize(running) == _normalize(wanted)


def _digest(ref: str | None) -> str | None:
    """The ``sha256:…`` manifest digest of ``repo@sha256:…`` (also ``docker-pullable://…``)."""
    if not ref or "@sha256:" not in ref:
        return None
    return ref.rsplit("@", 1)[1]


def _normalize(ref: str) -> str:
    ref = ref.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        ref += ":latest"
    return ref


# =============================================================================================
# The result


@dataclass
class RolloutResult:
    """The outcome of one rollout watch, with the evidence; ``to_json()`` is the report."""

    outcome: Literal["success", "failed", "timeout", "pending-on-delete"]
    message: str
    namespace: str
    kind: str
    name: str
    container: str
    reason: str | None = None
    expected_image: str | None = None
    image: str | None = None
    revision: str | None = None
    pod: str | None = None
    failed_container: str | None = None
    exit_code: int | None = None
    restart_count: int | None = None
    logs: dict[str, list[str]] = field(default_factory=lambda: {"current": [], "previous": []})
    log_errors: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # other failure reasons seen with ``reason``
    progress: list[str] = field(default_factory=list)
    started_at: str = ""
    elapsed: float = 0.0
    verdict_after: float = 0.0
    pods: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome == "success"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome, "reason": self.reason, "message": self.message,
            "workload": {"namespace": self.namespace, "kind": self.kind, "name": self.name,
                         "container": self.container, "revision": self.revision, "pods": list(self.pods)},
            "expected_image": self.expected_image, "image": self.image,
            "pod": self.pod, "container": self.failed_container, "exit_code": self.exit_code,
            "restart_count": self.restart_count,
            "logs": {"current": list(self.logs.get("current", [])), "previous": list(self.logs.get("previous", [])),
                     "errors": dict(self.log_errors)},
            "events": list(self.events), "evidence": list(self.evidence), "progress": list(self.progress),
            "timings": {"started_at": self.started_at, "elapsed_seconds": round(self.elapsed, 3),
                        "verdict_seconds": round(self.verdict_after, 3)},
        }


def raise_for_outcome(result: RolloutResult | Mapping[str, Any]) -> None:
    """Turn a failed or timed-out result into RolloutFailed / RolloutTimeout (exit 1), a pending
    one (OnDelete) into RolloutPending (exit 4)."""
    doc = result.to_json() if isinstance(result, RolloutResult) else result
    if doc["outcome"] == "success":
        return
    w = doc["workload"]
    where = f"{w['namespace']}/{w['kind']}/{w['name']}"
    if doc["outcome"] == "pending-on-delete":
        raise RolloutPending(f"rollout of {where} is pending: {doc['message']}",
                             hint=f"delete its pods one by one (`kubectl -n {w['namespace']} delete pod NAME`) to "
                                  "replace them, or switch the workload to the RollingUpdate strategy")
    what = f" (pod {doc['pod']}, container {doc['container']})" if doc.get("pod") else ""
    if doc["outcome"] == "timeout":
        raise RolloutTimeout(f"rollout of {where} did not finish in time: {doc['message']}",
                             hint=f"see `kubectl -n {w['namespace']} describe {w['kind'].lower()} {w['name']}`; "
                                  "raise services.<name>.rollout.deadline in deploy.yaml if it is only slow")
    raise RolloutFailed(f"rollout of {where} failed: {doc['reason']}{what}: {doc['message']}",
                        hint=_next_step(doc))


def _next_step(doc: Mapping[str, Any]) -> str:
    reason, ns, pod = doc.get("reason"), doc["workload"]["namespace"], doc.get("pod")
    if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"):
        return "check that the image was pushed and the cluster can pull it (imagePullSecrets, registry reachable)"
    if reason == "CreateContainerConfigError":
        return "create the missing Secret or ConfigMap the pod refers to, then roll out again"
    if reason in ("CrashLoopBackOff", "ContainerExited", "OOMKilled"):
        extra = " or raise its memory limit" if reason == "OOMKilled" else ""
        return f"read the logs above (`kubectl -n {ns} logs {pod} --previous`), fix the service{extra}, and deploy again"
    if reason == "Unschedulable":
        return "free capacity or lower the pod's resource requests / node constraints"
    if reason == "ReadinessProbeFailed":
        return "check the readiness probe and the service's health endpoint, or raise rollout.readiness_grace"
    if reason == "FailedCreate":
        return (f"the controller cannot create pods: fix what the message names (ServiceAccount, quota, admission), "
                f"see `kubectl -n {ns} describe replicaset`")
    if reason == "ProgressDeadlineExceeded":
        return f"see `kubectl -n {ns} describe deployment {doc['workload']['name']}` and the events above"
    return f"see `kubectl -n {ns} get events --sort-by=.lastTimestamp`"


# =============================================================================================
# The loop: list, watch, resume, re-list on 410


def selector(w: Workload) -> str:
    """The workload's pod selector as a label-selector string (also its ReplicaSets' and revisions')."""
    sel = (w.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(parts)


def take_baseline(snap: Snapshot, since: float) -> None:
    """Record the restart counts of the pods that were Ready before ``since`` (first sight only).

    Their restarts happened before the rollout began (the pod has been serving since), so they
    never count against it. A pod not Ready then - new, starting, crashing - counts all of its
    restarts."""
    for pod in snap.pods.values():
        uid = pod["metadata"].get("uid")
        if not uid or uid in snap.restart_baseline:
            continue
        st = pod.get("status") or {}
        ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        since_ready = _time((ready or {}).get("lastTransitionTime")) if (ready or {}).get("status") == "True" else None
        if since_ready is not None and since_ready < since:
            snap.restart_baseline[uid] = {
                cs.get("name") or "": cs.get("restartCount", 0) or 0
                for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])}


# What each kind needs listed, beside the workload, its pods and the events, before a verdict.
_OWNED: dict[str, set[str]] = {"Deployment": {"replicasets"}, "DaemonSet": {"controllerrevisions"}}


def watch_rollout(api: Any, *, namespace: str, workload: WorkloadPlan, expected_image: str | None,
                  policy: RolloutPlan, deadline: float | None = None,
                  progress: Callable[[str], None] | None = None, watch_seconds: int = 60,
                  expected_digest: str | None = None, since: float | None = None) -> RolloutResult:
    """Watch ``workload`` in ``namespace`` until it is rolled out, fails, or the deadline passes.

    ``api`` is a :class:`forgegen.runtime.kubeapi.Client` (or a ``kubernetes`` ApiClient).
    ``progress`` gets each new status line (kubectl's wording). ``expected_digest`` is the pushed image's digest (see :func:`assess`).
    ``since`` (wall-clock, default: now) is when the rollout began: restarts of pods already
    Ready before it count only from the moment the watch first sees them. Returns a
    :class:`RolloutResult`; see the module docstring.
    """
    w = _Watch(api, namespace, workload, expected_image, expected_digest, policy,
               deadline if deadline is not None else policy.deadline, progress, watch_seconds)
    w.since = since if since is not None else w.wall0
    with w.streams:
        return w.run()


class _Watch:
    """The state of one rollout watch: streams, the snapshot, the progress lines, the clocks."""

    def __init__(self, api: Any, namespace: str, workload: WorkloadPlan, expected_image: str | None,
                 expected_digest: str | None, policy: RolloutPlan, fixed_deadline: float | None,
                 progress: Callable[[str], None] | None, watch_seconds: int) -> None:
        from forgegen.runtime import kubeapi

        self.apps, self.core = kubeapi.AppsV1Api(api), kubeapi.CoreV1Api(api)
        self.namespace, self.workload, self.policy = namespace, workload, policy
        self.expected_image, self.expected_digest = expected_image, expected_digest
        self.fixed_deadline, self.progress = fixed_deadline, progress
        self.t0, self.wall0 = time.monotonic(), time.time()
        self.since = self.wall0
        self.streams = Streams(watch_seconds)
        self.snap = Snapshot()
        self.lines: list[str] = []
        self.last_fp: Progress | None = None
        self.last_progress = self.t0
        self.status: Status | None = None

    def start(self, resource: str, fn: Callable[..., Any], **kw: Any) -> None:
        self.streams.open(resource, fn, namespace=self.namespace, **kw)

    def say(self, msg: str) -> None:
        if not self.lines or self.lines[-1] != msg:
            self.lines.append(msg)
            if self.progress is not None:
                self.progress(msg)

    def run(self) -> RolloutResult:
        list_workload = {"Deployment": self.apps.list_namespaced_deployment,
                         "StatefulSet": self.apps.list_namespaced_stateful_set,
                         "DaemonSet": self.apps.list_namespaced_daemon_set}[self.workload.kind]
        self.start("workload", list_workload, field_selector=f"metadata.name={self.workload.name}")
        # Only warnings: every event a verdict or report reads is one (BackOff, Failed, FailedScheduling,
        # Unhealthy, FailedCreate); a busy namespace holds far more Normal events, listed for nothing.
        self.start("events", self.core.list_namespaced_event, field_selector="type=Warning")
        done = watch_until(self.streams, self, self.judge, self.end, wake=self.wake, on_fatal=self.fatal)
        if done is not None:
            return done
        end = self.end()
        return self.finish(self.timed_out(end, self.streams.listed(*self.needed())), time.monotonic() - self.t0,
                           timeout=True)

    def needed(self) -> set[str]:
        """What must be listed before a verdict: a partial view must not pass."""
        return {"workload", "events"} | (
            {"pods"} | _OWNED.get(self.workload.kind, set()) if "pods" in self.streams else set())

    def judge(self) -> RolloutResult | None:
        if self.snap.workload is not None and "pods" not in self.streams:
            self.open_owned_streams(selector(self.snap.workload))
            return None
        if not self.streams.listed(*self.needed()):
            return None
        self.status = assess(self.snap, self.workload, self.policy, self.expected_image, time.time(),
                             expected_digest=self.expected_digest)
        self.say(self.status.message)
        if self.status.state != "progressing":
            return self.finish(self.status, time.monotonic() - self.t0)
        if self.status.progress != self.last_fp:
            self.last_fp, self.last_progress = self.status.progress, time.monotonic()
        return None

    def wake(self) -> float | None:
        """The status's own wake-up time (wall clock) as a monotonic time."""
        if self.status is None or self.status.wake_at is None:
            return None
        return time.monotonic() + max(self.status.wake_at - time.time(), 0.0) + 0.009

    def end(self) -> float:
        if self.fixed_deadline is not None:
            return self.t0 + self.fixed_deadline
        pds = ((self.snap.workload or {}).get("spec") or {}).get("progressDeadlineSeconds")
        return self.last_progress + float(pds or DEFAULT_PROGRESS_DEADLINE)

    def timed_out(self, end: float, synced: bool) -> Status:
        status = self.status
        message = (status.message if status else "") or "no status seen"
        trouble = self.streams.trouble
        if trouble and not synced:
            message = f"the Kubernetes API could not be watched: {trouble}"
        return Status("failed", message, Failure(
            "DeadlineExceeded" if synced else "ApiUnavailable", f"no successful rollout within {end - self.t0:.0f}s: {message}"),
            status.revision if status else None, status.new_pods if status else (), status.image if status else None)

    # The sink watch_until feeds: the snapshot, plus the restart baseline at each pod list.
    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None:
        self.snap.replace(resource, items)
        if resource == "pods":
            self.take_baseline()

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        self.snap.apply(resource, kind, obj)

    def fatal(self, event: Fatal) -> RolloutFailed:
        err = event.error
        return RolloutFailed(
            f"cannot watch {event.resource} of {self.namespace}/{self.workload.kind}/{self.workload.name}: "
            f"{err.status} {err.reason}",
            hint="check the Kubernetes credentials and RBAC (list/watch on the workload, replicasets, "
                 "controllerrevisions, pods and events, get on pods/log)")

    def take_baseline(self) -> None:
        """Restart counts of the pods already settled before the rollout began, at first sight."""
        take_baseline(self.snap, self.since)

    def open_owned_streams(self, sel: str) -> None:
        self.start("pods", self.core.list_namespaced_pod, label_selector=sel)
        if self.workload.kind == "Deployment":
            self.start("replicasets", self.apps.list_namespaced_replica_set, label_selector=sel)
        elif self.workload.kind == "DaemonSet":  # the controller labels its revisions with the pods' labels
            self.start("controllerrevisions", self.apps.list_namespaced_controller_revision, label_selector=sel)

    def finish(self, status: Status, verdict: float, *, timeout: bool = False) -> RolloutResult:
        return _finish(self.core, self.namespace, self.workload, self.expected_image, status, self.snap, self.lines,
                       self.wall0, self.t0, verdict, timeout=timeout)


def _finish(core: Any, namespace: str, workload: WorkloadPlan, expected_image: str | None, status: Status,
            snap: Snapshot, lines: list[str], wall0: float, t0: float, verdict: float,
            *, timeout: bool = False) -> RolloutResult:
    f = status.failure
    result = RolloutResult(
        outcome="timeout" if timeout else _OUTCOME[status.state],
        message=f.message if f else status.message, namespace=namespace, kind=workload.kind, name=workload.name,
        container=workload.container, reason=f.reason if f else None, expected_image=expected_image,
        image=status.image, revision=status.revision, progress=list(lines), started_at=iso(wall0),
        verdict_after=verdict, pods=status.new_pods)
    if f is not None:
        result.evidence = list(f.evidence)
        result.pod, result.failed_container = f.pod, f.container
        result.exit_code, result.restart_count = f.exit_code, f.restart_count
        pod = f.pod or _worst_pod(snap, status)
        if pod is not None:  # the kubelet writes its events just after the status: fetch them fresh
            try:
                resp = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}",
                                                  _preload_content=False, _request_timeout=(5, 10))
                for ev in json.loads(resp.data).get("items") or []:
                    snap.apply("events", "ADDED", ev)
            except Exception as err:  # noqa: BLE001 - the evidence is best effort
                log.debug("could not list the events of %s: %s", pod, err)
        result.events = _warning_events(snap, status)
        if pod is not None:
            result.pod = pod
            container = f.container or workload.container
            result.failed_container = container
            for key, previous in (("current", False), ("previous", True)):
                try:
                    resp = core.read_namespaced_pod_log(pod, namespace, container=container, previous=previous,
                                                        tail_lines=LOG_LINES, _preload_content=False,
                                                        _request_timeout=(5, 10))
                    text = resp.data.decode("utf-8", errors="replace")
                    result.logs[key] = text.splitlines()[-LOG_LINES:]
                except Exception as err:  # noqa: BLE001 - the evidence is best effort
                    result.log_errors[key] = api_error(err)[1]
    result.elapsed = time.monotonic() - t0
    return result


_OUTCOME: dict[str, Literal["success", "failed", "pending-on-delete"]] = {
    "done": "success", "failed": "failed", "pending-on-delete": "pending-on-delete"}


def _worst_pod(snap: Snapshot, status: Status) -> str | None:
    """For a deadline: the first new pod that is not ready (its logs are the likeliest clue)."""
    for p in sorted(snap.pods.values(), key=lambda p: p["metadata"]["name"]):
        if p["metadata"]["name"] in status.new_pods and not _ready(p):
            return p["metadata"]["name"]
    return None


def _warning_events(snap: Snapshot, status: Status) -> list[dict[str, Any]]:
    names = set(status.new_pods)
    out = []
    for ev in sorted(snap.events.values(), key=_event_time):
        io = ev.get("involvedObject") or {}
        if ev.get("type") != "Warning":
            continue
        if io.get("kind") == "Pod" and io.get("name") not in names:
            continue
        out.append({"type": ev.get("type"), "reason": ev.get("reason"), "message": ev.get("message"),
                    "object": f"{io.get('kind')}/{io.get('name')}", "count": ev.get("count", 1),
                    "first_seen": ev.get("firstTimestamp") or ev.get("eventTime"),
                    "last_seen": _event_time(ev)})
    return out[-EVENT_LIMIT:]


# =============================================================================================
# The command: `forge rollout SERVICE:ENVIRONMENT`


def run_rollout(plan: Plan, service: str, environment: str | None, *, json_output: bool,
                expected_image: str | None = None, deadline: float | None = None,
                api: Any = None, stream: Any = None) -> RolloutReport:
    """``forge rollout S:E``: watch, print progress and the verdict on stderr (``stream``), return
    the report.

    The caller prints the report with ``--json`` and calls :func:`raise_for_outcome` for the
    exit code. ``api`` overrides the client built from the plan's kubeconfig/context.
    """
    import sys

    from forgegen.runtime import kube, present

    svc = plan.service(service)
    tgt = svc.target(environment)
    client = api if api is not None else kube.client_for_target(tgt)
    err = stream if stream is not None else sys.stderr
    printer = present.ProgressPrinter(err)
    try:
        result = watch_rollout(client, namespace=tgt.namespace, workload=svc.workload, expected_image=expected_image,
                               policy=svc.rollout, deadline=deadline, progress=printer)
    finally:
        printer.close()
    report = RolloutReport(service=svc.name, environment=tgt.environment, result=result)
    text = present.rollout_report(result.to_json())
    printer.say(text.splitlines()[0] if json_output else text)
    return report
