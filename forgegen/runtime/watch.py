"""Watching Kubernetes collections: list, then watch from the list's resourceVersion, resume
after a dropped connection, re-list on 410 Gone (kubectl's and kopf's pattern, STYLE.md point 31).

A :class:`Stream` is one collection in a background thread, feeding typed events into a queue:
:class:`Synced` (a fresh list), :class:`Changed` (one watch event), :class:`Trouble` (connection
trouble; the stream retries) and :class:`Fatal` (the API refused; the stream stops).
:class:`Streams` owns the queue, the threads and what has been listed; :func:`watch_until` is the
one consumer loop (kubectl's ``UntilWithSync``): it feeds events into a snapshot, drops stale
ones (resourceVersion guard), asks ``judge`` after every batch and stops at its verdict or the
deadline. Used by the rollout watcher, the Flux reconcile wait and the migration Jobs. Always
close :class:`Streams` (a ``with`` block): a daemon thread left blocked in a socket read can
abort the interpreter at exit.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Synced:
    """A fresh list of the collection ``resource`` (the first one, or after 410 Gone)."""

    resource: str
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class Changed:
    """One watch event: ``type`` is ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    resource: str
    type: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class Trouble:
    """The stream could not reach the API (it retries); ``text`` says why."""

    resource: str
    text: str


@dataclass(frozen=True)
class Fatal:
    """The API refused the list or watch (401, 403, 404, 422); the stream has stopped."""

    resource: str
    error: Any  # a kubernetes ApiException (status, reason)


Event = Synced | Changed | Trouble | Fatal


def rv(obj: Mapping[str, Any]) -> int:
    """An object's ``metadata.resourceVersion`` as a number (0 when absent or opaque)."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Stream(threading.Thread):
    """Lists one collection, then watches it from the list's resourceVersion, into ``out``."""

    def __init__(self, resource: str, list_fn: Callable[..., Any], kwargs: dict[str, Any],
                 out: queue.Queue[Event], stop: threading.Event, watch_seconds: int) -> None:
        super().__init__(name=f"forge-watch-{resource}", daemon=True)
        self.resource, self.list_fn, self.kwargs = resource, list_fn, kwargs
        self.out, self.stop_event, self.watch_seconds = out, stop, watch_seconds
        self.response: Any = None
        self.lists = self.watches = 0

    def close(self, join: float = 2.0) -> None:
        """Stop (the caller has set ``stop``): unblock a pending read, then wait for the thread.

        A daemon thread left blocked in a socket read can abort the interpreter at exit, so the
        thread is joined; it re-checks ``stop`` right after opening each watch.
        """
        resp = self.response
        if resp is not None:
            import socket

            try:
                sock = getattr(getattr(resp, "connection", None), "sock", None)
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(join)

    def run(self) -> None:
        from forgegen.runtime.kubeapi import ApiException

        version: str | None = None
        pause = 0.05
        while not self.stop_event.is_set():
            try:
                if version is None:
                    resp = self.list_fn(**self.kwargs, _preload_content=False, _request_timeout=(5, 30))
                    doc = json.loads(resp.data)
                    version = (doc.get("metadata") or {}).get("resourceVersion") or "0"
                    self.lists += 1
                    self.out.put(Synced(self.resource, doc.get("items") or []))
                version = self._watch(version)
                pause = 0.05
            except ApiException as err:
                if err.status == 410:
                    log.debug("watch %s: 410 Gone, re-listing", self.resource)
                    version = None
                    continue
                if err.status in (401, 403, 404, 422):
                    self.out.put(Fatal(self.resource, err))
                    return
                self.out.put(Trouble(self.resource, f"{err.status} {err.reason}"))
                self._sleep(pause)
                pause = min(pause * 2, 1.0)
            except Gone:
                version = None
            except Exception as err:  # noqa: BLE001 - connection trouble of any kind: retry
                if self.stop_event.is_set():
                    return
                log.debug("watch %s: %s; resuming from %s", self.resource, err, version)
                self.out.put(Trouble(self.resource, f"{type(err).__name__}: {err}"))
                self._sleep(pause)
                pause = min(pause * 2, 1.0)

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds * random.uniform(0.8, 1.2))

    def _watch(self, version: str) -> str:
        from forgegen.runtime.kubeapi import iter_resp_lines

        resp = self.list_fn(**self.kwargs, watch=True, resource_version=version, allow_watch_bookmarks=True,
                            timeout_seconds=self.watch_seconds, _preload_content=False,
                            _request_timeout=(5, self.watch_seconds + 15))
        self.response = resp
        self.watches += 1
        try:
            if self.stop_event.is_set():  # close() may have run before the response existed
                return version
            for line in iter_resp_lines(resp):
                if self.stop_event.is_set():
                    return version
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if new_version:
                    version = new_version
                if kind != "BOOKMARK":
                    self.out.put(Changed(self.resource, kind, obj))
        finally:
            self.response = None
            resp.release_conn()
        return version


