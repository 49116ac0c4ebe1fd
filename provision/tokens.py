"""Attic access tokens: HS256 JWTs as ``atticadm make-token`` mints them (standard library only).

A token carries ``sub``, ``exp``, ``nbf`` and, under the ``https://jwt.attic.rs/v1`` claim, a
map from cache-name patterns (``*`` wildcards allowed) to permission bits: ``r`` pull, ``w``
push, ``d`` delete, ``cc`` create cache, ``cr`` configure, ``cq`` retention, ``cd`` destroy.
The server's secret is configured as ``token-hs256-secret-base64``: the HMAC key is the
base64-decoded bytes. RS256 tokens are not supported here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from forgegen.errors import ProvisionError

CLAIM_NAMESPACE = "https://jwt.attic.rs/v1"
PERMISSION_BITS = {
    "pull": "r", "push": "w", "delete": "d", "create_cache": "cc", "configure_cache": "cr",
    "configure_cache_retention": "cq", "destroy_cache": "cd",
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_key(secret_base64: str) -> bytes:
    """The HMAC key from the server's ``token-hs256-secret-base64`` value."""
    try:
        key = base64.b64decode(secret_base64.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProvisionError("the Attic token secret is not valid base64",
                             hint="use the server's token-hs256-secret-base64 value as is") from err
    if not key:
        raise ProvisionError("the Attic token secret is empty", hint="use the server's token-hs256-secret-base64")
    return key


def permissions(grants: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    """``{"pull": ["main"], "push": ["ci-*"]}`` -> ``{"main": {"r": 1}, "ci-*": {"w": 1}}``."""
    caches: dict[str, dict[str, int]] = {}
    for name, patterns in grants.items():
        bit = PERMISSION_BITS[name]
        for pattern in patterns:
            caches.setdefault(pattern, {})[bit] = 1
    return {k: dict(sorted(v.items())) for k, v in sorted(caches.items())}


def make_token(key: bytes, sub: str, caches: Mapping[str, Mapping[str, int]], *, validity: int,
               now: int | None = None) -> str:
    """A signed HS256 JWT like ``atticadm make-token --sub SUB --validity … --pull … --push …``."""
    now = int(time.time()) if now is None else now
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"exp": now + validity, "nbf": now, "sub": sub, CLAIM_NAMESPACE: {"caches": dict(caches)}}
    signing_input = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(signature)


def read_token(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of a token signed with ``key`` (expired ones included), or None."""
    try:
        head, body, sig = token.strip().split(".")
        header = json.loads(_b64url_decode(head))
        expected = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        if header.get("alg") != "HS256" or not hmac.compare_digest(expected, _b64url_decode(sig)):
            return None
        claims = json.loads(_b64url_decode(body))
    except (ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None
