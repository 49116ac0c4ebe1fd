"""Push Nix-built images to an OCI registry, under deterministic tags, and prove they are there.

How a push goes (``run_push``):

1. **Image layout.** The build output (a docker-archive, gzip'd or not, or a ``streamLayeredImage``
   script's stream) is read once and written as an OCI image layout with gzip'd layers
   (deterministic: same layer, same bytes, same digest, on any machine). It is cached under
   ``$XDG_CACHE_HOME/forge/oci/<store path name>``, so a re-push does no work at all. Because the
   compressed digests are known before pushing, unchanged layers are never uploaded again, even
   from a fresh CI machine, and the manifest digest is known before the registry sees it.
2. **Copy.** ``skopeo copy --preserve-digests oci:<layout> docker://<repo>:<arch>-<sha7>`` (skipped
   when the registry already has that manifest: then only the tag is written), with credentials
   in a temporary auth file (mode 0600, removed afterwards), never on the command line.
3. **Tags.** ``<arch>-latest`` gets the same manifest; with several architectures an OCI image
   index goes to ``<sha7>`` and ``latest`` through the distribution API (``PUT /v2/<name>/manifests/<tag>``).
4. **Verify.** Every tag is resolved (``HEAD /v2/<name>/manifests/<tag>``); a tag that does not
   resolve to the digest just pushed fails the push.

Retry: only transient failures (HTTP 5xx, 408, 421, 429, connection refused/reset, timeouts,
unexpected EOF) are retried, with exponential backoff from 250 ms capped at 30 s, up to
``registry.push_attempts`` attempts. 401/403/404 and invalid manifests fail at once, saying what
to check. The HTTP side uses only the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import ssl
import tarfile
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from forgegen import process, urls
from forgegen.errors import CommandError, PushError, ToolMissing, UsageError
from forgegen.plan import Plan, RegistryPlan
from forgegen.runtime.build import BuildResult, BuiltImage, run_build
from forgegen.runtime.tags import SourceRevision, arch_of, image_tags

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join([MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST])

DEFAULT_ATTEMPT_TIMEOUT = 1800.0  # one skopeo copy
DEFAULT_HTTP_TIMEOUT = 60.0  # one registry API request
LAYER_COMPRESS_LEVEL = 6
_CACHE_KEEP = 16


# ---------------------------------------------------------------------------------------------
# Retry: which failures are transient, and how long to wait


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; before try n+1 wait ``initial_delay * 2**(n-1)``, at most ``max_delay``."""

    attempts: int = 5
    initial_delay: float = 0.25
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"push attempts must be at least 1, not {self.attempts}")

    def delay(self, failed_attempt: int) -> float:
        return min(self.max_delay, self.initial_delay * (2 ** (failed_attempt - 1)))


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


def _diagnose_exception(err: BaseException) -> Diagnosis:
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
    return Diagnosis(False, str(err))


# ---------------------------------------------------------------------------------------------
# Credentials: from environment variables, into a temporary auth file


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str  # where they came from (variable names, or "gh auth token"), never the values

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> tuple[str, ...]:
        return (self.password, self.basic)