class Gone(Exception):
    pass


class Sink(Protocol):
    """What :func:`watch_until` feeds: a snapshot of the watched collections."""

    def replace(self, resource: str, items: Iterable[dict[str, Any]]) -> None: ...

    def apply(self, resource: str, kind: str, obj: dict[str, Any]) -> None: ...


class Streams:
    """The streams of one watch: one queue, one stop flag, what has been listed, the trouble seen.

    ``trouble`` is the last connection trouble since a collection was last listed (for timeout
    messages); ``trouble_since`` is when the streams began to reach nothing (reset by any event).
    """

    def __init__(self, watch_seconds: int = 60) -> None:
        self.watch_seconds = watch_seconds
        self.out: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.streams: dict[str, Stream] = {}
        self.synced: set[str] = set()
        self.trouble: str | None = None
        self.trouble_since: float | None = None
        self._versions: dict[tuple[str, str], int] = {}

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, resource: object) -> bool:
        return resource in self.streams

    def open(self, resource: str, list_fn: Callable[..., Any], **kwargs: Any) -> None:
        """Start listing and watching ``list_fn(**kwargs)`` as ``resource``."""
        s = Stream(resource, list_fn, kwargs, self.out, self.stop, self.watch_seconds)
        self.streams[resource] = s
        s.start()

    def listed(self, *resources: str) -> bool:
        """Has every one of ``resources`` (default: every open stream) been listed?"""
        return set(resources or self.streams) <= self.synced

    def close(self) -> None:
        close_streams(self.streams.values(), self.stop)

    def feed(self, event: Event, sink: Sink) -> Fatal | None:
        """Apply one event to ``sink`` (dropping an older version of an object already held);
        returns a :class:`Fatal` for the caller to raise."""
        if isinstance(event, Trouble):
            self.trouble = event.text
            if self.trouble_since is None:
                self.trouble_since = time.monotonic()
            return None
        self.trouble_since = None
        if isinstance(event, Fatal):
            return event
        if isinstance(event, Synced):
            self._versions = {k: v for k, v in self._versions.items() if k[0] != event.resource}
            for obj in event.items:
                self._versions[(event.resource, _uid(obj))] = rv(obj)
            sink.replace(event.resource, event.items)
            self.synced.add(event.resource)
            self.trouble = None
            return None
        key = (event.resource, _uid(event.obj))
        if event.type == "DELETED":
            self._versions.pop(key, None)
        else:
            held = self._versions.get(key)
            if held is not None and held > rv(event.obj):
                return None  # an older version (a stream resumed from an older list): keep the newer
            self._versions[key] = rv(event.obj)
        sink.apply(event.resource, event.type, event.obj)
        return None


def _uid(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or meta.get("name") or "")


def watch_until(streams: Streams, snapshot: Sink, judge: Callable[[], T | None], deadline: Callable[[], float], *,
                wake: Callable[[], float | None] = lambda: None,
                on_fatal: Callable[[Fatal], BaseException]) -> T | None:
    """Feed the streams' events into ``snapshot`` and ask ``judge`` until it returns a verdict.

    ``judge`` runs before the first wait and after every batch of events (it decides itself
    whether enough has been listed, see :meth:`Streams.listed`, and may open more streams);
    ``deadline()`` is the monotonic time to give up at (asked each round: it may move), then
    ``None`` is returned. ``wake()`` may name an earlier monotonic time to judge again without
    new events (a retry, a pod's grace period). A :class:`Fatal` event raises ``on_fatal(event)``.
    """
    while True:
        verdict = judge()
        if verdict is not None:
            return verdict
        now = time.monotonic()
        end = deadline()
        if now >= end:
            return None
        wait = end - now
        early = wake()
        if early is not None:
            wait = min(wait, max(early - now, 0.0) + 0.001)
        for event in next_batch(streams.out, wait):
            fatal = streams.feed(event, snapshot)
            if fatal is not None:
                raise on_fatal(fatal) from fatal.error


def close_streams(streams: Iterable[Stream], stop: threading.Event) -> None:
    """Stop every stream and wait for them."""
    stop.set()
    streams = list(streams)
    for s in streams:
        s.close(join=0)
    for s in streams:
        s.close()


def next_batch(out: queue.Queue[Event], timeout: float) -> list[Event]:
    """Wait up to ``timeout`` for the next event, then take everything already queued too, so the
    caller applies a burst of events before judging again ([] on timeout)."""
    try:
        batch = [out.get(timeout=max(timeout, 0.0))]
    except queue.Empty:
        return []
    while True:
        try:
            batch.append(out.get_nowait())
        except queue.Empty:
            return batch
