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

``watch_rollout`` returns a :class:`RolloutResult` for every outcome (success, failed, timeout)
and raises nothing for a failed rollout: the caller decides (``raise_for_outcome`` turns a
result into :class:`~forgegen.errors.RolloutFailed` / :class:`~forgegen.errors.RolloutTimeout`).
It raises :class:`~forgegen.errors.RolloutFailed` only when it cannot watch at all (RBAC
forbids it, the API has no such resource).

Deadline: ``deadline`` seconds if given, else the plan's ``rollout.deadline``; without either,
the rollout fails after the workload's ``progressDeadlineSeconds`` (600 s by default, also for
StatefulSets and DaemonSets, which have none) *without progress*, as the Deployment controller
counts it, so a long but steadily progressing rollout is not cut short.

``kubernetes`` is imported inside functions only (``import forgegen.cli`` stays light).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from forgegen.errors import RolloutFailed, RolloutTimeout
from forgegen.runtime.watch import Stream, close_streams, next_batch

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

State = Literal["progressing", "done", "failed"]


# =============================================================================================
# The pure part: snapshot -> status


@dataclass
class Snapshot:
    """What the watches have seen so far, by ``metadata.uid``."""

    workload: dict | None = None
    replicasets: dict[str, dict] = field(default_factory=dict)
    controllerrevisions: dict[str, dict] = field(default_factory=dict)  # DaemonSets only
    pods: dict[str, dict] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)

    def apply(self, resource: str, kind: str, obj: dict) -> None:
        """Apply one watch event (``ADDED``/``MODIFIED``/``DELETED``) of ``resource``."""
        if resource == "workload":
            self.workload = None if kind == "DELETED" else obj
            return
        bucket: dict[str, dict] = getattr(self, resource)
        uid = obj.get("metadata", {}).get("uid", "")
        if kind == "DELETED":
            bucket.pop(uid, None)
            return
        held = bucket.get(uid)
        if held is not None and _rv(held) > _rv(obj):
            return  # an older version (two streams racing after a re-list): keep the newer
        bucket[uid] = obj

    def replace(self, resource: str, items: Iterable[dict]) -> None:
        """Replace a whole collection with a fresh list (after the first list or a 410)."""
        items = list(items)
        if resource == "workload":
            self.workload = items[0] if items else None
            return
        setattr(self, resource, {o["metadata"]["uid"]: o for o in items})


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    pod: str | None = None
    container: str | None = None
    exit_code: int | None = None
    restart_count: int | None = None


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
           now: float) -> Status:
    """Where the rollout stands, from one snapshot. ``now`` is wall-clock (server timestamps)."""
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
    if container is None:
        names = ", ".join(c.get("name", "?") for c in template_containers) or "none"
        return Status("failed", view.message, Failure(
            "ContainerNotFound",
            f"{workload.kind} {workload.name} has no container {workload.container!r} (it has: {names})"))
    image = container.get("image", "")
    if view.failure is not None:
        return _status(view, "failed", view.message, view.failure, image)

    # The pods of the new revision: the evidence kubectl never looks at.
    events = _relevant_events(snap, view)
    wake: list[float] = []
    warning: str | None = None
    for pod in sorted(view.new_pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        problem, pending, at = _pod_problem(pod, policy, now, events)
        if problem is not None:
            return _status(view, "failed", view.message, problem, image)
        if pending and warning is None:
            warning = pending
        if at is not None:
            wake.append(at)
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
    if not view.done:
        return _status(view, "progressing", message, None, image, wake_at)
    # Done by the controller's counts and by the pods we see: check what actually runs.
    for pod in view.new_pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == workload.container and not same_image(cs.get("image", ""), image, cs.get("imageID", "")):
                return _status(view, "failed", view.message, Failure(
                    "ImageMismatch", f"pod {pod['metadata']['name']} runs {cs.get('image')} in container "
                    f"{workload.container}, but the {workload.kind} asks for {image}",
                    pod=pod["metadata"]["name"], container=workload.container), image)
    return _status(view, "done", view.message, None, image)


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
    new_pods: list[dict] = field(default_factory=list)
    new_owner_uids: set[str] = field(default_factory=set)
    progress: Progress | None = None
    new_rs_failure: tuple[Failure, float] | None = None


def _observed(w: dict) -> bool:
    gen = w["metadata"].get("generation", 0)
    obs = (w.get("status") or {}).get("observedGeneration")
    return obs is not None and gen <= obs


def _owned_by(obj: dict, uids: set[str]) -> bool:
    return any(r.get("uid") in uids for r in obj["metadata"].get("ownerReferences") or [])


def _active(pods: Iterable[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _strip_hash(template: dict) -> dict:
    t = json.loads(json.dumps(template))
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return t


def _deployment_view(d: dict, snap: Snapshot) -> _View:
    name = d["metadata"]["name"]
    spec, st = d.get("spec") or {}, d.get("status") or {}
    desired = spec.get("replicas", 1)
    uid = d["metadata"]["uid"]
    rss = [r for r in snap.replicasets.values() if _owned_by(r, {uid})]
    template = spec.get("template") or {}
    new_rs = next((r for r in rss if _strip_hash((r.get("spec") or {}).get("template") or {}) == template), None)
    if new_rs is None:
        rev = (d["metadata"].get("annotations") or {}).get(REVISION)
        new_rs = next((r for r in rss if rev and (r["metadata"].get("annotations") or {}).get(REVISION) == rev
                       and _observed(d)), None)
    old_uids = {r["metadata"]["uid"] for r in rss if r is not new_rs}
    new_uids = {new_rs["metadata"]["uid"]} if new_rs else set()
    pods = list(snap.pods.values())
    new_pods = [p for p in pods if new_uids and _owned_by(p, new_uids)]
    old_pods = _active(p for p in pods if _owned_by(p, old_uids))
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    progress = Progress(desired, st.get("updatedReplicas", 0), len(ready_new), st.get("availableReplicas", 0), len(old_pods))
    revision = (new_rs["metadata"].get("annotations") or {}).get(REVISION) if new_rs else None
    view = _View("", revision=revision, new_pods=new_pods, new_owner_uids=new_uids | {uid}, progress=progress)
    if new_rs is not None:
        for c in (new_rs.get("status") or {}).get("conditions") or []:
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
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


def _ordinal(pod: dict) -> int:
    try:
        return int(pod["metadata"]["name"].rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _statefulset_view(s: dict, snap: Snapshot) -> _View:
    spec, st = s.get("spec") or {}, s.get("status") or {}
    uid = s["metadata"]["uid"]
    strategy = spec.get("updateStrategy") or {}
    replicas = spec.get("replicas", 1)
    partition = (strategy.get("rollingUpdate") or {}).get("partition", 0) or 0
    update_rev = st.get("updateRevision")
    owned = [p for p in snap.pods.values() if _owned_by(p, {uid})]
    rev = lambda p: (p["metadata"].get("labels") or {}).get("controller-revision-hash")  # noqa: E731
    new_pods = [p for p in owned if update_rev and rev(p) == update_rev]
    old_pods = _active(p for p in owned if rev(p) != update_rev and _ordinal(p) >= partition)
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    want_new = max(replicas - partition, 0)
    progress = Progress(replicas, st.get("updatedReplicas", 0), len(ready_new), st.get("availableReplicas", 0), len(old_pods))
    view = _View("", revision=update_rev, new_pods=new_pods, new_owner_uids={uid}, progress=progress)
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        view.message = "rollout status is only available for RollingUpdate strategy type"
        view.failure = Failure("OnDeleteStrategy", f"statefulset {s['metadata']['name']} uses the OnDelete update "
                               "strategy: its pods are replaced only when deleted, so the rollout cannot be watched")
        return view
    if not st.get("observedGeneration") or not _observed(s):
        view.message = "Waiting for statefulset spec update to be observed..."
        return view
    ready = st.get("readyReplicas", 0)
    if ready < replicas:
        view.message = f"Waiting for {replicas - ready} pods to be ready..."
    elif st.get("updatedReplicas", 0) < want_new:
        view.message = (f"Waiting for partitioned roll out to finish: {st.get('updatedReplicas', 0)} out of "
                        f"{want_new} new pods have been updated...")
    elif old_pods or len(ready_new) < want_new:
        view.message = (f"waiting for statefulset rolling update to complete {len(ready_new)} pods at revision "
                        f"{update_rev}...")
    else:
        view.done = True
        view.message = (f"partitioned roll out complete: {st.get('updatedReplicas', 0)} new pods have been updated..."
                        if partition else
                        f"statefulset rolling update complete {st.get('updatedReplicas', 0)} pods at revision {update_rev}...")
    return view


def _daemonset_revision(ds: dict, snap: Snapshot) -> tuple[str | None, str | None]:
    """(the current revision hash, the template generation) of a DaemonSet, where known.

    As the controller decides (``util.IsPodUpdated``): a pod is new when its
    ``controller-revision-hash`` is the hash of the ControllerRevision holding the current
    template, or its ``pod-template-generation`` is the template-generation annotation (which,
    unlike ``metadata.generation``, moves only when the template changes).
    """
    tgen = (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)
    uid = ds["metadata"].get("uid")
    template = (ds.get("spec") or {}).get("template") or {}
    matching = []
    for cr in snap.controllerrevisions.values():
        data = (((cr.get("data") or {}).get("spec") or {}).get("template")) or {}
        if _owned_by(cr, {uid}) and {k: v for k, v in data.items() if k != "$patch"} == template:
            matching.append(cr)
    best = max(matching, key=lambda cr: cr.get("revision") or 0, default=None)
    hash_ = ((best or {}).get("metadata", {}).get("labels") or {}).get("controller-revision-hash") if best else None
    return hash_, tgen


def _daemonset_new_pods(ds: dict, owned: list[dict], snap: Snapshot) -> tuple[list[dict], str | None]:
    hash_, tgen = _daemonset_revision(ds, snap)
    labels = lambda p: p["metadata"].get("labels") or {}  # noqa: E731
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
    have = lambda p: {c.get("name"): c.get("image") for c in (p.get("spec") or {}).get("containers") or []}  # noqa: E731
    return [p for p in owned if all(have(p).get(n) == i for n, i in want.items())], None


def _daemonset_view(ds: dict, snap: Snapshot) -> _View:
    name = ds["metadata"]["name"]
    spec, st = ds.get("spec") or {}, ds.get("status") or {}
    uid = ds["metadata"].get("uid")
    owned = [p for p in snap.pods.values() if _owned_by(p, {uid})]
    new_pods, revision = _daemonset_new_pods(ds, owned, snap)
    desired = st.get("desiredNumberScheduled", 0)
    new_uids = {p["metadata"]["uid"] for p in new_pods}
    old_pods = _active(p for p in owned if p["metadata"]["uid"] not in new_uids)
    ready_new = [p for p in _active(new_pods) if _ready(p)]
    progress = Progress(desired, st.get("updatedNumberScheduled", 0), len(ready_new), st.get("numberAvailable", 0), len(old_pods))
    view = _View("", revision=revision, new_pods=new_pods, new_owner_uids={uid}, progress=progress)
    if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
        view.message = "rollout status is only available for RollingUpdate strategy type"
        view.failure = Failure("OnDeleteStrategy", f"daemon set {name} uses the OnDelete update strategy: its pods "
                               "are replaced only when deleted, so the rollout cannot be watched")
        return view
    if not _observed(ds):
        view.message = "Waiting for daemon set spec update to be observed..."
        return view
    updated, available = st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0)
    if updated < desired:
        view.message = f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} new pods have been updated...'
    elif available < desired:
        view.message = f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} updated pods are available...'
    elif old_pods or len(ready_new) < desired:
        view.message = f'Waiting for daemon set "{name}" rollout to finish: {len(ready_new)} of {desired} updated pods are ready...'
    else:
        view.done = True
        view.message = f'daemon set "{name}" successfully rolled out'
    return view


def _relevant_events(snap: Snapshot, view: _View) -> list[dict]:
    """Events about the new pods, the new ReplicaSet or the workload, oldest first."""
    uids = {p["metadata"]["uid"] for p in view.new_pods} | view.new_owner_uids
    names = {("Pod", p["metadata"]["name"]) for p in view.new_pods}
    out = []
    for ev in snap.events.values():
        io = ev.get("involvedObject") or {}
        if io.get("uid") in uids or (not io.get("uid") and (io.get("kind"), io.get("name")) in names):
            out.append(ev)
    return sorted(out, key=_event_time)


def _event_time(ev: dict) -> str:
    return ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") or \
        (ev.get("metadata") or {}).get("creationTimestamp") or ""


def _time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pod_problem(pod: dict, policy: RolloutPlan, now: float, events: list[dict]) -> tuple[Failure | None, str | None, float | None]:
    """(a failure, a warning still within grace, when that grace ends) for one new pod."""
    name = pod["metadata"]["name"]
    st = pod.get("status") or {}
    uid = pod["metadata"]["uid"]
    pod_events = [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid
                  or (e.get("involvedObject") or {}).get("name") == name]
    statuses = [(cs, True) for cs in st.get("initContainerStatuses") or []] + \
               [(cs, False) for cs in st.get("containerStatuses") or []]
    for cs, _init in statuses:
        cname = cs.get("name")
        state, last = cs.get("state") or {}, cs.get("lastState") or {}
        restarts = cs.get("restartCount", 0) or 0
        waiting, term, last_term = state.get("waiting"), state.get("terminated"), last.get("terminated")
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return Failure(waiting["reason"], waiting.get("message") or _event_message(pod_events, cname, waiting["reason"]),
                           name, cname, None, restarts), None, None
        if waiting and waiting.get("reason") == "CrashLoopBackOff" and restarts > policy.restarts_tolerated:
            exit_code = (last_term or {}).get("exitCode")
            why = (last_term or {}).get("reason")
            msg = f"container {cname} keeps exiting" + (f" with code {exit_code}" if exit_code is not None else "") + \
                  (f" ({why})" if why else "") + f"; restarted {restarts} times. {waiting.get('message', '')}".rstrip()
            return Failure("CrashLoopBackOff", msg, name, cname, exit_code, restarts), None, None
        if term and not (_init and term.get("exitCode") == 0) and restarts + 1 > policy.restarts_tolerated:
            return _exit_failure(name, cname, term, restarts, current=True), None, None
        if last_term and not _init and restarts > policy.restarts_tolerated:
            return _exit_failure(name, cname, last_term, restarts, current=False), None, None
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


def _exit_failure(pod: str, container: str, term: dict, restarts: int, *, current: bool) -> Failure:
    code = term.get("exitCode")
    reason = term.get("reason") or "Error"
    if reason not in ("OOMKilled", "Error", "Completed", "ContainerCannotRun", "StartError"):
        reason = "Error"
    if reason == "OOMKilled":
        msg = f"container {container} was killed for using too much memory (OOMKilled, exit code {code})"
    else:
        msg = f"container {container} exited with code {code}" + ("" if reason in ("Error", "Completed") else f" ({reason})")
    msg += f"; restarted {restarts} time{'s' if restarts != 1 else ''}"
    if term.get("message"):
        msg += f": {term['message'].strip()}"
    return Failure("OOMKilled" if reason == "OOMKilled" else ("ContainerExited" if reason in ("Error", "Completed") else reason),
                   msg, pod, container, code, restarts)


def _event_message(events: list[dict], container: str | None, reason: str, *, default: str | None = None) -> str:
    for ev in reversed(events):
        if ev.get("reason") == reason or (reason in FATAL_WAITING and ev.get("type") == "Warning"):
            fp = (ev.get("involvedObject") or {}).get("fieldPath") or ""
            if container is None or not fp or container in fp:
                return ev.get("message") or ""
    return reason if default is None else default


def same_image(running: str, wanted: str, image_id: str = "") -> bool:
    """Whether ``running`` (from a pod status) is the image reference ``wanted``."""
    if not running or not wanted:
        return False
    if "@sha256:" in wanted:
        digest = wanted.split("@", 1)[1]
        return digest in running or digest in image_id
    return _normalize(running) == _normalize(wanted)


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

    outcome: Literal["success", "failed", "timeout"]
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
    events: list[dict] = field(default_factory=list)
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
            "events": list(self.events), "progress": list(self.progress),
            "timings": {"started_at": self.started_at, "elapsed_seconds": round(self.elapsed, 3),
                        "verdict_seconds": round(self.verdict_after, 3)},
        }


