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


def stored_credentials(host: str) -> Credentials | None:
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
