"""``registry.insecure`` only for loopback hosts unless the loudly named override is set; never
plain HTTP (or unverified TLS) with credentials to a host that is not loopback."""

from __future__ import annotations

import pytest

from forgegen.errors import ConfigError, ForgeError
from forgegen.runtime import registry as forge_registry
from forgegen.schema import parse_config

BASE = """\
version: 1
project: shop
registry: {registry}
gitops: {{repo: ../gitops}}
environments:
  - name: staging
services:
  api: {{}}
"""


@pytest.mark.parametrize("host", ["localhost:5000", "127.0.0.1:5000", "127.1.2.3", "registry.localhost:5000"])
def test_insecure_is_accepted_for_loopback_hosts(host: str) -> None:
    assert parse_config(BASE.format(registry=f"{{host: '{host}', insecure: true}}")).registry.insecure


def test_insecure_for_another_host_is_refused_without_the_override() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.format(registry="{host: registry.example.com, insecure: true}"))
    text = str(info.value)
    assert text.startswith("deploy.yaml:3:") and "registry.insecure" in text
    assert "insecure_non_loopback_i_understand" in text and "loopback" in text


def test_the_override_allows_insecure_for_another_host() -> None:
    config = parse_config(BASE.format(
        registry="{host: registry.example.com, insecure: true, insecure_non_loopback_i_understand: true}"))
    assert config.registry.insecure


def test_no_plain_http_with_credentials_to_a_host_that_is_not_loopback() -> None:
    with pytest.raises(ForgeError) as info:  # refused before anything (a request, skopeo) is sent
        client = forge_registry.RegistryClient(
            "registry.example.invalid:5000", insecure=True,
            credentials=forge_registry.Credentials("bot", "s3cret-PLANTED", "FORGE_REGISTRY_PASSWORD"),
            policy=forge_registry.RetryPolicy(attempts=1, initial_delay=0.01, max_delay=0.01), timeout=5)
        client.manifest_digest("acme/api", "v1")
    text = str(info.value)
    assert "credentials" in text and "loopback" in text and "s3cret-PLANTED" not in text
    assert info.value.exit_code == 2
