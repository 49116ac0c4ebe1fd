"""A small asyncio client of a real Kubernetes API server: requests and list+watch informers.

Just what the kubelet simulation needs, from a kubeconfig (token, client certificate or none;
CA data/file or ``insecure-skip-tls-verify``): JSON requests, merge patches, and
:func:`Client.inform` — list, then watch from the list's resourceVersion, resume after a dropped
connection, re-list after ``410 Gone`` — the client-go reflector loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

MERGE = "application/merge-patch+json"


class ApiStatus(Exception):
    """A non-2xx answer of the API server (``code`` and its Status ``reason``/``message``)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message


def _material(entry: dict, key: str, tmp: Path) -> str | None:
    """A kubeconfig's ``<key>-data`` (written to a file) or ``<key>`` (a path)."""
    if entry.get(f"{key}-data"):
        path = tmp / key
        path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        return str(path)
    return entry.get(key)


def load_kubeconfig(path: str | Path, context: str | None = None) -> tuple[str, ssl.SSLContext | bool, dict[str, str]]:
    """(server URL, SSL setting for aiohttp, extra headers) for ``context`` of a kubeconfig."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    ctx_name = context or doc.get("current-context")
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in doc.get("users") or [] if u["name"] == ctx.get("user")), {}) or {}
    server = cluster["server"].rstrip("/")
    headers = {"Accept": "application/json"}
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    if not server.startswith("https"):
        return server, False, headers
    with tempfile.TemporaryDirectory(prefix="kubelet-sim-tls-") as d:
        tmp = Path(d)
        if cluster.get("insecure-skip-tls-verify"):
            sslctx = ssl.create_default_context()
            sslctx.check_hostname, sslctx.verify_mode = False, ssl.CERT_NONE
        else:
            sslctx = ssl.create_default_context(cafile=_material(cluster, "certificate-authority", tmp))
        cert, key = _material(user, "client-certificate", tmp), _material(user, "client-key", tmp)
        if cert:
            sslctx.load_cert_chain(cert, key)
    return server, sslctx, headers


class Client:
    """JSON over HTTP to one API server; one aiohttp session."""

    def __init__(self, kubeconfig: str | Path, context: str | None = None) -> None:
        self.server, self._ssl, self._headers = load_kubeconfig(kubeconfig, context)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=aiohttp.ClientTimeout(total=None, connect=10),
                                              connector=aiohttp.TCPConnector(ssl=self._ssl, limit=20))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, *, params: dict | None = None,
                      content_type: str = "application/json", timeout: float = 30.0) -> dict:
        assert self._session is not None
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.server + path, data=data, params=params,
                                         headers={"Content-Type": content_type},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            if resp.status >= 300:
                try:
                    st = json.loads(text)
                    raise ApiStatus(resp.status, st.get("reason", ""), st.get("message", text))
                except (ValueError, AttributeError):
                    raise ApiStatus(resp.status, "", text) from None
            return json.loads(text) if text else {}

    async def get(self, path: str, **params: Any) -> dict:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, obj: dict) -> dict:
        return await self.request("POST", path, obj)

    async def merge_patch(self, path: str, patch: dict) -> dict:
        return await self.request("PATCH", path, patch, content_type=MERGE)

    async def delete(self, path: str, body: dict | None = None) -> dict:
        return await self.request("DELETE", path, body)

    async def inform(self, path: str, handler: Callable[[str, dict], Awaitable[None]], *,
                     params: dict | None = None, stopped: Callable[[], bool] = lambda: False,
                     synced: Callable[[], None] = lambda: None) -> None:
        """List ``path`` and watch it for ever, calling ``handler(type, obj)`` for every change
        (``ADDED``/``MODIFIED``/``DELETED``; a re-list replays what changed while away); ``synced()``
        after each complete list."""
        known: dict[str, dict] = {}
        rv: str | None = None
        while not stopped():
            try:
                if rv is None:
                    rv = await self._relist(path, params, known, handler)
                    synced()
                rv = await self._watch(path, params, rv, known, handler, stopped)
            except (TimeoutError, aiohttp.ClientError, ConnectionError, ApiStatus) as e:
                if stopped():
                    return
                if isinstance(e, ApiStatus) and e.code == 410:
                    rv = None
                    continue
                print(f"kubelet-sim: watch {path}: {e!r}; retrying", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)

    async def _relist(self, path: str, params: dict | None, known: dict[str, dict],
                      handler: Callable[[str, dict], Awaitable[None]]) -> str:
        listing = await self.get(path, **(params or {}))
        kind = listing.get("kind", "List").removesuffix("List")
        api_version = listing.get("apiVersion", "v1")
        seen = {}
        for item in listing.get("items") or []:
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
            seen[item["metadata"]["uid"]] = item
        for uid, old in list(known.items()):
            if uid not in seen:
                del known[uid]
                await handler("DELETED", old)
        for uid, item in seen.items():
            before = known.get(uid)
            known[uid] = item
            if before is None:
                await handler("ADDED", item)
            elif before["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                await handler("MODIFIED", item)
        return listing["metadata"]["resourceVersion"]

    async def _watch(self, path: str, params: dict | None, rv: str, known: dict[str, dict],
                     handler: Callable[[str, dict], Awaitable[None]], stopped: Callable[[], bool]) -> str:
        assert self._session is not None
        q = {**(params or {}), "watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
             "timeoutSeconds": "300"}
        async with self._session.get(self.server + path, params=q,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=360)) as resp:
            if resp.status >= 300:
                raise ApiStatus(resp.status, "", await resp.text())
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        raise ApiStatus(obj.get("code", 500), obj.get("reason", ""), obj.get("message", ""))
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if ev.get("type") == "BOOKMARK":
                        continue
                    uid = obj["metadata"]["uid"]
                    if ev["type"] == "DELETED":
                        known.pop(uid, None)
                    else:
                        known[uid] = obj
                    await handler(ev["type"], obj)
                if stopped():
                    break
        return rv
