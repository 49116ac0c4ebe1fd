"""The OCI distribution API as Forge uses it: manifests and blobs, Basic and Bearer auth, retries
of transient failures only (and the classification of failures, shared with the skopeo wrapper)."""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import logging
import random
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import urllib3

from forgegen import transport, urls
from forgegen.errors import PushError, UsageError
from forgegen.plan import RegistryPlan
from forgegen.runtime.credentials import Credentials, stored_credentials
from forgegen.runtime.oci import MANIFEST_ACCEPT

log = logging.getLogger(__name__)

DEFAULT_HTTP_TIMEOUT = 60.0  # one registry API request


# ---------------------------------------------------------------------------------------------
# Retry: which failures are transient, and how long to wait


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try n+1 wait between half and all of
    ``initial_delay * 2**(n-1)`` (at most ``max_delay``), jittered by ``rng`` (seed it in tests);
    a server's ``Retry-After`` is a floor, and one beyond ``max_retry_after`` fails at once."""

    attempts: int = 5
    initial_delay: float = 0.25
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"push attempts must be at least 1, not {self.attempts}")

    def base_delay(self, failed_attempt: int) -> float:
        return min(self.max_delay, self.initial_delay * 2.0 ** (failed_attempt - 1))

    def delay(self, failed_attempt: int, server_asked: float | None = None) -> float:
        return transport.Backoff(self.initial_delay, self.max_delay, self.rng).delay(failed_attempt, server_asked)


TRANSIENT_STATUS = frozenset({408, 421, 429, 500, 502, 503, 504})
_REASONS = ("Bad Request|Unauthorized|Forbidden|Not Found|Method Not Allowed|Request Timeout|"
            "Misdirected Request|Too Many Requests|Internal Server Error|Not Implemented|Bad Gateway|"
            "Service Unavailable|Gateway Timeout|Conflict|Request Entity Too Large|Payload Too Large")
_STATUS_PATTERNS = (
    re.compile(rf"\b([1-5]\d\d)\s*\(?\s*(?:{_REASONS})\b", re.I),
    re.compile(r"\bstatus(?:\s+code)?\s*[:=]?\s*([1-5]\d\d)\b", re.I),
    re.compile(r"\bStatusCode:\s*([1-5]\d\d)\b"),
)
_TRANSIENT_TEXT = re.compile(
    r"connection refused|connection reset|broken pipe|i/o timeout|timed? ?out|deadline exceeded|"
    r"unexpected EOF|:\s*EOF\b|TLS handshake timeout|toomanyrequests|too many requests|"
    r"server misbehaving|temporary failure|did not finish within|http2: server sent GOAWAY|"
    r"use of closed network connection", re.I)
_UNAUTHORIZED_TEXT = re.compile(r"\bunauthorized\b|authentication required|invalid username/password|"
                                r"incorrect username or password", re.I)
_DENIED_TEXT = re.compile(r"\bdenied\b|\bforbidden\b|insufficient_scope", re.I)
_NOT_FOUND_TEXT = re.compile(r"name unknown|NAME_UNKNOWN|repository .* not found|no such host", re.I)
_MANIFEST_TEXT = re.compile(r"manifest invalid|MANIFEST_INVALID|manifest blob unknown|MANIFEST_BLOB_UNKNOWN|"
                            r"unsupported manifest|manifest unknown", re.I)


@dataclass(frozen=True)
class Diagnosis:
    """What a failure was: ``transient`` (worth retrying), a short ``reason``, and what to check."""

    transient: bool
    reason: str
    hint: str | None = None


def permanent_hint(kind: str, repository: str, registry: RegistryPlan | None = None) -> str:
    creds = registry.credentials if registry else None
    names = (f"{creds.token_env or 'GHCR_TOKEN'} or {creds.username_env}/{creds.password_env}"
             if creds else "the registry credentials")
    return {
        "401": f"the registry refused the credentials: check {names} hold a valid login for {repository.split('/')[0]}",
        "403": f"the credentials may not push to {repository}: check the token's scopes (write:packages on ghcr.io) "
               "and the repository's permissions",
        "404": f"the registry does not know {repository}: check registry.host, registry.organization and the "
               "image name in deploy.yaml",
        "manifest": "the registry rejected the image manifest: check the image package is a "
                    "dockerTools.buildLayeredImage/streamLayeredImage and the registry accepts OCI manifests",
        "other": "this failure is not one Forge retries (not a 5xx, 408, 429, timeout or dropped connection); "
                 "fix its cause and push again",
    }[kind]


