"""Token authentication end to end: docker-registry configured with ``auth: token`` and a token
issuer of our own on loopback (RS256 JWTs, certificate in the registry's root bundle). Real
``WWW-Authenticate: Bearer`` challenges, scopes, tokens that stop being enough mid-push; skopeo
and Forge's own client both go through it."""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from forgegen.errors import PushError
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.tags import SourceRevision
from tests.fixtures.registry import ImageFlake, Registry, forge_plan
from tests.fixtures.token_auth import SERVICE, TokenIssuer

pytestmark = pytest.mark.registry

FAST = forge_registry.RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.05, rng=random.Random(5))


def _env(reg: Registry, **extra: str) -> dict[str, str]:
    return {**os.environ, "FORGE_REGISTRY_USER": reg.username or "", "FORGE_REGISTRY_PASSWORD": reg.password or "",
            **extra}


def _push(reg: Registry, image_flake: ImageFlake, tmp_path: Path, org: str, env: dict[str, str],
          sha: str = "feedbee", push_with: str = "forge") -> forge_registry.PushResult:
    plan = forge_plan(reg.host, organization=org, architectures=("x86_64-linux", "aarch64-linux"), push_with=push_with)
    return forge_registry.run_push(plan, "api", revision=SourceRevision(sha, "GIT_SHA"), flake=image_flake.ref,
                                   policy=FAST, cache_dir=tmp_path / "oci", env=env)


def test_the_registry_challenges_with_a_real_bearer_realm(token_registry: tuple[Registry, TokenIssuer],
                                                         token_issuer: TokenIssuer) -> None:
    reg, _ = token_registry
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{reg.url}/v2/org/api/manifests/latest", timeout=10)
    challenge = info.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and f'realm="{token_issuer.realm}"' in challenge
    assert f'service="{SERVICE}"' in challenge and 'scope="repository:org/api:pull"' in challenge


@pytest.mark.parametrize("push_with", ["forge", "skopeo"])
def test_push_and_verify_with_token_auth_skopeo_and_forge(push_with: str, token_registry: tuple[Registry, TokenIssuer],
                                                          token_issuer: TokenIssuer, image_flake: ImageFlake,
                                                          tmp_path: Path) -> None:
    reg, _ = token_registry
    org = f"token-push-{push_with}"
    result = _push(reg, image_flake, tmp_path, org, _env(reg), push_with=push_with)
    assert result.index is not None and len(result.verified) == 6
    agents = {entry["agent"].split("/")[0] for entry in token_issuer.log}
    skopeo_asked = any("skopeo" in a or "containers" in a or "Go-http" in a for a in agents)
    assert skopeo_asked == (push_with == "skopeo"), agents  # skopeo asked too, or Forge's client alone
    forge_requests = [e for e in token_issuer.log if "urllib3" in e["agent"]]
    assert forge_requests and all(e["ok"] and e["service"] == SERVICE for e in forge_requests)
    assert [f"repository:{org}/api:pull,push"] in [e["scopes"] for e in forge_requests]
    again = _push(reg, image_flake, tmp_path, org, _env(reg), sha="feedbe2", push_with=push_with)
    assert [i.bytes_uploaded for i in again.images] == [0, 0]


def test_a_token_that_stops_being_enough_mid_push_is_renewed(token_registry: tuple[Registry, TokenIssuer],
                                                             token_issuer: TokenIssuer, image_flake: ImageFlake,
                                                             tmp_path: Path) -> None:
    reg, _ = token_registry
    _push(reg, image_flake, tmp_path, "token-renew", _env(reg))  # the image is there: the next push only tags
    token_issuer.pull_only_first = True  # reads pass with the first token; the first write gets 401
    client = forge_registry.RegistryClient(reg.host, insecure=True, policy=FAST,
                                           credentials=forge_registry.Credentials(reg.username or "", reg.password or "", "test"))
    digest = client.manifest_digest("token-renew/api", "amd64-feedbee")
    assert digest is not None
    _, body = client.get_manifest("token-renew/api", "amd64-feedbee")  # type: ignore[misc]
    assert client.put_manifest("token-renew/api", "renewed", forge_registry.MEDIA_OCI_MANIFEST, body) == digest
    token_issuer.expire_next = 1  # and a token that has expired by the time it is used again
    stale = token_issuer.token(["repository:token-renew/api:pull,push"])
    client._authorization["repository:token-renew/api:pull,push"] = f"Bearer {stale}"
    assert client.manifest_digest("token-renew/api", "renewed") == digest
    assert len([e for e in token_issuer.log if "urllib3" in e["agent"]]) >= 4


@pytest.mark.parametrize("push_with", ["forge", "skopeo"])
def test_an_identity_token_is_traded_at_the_token_service(push_with: str, token_registry: tuple[Registry, TokenIssuer],
                                                          token_issuer: TokenIssuer, image_flake: ImageFlake,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg, issuer = token_registry
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {reg.host: {"identitytoken": issuer.refresh_token}}}))
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth)}
    for var in ("FORGE_REGISTRY_USER", "FORGE_REGISTRY_PASSWORD"):
        env.pop(var, None)
    result = _push(reg, image_flake, tmp_path, f"token-identity-{push_with}", env, push_with=push_with)
    assert len(result.verified) == 6 and result.credentials == f"{auth} (identitytoken)"
    traded = [e for e in token_issuer.log if e["how"] == "POST refresh_token"]
    clients = {"python-urllib3", "skopeo"} if push_with == "skopeo" else {"python-urllib3"}
    assert {e["agent"].split("/")[0] for e in traded} == clients  # each client that sent, the same way
    assert all(e["ok"] for e in token_issuer.log), token_issuer.log


def test_wrong_password_at_the_token_service_fails_at_once(token_registry: tuple[Registry, TokenIssuer],
                                                           token_issuer: TokenIssuer, image_flake: ImageFlake,
                                                           tmp_path: Path) -> None:
    reg, _ = token_registry
    env = _env(reg, FORGE_REGISTRY_PASSWORD="not-the-password-42")
    with pytest.raises(PushError, match="HTTP 401") as info:
        _push(reg, image_flake, tmp_path, "token-wrong", env)
    assert "not-the-password-42" not in str(info.value)
