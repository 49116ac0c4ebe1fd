"""The stand-in as a whole: store + HTTP API + controllers, on one event loop in a thread.

Two objects:

* :class:`Cluster` is what controllers see. It lives on the loop thread: the store, timers
  (``call_later``), change subscriptions (``on``), event recording (``record_event``), the kubelet's
  image scripts and the time settings. Everything on it must be called from the loop thread.
* :class:`KubeStandin` is what tests hold: it starts the loop thread and the HTTP server on a free
  loopback port, restarts the server (faults), and runs functions on the loop (``call``) so a
  test can read or change cluster state without racing the controllers.

A controller is any object with ``start(cluster)``; :class:`Controller` adds a coalescing
work queue (``enqueue(key, delay)`` → ``reconcile(key)``), the pattern of client-go controllers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from tests.ports import free_port

from .resources import Registry, builtin_types
from .server import Api
from .store import ApiError, Change, Store, timestamp

T = TypeVar("T")


@dataclass
class Settings:
    """Time scales of the simulated cluster. Defaults are fast but keep real ratios."""

    backoff_base: float = 0.1  # kubelet restart / image pull back-off (10 s in Kubernetes)
    backoff_cap: float = 3.0  # (300 s in Kubernetes)
    probe_period: float = 0.2  # readiness probe period: Unhealthy events (10 s in Kubernetes)
    scheduling_retry: float = 0.5  # how often an unschedulable pod is retried (FailedScheduling)
    pod_termination: float = 0.05  # how long a deleted pod takes to go (grace period)
    container_start: float = 0.02  # image pull + create + start of a container
    event_jitter: tuple[float, float] | None = None  # fault: delay each event write by U(a, b)
    nodes: tuple[str, ...] = ("node-1",)
    seed: int | None = None


class Controller:
    """Base for reconcilers: ``enqueue(key)`` schedules one ``reconcile(key)`` (coalesced)."""

    name = "controller"

    def start(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._queued: dict[Hashable, asyncio.TimerHandle | asyncio.Handle] = {}
        self.setup()

    def setup(self) -> None:
        """Subscribe to changes here (``self.cluster.on(resource, fn)``)."""

    def enqueue(self, key: Hashable, delay: float = 0.0) -> None:
        due = self.cluster.loop.time() + delay
        handle = self._queued.get(key)
        if handle is not None:
            if isinstance(handle, asyncio.TimerHandle) and handle.when() <= due:
                return
            if not isinstance(handle, asyncio.TimerHandle):
                return
            handle.cancel()
        self._queued[key] = self.cluster.loop.call_later(max(delay, 0.0), self._run, key)

    def _run(self, key: Hashable) -> None:
        self._queued.pop(key, None)
        if self.cluster.stopped:
            return
        try:
            self.reconcile(key)
        except ApiError:
            self.enqueue(key, 0.05)  # conflicts and races: retry, as a workqueue would

    def reconcile(self, key: Hashable) -> None:
        raise NotImplementedError


class Cluster:
    """The loop-side state of one stand-in; controllers are given this."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings, registry: Registry | None = None) -> None:
        self.loop = loop
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.store = Store(registry or builtin_types(), schedule=self._schedule)
        # (namespace, involved uid, type, reason, message) -> the event counting those repeats
        self._events: dict[tuple[str, str, str, str, str], str] = {}
        self.controllers: list[Any] = []
        self.scripts: dict[str, Any] = {}  # image -> kubelet ImageScript (see kubelet.py)
        self.default_script: Any = None
        self.request_hook: Callable[[str, str, dict], ApiError | None] | None = None
        self.log_reader: Callable[[dict, str | None, bool], list[tuple[str, str]]] | None = None
        self.stopped = False

    def _schedule(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    # -- the hook API for controllers ---------------------------------------------------------

    def on(self, resource: str | None, fn: Callable[[Change], None]) -> None:
        """Run ``fn(change)`` after every change of ``resource`` (plural, kind or ``plural.group``)."""
        self.store.on(resource, fn)

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        def guarded() -> None:
            if not self.stopped:
                fn(*args)
        return self.loop.call_later(max(delay, 0.0), guarded)

    def add(self, controller: Any) -> Any:
        self.controllers.append(controller)
        controller.start(self)
        return controller

    def now(self) -> float:
        return time.time()

    def record_event(self, obj: dict, type_: str, reason: str, message: str, *, component: str,
                     host: str | None = None, field_path: str | None = None, action: str | None = None) -> None:
        """Record a core/v1 Event about ``obj`` (aggregated by object, reason and message).

        With ``action`` it is written as the events.k8s.io/v1 recorder (kube-scheduler's) writes
        it, seen through core/v1: ``source`` empty, ``eventTime`` instead of the first/last
        timestamps, ``action``, and repeats counted in ``series`` rather than ``count``."""
        at = self.now()
        jitter = self.settings.event_jitter
        args = (obj, type_, reason, message, component, host, field_path, at, action)
        if jitter:
            self.call_later(self.random.uniform(*jitter), self._write_event, *args)
        else:
            self._write_event(*args)

    def _write_event(self, obj: dict, type_: str, reason: str, message: str, component: str,
                     host: str | None, field_path: str | None, at: float, action: str | None = None) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (ns, meta["uid"], type_, reason, message)
        if key in self._events:  # a repeat: counted on the event (looked up, not scanned for)
            def bump(e: dict) -> None:
                if action:
                    series = e.setdefault("series", {"count": 1})
                    series["count"] += 1
                    series["lastObservedTime"] = timestamp(at, precise=True)
                    return
                e["count"] = e.get("count", 1) + 1
                e["lastTimestamp"] = max(e.get("lastTimestamp") or "", timestamp(at))
            if self.store.mutate("events", ns, self._events[key], bump) is not None:
                return  # else it was deleted: a new one
        involved = {"kind": obj.get("kind"), "namespace": ns, "name": meta["name"], "uid": meta["uid"],
                    "apiVersion": obj.get("apiVersion"), "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        source = {"component": component}
        if host:
            source["host"] = host
        event = {"metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns},
                 "involvedObject": involved, "reason": reason, "message": message, "type": type_,
                 "source": source, "firstTimestamp": timestamp(at), "lastTimestamp": timestamp(at), "count": 1,
                 "eventTime": None, "reportingComponent": component, "reportingInstance": host or ""}
        if action:
            event.update(source={}, firstTimestamp=None, lastTimestamp=None, eventTime=timestamp(at, precise=True),
                         action=action, reportingInstance=f"{component}-{host or 'standin'}")
            del event["count"]
        self._events[key] = self.store.create("events", event, ns)["metadata"]["name"]

    def read_log(self, pod: dict, container: str | None, previous: bool) -> list[tuple[str, str]]:
        if self.log_reader is None:
            raise ApiError(400, "BadRequest", "this stand-in runs no kubelet")
        return self.log_reader(pod, container, previous)


@dataclass
class KubeStandin:
    """A running stand-in (API server + controllers + kubelet) on ``127.0.0.1:port``.

    ``controllers`` defaults to the workload controllers, scheduler and kubelet
    (:func:`default_controllers`); pass extra ones (a Flux simulation) to ``start`` or ``add``.
    """

    settings: Settings = field(default_factory=Settings)
    port: int = 0
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cluster: Cluster | None = None
        self.api: Api | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, controllers: list[Any] | None = None) -> KubeStandin:
        from .controllers import default_controllers

        if not self.port:
            self.port = free_port()
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"kube-standin-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)

        def init() -> None:
            self.cluster = Cluster(self.loop, self.settings)
            self.api = Api(self.cluster)
            for c in (default_controllers() if controllers is None else controllers):
                self.cluster.add(c)
        self.call(init)
        self._serve()
        return self

    def _serve(self) -> None:
        async def up() -> None:
            self._runner = web.AppRunner(self.api.app, shutdown_timeout=0.2, handle_signals=False,
                                         access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
        self._await(up())

    def _unserve(self) -> None:
        async def down() -> None:
            self.api.drop_watches()
            await asyncio.sleep(0)
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        self._await(down())

    def stop(self) -> None:
        if self.loop is None:
            return
        try:
            self._unserve()
            self.call(lambda: setattr(self.cluster, "stopped", True))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self.loop.close()
            self.loop = None

    def restart(self, *, down_for: float = 0.0, during: Callable[[Cluster], None] | None = None,
                compact: bool = True) -> None:
        """Fault: the API server goes away (every connection drops) and comes back on the same port.

        State survives (it lives in "etcd"); with ``compact`` the watch cache starts afresh, so
        a watch from a resourceVersion before the restart gets 410 Gone. Controllers and the
        kubelet keep running meanwhile; ``during`` runs on the loop while the server is down.
        """
        self._unserve()
        if compact:
            self.call(self.cluster.store.compact)
        if during is not None:
            self.call(during, self.cluster)
        if down_for:
            time.sleep(down_for)
        self._serve()

    # -- running code on the loop -------------------------------------------------------------

    def _await(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run ``fn(*args)`` on the loop thread and return its result (exceptions propagate)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as err:  # handed back to the caller's thread
                fut.set_exception(err)
        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    # -- conveniences for tests ---------------------------------------------------------------

    def add(self, controller: Any) -> Any:
        return self.call(self.cluster.add, controller)

    def script(self, image: str, script: Any) -> None:
        """Make the kubelet run every container of ``image`` by ``script`` (an ImageScript)."""
        self.call(self.cluster.scripts.__setitem__, image, script)

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        return self.call(self.cluster.store.find, resource, namespace, name)

    def list(self, resource: str, namespace: str | None = None, **selectors: str) -> list[dict]:
        return self.call(lambda: self.cluster.store.list(resource, namespace, **selectors))

    def create(self, resource: str, obj: dict, namespace: str | None = None) -> dict:
        return self.call(self.cluster.store.create, resource, obj, namespace)

    def delete(self, resource: str, namespace: str | None, name: str, **kw: Any) -> dict:
        return self.call(lambda: self.cluster.store.delete(resource, namespace, name, **kw))

    def mutate(self, resource: str, namespace: str | None, name: str, fn: Callable[[dict], None],
               subresource: str | None = None) -> dict | None:
        return self.call(lambda: self.cluster.store.mutate(resource, namespace, name, fn,
                                                           subresource=subresource))

    def compact(self) -> None:
        """Fault: forget the watch history (the next watch from an old resourceVersion gets 410)."""
        self.call(self.cluster.store.compact)

    def drop_watches(self) -> int:
        """Fault: cut every open watch connection; returns how many were cut."""
        return self.call(self.api.drop_watches)

    def set_settings(self, **changes: Any) -> None:
        def apply() -> None:
            for k, v in changes.items():
                setattr(self.settings, k, v)
        self.call(apply)

    def requests(self) -> list[tuple[float, str, str, dict]]:
        """Every request served so far: (monotonic time, method, path, query)."""
        return self.call(lambda: list(self.api.requests))

    def wait_for(self, predicate: Callable[[Cluster], T], *, timeout: float = 10.0, interval: float = 0.01) -> T:
        """Poll ``predicate(cluster)`` on the loop until it returns something truthy (bounded)."""
        end = time.monotonic() + timeout
        while True:
            value = self.call(predicate, self.cluster)
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f"stand-in condition not met within {timeout} s: {predicate}")
            time.sleep(interval)