def raise_for_outcome(result: RolloutResult | Mapping[str, Any]) -> None:
    """Turn a failed or timed-out result into RolloutFailed / RolloutTimeout (exit 1)."""
    doc = result.to_json() if isinstance(result, RolloutResult) else result
    if doc["outcome"] == "success":
        return
    w = doc["workload"]
    where = f"{w['namespace']}/{w['kind']}/{w['name']}"
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
    if reason == "ProgressDeadlineExceeded":
        return f"see `kubectl -n {ns} describe deployment {doc['workload']['name']}` and the events above"
    return f"see `kubectl -n {ns} get events --sort-by=.lastTimestamp`"


# =============================================================================================
# The loop: list, watch, resume, re-list on 410


def _selector(w: dict) -> str:
    sel = (w.get("spec") or {}).get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(parts)


# What each kind needs listed, beside the workload, its pods and the events, before a verdict.
_OWNED: dict[str, set[str]] = {"Deployment": {"replicasets"}, "DaemonSet": {"controllerrevisions"}}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def watch_rollout(api: Any, *, namespace: str, workload: WorkloadPlan, expected_image: str | None,
                  policy: RolloutPlan, deadline: float | None = None,
                  progress: Callable[[str], None] | None = None, watch_seconds: int = 60) -> RolloutResult:
    """Watch ``workload`` in ``namespace`` until it is rolled out, fails, or the deadline passes.

    ``api`` is a ``kubernetes.client.ApiClient``. ``progress`` gets each new status line
    (kubectl's wording). Returns a :class:`RolloutResult`; see the module docstring.
    """
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    list_workload = {"Deployment": apps.list_namespaced_deployment, "StatefulSet": apps.list_namespaced_stateful_set,
                     "DaemonSet": apps.list_namespaced_daemon_set}[workload.kind]
    t0, wall0 = time.monotonic(), time.time()
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    streams: dict[str, Stream] = {}

    def start(resource: str, fn: Callable[..., Any], **kw: Any) -> None:
        s = Stream(resource, fn, {"namespace": namespace, **kw}, out, stop, watch_seconds)
        streams[resource] = s
        s.start()

    start("workload", list_workload, field_selector=f"metadata.name={workload.name}")
    start("events", core.list_namespaced_event)
    snap = Snapshot()
    synced: set[str] = set()
    lines: list[str] = []
    last_fp: Progress | None = None
    last_progress = t0
    trouble: str | None = None
    status: Status | None = None
    fixed_deadline = deadline if deadline is not None else policy.deadline

    def say(msg: str) -> None:
        if not lines or lines[-1] != msg:
            lines.append(msg)
            if progress is not None:
                progress(msg)

    try:
        while True:
            # Judge only once every collection has been listed: a partial view must not pass.
            needed = {"workload", "events"} | ({"pods"} | _OWNED.get(workload.kind, set()) if "pods" in streams else set())
            now = time.time()
            if needed <= synced and (snap.workload is None or "pods" in streams):
                status = assess(snap, workload, policy, expected_image, now)
                say(status.message)
                if status.state != "progressing":
                    verdict = time.monotonic() - t0
                    return _finish(core, namespace, workload, expected_image, status, snap, lines, wall0, t0, verdict)
                if status.progress != last_fp:
                    last_fp, last_progress = status.progress, time.monotonic()
            # Deadlines
            mono = time.monotonic()
            if fixed_deadline is not None:
                end = t0 + fixed_deadline
            else:
                pds = float(((snap.workload or {}).get("spec") or {}).get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE)
                end = last_progress + pds
            if mono >= end:
                verdict = mono - t0
                message = (status.message if status else "") or "no status seen"
                if trouble and not needed <= synced:
                    message = f"the Kubernetes API could not be watched: {trouble}"
                st = Status("failed", message, Failure(
                    "DeadlineExceeded" if needed <= synced else "ApiUnavailable",
                    f"no successful rollout within {end - t0:.0f}s: {message}"),
                    status.revision if status else None, status.new_pods if status else (),
                    status.image if status else None)
                return _finish(core, namespace, workload, expected_image, st, snap, lines, wall0, t0, verdict,
                               timeout=True)
            wait = end - mono
            if status is not None and status.wake_at is not None:
                wait = min(wait, max(status.wake_at - time.time(), 0.0) + 0.01)
            batch = next_batch(out, wait)
            if not batch:
                continue
            for item in batch:
                tag, resource = item[0], item[1]
                if tag == "sync":
                    snap.replace(resource, item[2])
                    synced.add(resource)
                    trouble = None
                elif tag == "event":
                    snap.apply(resource, item[2], item[3])
                elif tag == "trouble":
                    trouble = item[2]
                elif tag == "fatal":
                    err = item[2]
                    raise RolloutFailed(
                        f"cannot watch {resource} of {namespace}/{workload.kind}/{workload.name}: "
                        f"{err.status} {err.reason}",
                        hint="check the Kubernetes credentials and RBAC (list/watch on the workload, "
                             "replicasets, pods and events, get on pods/log)") from err
            if snap.workload is not None and "pods" not in streams:
                sel = _selector(snap.workload)
                start("pods", core.list_namespaced_pod, label_selector=sel)
                if workload.kind == "Deployment":
                    start("replicasets", apps.list_namespaced_replica_set, label_selector=sel)
                elif workload.kind == "DaemonSet":  # the controller labels its revisions with the pods' labels
                    start("controllerrevisions", apps.list_namespaced_controller_revision, label_selector=sel)
    finally:
        close_streams(streams.values(), stop)


