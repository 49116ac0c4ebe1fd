"""The stand-in's scripted kubelet, run as a client of a real Kubernetes API server.

:class:`KubeletSim` registers Nodes, keeps them alive (Lease in ``kube-node-lease`` and node
status heartbeats), watches the pods bound to them and runs each one with the stand-in's
:class:`~tests.kube_standin.controllers.kubelet.Kubelet` state machine — the very same code, so
the two backends cannot drift apart. That class talks to a ``Cluster``; :class:`SimCluster` is
one backed by the API server: reads come from the pod watch, status writes become ordered merge
patches of ``pods/status`` (with the pod's UID as precondition, as the kubelet's status manager
does), events become core/v1 Events (aggregated with ``count`` like client-go's correlator), a
pod's final delete is ``gracePeriodSeconds: 0`` with a UID precondition. Container logs are
served on HTTPS where the API server's ``pods/log`` proxy looks for them (:mod:`.logs`).

Without a kube-scheduler, ``bind=True`` makes the simulation bind pending pods itself through
``pods/binding`` (honouring node pinning, nodeSelector and ``unschedulable`` scripts); a string
binds only the pods whose ``spec.schedulerName`` it is.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kube_standin import Change, ImageScript, Settings
from tests.kube_standin.controllers.kubelet import SCHEDULER, Kubelet, _pinned_node, script_for
from tests.kube_standin.store import timestamp

from .client import ApiStatus, Client
from .logs import LogServer
from .scripts import CONFIGMAP, NAMESPACE, scripts_of

KUBELET_VERSION = "v1.34.1"
LEASE_SECONDS = 40


def _pod_path(ns: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}" + (f"/{sub}" if sub else "")


@dataclass
class Writes:
    """Writes to the API server: events, deletes and bindings in order, and before them nothing
    else; a pod's pending status writes coalesce to the latest and go after the events queued
    with them — a kubelet records what it did during a pod sync, then syncs the pod's status."""

    ops: collections.deque = field(default_factory=collections.deque)
    status: dict[str, tuple[str, str, dict]] = field(default_factory=dict)  # uid -> (ns, name, status)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put_status(self, ns: str, name: str, uid: str, status: dict) -> None:
        self.status[uid] = (ns, name, status)
        self.wake.set()

    def put(self, *op: Any) -> None:
        self.ops.append(op)
        self.wake.set()

    async def next(self) -> tuple:
        while not (self.ops or self.status):
            self.wake.clear()
            await self.wake.wait()
        if self.ops:
            return self.ops.popleft()
        uid = next(iter(self.status))
        return ("status", uid, *self.status.pop(uid))


class SimStore:
    """The slice of the stand-in's Store the kubelet uses, over the watched pods."""

    def __init__(self, sim: KubeletSim) -> None:
        self.sim = sim
        self.pods: dict[tuple[str, str], dict] = {}  # as last seen from the API server
        self.local_status: dict[str, dict] = {}  # uid -> status as last written by us
        # Secrets and ConfigMaps the pods' environments name: key names only, never values
        self.refs: dict[str, dict[tuple[str, str], dict]] = {"secrets": {}, "configmaps": {}}

    def view(self, pod: dict) -> dict:
        pod = copy.deepcopy(pod)
        mine = self.local_status.get(pod["metadata"]["uid"])
        if mine is not None:
            pod["status"] = copy.deepcopy(mine)
        return pod

    def find(self, resource: str, namespace: str | None, name: str) -> dict | None:
        if resource == "nodes":
            return self.sim.nodes.get(name)
        if resource in self.refs:
            return self.refs[resource].get((namespace or "", name))
        pod = self.pods.get((namespace or "", name))
        return None if pod is None else self.view(pod)

    def mutate(self, resource: str, namespace: str | None, name: str, fn: Callable[[dict], None], *,
               subresource: str | None = None) -> dict | None:
        if resource != "pods" or subresource != "status":
            raise NotImplementedError(f"the kubelet simulation writes only pods/status, not {resource}/{subresource}")
        pod = self.find("pods", namespace, name)
        if pod is None:
            return None
        before = copy.deepcopy(pod.get("status"))
        fn(pod)
        uid = pod["metadata"]["uid"]
        if pod.get("status") != before or uid not in self.local_status:
            self.local_status[uid] = copy.deepcopy(pod["status"])
            self.sim.writes.put_status(namespace or "", name, uid, copy.deepcopy(pod["status"]))
        return pod

    def delete(self, resource: str, namespace: str | None, name: str, *, force: bool = False, **_: Any) -> None:
        pod = self.pods.get((namespace or "", name))
        if resource == "pods" and pod is not None:
            self.sim.writes.put("delete", namespace, name, pod["metadata"]["uid"])