def resolve_credentials(registry: RegistryPlan, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``registry`` from the variables named in the plan (None: use skopeo's defaults).

    Order: the token variable (``token_env``; for ghcr.io ``GHCR_TOKEN`` by default), then the
    user/password variables, then ``gh auth token`` for ghcr.io.
    """
    env = os.environ if env is None else env
    creds = registry.credentials
    ghcr = registry.host == "ghcr.io" or registry.host.endswith(".ghcr.io")
    user = env.get(creds.username_env, "")
    token_env = creds.token_env or ("GHCR_TOKEN" if ghcr else None)
    if token_env and env.get(token_env):
        return Credentials(user or "forge", env[token_env], token_env)
    password = env.get(creds.password_env, "")
    if password and not user:
        raise UsageError(f"{creds.password_env} is set but {creds.username_env} is not",
                         hint=f"export {creds.username_env} with the registry user name for {registry.host}")
    if user and not password:
        raise UsageError(f"{creds.username_env} is set but {creds.password_env} is not",
                         hint=f"export {creds.password_env} with the password or token for {registry.host}")
    if password:
        return Credentials(user, password, f"{creds.username_env}/{creds.password_env}")
    if ghcr and process.which("gh", env=env) is not None:
        result = process.run(["gh", "auth", "token"], env=dict(env), timeout=30, check=False,
                             what="read the GitHub CLI token")
        token = result.stdout.strip()
        if result.returncode == 0 and token:
            return Credentials(user or "forge", token, "gh auth token")
    return None


def credential_variables(registry: RegistryPlan) -> tuple[str, ...]:
    """The environment variables that may hold ``registry``'s credentials (kept from child processes)."""
    creds = registry.credentials
    names = [creds.token_env or "GHCR_TOKEN", creds.username_env, creds.password_env]
    return tuple(dict.fromkeys(names))


def _stored_credentials(host: str) -> Credentials | None:
    """Credentials from the auth files skopeo itself reads (containers auth.json, docker config)."""
    candidates = [os.environ.get("REGISTRY_AUTH_FILE", "")]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = Path.home()
    candidates += [str(home / ".config" / "containers" / "auth.json"), str(home / ".docker" / "config.json")]
    for path in filter(None, candidates):
        try:
            auths = json.loads(Path(path).read_text(encoding="utf-8")).get("auths", {})
        except (OSError, ValueError, AttributeError):
            continue
        for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"):
            entry = auths.get(key) if isinstance(auths, dict) else None
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
                return Credentials(user, password, path)
    return None


@contextlib.contextmanager
def auth_file(host: str, credentials: Credentials | None) -> Iterator[str | None]:
    """A containers auth.json for ``host`` only, mode 0600, removed when the block ends."""
    if credentials is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="forge-auth-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"auths": {host: {"auth": credentials.basic}}}, f)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------
# The distribution API (standard library only)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class RegistryClient:
    """A small OCI distribution API client: manifests and blobs, Basic and Bearer auth, retries."""

    def __init__(self, host: str, *, insecure: bool = False, credentials: Credentials | None = None,
                 policy: RetryPolicy | None = None, timeout: float = DEFAULT_HTTP_TIMEOUT,
                 registry: RegistryPlan | None = None) -> None:
        self.host = host
        self.insecure = insecure
        self.credentials = credentials if credentials is not None else _stored_credentials(host)
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self.registry = registry
        self._scheme: str | None = None
        self._authorization: dict[str, str] = {}  # scope -> Authorization header value
        self.requests = 0
        self.loopback = urls.is_loopback(host)
        self._refuse_clear_credentials()  # before anything, skopeo included, could send them

    def _refuse_clear_credentials(self) -> None:
        """Credentials travel only over verified TLS, or to this machine."""
        if self.insecure and self.credentials is not None and not self.loopback:
            raise UsageError(
                f"refusing to send registry credentials ({self.credentials.source}) to {self.host} with "
                "registry.insecure: without verified TLS they could be read on the way; only loopback "
                "registries may be insecure with credentials",
                hint="give the registry a TLS certificate and set registry.insecure: false")

    # -- transport

    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        if scheme == "https":
            context = ssl.create_default_context()
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(host, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(host, timeout=self.timeout)

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        conn = self._connection(parts.scheme, parts.netloc)
        self.requests += 1
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            log.debug("%s %s -> %d", method, url, resp.status)
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def _base(self) -> str:
        if self._scheme is None:
            if not self.insecure:
                self._scheme = "https"
            else:  # like skopeo with tls-verify=false: https without verification, else plain http
                try:
                    self._send("GET", f"https://{self.host}/v2/", {}, None)
                    self._scheme = "https"
                except (OSError, http.client.HTTPException):
                    self._scheme = "http"
        return f"{self._scheme}://{self.host}"

    # -- auth

    def _authorize(self, challenge: str, scope: str) -> bool:
        """Answer a WWW-Authenticate challenge; False when there is nothing more to try."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None or self._authorization.get(scope, "").startswith("Basic"):
                return False
            self._authorization[scope] = f"Basic {self.credentials.basic}"
            return True
        if scheme.lower() != "bearer" or self._authorization.get(scope, "").startswith("Bearer"):
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.get("realm")
        if not realm:
            return False
        query = {"service": fields.get("service", "")} if fields.get("service") else {}
        if scope:
            query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        realm_parts = urllib.parse.urlsplit(realm)
        clear = realm_parts.scheme != "https" and not urls.is_loopback(realm_parts.netloc)
        if clear and self.credentials:
            raise PushError(f"the registry {self.host} asks for credentials at {urls.redact(realm)}, which is not "
                            "https: refusing to send them in clear",
                            hint="the registry's token service must use https")
        headers = {"Authorization": f"Basic {self.credentials.basic}"} if self.credentials else {}
        resp = self._send("GET", url, headers, None)
        if resp.status != 200:
            return False
        try:
            doc = json.loads(resp.body)
        except ValueError:
            return False
        token = doc.get("token") or doc.get("access_token")
        if not token:
            return False
        self._authorization[scope] = f"Bearer {token}"
        return True

    # -- requests with auth and retry

    def request(self, method: str, repository: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, what: str) -> Response:
        """``method /v2/<repository>/<path>``; transient failures retried, the final response returned."""
        scope = f"repository:{repository}:pull,push" if repository else ""
        target = f"/v2/{repository}/{path}" if repository else "/v2/"
        last: Diagnosis | None = None
        for attempt in range(1, self.policy.attempts + 1):
            try:
                resp = self._once(method, target, scope, headers or {}, body)
            except (OSError, http.client.HTTPException) as err:
                last = _diagnose_exception(err)
                if not last.transient:
                    raise PushError(f"cannot {what}: {last.reason}", hint=last.hint) from err
            else:
                diag = diagnose_status(resp.status, repository or self.host, self.registry)
                if not diag.transient:
                    return resp
                last = diag
            if attempt < self.policy.attempts:
                delay = self.policy.delay(attempt)
                log.warning("%s: %s (attempt %d of %d); retrying in %.2fs", what, last.reason, attempt,
                            self.policy.attempts, delay)
                time.sleep(delay)
        assert last is not None
        raise PushError(f"cannot {what}: {last.reason}, gave up after {self.policy.attempts} attempts",
                        hint=f"the registry {self.host} keeps failing; check its status, or raise registry.push_attempts")

    def _once(self, method: str, target: str, scope: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        url = self._base() + target
        for _ in range(3):
            sent = dict(headers)
            if scope in self._authorization:
                sent["Authorization"] = self._authorization[scope]
            resp = self._send(method, url, sent, body)
            challenge = resp.headers.get("www-authenticate", "")
            if resp.status != 401 or not challenge or not self._authorize(challenge, scope):
                return resp
        return resp

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


def _error_detail(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors", [])
        return "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)[:300]
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip()


# ---------------------------------------------------------------------------------------------
# OCI image layout from a docker-archive (file or stream)


@dataclass(frozen=True)
class OciImage:
    """An image as an OCI layout on disk, with everything needed to push and verify it."""

    layout: Path
    ref: str
    manifest: bytes
    config_digest: str
    platform: Mapping[str, str]
    blobs: tuple[tuple[str, int], ...]  # config first, then layers: (digest, compressed size)

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    @property
    def transport_ref(self) -> str:
        return f"oci:{self.layout}:{self.ref}"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "forge" / "oci"


def oci_layout(image: BuiltImage, cache_dir: Path | None = None) -> OciImage:
    """The OCI layout of a built image, made once per store path and then reused."""
    root = cache_dir or _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / Path(image.store_path).name
    process.remove_stale_temp(root, ".tmp-")
    if not (dest / "index.json").is_file():
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=root))
        try:
            if image.kind == "stream":
                _convert_stream(image.store_path, work)
            else:
                with open(image.store_path, "rb") as f:
                    _convert(f, work, image.store_path)
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(work, dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _prune(root, keep=dest)
    os.utime(dest)
    return _load_layout(dest)


def _prune(root: Path, keep: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir() and p != keep and not p.name.startswith(".tmp-")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[_CACHE_KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _convert_stream(script: str, dest: Path) -> None:
    with tempfile.TemporaryFile() as errors:
        proc = process.spawn([script], stdout=process.PIPE, stderr=errors.fileno())
        assert proc.stdout is not None
        try:
            _convert(proc.stdout, dest, script)
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            text = errors.read().decode(errors="replace").strip()[-2000:]
            raise PushError(f"the image stream {script} exited with {rc}: {text}",
                            hint=f"run `{script} | tar t` to see what it writes")


def _convert(stream: IO[bytes], dest: Path, source: str) -> None:
    """Read a docker-archive tar stream (any member order); write an OCI layout to ``dest``."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers: dict[str, tuple[str, str, int]] = {}  # member name -> (diff_id, digest, size)
    small: dict[str, bytes] = {}
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*", bufsize=BLOCK)
    except tarfile.TarError as err:
        raise PushError(f"{source} is not a docker-archive: {err}",
                        hint="the image package must be dockerTools.buildLayeredImage or streamLayeredImage") from err
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            assert f is not None
            name = os.path.normpath(member.name)
            if name.endswith(".json") or name in ("repositories", "oci-layout") or member.size <= 4096:
                data = f.read()
                small[name] = data
                if name.endswith(".json") or name in ("repositories", "oci-layout"):
                    continue
                f = _BytesReader(data)
            layers[name] = _compress_layer(f, blobs)
    try:
        entry = json.loads(small["manifest.json"])[0]
        config = small[os.path.normpath(entry["Config"])]
        layer_names = [os.path.normpath(n) for n in entry["Layers"]]
        config_doc = json.loads(config)
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise PushError(f"{source} is not a docker-archive: no usable manifest.json ({err})",
                        hint="the image package must be dockerTools.buildLayeredImage or streamLayeredImage") from err
    missing = [n for n in layer_names if n not in layers]
    if missing:
        raise PushError(f"{source}: manifest.json names layers the archive lacks: {', '.join(missing)}")
    diff_ids = [layers[n][0] for n in layer_names]
    declared = config_doc.get("rootfs", {}).get("diff_ids", [])
    if declared and declared != diff_ids:
        raise PushError(f"{source}: the layers do not match the image config's diff_ids",
                        hint="the archive is corrupt; rebuild it (nix build --rebuild)")
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": layers[n][1], "size": layers[n][2]}
                   for n in layer_names],
    }
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest_bytes)
    for name, (_, digest, _) in list(layers.items()):
        if name not in layer_names:  # something else in the archive: not part of the image
            with contextlib.suppress(FileNotFoundError):
                (blobs / digest.split(":")[1]).unlink()
    platform = {"architecture": str(config_doc.get("architecture", "")), "os": str(config_doc.get("os", "linux"))}
    if config_doc.get("variant"):
        platform["variant"] = str(config_doc["variant"])
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": MEDIA_OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
        "platform": platform, "annotations": {"org.opencontainers.image.ref.name": "image"}}]}
    (dest / "index.json").write_text(json.dumps(index, separators=(",", ":")))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk


