"""Attic caches and tokens from YAML: plan and apply through Attic's HTTP API.

Caches are read with ``GET /_api/v1/cache-config/<cache>``, created with ``POST`` (an
"already exists" answer, ``400 CacheAlreadyExists`` or ``409``, counts as success: someone
else created it, so its settings are then reconciled) and reconfigured with ``PATCH`` carrying
only the fields that differ: public flag, store dir, priority, upstream cache key names.

The API is called with the token in ``server.token_env`` or, when only the server's HS256
secret is given, with a ten-minute token minted for exactly the configured caches.

Tokens are minted as ``atticadm make-token`` does and written to a token file (mode 0600)
and/or Attic's client config (``[servers.<name>] endpoint, token``; other servers in the file
are kept). A token already written that verifies with the secret, carries the same subject,
permissions and validity, and is not due for renewal is kept: a second run changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import urllib3

from forge_provision.schema import AtticConfig, Cache, TokenSpec
from forge_provision.tokens import CLAIM_NAMESPACE, make_token, permissions, read_token, secret_key
from forgegen import transport
from forgegen.errors import ConfigError, Problem, ProvisionError

log = logging.getLogger(__name__)

ADMIN_TOKEN_VALIDITY = 600
SETTINGS = ("is_public", "store_dir", "priority", "upstream_cache_key_names")


@dataclass(frozen=True)
class AtticChange:
    action: str  # create cache | configure cache | mint token | write token file | write client config
    target: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "object": self.target, "detail": self.detail}


@dataclass
class AtticOutcome:
    mode: str
    endpoint: str
    changes: list[AtticChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "endpoint": self.endpoint, "changed": bool(self.changes),
                "changes": [c.to_json() for c in self.changes], "notes": list(self.notes)}


def desired_settings(cache: Cache) -> dict[str, Any]:
    return {"is_public": cache.public, "store_dir": cache.store_dir, "priority": cache.priority,
            "upstream_cache_key_names": list(cache.upstream_cache_key_names)}


# -- HTTP ----------------------------------------------------------------------------------------

class AtticClient:
    """The few calls of Attic's v1 API that configure caches (Forge's pooled transport, bearer
    token). GET follows redirects; the token never follows one to another origin (scheme, host,
    port), and one from https to plain http is refused."""

    def __init__(self, endpoint: str, token: str, *, timeout: float = 30) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self._token = token
        self.timeout = timeout
        self._http = transport.Transport(timeout=timeout)

    def _call(self, method: str, cache: str, body: Any = None) -> tuple[int, Any]:
        url = urllib.parse.urljoin(self.endpoint, "_api/v1/cache-config/" + urllib.parse.quote(cache, safe=""))
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            resp = self._http.send(method, url, headers, data)
        except transport.InsecureRedirect as err:
            raise ProvisionError(f"Attic at {err.source} redirected to {err.target}: refused (from https to plain "
                                 "http the token would travel in clear)",
                                 hint="set server.endpoint to the server's final https URL") from err
        except (transport.TooManyRedirects, urllib3.exceptions.HTTPError, OSError) as err:
            raise ProvisionError(f"cannot reach Attic at {self.endpoint}: {err}",
                                 hint="check server.endpoint in the config and that the server runs") from err
        return resp.status, _json(resp.body)

    def _fail(self, what: str, cache: str, status: int, body: Any) -> ProvisionError:
        name = body.get("error") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else None
        detail = f"HTTP {status}" + (f" {name}" if name else "") + (f": {message}" if message else "")
        if status in (401, 403):
            return ProvisionError(
                f"Attic refused to {what} cache {cache!r} ({detail})",
                hint=f"the API token needs pull, create-cache and configure-cache permission on {cache!r} "
                     f"(atticadm make-token --pull {cache} --create-cache {cache} --configure-cache {cache})")
        return ProvisionError(f"cannot {what} Attic cache {cache!r} at {self.endpoint} ({detail})",
                              hint="check the Attic server's log")

    def get(self, cache: str) -> dict[str, Any] | None:
        status, body = self._call("GET", cache)
        if status == 200 and isinstance(body, dict):
            return body
        if status == 404:
            return None
        raise self._fail("read", cache, status, body)

    def create(self, cache: str, settings: Mapping[str, Any]) -> bool:
        """Create the cache; False when it already exists (which is not an error)."""
        status, body = self._call("POST", cache, {"keypair": "Generate", **settings})
        if status in (200, 201, 204):
            return True
        error = body.get("error") if isinstance(body, dict) else None
        if status == 409 or (status == 400 and (error == "CacheAlreadyExists"
                                                or "already exists" in json.dumps(body).lower())):
            return False
        raise self._fail("create", cache, status, body)

    def configure(self, cache: str, patch: Mapping[str, Any]) -> None:
        status, body = self._call("PATCH", cache, dict(patch))
        if status not in (200, 204):
            raise self._fail("configure", cache, status, body)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


# -- files ------------------------------------------------------------------------------------------

def client_config_path(path: str | None) -> Path:
    if path:
        return Path(os.path.expanduser(path))
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "attic" / "config.toml"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def _toml_str(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ProvisionError(f"cannot write the value {value!r} to the Attic client config")


def dump_toml(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """A small TOML writer for Attic's client config (strings, numbers, lists, tables)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        if isinstance(value, Mapping):
            path = prefix + (key,)
            body = dump_toml(value, path)
            scalars = any(not isinstance(v, Mapping) for v in value.values())
            header = f"[{'.'.join(_toml_key(p) for p in path)}]\n" if scalars or not value else ""
            out += ("\n" if out else "") + header + body
    return out


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_client_config(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ProvisionError(f"cannot read the Attic client config {path}: {err}",
                             hint="fix or remove the file; forge-provision keeps the other servers in it") from err


# -- the run -----------------------------------------------------------------------------------------

def _env(environ: Mapping[str, str], var: str, path: str, what: str) -> str:
    value = environ.get(var)
    if not value:
        raise ConfigError([Problem("environment", None, None, path,
                                   f"${var} ({what}) is {'empty' if var in environ else 'not set'}; export it "
                                   "before running")], hint="nothing was changed")
    return value


def _token_claims_ok(claims: dict[str, Any] | None, spec: TokenSpec, wanted: dict[str, Any], now: int) -> bool:
    if not claims:
        return False
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int) or not isinstance(nbf, int):
        return False
    renew = spec.renew_before if spec.renew_before is not None else spec.validity // 4
    return (claims.get("sub") == spec.sub and claims.get(CLAIM_NAMESPACE) == {"caches": wanted}
            and exp - nbf == spec.validity and exp - now > renew)