class SimCluster:
    """What the stand-in's Kubelet expects of a ``Cluster``, backed by a real API server."""

    def __init__(self, sim: KubeletSim, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self.sim, self.loop, self.settings = sim, loop, settings
        self.store = SimStore(sim)
        self.scripts: dict[str, ImageScript] = {}
        self.default_script: ImageScript | None = None
        self.log_reader: Callable[[dict, str | None, bool], list[tuple[str, str]]] | None = None
        self.stopped = False
        self.handlers: dict[str, list[Callable[[Change], None]]] = {}
        self._events: dict[tuple, tuple[str, str, int]] = {}  # aggregation key -> (ns, name, count)

    def on(self, resource: str, fn: Callable[[Change], None]) -> None:
        self.handlers.setdefault(resource, []).append(fn)

    def emit(self, resource: str, change: Change) -> None:
        for fn in self.handlers.get(resource, []):
            fn(change)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        def guarded() -> None:
            if not self.stopped:
                fn(*args)
        return self.loop.call_later(max(delay, 0.0), guarded)

    def now(self) -> float:
        return time.time()

    def record_event(self, obj: dict, type_: str, reason: str, message: str, *, component: str,
                     host: str | None = None, field_path: str | None = None, action: str | None = None) -> None:
        """As the stand-in's ``Cluster.record_event``, over the API (``action``: the
        events.k8s.io shape, as kube-scheduler writes)."""
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        at = timestamp(self.now())
        key = (meta["uid"], type_, reason, message, component, host, field_path)
        known = self._events.get(key)
        if known is not None:
            self._events[key] = (known[0], known[1], known[2] + 1)
            bump = ({"series": {"count": known[2] + 1, "lastObservedTime": timestamp(self.now(), precise=True)}}
                    if action else {"count": known[2] + 1, "lastTimestamp": at})
            self.sim.writes.put("patch-event", ns, known[1], bump)
            return
        name = f"{meta['name']}.{time.time_ns():x}"
        involved = {"kind": obj.get("kind", "Pod"), "namespace": ns, "name": meta["name"], "uid": meta["uid"],
                    "apiVersion": obj.get("apiVersion", "v1"), "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        self._events[key] = (ns, name, 1)
        event = {"metadata": {"name": name, "namespace": ns}, "involvedObject": involved, "reason": reason,
                 "message": message, "type": type_, "source": {"component": component, **({"host": host} if host else {})},
                 "firstTimestamp": at, "lastTimestamp": at, "count": 1, "eventTime": None,
                 "reportingComponent": component, "reportingInstance": host or ""}
        if action:
            event.update(source={}, firstTimestamp=None, lastTimestamp=None, action=action,
                         eventTime=timestamp(self.now(), precise=True), reportingInstance=f"{component}-kubelet-sim")
            del event["count"]
        self.sim.writes.put("event", ns, event)


def node_names(node: str, count: int) -> list[str]:
    return [node] if count == 1 else [f"{node}-{i}" for i in range(1, count + 1)]


class KubeletSim:
    """Simulated kubelets for ``nodes`` against the API server of ``kubeconfig``.

    ``await run()`` in a loop of your own, or ``start()``/``stop()`` on a thread of its own;
    ``ready`` is set once the nodes are registered, the pod watch runs and logs are served."""

    def __init__(self, kubeconfig: str | Path, nodes: list[str], *, settings: Settings | None = None,
                 bind: bool | str = False, context: str | None = None, address: str = "127.0.0.1",
                 tls: tuple[str, str] | None = None, heartbeat: float = 10.0) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self.node_names = list(nodes)
        self.settings = settings or Settings()
        self.scheduler_name = bind if isinstance(bind, str) else (SCHEDULER if bind else None)
        self.address, self.tls, self.heartbeat = address, tls, heartbeat
        self.nodes: dict[str, dict] = {}
        self.ready = threading.Event()
        self.stopping = False
        self.failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None
        self._seen: set[str] = set()  # pod uids handed to the kubelet
        self._unbound: dict[str, float] = {}  # uid -> first seen unbound (binder)
        self._binding: set[str] = set()  # uids bound or waiting for a retry (binder)
        self.log_port = 0

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.writes = Writes()
        self.cluster = SimCluster(self, loop, self.settings)
        self.kubelet = Kubelet()
        self.kubelet.start(self.cluster)  # type: ignore[arg-type]
        logs = LogServer(self, self.address, self.tls)
        self.log_port = await logs.start()
        try:
            async with Client(self.kubeconfig, self.context) as self.client:
                await self._register_nodes()
                await self._refresh_scripts()
                synced = [asyncio.Event(), asyncio.Event()]
                tasks = [asyncio.create_task(self.client.inform(f"/api/v1/{r}", self._reference_event(r),
                                                                stopped=lambda: self.stopping, synced=e.set))
                         for r, e in zip(("secrets", "configmaps"), synced)]
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in synced)), 60)
                tasks += [asyncio.create_task(self._writer()), asyncio.create_task(self._heartbeats()),
                          asyncio.create_task(self.client.inform("/api/v1/pods", self._pod_event,
                                                                 stopped=lambda: self.stopping))]
                self.ready.set()
                print(f"kubelet-sim: ready: nodes {' '.join(self.node_names)}, logs on https://{self.address}:"
                      f"{self.log_port}", flush=True)
                try:
                    await asyncio.gather(*tasks)
                finally:
                    for t in tasks:
                        t.cancel()
        finally:
            self.cluster.stopped = True
            await logs.stop()

    def start(self, timeout: float = 60.0) -> KubeletSim:
        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._main = loop.create_task(self.run())
            try:
                loop.run_until_complete(self._main)
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # noqa: BLE001 - reported to the starter
                self.failure = e
                self.ready.set()
            finally:
                loop.close()
        self._thread = threading.Thread(target=main, name="kubelet-sim", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout) or self.failure is not None:
            raise RuntimeError(f"kubelet simulation did not start: {self.failure!r}")
        return self

    def stop(self) -> None:
        self.stopping = True
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
        if self._thread is not None:
            self._thread.join(15)

    # -- nodes --------------------------------------------------------------------------------

    def _node(self, i: int, name: str) -> dict:
        now = timestamp(time.time())
        cond = lambda t, s, r, m: {"type": t, "status": s, "reason": r, "message": m,  # noqa: E731
                                   "lastHeartbeatTime": now, "lastTransitionTime": now}
        # Room for every test of a session: the real-plane tests each get namespaces of their own and
        # the example now runs four services plus a router (50m CPU each), so a 4-CPU node filled up
        # in a full run and rollouts failed "Insufficient cpu". 1Ti of memory still does not fit.
        resources = {"cpu": "64", "memory": "512Gi", "pods": "500", "ephemeral-storage": "1Ti"}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                                                  "beta.kubernetes.io/arch": "amd64"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                         "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]},
            "status": {
                "capacity": resources, "allocatable": dict(resources),
                "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                               cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                               cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                               cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
                "addresses": [{"type": "InternalIP", "address": self.address}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
                "nodeInfo": {"machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex, "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                             "bootID": str(uuid.uuid4()), "kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": KUBELET_VERSION,
                             "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            },
        }

    async def _register_nodes(self) -> None:
        for i, name in enumerate(self.node_names):
            want = self._node(i, name)
            try:
                node = await self.client.create("/api/v1/nodes", want)
            except ApiStatus as e:
                if e.code != 409:
                    raise
                node = await self.client.merge_patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": want["metadata"]["labels"]}})
            node = await self.client.merge_patch(f"/api/v1/nodes/{name}/status", {"status": want["status"]})
            self.nodes[name] = node
            await self._renew_lease(name)

    async def _renew_lease(self, name: str) -> None:
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        now = timestamp(time.time(), precise=True)
        try:
            await self.client.merge_patch(f"{path}/{name}", {"spec": {"holderIdentity": name, "renewTime": now}})
            return
        except ApiStatus as e:
            if e.code != 404:
                raise
        owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.nodes[name]["metadata"]["uid"]}
        await self.client.create(path, {"metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                                        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                                                 "renewTime": now}})

    async def _heartbeats(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.heartbeat)
            for name in self.node_names:
                try:
                    await self._renew_lease(name)
                    now = timestamp(time.time())
                    conds = copy.deepcopy(self.nodes[name]["status"]["conditions"])
                    for c in conds:
                        c["lastHeartbeatTime"] = now
                    self.nodes[name] = await self.client.merge_patch(f"/api/v1/nodes/{name}/status",
                                                                     {"status": {"conditions": conds}})
                except (TimeoutError, ApiStatus, OSError) as e:
                    print(f"kubelet-sim: heartbeat of {name}: {e!r}", file=sys.stderr, flush=True)

    # -- scripts ------------------------------------------------------------------------------

    async def _refresh_scripts(self) -> None:
        try:
            cm = await self.client.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{CONFIGMAP}")
        except ApiStatus as e:
            if e.code != 404:
                raise
            cm = None
        self.cluster.scripts, self.cluster.default_script = scripts_of(cm)

    # -- pods ---------------------------------------------------------------------------------

    async def _pod_event(self, type_: str, pod: dict) -> None:
        pod.setdefault("kind", "Pod")
        pod.setdefault("apiVersion", "v1")
        meta, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            if self.scheduler_name and type_ != "DELETED" and meta["uid"] not in self._binding \
                    and (spec.get("schedulerName") or SCHEDULER) == self.scheduler_name:
                self._binding.add(meta["uid"])
                await self._refresh_scripts()
                await self._bind(pod)
            return
        if node not in self.nodes:
            return
        key, uid = (meta["namespace"], meta["name"]), meta["uid"]
        store = self.cluster.store
        if type_ == "DELETED":
            if store.pods.get(key, {}).get("metadata", {}).get("uid") == uid:
                store.pods.pop(key)
            store.local_status.pop(uid, None)
        else:
            store.pods[key] = pod
            if uid not in self._seen:
                self._seen.add(uid)
                await self._refresh_scripts()  # a script published before the pod was created applies
        self.cluster.emit("pods", Change(type_, None, store.view(pod), None, 0))  # type: ignore[arg-type]

    def _reference_event(self, resource: str) -> Callable[[str, dict], Any]:
        async def handle(type_: str, obj: dict) -> None:
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            if type_ == "DELETED":
                self.cluster.store.refs[resource].pop(key, None)
            else:
                self.cluster.store.refs[resource][key] = {
                    "data": dict.fromkeys(obj.get("data") or {}, ""), "binaryData": dict.fromkeys(obj.get("binaryData") or {}, "")}
        return handle

    async def _writer(self) -> None:
        while True:
            op = await self.writes.next()
            try:
                await self._write(op)
            except ApiStatus as e:  # gone, or its namespace is going: nothing to write any more
                if e.code != 404 and "being terminated" not in e.message:
                    print(f"kubelet-sim: {op[0]} in {op[2] if op[0] == 'status' else op[1]}: {e}", file=sys.stderr, flush=True)
            except (TimeoutError, OSError) as e:
                print(f"kubelet-sim: {op[0]}: {e!r}", file=sys.stderr, flush=True)

    async def _write(self, op: tuple) -> None:
        kind = op[0]
        if kind == "status":
            _, uid, ns, name, status = op
            await self.client.merge_patch(_pod_path(ns, name, "status"), {"metadata": {"uid": uid}, "status": status})
        elif kind == "event":
            await self.client.create(f"/api/v1/namespaces/{op[1]}/events", op[2])
        elif kind == "patch-event":
            await self.client.merge_patch(f"/api/v1/namespaces/{op[1]}/events/{op[2]}", op[3])
        elif kind == "delete":
            _, ns, name, uid = op
            await self.client.delete(_pod_path(ns, name), {"apiVersion": "v1", "kind": "DeleteOptions",
                                                           "gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        elif kind == "bind":
            _, ns, name, node = op
            await self.client.create(_pod_path(ns, name, "binding"), {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}})

    # -- binding, when no kube-scheduler runs -------------------------------------------------

    async def _bind(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp"):
            return
        now = time.time()
        first = self._unbound.setdefault(meta["uid"], now)
        for c in spec.get("containers") or []:
            s = script_for(self.cluster, c.get("image", ""))  # type: ignore[arg-type]
            if s.unschedulable and (s.schedulable_after is None or first + s.schedulable_after > now):
                return self._unschedulable(pod, s.unschedulable)
        selector = spec.get("nodeSelector") or {}
        candidates = [n for n in self.node_names
                      if all(self.nodes[n]["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
        pinned = _pinned_node(pod)
        if pinned:
            candidates = [n for n in candidates if n == pinned]
        if not candidates:
            return self._unschedulable(pod, f"0/{len(self.nodes)} nodes are available: {len(self.nodes)} node(s) didn't "
                                       "match Pod's node affinity/selector.")
        node = candidates[hash(meta["uid"]) % len(candidates)]
        self.writes.put("bind", meta["namespace"], meta["name"], node)
        self.cluster.record_event(pod, "Normal", "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                  f"to {node}", component=self.scheduler_name or SCHEDULER, action="Binding")

    def _unschedulable(self, pod: dict, message: str) -> None:
        meta = pod["metadata"]
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastProbeTime": None, "lastTransitionTime": timestamp(time.time())}
        self.writes.put_status(meta["namespace"], meta["name"], meta["uid"], {"phase": "Pending", "conditions": [cond]})
        self.cluster.record_event(pod, "Warning", "FailedScheduling", message, component=self.scheduler_name or SCHEDULER,
                                  action="Scheduling")
        self.cluster.loop.call_later(self.settings.scheduling_retry, self._retry_bind, meta["namespace"], meta["name"])

    def _retry_bind(self, ns: str, name: str) -> None:
        async def again() -> None:
            try:
                pod = await self.client.get(_pod_path(ns, name))
            except ApiStatus:
                return
            if not pod["spec"].get("nodeName") and pod["metadata"]["uid"] in self._binding:
                await self._bind(pod)
        if not self.stopping:
            asyncio.ensure_future(again())