def _compress_layer(f: Any, blobs: Path) -> tuple[str, str, int]:
    """gzip a layer deterministically into ``blobs``; (diff_id, digest, size). gzip'd input is kept."""
    first = f.read(BLOCK)
    raw_hash, out_hash = hashlib.sha256(), hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    with os.fdopen(fd, "wb") as out:
        def emit(packed: bytes) -> None:
            nonlocal size
            out_hash.update(packed)
            out.write(packed)
            size += len(packed)

        if first[:2] == b"\x1f\x8b":  # already gzip'd: keep the bytes, hash what they unpack to
            decompressor = zlib.decompressobj(47)
            chunk = first
            while chunk:
                raw_hash.update(decompressor.decompress(chunk))
                emit(chunk)
                chunk = f.read(BLOCK)
        else:
            _gzip_blocks(f, first, raw_hash, emit)
    os.replace(tmp, blobs / out_hash.hexdigest())
    return "sha256:" + raw_hash.hexdigest(), "sha256:" + out_hash.hexdigest(), size


# Layers are gzip'd the way pigz does it: fixed 1 MiB blocks, each deflated on its own (in
# parallel: zlib releases the GIL) with the previous 32 KiB as dictionary and joined by sync
# flushes into one gzip member. A block that does not compress (a sample of it deflates to
# more than 95 %) is stored. Every choice depends only on the bytes, so the output, and so the
# digest, is the same on every machine and for any number of threads.
BLOCK = 1 << 20
_WINDOW = 32 * 1024
_SAMPLE = 16 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # deflate, no name, mtime 0, Unix