def status_of(text: str) -> list[int]:
    codes: list[int] = []
    for pattern in _STATUS_PATTERNS:
        codes += [int(m) for m in pattern.findall(text)]
    return codes


def diagnose(text: str, repository: str = "", registry: RegistryPlan | None = None) -> Diagnosis:
    """Classify a failure from its message (skopeo's stderr, or an exception's text)."""
    codes = status_of(text)
    if 401 in codes or _UNAUTHORIZED_TEXT.search(text):
        return Diagnosis(False, "HTTP 401 (unauthorized)", permanent_hint("401", repository, registry))
    if 403 in codes or _DENIED_TEXT.search(text):
        return Diagnosis(False, "HTTP 403 (denied)", permanent_hint("403", repository, registry))
    if _MANIFEST_TEXT.search(text):
        return Diagnosis(False, "manifest invalid", permanent_hint("manifest", repository, registry))
    if 404 in codes or _NOT_FOUND_TEXT.search(text):
        return Diagnosis(False, "HTTP 404 (not found)", permanent_hint("404", repository, registry))
    transient_codes = [c for c in codes if c in TRANSIENT_STATUS or 500 <= c <= 599]
    if transient_codes:
        return Diagnosis(True, f"HTTP {transient_codes[0]}")
    m = _TRANSIENT_TEXT.search(text)
    if m:
        return Diagnosis(True, m.group(0).strip(": ").lower())
    if codes:
        return Diagnosis(False, f"HTTP {codes[0]}", permanent_hint("other", repository, registry))
    return Diagnosis(False, "error", permanent_hint("other", repository, registry))


def diagnose_status(status: int, repository: str, registry: RegistryPlan | None = None) -> Diagnosis:
    if status in TRANSIENT_STATUS or 500 <= status <= 599:
        return Diagnosis(True, f"HTTP {status}")
    kind = {401: "401", 403: "403", 404: "404"}.get(status, "other")
    return Diagnosis(False, f"HTTP {status}", permanent_hint(kind, repository, registry))


def _unwrap(err: BaseException) -> BaseException:
    """The socket/TLS error under urllib3's wrappers (ProtocolError, NewConnectionError, SSLError)."""
    import urllib3.exceptions as u3

    for _ in range(4):
        if isinstance(err, (u3.ReadTimeoutError, u3.ConnectTimeoutError)) and not isinstance(err, u3.NewConnectionError):
            return TimeoutError(str(err))
        if isinstance(err, u3.NameResolutionError):
            return socket.gaierror(str(err.__cause__ or err))
        inner = next((a for a in err.args if isinstance(a, BaseException)), None) or err.__cause__ or err.__context__
        if not isinstance(err, u3.HTTPError) or inner is None:
            return err
        err = inner
    return err


