"""Stored credentials the way skopeo and docker find them: ``credHelpers``, ``credsStore``
(``docker-credential-<name> get``, a real helper script on PATH speaking the protocol), ``auths``
with ``auth`` or ``identitytoken``; Forge's own variables first. Real docker-registry (htpasswd)."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
from pathlib import Path

import pytest

from forgegen.errors import UsageError
from forgegen.runtime import credentials as forge_credentials
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.tags import SourceRevision
from tests.fixtures.registry import ImageFlake, Registry, forge_plan

pytestmark = pytest.mark.registry

FAST = forge_registry.RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, rng=random.Random(3))


def _helper(bin_dir: Path, name: str, answers: dict[str, dict[str, str]], calls: Path) -> None:
    """``docker-credential-<name>``: records argv and stdin (the host), answers from ``answers``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
host = sys.stdin.read().strip()
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "stdin": host}}) + "\\n")
answers = {json.dumps(answers)!r}
found = json.loads(answers).get(host)
if sys.argv[1:] != ["get"] or found is None:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": host, **found}}))
""")
    script.chmod(0o755)


@pytest.fixture
def helper_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth_registry: Registry) -> Path:
    bin_dir = tmp_path / "bin"
    _helper(bin_dir, "forgetest", {auth_registry.host: {"Username": auth_registry.username or "",
                                                        "Secret": auth_registry.password or ""}},
            tmp_path / "calls.jsonl")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for var in ("FORGE_REGISTRY_USER", "FORGE_REGISTRY_PASSWORD", "GHCR_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _calls(tmp: Path) -> list[dict]:
    path = tmp / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("layout", ["credHelpers", "credsStore"])
def test_push_with_a_credential_helper_from_the_auth_file(helper_env: Path, auth_registry: Registry,
                                                          image_flake: ImageFlake, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture, layout: str) -> None:
    auth = helper_env / "auth.json"
    doc = {"credHelpers": {auth_registry.host: "forgetest"}} if layout == "credHelpers" else {"credsStore": "forgetest"}
    auth.write_text(json.dumps(doc))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))  # skopeo reads the same file
    caplog.set_level(logging.DEBUG)
    plan = forge_plan(auth_registry.host, organization=f"helper-{layout.lower()}")
    result = forge_registry.run_push(plan, "api", revision=SourceRevision("abcdef1", "GIT_SHA"),
                                     flake=image_flake.ref, policy=FAST, cache_dir=helper_env / "oci",
                                     env=dict(os.environ))
    assert len(result.verified) == 2
    calls = _calls(helper_env)
    assert calls and all(c == {"argv": ["get"], "stdin": auth_registry.host} for c in calls)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert auth_registry.password not in logged and auth_registry.password not in json.dumps(result.to_json())


def test_identitytoken_and_auth_entries_and_helper_misses(helper_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = helper_env / "config.json"
    basic = base64.b64encode(b"me:pw").decode()
    auth.write_text(json.dumps({"auths": {"a.example": {"auth": basic}, "b.example": {"identitytoken": "refresh-1"}},
                                "credHelpers": {"c.example": "forgetest"}}))
    env = {"REGISTRY_AUTH_FILE": str(auth), "PATH": os.environ["PATH"], "HOME": str(helper_env)}
    a = forge_credentials.stored_credentials("a.example", env)
    assert a is not None and (a.username, a.password, a.identity_token) == ("me", "pw", None)
    b = forge_credentials.stored_credentials("b.example", env)
    assert b is not None and b.identity_token == "refresh-1" and "refresh-1" in b.secrets()
    assert "refresh-1" not in repr(b)
    assert forge_credentials.stored_credentials("c.example", env) is None  # the helper has nothing for it
    assert _calls(helper_env) == [{"argv": ["get"], "stdin": "c.example"}]


def test_a_helper_that_is_not_installed_is_a_clear_usage_error(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"credHelpers": {"r.example": "nosuchhelper"}}))
    with pytest.raises(UsageError, match="docker-credential-nosuchhelper is not on PATH"):
        forge_credentials.stored_credentials("r.example", {"REGISTRY_AUTH_FILE": str(auth), "PATH": str(tmp_path),
                                                           "HOME": str(tmp_path)})


def test_forge_variables_come_before_stored_credentials(helper_env: Path, auth_registry: Registry,
                                                        image_flake: ImageFlake,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    auth = helper_env / "auth.json"
    auth.write_text(json.dumps({"credHelpers": {auth_registry.host: "forgetest"}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    env = {**os.environ, "FORGE_REGISTRY_USER": auth_registry.username or "",
           "FORGE_REGISTRY_PASSWORD": auth_registry.password or ""}
    plan = forge_plan(auth_registry.host, organization="helper-precedence")
    result = forge_registry.run_push(plan, "api", revision=SourceRevision("abcdef2", "GIT_SHA"),
                                     flake=image_flake.ref, policy=FAST, cache_dir=helper_env / "oci", env=env)
    assert result.credentials == "FORGE_REGISTRY_USER/FORGE_REGISTRY_PASSWORD"
    assert _calls(helper_env) == []  # Forge never asked the helper; skopeo got Forge's auth file