def _deflate_block(block: bytes, dictionary: bytes, last: bool) -> bytes:
    sample = block[:_SAMPLE]
    probe = zlib.compressobj(1, zlib.DEFLATED, -15)
    stored = len(probe.compress(sample) + probe.flush()) > 0.95 * len(sample)
    level = 0 if stored else LAYER_COMPRESS_LEVEL
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary) if dictionary \
        else zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _gzip_blocks(f: Any, first: bytes, raw_hash: Any, emit: Callable[[bytes], None]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    crc, length = 0, 0
    emit(_GZIP_HEADER)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[Any] = []
        block, dictionary = first, b""
        while True:
            following = f.read(BLOCK) if block else b""
            raw_hash.update(block)
            crc = zlib.crc32(block, crc)
            length += len(block)
            last = not following
            pending.append(pool.submit(_deflate_block, block, dictionary, last))
            if len(pending) > 2 * workers:
                emit(pending.pop(0).result())
            if last:
                break
            dictionary = block[-_WINDOW:]
            block = following
        for future in pending:
            emit(future.result())
    emit(crc.to_bytes(4, "little") + (length & 0xFFFFFFFF).to_bytes(4, "little"))


def _load_layout(dest: Path) -> OciImage:
    index = json.loads((dest / "index.json").read_text())
    desc = index["manifests"][0]
    manifest = (dest / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes()
    doc = json.loads(manifest)
    blobs = ((doc["config"]["digest"], int(doc["config"]["size"])),) + tuple(
        (layer["digest"], int(layer["size"])) for layer in doc["layers"])
    return OciImage(dest, desc["annotations"]["org.opencontainers.image.ref.name"], manifest,
                    doc["config"]["digest"], dict(desc.get("platform", {})), blobs)


def image_index(images: Sequence[OciImage]) -> bytes:
    """An OCI image index over the per-architecture manifests (deterministic bytes)."""
    doc = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": [
        {"mediaType": MEDIA_OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
         "platform": dict(img.platform)} for img in images]}
    return json.dumps(doc, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# skopeo


def skopeo_copy(source: str, dest: str, *, insecure: bool, authfile: str | None, secrets: Sequence[str],
                policy: RetryPolicy, timeout: float, repository: str, registry: RegistryPlan | None = None,
                progress: Progress | None = None, unset_env: Sequence[str] = ()) -> tuple[str, int]:
    """``skopeo copy --preserve-digests SOURCE docker://DEST``, retried on transient failures.

    Credentials reach skopeo only through ``authfile``; ``unset_env`` (the variables that held
    them) are removed from its environment. Returns the pushed manifest digest and the number
    of attempts it took.
    """
    say = progress or log.info
    with tempfile.TemporaryDirectory(prefix="forge-skopeo-") as tmp:
        digestfile = os.path.join(tmp, "digest")
        argv = ["skopeo", "copy", "--quiet", "--preserve-digests", "--digestfile", digestfile,
                f"--dest-tls-verify={'false' if insecure else 'true'}"]
        if authfile:
            argv += ["--authfile", authfile]
        argv += [source, f"docker://{dest}"]
        for attempt in range(1, policy.attempts + 1):
            try:
                process.run(argv, timeout=timeout, secrets=secrets, what=f"push {dest}", unset=unset_env)
            except ToolMissing as err:
                raise ToolMissing(f"cannot push {dest}: skopeo is not on PATH", argv=err.argv,
                                  hint="install skopeo (apt-get install skopeo), or run through `nix run .#push:<service>`") from err
            except CommandError as err:
                text = err.stderr or err.message
                diag = diagnose(text, repository, registry)
                last_line = _last_line(text)
                if not diag.transient:
                    raise PushError(f"cannot push {dest}: {diag.reason}, not retried (attempt {attempt}): {last_line}",
                                    hint=diag.hint) from err
                if attempt == policy.attempts:
                    raise PushError(f"cannot push {dest}: {diag.reason}, gave up after {attempt} attempts: {last_line}",
                                    hint=f"the registry keeps failing; check its status, or raise registry.push_attempts "
                                         f"(now {policy.attempts})") from err
                delay = policy.delay(attempt)
                say(f"push {dest}: {diag.reason} (attempt {attempt} of {policy.attempts}); retrying in {delay:.2f}s")
                time.sleep(delay)
                continue
            digest = Path(digestfile).read_text().strip()
            return digest, attempt
    raise AssertionError("unreachable")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    m = re.search(r'msg="(.*)"\s*$', line)
    return (m.group(1).replace('\\"', '"') if m else line)[:500]


# ---------------------------------------------------------------------------------------------
# run_push


@dataclass(frozen=True)
class PushedImage:
    system: str
    arch: str
    digest: str
    tags: tuple[str, ...]
    layers: int
    layers_uploaded: int  # blobs the registry lacked before this push (config + layers)
    bytes_uploaded: int
    copied: bool  # False: the registry already had this manifest, only tags were written
    attempts: int

    def to_json(self, repository: str) -> dict[str, Any]:
        return {"system": self.system, "arch": self.arch, "digest": self.digest, "tags": list(self.tags),
                "reference": f"{repository}@{self.digest}", "layers": self.layers,
                "blobs_uploaded": self.layers_uploaded, "bytes_uploaded": self.bytes_uploaded,
                "copied": self.copied, "attempts": self.attempts}


@dataclass(frozen=True)
class PushedIndex:
    digest: str
    tags: tuple[str, ...]
    manifests: tuple[str, ...]

    def to_json(self, repository: str) -> dict[str, Any]:
        return {"digest": self.digest, "tags": list(self.tags), "manifests": list(self.manifests),
                "reference": f"{repository}@{self.digest}", "media_type": MEDIA_OCI_INDEX}


@dataclass(frozen=True)
class PushResult:
    service: str
    repository: str
    source_commit: str
    images: tuple[PushedImage, ...]
    index: PushedIndex | None
    deploy_tag: str
    deploy_digest: str
    verified: Mapping[str, str]  # tag -> digest, read back from the registry
    credentials: str | None  # where credentials came from (names only), None for anonymous
    seconds: float

    @property
    def deploy_reference(self) -> str:
        return f"{self.repository}:{self.deploy_tag}@{self.deploy_digest}"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "repository": self.repository, "source_commit": self.source_commit,
                "images": [i.to_json(self.repository) for i in self.images],
                "index": self.index.to_json(self.repository) if self.index else None,
                "deploy_tag": self.deploy_tag, "deploy_digest": self.deploy_digest,
                "deploy_reference": self.deploy_reference, "verified": dict(self.verified),
                "credentials_from": self.credentials, "push_seconds": round(self.seconds, 3)}


