"""Registry credentials: found the way Forge's variables and skopeo/docker find them, handed to
skopeo only through a temporary auth file (mode 0600), never in argv, logs or errors."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgegen import process
from forgegen.errors import UsageError
from forgegen.plan import RegistryPlan

# ---------------------------------------------------------------------------------------------
# Credentials: from environment variables, into a temporary auth file


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str  # where they came from (variable names, or "gh auth token"), never the values
    # An OAuth2 refresh token (docker's ``identitytoken``, a helper's ``<token>`` user): traded at the
    # registry's token service for access tokens instead of a user name and password.
    identity_token: str | None = field(default=None, repr=False)

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.basic, self.identity_token) if s)


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


def auth_files(environ: Mapping[str, str] | None = None) -> list[str]:
    """The auth files skopeo reads, in its order: ``REGISTRY_AUTH_FILE``, the containers auth.json
    files, then docker's config.json (``DOCKER_CONFIG`` or ``~/.docker``)."""
    env = os.environ if environ is None else environ
    candidates = [env.get("REGISTRY_AUTH_FILE", "")]
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = Path(env.get("HOME") or Path.home())
    candidates.append(str(home / ".config" / "containers" / "auth.json"))
    candidates.append(os.path.join(env.get("DOCKER_CONFIG") or str(home / ".docker"), "config.json"))
    return [c for c in candidates if c]


def stored_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``host`` the way skopeo and docker find them: per file, ``credHelpers[host]``,
    then ``credsStore``, then ``auths[host]`` (``auth``, ``identitytoken``). Helpers are called as
    ``docker-credential-<name> get`` with the host on stdin; secrets never reach argv or logs."""
    for path in auth_files(environ):
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        keys = (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/")
        helpers: dict[str, object] = doc["credHelpers"] if isinstance(doc.get("credHelpers"), dict) else {}
        helper = next((helpers[k] for k in keys if isinstance(helpers.get(k), str)), None) or doc.get("credsStore")
        if isinstance(helper, str) and helper:
            found = _from_helper(helper, host, path, environ)
            if found is not None:
                return found
        auths: dict[str, Any] = doc["auths"] if isinstance(doc.get("auths"), dict) else {}
        entry = next((auths[k] for k in keys if isinstance(auths.get(k), dict)), None)
        found = _from_entry(entry, path) if entry else None
        if found is not None:
            return found
    return None


def _from_entry(entry: Mapping[str, object], path: str) -> Credentials | None:
    user, password = "", ""
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(user, password, f"{path} (identitytoken)", identity_token=token)
    return Credentials(user, password, path) if user or password else None


def _from_helper(helper: str, host: str, path: str, environ: Mapping[str, str] | None) -> Credentials | None:
    """``docker-credential-<helper> get`` (host on stdin, JSON ``{Username, Secret}`` on stdout)."""
    program = f"docker-credential-{helper}"
    if process.which(program, env=environ) is None:
        raise UsageError(f"{path} names the credential helper {helper!r} for {host}, but {program} is not on PATH",
                         hint=f"install {program}, or remove the helper from {path}")
    result = process.run([program, "get"], input=host, env=dict(environ) if environ is not None else None,
                         timeout=60, check=False, what=f"read credentials for {host} from {program}")
    if result.returncode != 0:  # "credentials not found in native keychain": nothing stored for it
        return None
    try:
        doc = json.loads(result.stdout)
        user, secret = str(doc.get("Username") or ""), str(doc["Secret"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{program} get answered something that is not the helper protocol's JSON "
                         "({ServerURL, Username, Secret})", hint=f"check {program} works: echo {host} | {program} get") from None
    if user == "<token>":
        return Credentials("", "", f"{program}", identity_token=secret)
    return Credentials(user, secret, program) if secret else None


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
            entry = {"auth": credentials.basic}
            if credentials.identity_token:  # as `docker login` writes it: "user:" next to the token
                user = credentials.username or "<token>"
                entry = {"auth": base64.b64encode(f"{user}:".encode()).decode(),
                         "identitytoken": credentials.identity_token}
            json.dump({"auths": {host: entry}}, f)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
