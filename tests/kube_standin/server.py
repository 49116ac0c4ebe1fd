"""The HTTP face of the stand-in: the Kubernetes REST protocol over real HTTP (aiohttp).

Paths: ``/api/v1/...`` and ``/apis/<group>/<version>/...``, namespaced
(``/namespaces/<ns>/<plural>[/<name>[/<subresource>]]``) and cluster-scoped; discovery
(``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``); verbs get, list,
watch (``?watch=true``, chunked JSON lines, ``resourceVersion``, ``timeoutSeconds``,
``allowWatchBookmarks``, ``sendInitialEvents``), create, update, patch (merge, strategic merge,
JSON patch), delete; the ``status`` subresource and ``pods/<name>/log`` (``text/plain``).
Errors are ``metav1.Status`` documents; a watch from a compacted resourceVersion gets an
``ERROR`` event with code 410, as from the real apiserver.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import TYPE_CHECKING

from aiohttp import web

from .store import ApiError, Watcher, parse_field_selector, parse_label_selector

if TYPE_CHECKING:
    from .cluster import Cluster

JSON = "application/json"
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-forge-standin", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.0",
           "compiler": "gc", "platform": "linux/amd64"}
DROP = object()


def _json(doc: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(doc).encode(), content_type=JSON)


def _error(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


class Api:
    """The aiohttp application; one per stand-in, surviving restarts of the listening socket."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.requests: deque = deque(maxlen=5000)  # (monotonic time, method, path, query) for tests
        self.active_watches: set[asyncio.Queue] = set()
        self.watch_timeout_cap: float | None = None  # fault: end every watch after this many seconds
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    def drop_watches(self) -> int:
        """Fault: cut every open watch connection (the client sees the stream break)."""
        n = len(self.active_watches)
        for q in list(self.active_watches):
            q.put_nowait(DROP)
        return n

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((time.monotonic(), request.method, request.path, dict(request.query)))
        hook = self.cluster.request_hook
        if hook is not None:
            injected = hook(request.method, request.path, dict(request.query))
            if injected is not None:
                return _error(injected)
        try:
            return await self._route(request)
        except ApiError as err:
            return _error(err)
        except json.JSONDecodeError as err:
            return _error(ApiError(400, "BadRequest", f"invalid JSON body: {err}"))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        reg = self.cluster.store.registry
        if parts == ["version"]:
            return _json(VERSION)
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts == ["api"]:
            host = request.host
            return _json({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        if parts == ["apis"]:
            return _json(reg.group_list())
        if parts and parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 2:
            if len(parts) == 2:
                for g in reg.group_list()["groups"]:
                    if g["name"] == parts[1]:
                        return _json({"kind": "APIGroup", "apiVersion": "v1", **g})
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            doc = reg.resource_list(group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json(doc)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and reg.find(group, version, rest[2]):
            namespace, rest = rest[1], rest[2:]
        rt = reg.find(group, version, rest[0])
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status", *rt.extra_subresources) or (sub == "status" and not rt.status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        store, q, method = self.cluster.store, request.query, request.method
        if name is None:
            if method == "GET" and q.get("watch") in ("true", "1"):
                return await self._watch(request, rt, namespace)
            if method == "GET":
                items = store.list(rt, namespace, label_selector=q.get("labelSelector"),
                                   field_selector=q.get("fieldSelector"))
                if _built_in(rt):  # typed lists leave kind/apiVersion off their items; CRDs keep them
                    items = [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in items]
                return _json({"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                              "metadata": {"resourceVersion": str(store.rv)}, "items": items})
            if method == "POST":
                body = await request.json()
                if rt.namespaced and namespace is None:
                    raise ApiError(405, "MethodNotAllowed", "create needs a namespace in the path")
                if q.get("dryRun"):
                    return _json(body, 201)
                return _json(store.create(rt, body, namespace), 201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if sub == "log":
            return self._log(rt, namespace, name, q)
        if method == "GET":
            if q.get("watch") in ("true", "1"):
                return await self._watch(request, rt, namespace, name=name)
            return _json(store.get(rt, namespace, name))
        if method == "PUT":
            body = await request.json()
            body.setdefault("metadata", {}).setdefault("namespace", namespace)
            return _json(store.replace(rt, body, subresource=sub))
        if method == "PATCH":
            body = await request.json()
            return _json(store.patch(rt, namespace, name, request.content_type, body, subresource=sub))
        if method == "DELETE":
            grace = q.get("gracePeriodSeconds")
            if request.can_read_body:
                raw = await request.read()
                if raw.strip():
                    opts = json.loads(raw)
                    if opts.get("gracePeriodSeconds") is not None:
                        grace = opts["gracePeriodSeconds"]
            return _json(store.delete(rt, namespace, name, grace_seconds=None if grace is None else float(grace)))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _log(self, rt, namespace: str | None, name: str, q) -> web.Response:
        pod = self.cluster.store.get(rt, namespace, name)
        lines = self.cluster.read_log(pod, q.get("container"), q.get("previous") in ("true", "1"))
        if q.get("tailLines") is not None:
            n = int(q["tailLines"])
            lines = lines[-n:] if n > 0 else []
        if q.get("timestamps") in ("true", "1"):
            text = "".join(f"{ts} {line}\n" for ts, line in lines)
        else:
            text = "".join(f"{line}\n" for _, line in lines)
        return web.Response(text=text, content_type="text/plain")

    async def _watch(self, request: web.Request, rt, namespace: str | None, *, name: str | None = None) -> web.StreamResponse:
        q = request.query
        store = self.cluster.store
        fields = parse_field_selector(q.get("fieldSelector"))
        if name is not None:
            base = fields
            fields = lambda o: base(o) and o["metadata"]["name"] == name  # noqa: E731
        queue: asyncio.Queue = asyncio.Queue()

        def send(kind: str, obj: dict) -> None:
            queue.put_nowait({"type": kind, "object": obj})

        watcher = Watcher(rt, namespace, parse_label_selector(q.get("labelSelector")), fields, send)
        rv = q.get("resourceVersion")
        initial = q.get("sendInitialEvents") == "true"
        since = None if rv in (None, "", "0") or initial else int(rv)
        response = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            store.watch(watcher, since=since)
        except ApiError as err:
            await response.write((json.dumps({"type": "ERROR", "object": err.status()}) + "\n").encode())
            await response.write_eof()
            return response
        if initial:
            queue.put_nowait({"type": "BOOKMARK", "object": {
                "kind": rt.kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(store.rv),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}})
        timeout = float(q.get("timeoutSeconds") or 1800)
        if self.watch_timeout_cap is not None:
            timeout = min(timeout, self.watch_timeout_cap)
        bookmarks = q.get("allowWatchBookmarks") == "true"
        end = time.monotonic() + timeout
        self.active_watches.add(queue)
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=min(left, 1.0 if bookmarks else left))
                except TimeoutError:
                    if bookmarks:
                        item = {"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version,
                                                               "metadata": {"resourceVersion": str(store.rv)}}}
                    else:
                        continue
                if item is DROP:
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write((json.dumps(item) + "\n").encode())
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.active_watches.discard(queue)
            store.watchers.discard(watcher)
        return response


def _built_in(rt) -> bool:
    """A type Kubernetes itself serves (core, apps, batch, *.k8s.io), not a CustomResourceDefinition's."""
    return not rt.group or "." not in rt.group or rt.group.endswith(".k8s.io")