def _diagnose_exception(err: BaseException) -> Diagnosis:
    err = _unwrap(err)
    if isinstance(err, ssl.SSLCertVerificationError):
        return Diagnosis(False, f"TLS certificate not trusted ({err.verify_message})",
                         "trust the registry's CA, or set registry.insecure: true for a local registry")
    if isinstance(err, socket.gaierror):
        return Diagnosis(False, f"unknown host ({err})", "check registry.host in deploy.yaml")
    if isinstance(err, (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead,
                        http.client.BadStatusLine, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        name = {ConnectionRefusedError: "connection refused", ConnectionResetError: "connection reset",
                BrokenPipeError: "broken pipe", http.client.RemoteDisconnected: "unexpected EOF",
                http.client.IncompleteRead: "unexpected EOF"}.get(type(err))
        if name is None:
            name = "timeout" if isinstance(err, (TimeoutError, socket.timeout)) else type(err).__name__
        return Diagnosis(True, name)
    if isinstance(err, OSError):
        return Diagnosis(True, str(err) or type(err).__name__)
    if isinstance(err, transport.InsecureRedirect):
        return Diagnosis(False, str(err), "the registry's storage must be served over https")
    if isinstance(err, transport.TooManyRedirects):
        return Diagnosis(False, str(err))
    import urllib3.exceptions as u3

    if isinstance(err, u3.HTTPError):  # a protocol problem without a socket error beneath
        return Diagnosis(True, type(err).__name__)
    return Diagnosis(False, str(err))


# ---------------------------------------------------------------------------------------------
# The distribution API (standard library only)


Response = transport.Response

_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, transport.InsecureRedirect,
                     transport.TooManyRedirects)


class Blob(Protocol):
    """What a blob upload reads: an open file, or a wrapper that counts the bytes as they go."""

    def read(self, n: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class RegistryClient:
    """A small OCI distribution API client: manifests and blobs, Basic and Bearer auth, retries.

    One pooled transport (:mod:`forgegen.transport`): connections are kept alive, GET/HEAD
    follow redirects (blobs served from object storage) without the credentials when the host
    changes, and ``429``/``503`` with ``Retry-After`` wait at least that long. ``waits`` records
    every delay taken between attempts (seconds)."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None,
                 policy: RetryPolicy | None = None, timeout: float = DEFAULT_HTTP_TIMEOUT,
                 registry: RegistryPlan | None = None) -> None:
        self.host = host
        self.insecure = insecure
        self.credentials = credentials if credentials is not None else stored_credentials(host)
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.registry = registry
        self._probed: dict[str, str] = {}  # "scheme": https or http (shared with siblings)
        self._authorization: dict[str, str] = {}  # scope -> Authorization header value (shared with siblings)
        self._http = transport.Transport(timeout=timeout, verify=not insecure)
        self.waits: list[float] = []
        self.loopback = urls.is_loopback(host)
        self._refuse_clear_credentials()  # before anything, skopeo included, could send them

    @property
    def requests(self) -> int:
        return self._http.requests

    def sibling(self) -> RegistryClient:
        """A client for another thread: the same connection pool, scheme and tokens (no second TLS
        handshake, probe or token request), its own record of retry waits."""
        other = copy.copy(self)
        other.waits = []
        return other

    def _refuse_clear_credentials(self) -> None:
        """Credentials travel only over verified TLS, or to this machine."""
        if self.insecure and self.credentials is not None and not self.loopback:
            raise UsageError(
                f"refusing to send registry credentials ({self.credentials.source}) to {self.host} with "
                "registry.insecure: without verified TLS they could be read on the way; only loopback "
                "registries may be insecure with credentials",
                hint="give the registry a TLS certificate and set registry.insecure: false")

    # -- transport

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        resp = self._http.send(method, url, headers, body)
        log.debug("%s %s -> %d", method, url, resp.status)
        return resp

    def _base(self) -> str:
        self._refuse_clear_credentials()
        if "scheme" not in self._probed:
            if not self.insecure:
                self._probed["scheme"] = "https"
            else:  # like skopeo with tls-verify=false: https without verification, else plain http
                try:
                    self._send("GET", f"https://{self.host}/v2/", {}, None)
                    self._probed["scheme"] = "https"
                except _TRANSPORT_ERRORS:
                    self._probed["scheme"] = "http"
        return f"{self._probed['scheme']}://{self.host}"

    # -- auth

    def _authorize(self, challenge: str, scope: str) -> bool:
        """Answer a WWW-Authenticate challenge (again, when a token expired); False when there is
        nothing to answer with."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None or not (self.credentials.username or self.credentials.password):
                return False
            self._authorization[scope] = f"Basic {self.credentials.basic}"
            return True
        if scheme.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm")
        if not realm:
            return False
        realm_parts = urllib.parse.urlsplit(realm)
        clear = realm_parts.scheme != "https" and not urls.is_loopback(realm_parts.netloc)
        if clear and self.credentials:
            raise PushError(f"the registry {self.host} asks for credentials at {urls.redact(realm)}, which is not "
                            "https: refusing to send them in clear",
                            hint="the registry's token service must use https")
        token = self._fetch_token(realm, fields.get("service", ""), scope or fields.get("scope", ""))
        if not token:
            return False
        self._authorization[scope] = f"Bearer {token}"
        return True

    def _fetch_token(self, realm: str, service: str, scope: str) -> str | None:
        """A bearer token from the registry's token service: ``GET`` with Basic credentials (or
        anonymous), or the OAuth2 ``POST`` with a refresh token (docker's identity token)."""
        creds = self.credentials
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "service": service,
                    "client_id": "forge", "scope": scope}
            resp = self._http.send("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                                   urllib.parse.urlencode(form).encode())
        else:
            query = {k: v for k, v in (("service", service), ("scope", scope)) if v}
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            resp = self._send("GET", url, {"Authorization": f"Basic {creds.basic}"} if creds else {}, None)
        if resp.status != 200:
            return None
        try:
            doc = json.loads(resp.body)
        except ValueError:
            return None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        return str(token) if token else None

    # -- requests with auth and retry

    def request(self, method: str, repository: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, what: str) -> Response:
        """``method /v2/<repository>/<path>``; transient failures retried, the final response returned."""
        scope = f"repository:{repository}:pull,push" if repository else ""
        target = f"/v2/{repository}/{path}" if repository else "/v2/"
        last: Diagnosis | None = None
        for attempt in range(1, self.policy.attempts + 1):
            asked: float | None = None
            try:
                resp = self._once(method, target, scope, headers or {}, body)
            except _TRANSPORT_ERRORS as err:
                last = _diagnose_exception(err)
                if not last.transient:
                    raise PushError(f"cannot {what}: {last.reason}", hint=last.hint) from err
            else:
                diag = diagnose_status(resp.status, repository or self.host, self.registry)
                if not diag.transient:
                    return resp
                last, asked = diag, transport.retry_after(resp.headers)
                if asked is not None and asked > self.policy.max_retry_after:
                    raise PushError(f"cannot {what}: {diag.reason}; the registry asks to wait {asked:.0f} s "
                                    f"(Retry-After), more than Forge waits ({self.policy.max_retry_after:.0f} s)",
                                    hint="a rate limit: push later, or log in (anonymous limits are lower)")
            if attempt < self.policy.attempts:
                delay = self.policy.delay(attempt, asked)
                log.warning("%s: %s (attempt %d of %d); retrying in %.2fs", what, last.reason, attempt,
                            self.policy.attempts, delay)
                self.waits.append(delay)
                time.sleep(delay)
        assert last is not None
        raise PushError(f"cannot {what}: {last.reason}, gave up after {self.policy.attempts} attempts",
                        hint=f"the registry {self.host} keeps failing; check its status, or raise registry.push_attempts")

    def _once(self, method: str, target: str, scope: str, headers: Mapping[str, str], body: Any) -> Response:
        url = target if target.startswith(("http://", "https://")) else self._base() + target
        answered = False  # one answer per request: a second 401 means the credentials are refused
        while True:
            sent = dict(headers)
            if scope in self._authorization:
                sent["Authorization"] = self._authorization[scope]
            if hasattr(body, "seek"):
                body.seek(0)
            resp = self._send(method, url, sent, body)
            challenge = resp.headers.get("www-authenticate", "")
            if resp.status != 401 or not challenge or answered or not self._authorize(challenge, scope):
                return resp
            answered = True

    # -- manifests and blobs

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest ``reference`` (tag or digest) resolves to, or None when it does not exist."""
        resp = self.request("HEAD", repository, f"manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                            what=f"resolve {self.host}/{repository}:{reference}")
        if resp.status == 404:
            return None
        self._check(resp, f"resolve {self.host}/{repository}:{reference}", repository)
        digest = resp.headers.get("docker-content-digest")
        if digest:
            return digest
        got = self.get_manifest(repository, reference)  # registries need not send the header
        return None if got is None else "sha256:" + hashlib.sha256(got[1]).hexdigest()

    def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes] | None:
        resp = self.request("GET", repository, f"manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT},
                            what=f"read {self.host}/{repository}:{reference}")
        if resp.status == 404:
            return None
        self._check(resp, f"read {self.host}/{repository}:{reference}", repository)
        return resp.headers.get("content-type", ""), resp.body

    def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        what = f"tag {self.host}/{repository}:{reference}"
        resp = self.request("PUT", repository, f"manifests/{reference}", headers={"Content-Type": media_type},
                            body=body, what=what)
        self._check(resp, what, repository, ok=(200, 201, 202))
        expected = "sha256:" + hashlib.sha256(body).hexdigest()
        got = resp.headers.get("docker-content-digest", expected)
        if got != expected:
            raise PushError(f"cannot {what}: the registry stored digest {got}, not {expected}",
                            hint="the registry rewrote the manifest; use a registry that stores manifests as sent")
        return expected

    def _start_upload(self, repository: str, what: str) -> str:
        """``POST`` a new upload; the URL its bytes go to."""
        start = self.request("POST", repository, "blobs/uploads/", headers={"Content-Length": "0"}, body=b"",
                             what=what)
        self._check(start, what, repository, ok=(202,))
        return urllib.parse.urljoin(f"{self._base()}/v2/{repository}/blobs/uploads/", start.headers.get("location", ""))

    def upload_blob(self, repository: str, digest: str, blob: Blob, size: int) -> None:
        """Upload one blob (``POST`` an upload, ``PUT`` the bytes with their digest), streamed from
        the open file ``blob``; a transient failure starts the upload again, up to the policy's attempts."""
        what = f"upload blob {digest[:19]} to {self.host}/{repository}"
        scope = f"repository:{repository}:pull,push"
        for attempt in range(1, self.policy.attempts + 1):
            url = _with_digest(self._start_upload(repository, what), digest)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            try:
                resp = self._once("PUT", url, scope, headers, blob)
                diag = diagnose_status(resp.status, repository, self.registry)
            except _TRANSPORT_ERRORS as err:
                diag = _diagnose_exception(err)
                if not diag.transient or attempt == self.policy.attempts:
                    raise PushError(f"cannot {what}: {diag.reason}", hint=diag.hint) from err
            else:
                if resp.status == 201 or not diag.transient or attempt == self.policy.attempts:
                    self._check(resp, what, repository, ok=(201,))
                    return
            delay = self.policy.delay(attempt)
            log.warning("%s: %s (attempt %d of %d); retrying in %.2fs", what, diag.reason, attempt,
                        self.policy.attempts, delay)
            self.waits.append(delay)
            time.sleep(delay)

    def stream_upload(self, repository: str, chunks: Iterable[bytes]) -> str:
        """Start an upload (``POST``) and send ``chunks`` as they come (one ``PATCH``, chunked);
        the location to finish it at (:meth:`finish_upload`). Not retried: the bytes are gone
        once sent (the caller uploads the finished blob from its file instead)."""
        what = f"stream a blob to {self.host}/{repository}"
        location = self._start_upload(repository, what)
        resp = self._once("PATCH", location, f"repository:{repository}:pull,push",
                          {"Content-Type": "application/octet-stream"}, chunks)  # an iterable: sent chunked
        self._check(resp, what, repository, ok=(202,))
        return urllib.parse.urljoin(location, resp.headers.get("location", location))

    def finish_upload(self, repository: str, location: str, digest: str) -> None:
        """``PUT`` the digest of the bytes a :meth:`stream_upload` sent: the registry checks it."""
        what = f"finish the upload of blob {digest[:19]} to {self.host}/{repository}"
        resp = self._once("PUT", _with_digest(location, digest), f"repository:{repository}:pull,push", {"Content-Length": "0"}, b"")
        self._check(resp, what, repository, ok=(201,))

    def get_blob(self, repository: str, digest: str) -> bytes | None:
        """A (small) blob's bytes, checked against ``digest``; None when the registry has none."""
        what = f"read blob {digest[:19]} of {self.host}/{repository}"
        resp = self.request("GET", repository, f"blobs/{digest}", what=what)
        if resp.status == 404:
            return None
        self._check(resp, what, repository)
        if "sha256:" + hashlib.sha256(resp.body).hexdigest() != digest:
            raise PushError(f"cannot {what}: its bytes do not have that digest")
        return resp.body

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request("HEAD", repository, f"blobs/{digest}", what=f"look up blob {digest[:19]}")
        if resp.status == 404:
            return False
        self._check(resp, f"look up blob {digest[:19]} in {repository}", repository)
        return True

    def _check(self, resp: Response, what: str, repository: str, ok: Sequence[int] = (200,)) -> None:
        if resp.status in ok:
            return
        detail = _error_detail(resp.body)
        kind = "manifest" if "MANIFEST" in detail.upper() else {401: "401", 403: "403", 404: "404"}.get(resp.status, "other")
        raise PushError(f"cannot {what}: HTTP {resp.status}{': ' + detail if detail else ''} (not retried)",
                        hint=permanent_hint(kind, f"{self.host}/{repository}", self.registry))


def _with_digest(location: str, digest: str) -> str:
    """An upload's URL with the ``digest`` query that completes it."""
    return location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})


def _error_detail(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors", [])
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)[:300]
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()