def run_attic(cfg: AtticConfig, mode: Literal["plan", "apply"], *,
              environ: Mapping[str, str] | None = None, now: int | None = None) -> AtticOutcome:
    env = os.environ if environ is None else environ
    now = int(time.time()) if now is None else now
    server = cfg.server
    key = None
    if server.token_secret_env:
        key = secret_key(_env(env, server.token_secret_env, "server.token_secret_env",
                              "the Attic server's token-hs256-secret-base64"))
    if server.token_env:
        api_token = _env(env, server.token_env, "server.token_env", "an Attic token that may configure the caches")
    else:
        assert key is not None  # the schema requires one of the two
        admin = {c.name: {"cc": 1, "cr": 1, "r": 1} for c in cfg.caches}
        api_token = make_token(key, "forge-provision", admin, validity=ADMIN_TOKEN_VALIDITY)
    outcome = AtticOutcome(mode, server.endpoint)
    client = AtticClient(server.endpoint, api_token, timeout=server.timeout)

    for cache in cfg.caches:
        want = desired_settings(cache)
        current = client.get(cache.name)
        if current is None:
            outcome.changes.append(AtticChange("create cache", cache.name, want))
            if mode == "apply" and not client.create(cache.name, want):
                outcome.notes.append(f"cache {cache.name!r} already existed (created concurrently); "
                                     "its settings were reconciled")
                current = client.get(cache.name)
            if current is None:
                continue
        patch = {k: v for k, v in want.items() if current.get(k) != v}
        if patch:
            outcome.changes.append(AtticChange("configure cache", cache.name,
                                               {k: {"from": current.get(k), "to": v} for k, v in patch.items()}))
            if mode == "apply":
                client.configure(cache.name, patch)

    for spec in cfg.tokens:
        assert key is not None
        wanted = permissions({name: getattr(spec, name) for name in
                              ("pull", "push", "delete", "create_cache", "configure_cache",
                               "configure_cache_retention", "destroy_cache")})
        token_path = Path(os.path.expanduser(spec.token_file)) if spec.token_file else None
        cc_path = client_config_path(spec.client_config.path) if spec.client_config else None
        existing = None
        if token_path and token_path.exists():
            existing = token_path.read_text(encoding="utf-8").strip()
        elif cc_path and spec.client_config:
            server_cfg = _read_client_config(cc_path).get("servers", {}).get(spec.client_config.server_name, {})
            existing = server_cfg.get("token") if isinstance(server_cfg, dict) else None
        token = existing if existing and _token_claims_ok(read_token(key, existing), spec, wanted, now) else None
        if token is None:
            outcome.changes.append(AtticChange("mint token", spec.sub, {
                "caches": wanted, "expires_at": now + spec.validity}))
            token = make_token(key, spec.sub, wanted, validity=spec.validity, now=now)
        if token_path:
            have = token_path.read_text(encoding="utf-8") if token_path.exists() else None
            if have != token + "\n":
                outcome.changes.append(AtticChange("write token file", str(token_path), {"sub": spec.sub}))
                if mode == "apply":
                    _write_private(token_path, token + "\n")
        if cc_path and spec.client_config:
            data = _read_client_config(cc_path)
            old = cc_path.read_text(encoding="utf-8") if cc_path.exists() else None
            servers = dict(data.get("servers", {}))
            servers[spec.client_config.server_name] = {"endpoint": server.endpoint, "token": token}
            merged: dict[str, Any] = {k: v for k, v in data.items() if k not in ("default-server", "servers")}
            default = spec.client_config.server_name if spec.client_config.default else data.get("default-server")
            if default:
                merged = {"default-server": default, **merged}
            merged["servers"] = servers
            text = dump_toml(merged)
            if old != text:
                outcome.changes.append(AtticChange("write client config", str(cc_path),
                                                   {"server": spec.client_config.server_name, "sub": spec.sub}))
                if mode == "apply":
                    _write_private(cc_path, text)
    return outcome
