"""A stand-in for the Attic server's cache-config API, over real HTTP on loopback.

It implements what forge-provision talks to, as Attic documents and implements it
(zhaofengli/attic: server/src/api/v1/cache_config.rs, server/src/error.rs, token/src/lib.rs):

* ``GET|POST|PATCH|DELETE /_api/v1/cache-config/<cache>`` and ``GET /<cache>/nix-cache-info``;
* tokens are HS256 JWTs checked here with this module's own code (signature, ``exp``, ``nbf``),
  sent as ``Authorization: Bearer`` or as the Basic-auth password;
* permissions come from the ``https://jwt.attic.rs/v1`` claim: an exact cache name wins, else
  the first matching wildcard pattern; public caches grant pull to anyone;
* a client with no permission at all on a cache gets 401 whatever the cache's state (no
  discovery); with some permission, a missing cache is 404 ``NoSuchCache`` and a missing bit is
  403 ``AccessError``; creating an existing cache is 400 ``CacheAlreadyExists``; a PATCH
  with no known field is 400 ``RequestError``; a malformed body is 422;
* errors are ``{"code", "error", "message"}`` JSON.

``hide_once`` makes the next GET of a cache answer 404 as if it did not exist yet: the state a
client sees when someone else creates the cache between its GET and its POST.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

NAMESPACE = "https://jwt.attic.rs/v1"
BITS = ("r", "w", "d", "cc", "cr", "cq", "cd")
CREATE_FIELDS = ("keypair", "is_public", "store_dir", "priority", "upstream_cache_key_names")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(key: bytes, sub: str, caches: dict[str, dict[str, int]], validity: int = 3600) -> str:
    """What `atticadm make-token` would print for this server (this module's own encoder)."""
    now = int(time.time())
    head = _b64e(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64e(json.dumps({"sub": sub, "exp": now + validity, "nbf": now, NAMESPACE: {"caches": caches}}).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64e(sig)}"


def verify(key: bytes, token: str, now: float | None = None) -> dict[str, Any] | None:
    now = time.time() if now is None else now
    try:
        head, body, sig = token.split(".")
        header = json.loads(_b64d(head))
        if header.get("alg") != "HS256":
            return None
        if not hmac.compare_digest(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest(), _b64d(sig)):
            return None
        claims = json.loads(_b64d(body))
    except (ValueError, UnicodeError):
        return None
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        return None
    if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + 60:
        return None
    return claims


@dataclass
class Request:
    method: str
    path: str
    body: Any
    sub: str | None


@dataclass
class AtticStandIn:
    secret: bytes = field(default_factory=lambda: secrets.token_hex(32).encode())
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    hide_once: set[str] = field(default_factory=set)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def secret_base64(self) -> str:
        return base64.b64encode(self.secret).decode()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> AtticStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                standin._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                standin._handle(self, "POST")

            def do_PATCH(self) -> None:  # noqa: N802
                standin._handle(self, "PATCH")

            def do_DELETE(self) -> None:  # noqa: N802
                standin._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)  # port 0: any free one
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def add_cache(self, name: str, **settings: Any) -> None:
        self.caches[name] = {"is_public": False, "store_dir": "/nix/store", "priority": 41,
                             "upstream_cache_key_names": ["cache.nixos.org-1"], "retention_period": None,
                             "keypair": f"{name}:{secrets.token_hex(8)}", **settings}

    # -- request handling --------------------------------------------------------------------------

    def _permission(self, claims: dict[str, Any] | None, cache: str) -> set[str]:
        grants = ((claims or {}).get(NAMESPACE) or {}).get("caches") or {}
        entry = grants.get(cache)
        if entry is None:
            entry = next((v for k, v in grants.items() if fnmatch.fnmatchcase(cache, k)), {})
        bits = {b for b in BITS if entry.get(b) in (1, True)}
        if self.caches.get(cache, {}).get("is_public"):
            bits.add("r")
        return bits

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        claims = None
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer ") or auth.startswith("Basic "):
            token = auth[7:] if auth.startswith("Bearer ") else \
                base64.b64decode(auth[6:]).decode(errors="replace").partition(":")[2]
            claims = verify(self.secret, token)
            if claims is None:
                return self._error(handler, 401, "Unauthorized", "Unauthorized.")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._error(handler, 422, "RequestError", "invalid JSON body")
        path = handler.path.split("?")[0]
        with self._lock:
            self.requests.append(Request(method, path, body, (claims or {}).get("sub")))
            if path.startswith("/_api/v1/cache-config/"):
                return self._cache_config(handler, method, unquote(path[len("/_api/v1/cache-config/"):]),
                                          claims, body)
            parts = path.strip("/").split("/")
            if method == "GET" and len(parts) == 2 and parts[1] == "nix-cache-info":
                return self._cache_info(handler, parts[0], claims)
        return self._error(handler, 404, "NotFound", "The URL you requested was not found.")

    def _cache_config(self, handler: Any, method: str, cache: str, claims: Any, body: Any) -> None:
        perms = self._permission(claims, cache)
        if method == "POST":
            if "cc" not in perms:
                return self._denied(handler, perms)
            if not isinstance(body, dict) or any(f not in body for f in CREATE_FIELDS):
                return self._error(handler, 422, "RequestError", "missing fields in CreateCacheRequest")
            if cache in self.caches:
                return self._error(handler, 400, "CacheAlreadyExists", "The cache already exists.")
            self.add_cache(cache, is_public=body["is_public"], store_dir=body["store_dir"],
                           priority=body["priority"], upstream_cache_key_names=body["upstream_cache_key_names"])
            return self._reply(handler, 200, None)
        if not perms:
            return self._error(handler, 401, "Unauthorized", "Unauthorized.")
        if cache not in self.caches or (method == "GET" and cache in self.hide_once):
            self.hide_once.discard(cache)
            return self._error(handler, 404, "NoSuchCache", "The requested cache does not exist.")
        current = self.caches[cache]
        if method == "GET":
            if "r" not in perms:
                return self._denied(handler, perms)
            return self._reply(handler, 200, {
                "substituter_endpoint": f"{self.endpoint}{cache}", "api_endpoint": self.endpoint,
                "public_key": f"{cache}:{base64.b64encode(current['keypair'].encode()).decode()}",
                "is_public": current["is_public"], "store_dir": current["store_dir"],
                "priority": current["priority"], "upstream_cache_key_names": current["upstream_cache_key_names"],
                "retention_period": "Global" if current["retention_period"] is None
                else {"Period": current["retention_period"]}})
        if method == "PATCH":
            if "cr" not in perms:
                return self._denied(handler, perms)
            if not isinstance(body, dict):
                return self._error(handler, 422, "RequestError", "invalid CacheConfig")
            known = [k for k in ("keypair", "is_public", "store_dir", "priority", "upstream_cache_key_names",
                                 "retention_period") if body.get(k) is not None]
            if not known:
                return self._error(handler, 400, "RequestError", "General request error: No modifiable fields were set.")
            if "retention_period" in known and "cq" not in perms:
                return self._denied(handler, perms)
            for k in known:
                current[k] = body[k]
            return self._reply(handler, 200, None)
        if method == "DELETE":
            if "cd" not in perms:
                return self._denied(handler, perms)
            del self.caches[cache]
            return self._reply(handler, 200, None)
        return self._error(handler, 405, "NotFound", "method not allowed")

    def _cache_info(self, handler: Any, cache: str, claims: Any) -> None:
        perms = self._permission(claims, cache)
        if not perms:
            return self._error(handler, 401, "Unauthorized", "Unauthorized.")
        if cache not in self.caches:
            return self._error(handler, 404, "NoSuchCache", "The requested cache does not exist.")
        if "r" not in perms:
            return self._denied(handler, perms)
        c = self.caches[cache]
        text = f"StoreDir: {c['store_dir']}\nWantMassQuery: 1\nPriority: {c['priority']}\n"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/x-nix-cache-info")
        handler.send_header("Content-Length", str(len(text)))
        handler.end_headers()
        handler.wfile.write(text.encode())

    def _denied(self, handler: Any, perms: set[str]) -> None:
        if perms:
            return self._error(handler, 403, "AccessError", "Access error: PermissionDenied")
        return self._error(handler, 401, "Unauthorized", "Unauthorized.")

    def _error(self, handler: Any, code: int, name: str, message: str) -> None:
        self._reply(handler, code, {"code": code, "error": name, "message": message})

    def _reply(self, handler: Any, code: int, body: Any) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(code)
        if data:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