def run_push(plan: Plan, service: str, *, revision: SourceRevision, build: BuildResult | None = None,
             flake: str = ".", policy: RetryPolicy | None = None,
             attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, http_timeout: float = DEFAULT_HTTP_TIMEOUT,
             cache_dir: Path | None = None, progress: Progress | None = None,
             env: Mapping[str, str] | None = None) -> PushResult:
    """Push ``service``'s built images under ``<arch>-<sha7>``/``<arch>-latest`` (+ index); verify every tag."""
    svc = plan.service(service)
    say = progress or log.info
    if build is None:
        build = run_build(plan, service, flake=flake, progress=progress, env=env)
    tags = image_tags(revision.sha7, svc.image.architectures)
    repository = svc.image.repository
    host, _, name = repository.partition("/")
    policy = policy or RetryPolicy(attempts=plan.registry.push_attempts)
    credentials = resolve_credentials(plan.registry, env)
    client = RegistryClient(host, insecure=plan.registry.insecure, credentials=credentials, policy=policy,
                            timeout=http_timeout, registry=plan.registry)
    start = time.monotonic()
    images: list[tuple[str, OciImage]] = []
    for system in svc.image.architectures:
        built = build.image(system)
        say(f"preparing {system} image from {built.store_path}")
        images.append((system, oci_layout(built, cache_dir)))

    pushed: list[PushedImage] = []
    expected: dict[str, str] = {}
    with auth_file(host, credentials) as authfile:
        secrets = credentials.secrets() if credentials else ()
        for system, oci in images:
            sha_tag, latest = tags.per_arch[system]
            missing = [(d, s) for d, s in oci.blobs if not client.blob_exists(name, d)]
            attempts, copied = 0, False
            if missing or client.manifest_digest(name, oci.manifest_digest) is None:
                say(f"pushing {repository}:{sha_tag} ({len(missing)} of {len(oci.blobs)} blobs to upload, "
                    f"{sum(s for _, s in missing)} bytes)")
                digest, attempts = skopeo_copy(oci.transport_ref, f"{repository}:{sha_tag}",
                                               insecure=plan.registry.insecure, authfile=authfile, secrets=secrets,
                                               policy=policy, timeout=attempt_timeout, repository=repository,
                                               registry=plan.registry, progress=say,
                                               unset_env=credential_variables(plan.registry))
                copied = True
                if digest != oci.manifest_digest:
                    raise PushError(f"skopeo pushed {repository}:{sha_tag} as {digest}, not {oci.manifest_digest}",
                                    hint="the manifest was rewritten on the way; check the registry keeps OCI manifests as sent")
            else:
                say(f"{repository} already has the {system} image {oci.manifest_digest}; tagging {sha_tag}")
                client.put_manifest(name, sha_tag, MEDIA_OCI_MANIFEST, oci.manifest)
            expected[sha_tag] = oci.manifest_digest
            expected[latest] = oci.manifest_digest
            pushed.append(PushedImage(system, arch_of(system), oci.manifest_digest,
                                      (sha_tag, latest), len(oci.blobs) - 1, len(missing),
                                      sum(s for _, s in missing), copied, attempts))
        index = None
        if tags.index:
            body = image_index([oci for _, oci in images])
            index_digest = "sha256:" + hashlib.sha256(body).hexdigest()
            say(f"pushing the image index {repository}:{tags.index[0]} ({len(images)} architectures)")
            client.put_manifest(name, tags.index[0], MEDIA_OCI_INDEX, body)
            index = PushedIndex(index_digest, tags.index, tuple(oci.manifest_digest for _, oci in images))
            expected[tags.index[0]] = index_digest
            expected[tags.index[1]] = index_digest
        # The sha tags first and proven; only then move the moving tags.
        sha_tags = [t for t in expected if not t.endswith("latest")]
        verified = verify_tags(client, name, repository, {t: expected[t] for t in sha_tags})
        for system, oci in images:
            client.put_manifest(name, tags.per_arch[system][1], MEDIA_OCI_MANIFEST, oci.manifest)
        if index is not None:
            client.put_manifest(name, index.tags[1], MEDIA_OCI_INDEX, image_index([oci for _, oci in images]))
        verified.update(verify_tags(client, name, repository, {t: d for t, d in expected.items() if t not in verified}))
    deploy_digest = expected[tags.deploy_tag]
    say(f"pushed {repository}:{tags.deploy_tag}@{deploy_digest}; {len(verified)} tags verified")
    return PushResult(svc.name, repository, revision.sha7, tuple(pushed), index, tags.deploy_tag, deploy_digest,
                      verified, credentials.source if credentials else None, time.monotonic() - start)


def verify_tags(client: RegistryClient, name: str, repository: str, expected: Mapping[str, str]) -> dict[str, str]:
    verified: dict[str, str] = {}
    for tag, digest in expected.items():
        got = client.manifest_digest(name, tag)
        if got != digest:
            raise PushError(
                f"push of {repository}:{tag} not confirmed: the tag resolves to {got or 'nothing'}, "
                f"not the {digest} just pushed",
                hint="another push may have moved the tag, or the registry did not keep it; push again, "
                     "and deploy by digest (repository@digest) to be safe")
        verified[tag] = got
    return verified
