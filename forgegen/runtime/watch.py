"""Watching Kubernetes collections: list, then watch from the list's resourceVersion, resume
after a dropped connection, re-list on 410 Gone (kubectl's and kopf's pattern, STYLE.md point 31).

A :class:`Stream` is one collection in a background thread, feeding ``("sync", resource, items)``,
``("event", resource, type, object)``, ``("trouble", resource, text)`` and ``("fatal", resource,
error)`` into a queue; the caller's loop owns all state and decides. Used by the rollout watcher
and the Flux reconcile wait. Always stop streams with :func:`close_streams`: a daemon thread
left blocked in a socket read can abort the interpreter at exit.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class Stream(threading.Thread):
    """Lists one collection, then watches it from the list's resourceVersion, into ``out``."""

    def __init__(self, resource: str, list_fn: Callable[..., Any], kwargs: dict[str, Any],
                 out: queue.Queue, stop: threading.Event, watch_seconds: int) -> None:
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
        from kubernetes.client.exceptions import ApiException

        rv: str | None = None
        pause = 0.05
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    resp = self.list_fn(**self.kwargs, _preload_content=False, _request_timeout=(5, 30))
                    doc = json.loads(resp.data)
                    rv = (doc.get("metadata") or {}).get("resourceVersion") or "0"
                    self.lists += 1
                    self.out.put(("sync", self.resource, doc.get("items") or []))
                rv = self._watch(rv)
                pause = 0.05
            except ApiException as err:
                if err.status == 410:
                    log.debug("watch %s: 410 Gone, re-listing", self.resource)
                    rv = None
                    continue
                if err.status in (401, 403, 404, 422):
                    self.out.put(("fatal", self.resource, err))
                    return
                self.out.put(("trouble", self.resource, f"{err.status} {err.reason}"))
                self._sleep(pause)
                pause = min(pause * 2, 1.0)
            except Gone:
                rv = None
            except Exception as err:  # noqa: BLE001 - connection trouble of any kind: retry
                if self.stop_event.is_set():
                    return
                log.debug("watch %s: %s; resuming from %s", self.resource, err, rv)
                self.out.put(("trouble", self.resource, f"{type(err).__name__}: {err}"))
                self._sleep(pause)
                pause = min(pause * 2, 1.0)

    def _sleep(self, seconds: float) -> None:
        self.stop_event.wait(seconds * random.uniform(0.8, 1.2))

    def _watch(self, rv: str) -> str:
        from kubernetes.watch.watch import iter_resp_lines

        resp = self.list_fn(**self.kwargs, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                            timeout_seconds=self.watch_seconds, _preload_content=False,
                            _request_timeout=(5, self.watch_seconds + 15))
        self.response = resp
        self.watches += 1
        try:
            if self.stop_event.is_set():  # close() may have run before the response existed
                return rv
            for line in iter_resp_lines(resp):
                if self.stop_event.is_set():
                    return rv
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if new_rv:
                    rv = new_rv
                if kind != "BOOKMARK":
                    self.out.put(("event", self.resource, kind, obj))
        finally:
            self.response = None
            resp.release_conn()
        return rv


class Gone(Exception):
    pass


def close_streams(streams: Iterable[Stream], stop: threading.Event) -> None:
    """Stop every stream and wait for them (used by the rollout and the Flux watches)."""
    stop.set()
    streams = list(streams)
    for s in streams:
        s.close(join=0)
    for s in streams:
        s.close()


def next_batch(out: queue.Queue, timeout: float) -> list[tuple[Any, ...]]:
    """Wait up to ``timeout`` for the next item, then take everything already queued too, so the
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
