"""The scheduler and a kubelet whose containers do what the test scripted for their image.

A test says, per image, what its containers do (:class:`ImageScript`, built with the functions
below): become ready after N s; crash with an exit code and log lines, restarting with the
kubelet's back-off until ``CrashLoopBackOff``; fail to pull (``ErrImagePull`` ↔
``ImagePullBackOff``); ``InvalidImageName``; ``CreateContainerConfigError`` (missing secret);
``CreateContainerError``/``RunContainerError``; ``OOMKilled``; stay unschedulable
(``FailedScheduling`` events); run with a failing readiness probe (``Unhealthy`` events); or start
slowly and then succeed. Pods that run to completion (``restartPolicy: Never`` or ``OnFailure``,
a Job's pods) honour their restart policy: a container that exits stays terminated and the pod
ends ``Succeeded`` or ``Failed``; such a container exits by itself ``completes_after`` seconds
after it starts, with ``completion_code`` (:func:`completes`), while long-running pods of the
same image ignore that (as a migration command and the server differ in one image). The kubelet writes the pod status, the Events a real kubelet writes,
and keeps every container instance's log for ``pods/<name>/log`` (``previous=true`` included).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from ..cluster import Cluster, Controller
from ..store import ApiError, Change, timestamp

KUBELET = "kubelet"
SCHEDULER = "default-scheduler"


@dataclass(frozen=True)
class ImageScript:
    """What every container running this image does. Times are seconds."""

    ready_after: float | None = 0.0  # readiness passes this long after start (None: never)
    logs: tuple[str, ...] = ()  # written when the container starts
    exit_after: float | None = None  # the process exits this long after start
    exit_code: int = 1
    exit_logs: tuple[str, ...] = ()  # written just before it exits
    exits: int | None = None  # exit only on the first N starts (None: every start)
    oom: bool = False  # the exit is an OOM kill (reason OOMKilled, code 137)
    pull_error: str | None = None  # ErrImagePull with this message, then ImagePullBackOff
    invalid_name: bool = False  # InvalidImageName
    config_error: str | None = None  # CreateContainerConfigError ("secret \"db\" not found")
    create_error: str | None = None  # CreateContainerError
    run_error: str | None = None  # RunContainerError
    unschedulable: str | None = None  # FailedScheduling message; pod stays Pending
    schedulable_after: float | None = None  # ... until this long after creation
    unhealthy: str | None = None  # readiness probe failure message, as Unhealthy events, until ready
    start_delay: float | None = None  # pulling + creating takes this long (default: settings)
    # Run-to-completion pods only (restartPolicy Never/OnFailure, e.g. a Job's): exit this long
    # after start (None: run until killed) with this code, writing these lines just before.
    completes_after: float | None = 0.05
    completion_code: int = 0
    completion_logs: tuple[str, ...] = ()


def ready(after: float = 0.0, *, logs: tuple[str, ...] = ("listening on :8080",)) -> ImageScript:
    return ImageScript(ready_after=after, logs=logs)


def slow_start(after: float, *, probe_message: str = "Readiness probe failed: HTTP probe failed with statuscode: 503",
               logs: tuple[str, ...] = ("warming caches",)) -> ImageScript:
    return ImageScript(ready_after=after, unhealthy=probe_message, logs=logs)


def crash(*, after: float = 0.05, exit_code: int = 1, logs: tuple[str, ...] = ("starting",),
          exit_logs: tuple[str, ...] = ("panic: cannot connect to database",), exits: int | None = None,
          ready_after: float | None = None) -> ImageScript:
    return ImageScript(ready_after=ready_after, logs=logs, exit_after=after, exit_code=exit_code,
                       exit_logs=exit_logs, exits=exits)


def completes(*, after: float = 0.05, exit_code: int = 0, logs: tuple[str, ...] = (),
              exit_logs: tuple[str, ...] = ()) -> ImageScript:
    """A run-to-completion container (a Job's) that exits with ``exit_code`` after ``after`` s;
    long-running pods of the image become ready as with :func:`ready`."""
    return ImageScript(logs=logs, completes_after=after, completion_code=exit_code, completion_logs=exit_logs)


def oom_killed(*, after: float = 0.05, logs: tuple[str, ...] = ("allocating buffers",)) -> ImageScript:
    return ImageScript(ready_after=None, logs=logs, exit_after=after, exit_code=137, oom=True)


def image_pull_error(message: str = "not found") -> ImageScript:
    return ImageScript(pull_error=message)


def invalid_image_name() -> ImageScript:
    return ImageScript(invalid_name=True)


def missing_secret(name: str = "db-credentials") -> ImageScript:
    return ImageScript(config_error=f'secret "{name}" not found')


def create_container_error(message: str = "failed to reserve container name") -> ImageScript:
    return ImageScript(create_error=message)


def run_container_error(message: str = 'exec: "/bin/server": stat /bin/server: no such file or directory') -> ImageScript:
    return ImageScript(run_error=message)


def unschedulable(message: str = "0/1 nodes are available: 1 Insufficient memory. no new claims to deallocate, "
                  "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.", *,
                  until: float | None = None, then: ImageScript | None = None) -> ImageScript:
    base = then or ImageScript()
    return replace(base, unschedulable=message, schedulable_after=until)


def readiness_failing(message: str = "Readiness probe failed: HTTP probe failed with statuscode: 503") -> ImageScript:
    return ImageScript(ready_after=None, unhealthy=message, logs=("listening on :8080",))


def script_for(cluster: Cluster, image: str, container: dict | None = None) -> ImageScript:
    """The image's script; else what ``container``'s spec does on a real kubelet
    (:mod:`tests.kube_standin.podspec`); else the default script."""
    from tests.kube_standin.podspec import script_of

    return (cluster.scripts.get(image) or (script_of(container) if container else None) or cluster.default_script
            or ImageScript())


def default_nodes(cluster: Cluster) -> None:
    for i, name in enumerate(cluster.settings.nodes):
        if cluster.store.find("nodes", None, name) is None:
            now = timestamp(cluster.now())
            cluster.store.create("nodes", {
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                      "kubernetes.io/arch": "amd64"}},
                "spec": {"podCIDR": f"10.244.{i}.0/24"},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "kubelet is posting ready status",
                                           "lastHeartbeatTime": now, "lastTransitionTime": now}],
                           "addresses": [{"type": "InternalIP", "address": f"10.0.0.{i + 10}"},
                                         {"type": "Hostname", "address": name}],
                           "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "nodeInfo": {"kubeletVersion": "v1.32.0", "containerRuntimeVersion": "containerd://1.7.0",
                                        "architecture": "amd64", "operatingSystem": "linux"}},
            })
    for ns in ("default", "kube-system"):
        if cluster.store.find("namespaces", None, ns) is None:
            cluster.store.create("namespaces", {"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]},
                                                "status": {"phase": "Active"}})


class Scheduler(Controller):
    """Binds pending pods to a node: honours node-name affinity, nodeSelector and image scripts."""

    name = SCHEDULER

    def setup(self) -> None:
        default_nodes(self.cluster)
        self.cluster.on("pods", self._changed)
        self._rr = 0
        self._first_seen: dict[str, float] = {}  # creationTimestamp has whole seconds only

    def _changed(self, ch: Change) -> None:
        if ch.type != "DELETED" and not ch.obj.get("spec", {}).get("nodeName"):
            self.enqueue((ch.obj["metadata"]["namespace"], ch.obj["metadata"]["name"]))

    def reconcile(self, key: tuple[str, str]) -> None:
        ns, name = key
        store, now = self.cluster.store, self.cluster.now()
        pod = store.find("pods", ns, name)
        if pod is None or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        nodes = [n for n in store.list("nodes") if not n.get("spec", {}).get("unschedulable")]
        reason = None
        created = self._first_seen.setdefault(pod["metadata"]["uid"], now)
        for c in pod["spec"].get("containers") or []:
            s = script_for(self.cluster, c.get("image", ""), c)
            if s.unschedulable and (s.schedulable_after is None or created + s.schedulable_after > now):
                reason = s.unschedulable
                if s.schedulable_after is not None:
                    self.enqueue(key, created + s.schedulable_after - now + 0.01)
        candidates = nodes
        selector = pod["spec"].get("nodeSelector") or {}
        candidates = [n for n in candidates if all(n["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
        pinned = _pinned_node(pod)
        if pinned:
            candidates = [n for n in candidates if n["metadata"]["name"] == pinned]
        fitting = [n for n in candidates if not _insufficient(store, pod, n)]
        if reason is None and candidates and not fitting:
            short: dict[str, int] = {}
            for n in candidates:
                for r in _insufficient(store, pod, n):
                    short[r] = short.get(r, 0) + 1
            what = ", ".join(f"{k} Insufficient {r}" for r, k in sorted(short.items()))
            reason = (f"0/{len(nodes)} nodes are available: {what}. no new claims to deallocate, preemption: "
                      f"0/{len(nodes)} nodes are available: {len(candidates)} Preemption is not helpful for scheduling.")
        candidates = fitting
        if reason is None and not candidates:
            reason = (f"0/{len(nodes)} nodes are available: {len(nodes)} node(s) didn't match Pod's node "
                      f"affinity/selector. no new claims to deallocate, preemption: 0/{len(nodes)} nodes are available: {len(nodes)} "
                      "Preemption is not helpful for scheduling.")
        if reason is not None:
            def unsched(p: dict) -> None:
                st = p.setdefault("status", {})
                st["phase"] = "Pending"
                _set_cond(st, "PodScheduled", "False", now, reason="Unschedulable", message=reason)
            store.mutate("pods", ns, name, unsched, subresource="status")
            self.cluster.record_event(pod, "Warning", "FailedScheduling", reason, component=self.name, action="Scheduling")
            self.enqueue(key, self.cluster.settings.scheduling_retry)
            return
        node = candidates[self._rr % len(candidates)]["metadata"]["name"]
        self._rr += 1
        store.mutate("pods", ns, name, lambda p: p["spec"].__setitem__("nodeName", node))

        def bound(p: dict) -> None:
            st = p.setdefault("status", {})
            st.setdefault("phase", "Pending")
            _set_cond(st, "PodScheduled", "True", now)
        store.mutate("pods", ns, name, bound, subresource="status")
        self.cluster.record_event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}",
                                  component=self.name, action="Binding")


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (``512Mi``, ``1Ti``, ``250m``, ``2``) as a number."""
    text = str(value)
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIX[suffix]
    return float(text)


def _requests(pod: dict) -> dict[str, float]:
    total: dict[str, float] = {}
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        for name, v in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
            total[name] = total.get(name, 0.0) + quantity(v)
    return total


def _insufficient(store: Any, pod: dict, node: dict) -> list[str]:
    """The resources (``cpu``, ``memory``) ``node`` lacks for ``pod``, as the scheduler's
    NodeResourcesFit plugin counts them: requests of the pods bound there against allocatable."""
    want = _requests(pod)
    if not want:
        return []
    name = node["metadata"]["name"]
    used: dict[str, float] = {}
    for other in store.list("pods"):
        if other["spec"].get("nodeName") == name and (other.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            for r, v in _requests(other).items():
                used[r] = used.get(r, 0.0) + v
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    return [r for r in ("cpu", "memory") if r in want and r in allocatable
            and used.get(r, 0.0) + want[r] > quantity(allocatable[r])]


def _pinned_node(pod: dict) -> str | None:
    try:
        for t in pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]:
            for f in t.get("matchFields") or []:
                if f["key"] == "metadata.name" and f["operator"] == "In":
                    return f["values"][0]
    except (KeyError, TypeError):
        pass
    return None


def _set_cond(status: dict, type_: str, value: str, now: float, *, reason: str | None = None,
              message: str | None = None) -> None:
    conds = status.setdefault("conditions", [])
    cur = next((c for c in conds if c["type"] == type_), None)
    if cur is None:
        cur = {"type": type_, "lastProbeTime": None, "lastTransitionTime": timestamp(now)}
        conds.append(cur)
    elif cur.get("status") != value:
        cur["lastTransitionTime"] = timestamp(now)
    cur["status"] = value
    for k, v in (("reason", reason), ("message", message)):
        if v is None:
            cur.pop(k, None)
        else:
            cur[k] = v


# ---------------------------------------------------------------------------------------------


@dataclass
class Instance:
    container_id: str
    started: float
    lines: list[tuple[str, str]] = field(default_factory=list)
    finished: float | None = None
    exit_code: int | None = None
    reason: str | None = None


@dataclass
class ContainerRun:
    name: str
    image: str
    script: ImageScript
    references: tuple[tuple[str, str, str | None, bool], ...] = ()  # (Secret|ConfigMap, name, key, optional)
    instances: list[Instance] = field(default_factory=list)
    restarts: int = 0
    starts: int = 0
    crashes: int = 0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    running: bool = False
    ready: bool = False
    ready_at: float | None = None
    pulls: int = 0
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    image_id: str | None = None  # resolved once, when it first starts (as a pull would)

    def log(self, at: float, line: str) -> None:
        self.instances[-1].lines.append((timestamp(at, precise=True), line))


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    node: str
    started: float
    containers: dict[str, ContainerRun]
    terminating: bool = False
    restart_policy: str = "Always"
    host_ip: str = "10.0.0.10"
    pod_ip: str = "10.244.0.2"
    qos: str = "BestEffort"

    @property
    def runs_to_completion(self) -> bool:
        return self.restart_policy in ("Never", "OnFailure")


class Kubelet(Controller):
    """Runs the pods bound to the stand-in's nodes, following each image's script."""

    name = KUBELET

    def setup(self) -> None:
        self.pods: dict[str, PodRun] = {}
        self.gone: dict[str, PodRun] = {}  # logs of deleted pods stay readable briefly
        self.cluster.on("pods", self._changed)
        self.cluster.log_reader = self.read_log

    # -- pod lifecycle ------------------------------------------------------------------------

    def _changed(self, ch: Change) -> None:
        pod, uid = ch.obj, ch.obj["metadata"]["uid"]
        if ch.type == "DELETED":
            run = self.pods.pop(uid, None)
            if run:
                self._stop_timers(run)
                self.gone[uid] = run
            return
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            return
        run = self.pods.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            if run is not None and not run.terminating:
                self._terminate(run, pod)
            elif run is None:
                self.cluster.call_later(self.cluster.settings.pod_termination, self._remove, pod["metadata"]["namespace"],
                                        pod["metadata"]["name"], uid)
            return
        if run is None:
            self._admit(pod, node)

    def _admit(self, pod: dict, node: str) -> None:
        now = self.cluster.now()
        containers = {}
        for c in pod["spec"].get("containers") or []:
            containers[c["name"]] = ContainerRun(c["name"], c.get("image", ""), script_for(self.cluster, c.get("image", ""), c),
                                                 references=_references(c))
        run = PodRun(pod["metadata"]["namespace"], pod["metadata"]["name"], pod["metadata"]["uid"], node, now, containers,
                     restart_policy=pod["spec"].get("restartPolicy") or "Always", host_ip=self._node_ip(node),
                     pod_ip=f"10.244.0.{abs(hash(pod['metadata']['uid'])) % 250 + 2}", qos=_qos(pod))
        self.pods[run.uid] = run
        self._write(run)
        for c in containers.values():
            self._begin(run, c)

    def _node_ip(self, node: str) -> str:
        """The node's InternalIP, the pod's ``hostIP``."""
        for a in ((self.cluster.store.find("nodes", None, node) or {}).get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP":
                return a["address"]
        return "10.0.0.10"

    def _terminate(self, run: PodRun, pod: dict) -> None:
        run.terminating = True
        self._stop_timers(run)
        for c in run.containers.values():
            if c.running:
                self._event(run, "Normal", "Killing", f"Stopping container {c.name}", c)
        grace = pod["metadata"].get("deletionGracePeriodSeconds", 30)
        delay = min(self.cluster.settings.pod_termination, grace) if grace else 0
        self.cluster.call_later(delay, self._remove, run.namespace, run.name, run.uid)

    def _remove(self, ns: str, name: str, uid: str) -> None:
        pod = self.cluster.store.find("pods", ns, name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            try:
                self.cluster.store.delete("pods", ns, name, force=True)
            except ApiError:
                pass

    def _stop_timers(self, run: PodRun) -> None:
        for c in run.containers.values():
            for t in c.timers:
                t.cancel()
            c.timers.clear()

    def _later(self, run: PodRun, c: ContainerRun, delay: float, fn, *args) -> None:
        def guarded() -> None:
            if self.pods.get(run.uid) is run and not run.terminating:
                fn(*args)
        c.timers.append(self.cluster.call_later(delay, guarded))

    def _backoff(self, n: int) -> float:
        s = self.cluster.settings
        return min(s.backoff_base * (2 ** max(n - 1, 0)), s.backoff_cap)

    # -- container state machine -------------------------------------------------------------

    def _begin(self, run: PodRun, c: ContainerRun) -> None:
        s = c.script
        delay = self.cluster.settings.container_start if s.start_delay is None else s.start_delay
        if s.invalid_name:
            msg = f'Failed to apply default image tag "{c.image}": couldn\'t parse image reference "{c.image}": invalid reference format'
            c.waiting = ("InvalidImageName", msg)
            self._write(run)
            self._event(run, "Warning", "InspectFailed", msg, c)
            self._event(run, "Warning", "Failed", "Error: InvalidImageName", c)
            return
        if c.starts == 0 and c.pulls == 0:
            self._event(run, "Normal", "Pulling", f'Pulling image "{c.image}"', c)
        self._later(run, c, delay, self._pulled, run, c)

    def _pulled(self, run: PodRun, c: ContainerRun) -> None:
        s = c.script
        if s.pull_error:
            c.pulls += 1
            msg = (f'failed to pull and unpack image "{c.image}": failed to resolve reference "{c.image}": '
                   f"{s.pull_error}")
            c.waiting = ("ErrImagePull", msg)
            self._write(run)
            self._event(run, "Warning", "Failed", f'Failed to pull image "{c.image}": {msg}', c)
            self._event(run, "Warning", "Failed", "Error: ErrImagePull", c)
            back = self._backoff(c.pulls)
            self._later(run, c, min(back / 4, 0.05), self._pull_backoff, run, c)
            self._later(run, c, back, self._begin, run, c)
            return
        if c.starts == 0:
            self._event(run, "Normal", "Pulled", f'Successfully pulled image "{c.image}" in 20ms (20ms including waiting). Image size: 1048576 bytes.', c)
        config_error = self._missing_reference(run, c) or s.config_error
        if config_error:
            c.waiting = ("CreateContainerConfigError", config_error)
            self._write(run)
            self._event(run, "Warning", "Failed", f"Error: {config_error}", c)
            self._later(run, c, self._backoff(2), self._begin, run, c)
            return
        if s.create_error:
            c.waiting = ("CreateContainerError", s.create_error)
            self._write(run)
            self._event(run, "Warning", "Failed", f"Error: {s.create_error}", c)
            self._later(run, c, self._backoff(2), self._begin, run, c)
            return
        self._start(run, c)

    def _missing_reference(self, run: PodRun, c: ContainerRun) -> str | None:
        """What makes a real kubelet refuse to create the container: a Secret or ConfigMap the
        environment needs (``env[].valueFrom``, ``envFrom``) that is missing, or lacks the key."""
        for kind, name, key, optional in c.references:
            obj = self.cluster.store.find("secrets" if kind == "Secret" else "configmaps", run.namespace, name)
            if obj is None:
                if not optional:
                    return f'{kind.lower()} "{name}" not found'
            elif key is not None and key not in {**(obj.get("data") or {}), **(obj.get("binaryData") or {})} \
                    and not optional:
                return f"couldn't find key {key} in {kind} {run.namespace}/{name}"
        return None

    def _pull_backoff(self, run: PodRun, c: ContainerRun) -> None:
        c.waiting = ("ImagePullBackOff", f'Back-off pulling image "{c.image}"')
        self._write(run)
        self._event(run, "Normal", "BackOff", f'Back-off pulling image "{c.image}"', c)
        self._event(run, "Warning", "Failed", "Error: ImagePullBackOff", c)

    def _start(self, run: PodRun, c: ContainerRun) -> None:
        s, now = c.script, self.cluster.now()
        if c.instances:
            c.restarts += 1
        c.instances.append(Instance(f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}", now))
        c.starts += 1
        self._event(run, "Normal", "Created", f"Created container: {c.name}", c)
        if s.run_error:
            inst = c.instances[-1]
            inst.finished, inst.exit_code, inst.reason = now, 128, "StartError"
            c.crashes += 1
            c.waiting = ("RunContainerError", f"failed to start container: {s.run_error}")
            self._write(run)
            self._event(run, "Warning", "Failed", f"Error: failed to start container \"{c.name}\": {s.run_error}", c)
            self._later(run, c, self._backoff(c.crashes), self._start, run, c)
            return
        c.waiting, c.running, c.ready = None, True, False
        for line in s.logs:
            c.log(now, line)
        self._write(run)
        self._event(run, "Normal", "Started", f"Started container {c.name}", c)
        exits = s.exit_after is not None and (s.exits is None or c.crashes < s.exits)
        if exits:
            self._later(run, c, s.exit_after, self._exit, run, c)
        elif run.runs_to_completion and s.completes_after is not None:
            self._later(run, c, s.completes_after, self._exit, run, c, True)
        if s.ready_after is not None and not (exits and s.ready_after >= s.exit_after):
            self._later(run, c, s.ready_after, self._ready, run, c)
        if s.unhealthy and (s.ready_after is None or s.ready_after > 0):
            self._later(run, c, min(self.cluster.settings.probe_period, s.ready_after or 1e9), self._probe, run, c)

    def _ready(self, run: PodRun, c: ContainerRun) -> None:
        if c.running:
            c.ready, c.ready_at = True, self.cluster.now()
            self._write(run)

    def _probe(self, run: PodRun, c: ContainerRun) -> None:
        if not c.running or c.ready:
            return
        self._event(run, "Warning", "Unhealthy", c.script.unhealthy or "Readiness probe failed", c)
        self._later(run, c, self.cluster.settings.probe_period, self._probe, run, c)

    def _exit(self, run: PodRun, c: ContainerRun, completion: bool = False) -> None:
        s, now = c.script, self.cluster.now()
        code = s.completion_code if completion else s.exit_code
        for line in (s.completion_logs if completion else s.exit_logs):
            c.log(now, line)
        inst = c.instances[-1]
        inst.finished, inst.exit_code = now, code
        inst.reason = "OOMKilled" if s.oom and not completion else ("Completed" if code == 0 else "Error")
        c.running, c.ready = False, False
        c.crashes += 1
        for t in c.timers:
            t.cancel()
        c.timers.clear()
        if run.restart_policy == "Never" or (run.restart_policy == "OnFailure" and code == 0):
            c.waiting = None  # terminated for good: the pod runs to completion
            self._write(run)
            return
        if c.crashes == 1:
            c.waiting = None  # terminated, restarted right away
            self._write(run)
            self._later(run, c, 0.0, self._start, run, c)
            return
        back = self._backoff(c.crashes - 1)
        c.waiting = ("CrashLoopBackOff",
                     f"back-off {_dur(back)} restarting failed container={c.name} pod={run.name}_{run.namespace}({run.uid})")
        self._write(run)
        self._event(run, "Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod {run.name}_{run.namespace}({run.uid})", c)
        self._later(run, c, back, self._start, run, c)

    # -- status -------------------------------------------------------------------------------

    def _container_status(self, c: ContainerRun) -> dict:
        st: dict = {"name": c.name, "image": c.image, "imageID": "", "ready": c.ready,
                    "restartCount": c.restarts, "started": c.running}
        inst = c.instances[-1] if c.instances else None
        if inst is not None and c.starts:
            if c.image_id is None:
                c.image_id = image_id(c.image)
            st["imageID"] = c.image_id
        if c.running and inst is not None:
            st["state"] = {"running": {"startedAt": timestamp(inst.started)}}
            st["containerID"] = inst.container_id
        elif c.waiting is not None:
            st["state"] = {"waiting": {"reason": c.waiting[0], **({"message": c.waiting[1]} if c.waiting[1] else {})}}
        elif inst is not None and inst.finished is not None:
            st["state"] = {"terminated": self._terminated(inst)}
            st["containerID"] = inst.container_id
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}}
        last = None
        if c.running or c.waiting is not None:
            done = [i for i in c.instances if i.finished is not None]
            if c.running and inst is not None:
                done = [i for i in done if i is not inst]
            last = done[-1] if done else None
        elif len(c.instances) > 1:
            last = c.instances[-2]
        st["lastState"] = {"terminated": self._terminated(last)} if last else {}
        return st

    @staticmethod
    def _terminated(inst: Instance) -> dict:
        return {"exitCode": inst.exit_code, "reason": inst.reason, "containerID": inst.container_id,
                "startedAt": timestamp(inst.started),
                "finishedAt": timestamp(inst.finished or inst.started)}

    def _write(self, run: PodRun) -> None:
        now = self.cluster.now()
        statuses = [self._container_status(c) for c in run.containers.values()]
        all_ready = all(c.ready for c in run.containers.values())
        started = any(c.instances for c in run.containers.values())
        unready = [c.name for c in run.containers.values() if not c.ready]
        finished = run.runs_to_completion and all(
            c.instances and c.instances[-1].finished is not None and not c.running and c.waiting is None
            for c in run.containers.values())
        phase = "Running" if started else "Pending"
        if finished:
            phase = "Succeeded" if all(c.instances[-1].exit_code == 0 for c in run.containers.values()) else "Failed"

        def fn(p: dict) -> None:
            st = p.setdefault("status", {})
            st["phase"] = phase
            st["hostIP"], st["hostIPs"] = run.host_ip, [{"ip": run.host_ip}]
            st["podIP"], st["podIPs"] = run.pod_ip, [{"ip": run.pod_ip}]
            st["startTime"] = timestamp(run.started)
            st.setdefault("qosClass", run.qos)  # the API server sets it at creation; it never changes
            _set_cond(st, "PodReadyToStartContainers", "True", now)
            _set_cond(st, "PodScheduled", "True", now)
            _set_cond(st, "Initialized", "True", now)
            msg = f"containers with unready status: [{' '.join(unready)}]"
            _set_cond(st, "ContainersReady", "True" if all_ready else "False", now,
                      reason=None if all_ready else "ContainersNotReady", message=None if all_ready else msg)
            _set_cond(st, "Ready", "True" if all_ready else "False", now,
                      reason=None if all_ready else "ContainersNotReady", message=None if all_ready else msg)
            st["containerStatuses"] = statuses
        self.cluster.store.mutate("pods", run.namespace, run.name, fn, subresource="status")

    def _event(self, run: PodRun, type_: str, reason: str, message: str, c: ContainerRun) -> None:
        pod = self.cluster.store.find("pods", run.namespace, run.name)
        if pod is None or pod["metadata"]["uid"] != run.uid:
            return
        self.cluster.record_event(pod, type_, reason, message, component=KUBELET, host=run.node,
                                  field_path=f"spec.containers{{{c.name}}}")

    # -- logs ---------------------------------------------------------------------------------

    def read_log(self, pod: dict, container: str | None, previous: bool) -> list[tuple[str, str]]:
        uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
        run = self.pods.get(uid) or self.gone.get(uid)
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        if container is None:
            if len(names) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, "
                               f"choose one of: [{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise ApiError(400, "BadRequest", f'container {container} is not valid for pod {name}')
        c = run.containers.get(container) if run else None
        if c is None or not c.instances:
            reason = c.waiting[0] if c and c.waiting else "ContainerCreating"
            if previous:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found')
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        done = [i for i in c.instances if i.finished is not None]
        if previous:
            if c.running:
                done = [i for i in done if i is not c.instances[-1]]
            if not done:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found')
            return list(done[-1].lines)
        return list(c.instances[-1].lines)


def _references(container: dict) -> tuple[tuple[str, str, str | None, bool], ...]:
    refs = []
    for e in container.get("env") or []:
        src = e.get("valueFrom") or {}
        for kind, field_ in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if src.get(field_):
                refs.append((kind, src[field_]["name"], src[field_].get("key"), bool(src[field_].get("optional"))))
    for e in container.get("envFrom") or []:
        for kind, field_ in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if e.get(field_):
                refs.append((kind, e[field_]["name"], None, bool(e[field_].get("optional"))))
    return tuple(refs)


def _qos(pod: dict) -> str:
    """The pod's QoS class, as the API server computes it."""
    resources = [c.get("resources") or {} for c in pod["spec"].get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all((r.get("limits") or {}).get(k) and (r.get("requests") or r.get("limits") or {}).get(k)
                     == (r.get("limits") or {}).get(k) for r in resources for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def image_id(image: str) -> str:
    """The ``imageID`` a container runtime reports: ``repo@<manifest digest>`` of what it pulled.

    A pinned reference names its digest; a tag on a registry on this machine (the tests' real
    registry) is resolved there, as a pull would; anything else (scripted images such as
    ``app:1``, a registry that wants credentials) gets the local image id only (``sha256:…``,
    as for an image imported into the runtime rather than pulled), which names no manifest digest.
    """
    name, _, digest = image.partition("@")
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    if digest:
        return f"{repo}@{digest}"
    resolved = _registry_digest(name)
    return f"{repo}@{resolved}" if resolved else f"sha256:{uuid.uuid5(uuid.NAMESPACE_URL, image).hex * 2}"


def _registry_digest(ref: str) -> str | None:
    import urllib.error
    import urllib.request

    host, _, rest = ref.partition("/")
    if not rest or host.split(":")[0] not in ("127.0.0.1", "localhost", "[::1]"):
        return None
    repo, tag = rest.rsplit(":", 1) if ":" in rest.rsplit("/", 1)[-1] else (rest, "latest")
    accept = ", ".join(("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json",
                        "application/vnd.docker.distribution.manifest.v2+json"))
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - a local test registry
            return resp.headers.get("Docker-Content-Digest")
    except (urllib.error.URLError, OSError):
        return None


def _dur(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:g}s"
