"""The one HTTP transport of Forge's own clients (the registry API, Attic's API), on ``urllib3``.

- **Pooled connections**: one pool per (scheme, host, port); a push's hundred blob checks reuse
  one connection instead of a TLS handshake each.
- **Redirects**: followed for the methods the caller allows (the registry: GET and HEAD, for
  blobs and manifests served from S3/GCS), at most :data:`MAX_REDIRECTS`. ``Authorization``
  travels only to the origin (scheme, host, port) it was given for; a redirect from https to
  plain http is refused (:class:`InsecureRedirect`), whatever the headers.
- **Retry-After**: :func:`retry_after` reads both forms (seconds, HTTP-date); :class:`Backoff`
  gives exponential delays with jitter from an injectable random generator.

Transient/permanent classification stays with the callers (they know what a status means for
them); this module only moves bytes and says how long a server asked to wait.
"""

from __future__ import annotations

import email.utils
import random
import time
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import urllib3

MAX_REDIRECTS = 5
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})


class InsecureRedirect(Exception):
    """A redirect from https to http: refused (credentials or content would travel in clear)."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"{source} redirected to {target}: refused (from https to plain http)")
        self.source, self.target = source, target


class TooManyRedirects(Exception):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    url: str = ""  # the URL that answered (after redirects)


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


# A streamed body (a layer blob) is sent in reads of this size: urllib3's 16 KiB default costs a
# system call and a GIL hand-off per 16 KiB, which dominated a layer upload's CPU.
BLOCKSIZE = 1 << 20


class Transport:
    """Pooled HTTP(S) with safe redirects. ``verify=False`` skips TLS verification (local registries)."""

    def __init__(self, *, timeout: float = 60.0, verify: bool = True, maxsize: int = 4) -> None:
        self.timeout = timeout
        self.verify = verify
        self._pools = urllib3.PoolManager(
            num_pools=16, maxsize=maxsize, block=False, retries=False, blocksize=BLOCKSIZE,
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE")
        if not verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.requests = 0
        self.hops: list[str] = []  # every URL a redirect led to (names only; for diagnostics)

    def send(self, method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes | None = None,
             *, follow: Collection[str] = ("GET", "HEAD")) -> Response:
        """One request; redirects followed when ``method`` is in ``follow``."""
        sent = dict(headers or {})
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._once(method, url, sent, body)
            location = resp.headers.get("location")
            if resp.status not in REDIRECT_STATUS or not location or method not in follow:
                return resp
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(url).scheme == "https" and urllib.parse.urlsplit(target).scheme != "https":
                raise InsecureRedirect(_bare(url), _bare(target))
            if origin(target) != origin(first):
                sent = {k: v for k, v in sent.items() if k.lower() not in ("authorization", "cookie")}
            if resp.status == 303 and method != "HEAD":
                method, body = "GET", None
            self.hops.append(_bare(target))
            url = target
        raise TooManyRedirects(f"{_bare(first)}: more than {MAX_REDIRECTS} redirects")

    def _once(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        self.requests += 1
        resp = self._pools.request(method, url, headers=dict(headers), body=body, redirect=False,
                                   retries=False, preload_content=True, decode_content=False,
                                   timeout=urllib3.Timeout(connect=min(self.timeout, 30.0), read=self.timeout))
        return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.data or b"", url)

    def close(self) -> None:
        self._pools.clear()


def _bare(url: str) -> str:
    """``scheme://host[:port]/path`` without user-info or query (a redirect's query may be a signed URL)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP-date), None without one."""
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": before try n+1, ``d = min(max_delay, initial * 2**(n-1))``,
    wait uniformly between d/2 and d. A server's ``Retry-After`` is a floor, not a suggestion."""

    initial_delay: float = 0.25
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, failed_attempt: int, server_asked: float | None = None) -> float:
        base = min(self.max_delay, self.initial_delay * 2.0 ** (failed_attempt - 1))
        wait = base / 2 + self.rng.uniform(0, base / 2)
        return max(wait, server_asked) if server_asked is not None else wait