def _finish(core: Any, namespace: str, workload: WorkloadPlan, expected_image: str | None, status: Status,
            snap: Snapshot, lines: list[str], wall0: float, t0: float, verdict: float,
            *, timeout: bool = False) -> RolloutResult:
    f = status.failure
    result = RolloutResult(
        outcome="timeout" if timeout else ("success" if status.state == "done" else "failed"),
        message=f.message if f else status.message, namespace=namespace, kind=workload.kind, name=workload.name,
        container=workload.container, reason=f.reason if f else None, expected_image=expected_image,
        image=status.image, revision=status.revision, progress=list(lines), started_at=_iso(wall0),
        verdict_after=verdict, pods=status.new_pods)
    if f is not None:
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
                    result.log_errors[key] = _api_message(err)
    result.elapsed = time.monotonic() - t0
    return result


def _worst_pod(snap: Snapshot, status: Status) -> str | None:
    """For a deadline: the first new pod that is not ready (its logs are the likeliest clue)."""
    for p in sorted(snap.pods.values(), key=lambda p: p["metadata"]["name"]):
        if p["metadata"]["name"] in status.new_pods and not _ready(p):
            return p["metadata"]["name"]
    return None


def _api_message(err: Exception) -> str:
    body = getattr(err, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return f"{type(err).__name__}: {err}"


def _warning_events(snap: Snapshot, status: Status) -> list[dict]:
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


def _rv(obj: dict) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


# =============================================================================================
# The command: `forge rollout SERVICE:ENVIRONMENT`


class ProgressPrinter:
    """kubectl-style progress on stderr: a live line on a terminal, plain new lines otherwise."""

    def __init__(self, stream: Any = None) -> None:
        import sys

        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._status: Any = None
        if self.live:
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False)
            self._status = self.console.status("")
            self._status.start()

    def __call__(self, message: str) -> None:
        if self.live:
            self.console.print(message, markup=False)
            self._status.update(message)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def render_report(doc: Mapping[str, Any]) -> str:
    """The human summary of a rollout report (stderr)."""
    w = doc["workload"]
    where = f"{w['namespace']}/{w['kind']}/{w['name']}"
    if doc["outcome"] == "success":
        return f"rollout of {where} succeeded: {doc['message']} ({doc['timings']['elapsed_seconds']:.1f}s)"
    out = [f"rollout of {where} {'timed out' if doc['outcome'] == 'timeout' else 'FAILED'}: {doc['reason']}",
           f"  {doc['message']}"]
    if doc.get("pod"):
        bits = [f"pod {doc['pod']}", f"container {doc['container']}"]
        if doc.get("exit_code") is not None:
            bits.append(f"exit code {doc['exit_code']}")
        if doc.get("restart_count") is not None:
            bits.append(f"restarts {doc['restart_count']}")
        out.append("  " + ", ".join(bits))
    for key, title in (("previous", "previous container"), ("current", "current container")):
        logs = doc["logs"].get(key) or []
        if logs:
            out.append(f"  last {len(logs)} log lines of the {title}:")
            out += [f"    | {line}" for line in logs]
    if doc.get("events"):
        out.append("  recent Warning events:")
        out += [f"    {e['last_seen']}  {e['object']}  {e['reason']}: {e['message']}"
                + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else "") for e in doc["events"][-10:]]
    return "\n".join(out)


def run_rollout(plan: Plan, service: str, environment: str | None, *, json_output: bool,
                expected_image: str | None = None, deadline: float | None = None,
                api: Any = None, stream: Any = None) -> dict[str, Any]:
    """``forge rollout S:E``: watch, print progress and the verdict on stderr, return the report.

    The caller prints the report with ``--json`` and calls :func:`raise_for_outcome` for the
    exit code. ``api`` overrides the client built from the plan's kubeconfig/context.
    """
    import sys

    from forgegen.runtime import kube

    svc = plan.service(service)
    tgt = svc.target(environment)
    client = api if api is not None else kube.client_for_target(tgt)
    err = stream if stream is not None else sys.stderr
    printer = ProgressPrinter(err)
    try:
        result = watch_rollout(client, namespace=tgt.namespace, workload=svc.workload, expected_image=expected_image,
                               policy=svc.rollout, deadline=deadline, progress=printer)
    finally:
        printer.close()
    doc = {"command": "rollout", "service": svc.name, "environment": tgt.environment, **result.to_json()}
    report = render_report(doc)
    err.write((report.splitlines()[0] if json_output else report) + "\n")
    err.flush()
    return doc
