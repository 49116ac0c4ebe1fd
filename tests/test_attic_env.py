"""The Attic variables of the tool Forge replaces, with Forge's precedence: ATTIC_CACHE_URL /
ATTIC_CACHE_NAME over deploy.yaml; the token from ATTIC_TOKEN, else the Kubernetes Secret named in
attic.token_secret (read from the Kubernetes stand-in), else ATTIC_SERVER_NAME's own attic login."""

from __future__ import annotations

import base64

import pytest

from forgegen.errors import UsageError
from forgegen.plan import AtticPlan
from forgegen.runtime.attic_env import attic_token, effective_attic
from forgegen.runtime.ops import replaced
from forgegen.schema import parse_config
from tests.fixtures.kube import Kube

pytestmark = [pytest.mark.kube]

PLAN = AtticPlan(endpoint="https://attic.acme.dev", cache="shop", public_key=None, token_env="ATTIC_TOKEN",
                 token_secret={"namespace": "ci", "name": "attic-push", "key": "token"})


def test_cache_url_and_name_override_deploy_yaml_and_configure_attic_alone() -> None:
    assert effective_attic(PLAN, {}) == PLAN
    moved = effective_attic(PLAN, {"ATTIC_CACHE_URL": "http://cache.ci:8080", "ATTIC_CACHE_NAME": "ci"})
    assert (moved.endpoint, moved.cache, moved.token_secret) == ("http://cache.ci:8080", "ci", PLAN.token_secret)
    alone = effective_attic(None, {"ATTIC_CACHE_URL": "http://cache.ci:8080", "ATTIC_CACHE_NAME": "ci"})
    assert alone is not None and (alone.endpoint, alone.cache, alone.token_env) == ("http://cache.ci:8080", "ci",
                                                                                  "ATTIC_TOKEN")
    assert effective_attic(None, {"ATTIC_CACHE_URL": "http://cache.ci:8080"}) is None  # half a configuration


def test_token_from_the_variable_then_the_kubernetes_secret_then_the_server_name(
        kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    assert attic_token(PLAN, {"ATTIC_TOKEN": "from-env"}) == ("from-env", "ATTIC_TOKEN")
    with pytest.raises(UsageError, match="cannot read the Attic token from Secret ci/attic-push: HTTP 404"):
        attic_token(PLAN, {})
    kube.standin.create("secrets", {"metadata": {"name": "attic-push", "namespace": "ci"},
                                    "data": {"token": base64.b64encode(b"from-secret\n").decode()}})
    token, source = attic_token(PLAN, {})
    assert (token, source) == ("from-secret", "Secret ci/attic-push key token")
    wrong_key = replaced(PLAN, token_secret={**PLAN.token_secret, "key": "push"})
    with pytest.raises(UsageError, match=r"Secret ci/attic-push has no key 'push' \(it has: token\)"):
        attic_token(wrong_key, {})
    no_secret = replaced(PLAN, token_secret=None)
    assert attic_token(no_secret, {"ATTIC_SERVER_NAME": "acme"}) == (None, "ATTIC_SERVER_NAME=acme")
    with pytest.raises(UsageError, match="ATTIC_TOKEN is not set"):
        attic_token(no_secret, {})


def test_deploy_yaml_names_the_secret() -> None:
    config = parse_config("""\
version: 1
project: shop
registry: {host: ghcr.io}
attic: {endpoint: https://attic.acme.dev, cache: shop, token_secret: {namespace: ci, name: attic-push}}
gitops: {repo: ./gitops.git}
environments: [{name: staging}]
""")
    assert config.attic is not None and config.attic.token_secret is not None
    assert (config.attic.token_secret.name, config.attic.token_secret.key) == ("attic-push", "token")
