"""The development loop: deploy.yaml's ``dev`` (test pyramid, infra), ``forge test``, ``forge e2e``,
``forge dev``, with real pytest, go, PostgreSQL and forge-provision."""

from __future__ import annotations

import pytest

from forgegen.errors import ConfigError
from forgegen.plan import build_plan
from forgegen.schema import parse_config

BASE = """version: 1
project: p
registry: {host: ghcr.io, organization: acme}
gitops: {repo: ../gitops}
environments: [{name: prod}]
services:
"""


def _dev(services: str):
    config = parse_config(BASE + services)
    return {s.name: s.dev for s in build_plan(config, list(config.services)).services}


def test_levels_default_per_type_and_null_means_not_configured() -> None:
    dev = _dev("  api: {type: python}\n  core: {type: rust, dev: {unit: null, e2e: 'make e2e'}}\n"
               "  gen: {type: generic}\n  legacy: {type: go, dev: {test: 'go test ./...'}}\n")
    assert (dev["api"].unit, dev["api"].integration, dev["api"].e2e) == (
        "pytest -q tests/unit", "pytest -q tests/integration", "pytest -q tests/e2e")
    assert dev["api"].test is None and dev["api"].postgres is None
    assert (dev["core"].unit, dev["core"].integration, dev["core"].e2e) == (None, "cargo test --tests", "make e2e")
    assert (dev["gen"].unit, dev["gen"].integration, dev["gen"].e2e) == (None, None, None)
    assert dev["legacy"].test == "go test ./..." and dev["legacy"].unit == "go test -short ./..."


def test_infra_and_start_settings_reach_the_plan() -> None:
    dev = _dev("  api:\n    type: python\n    dev:\n      start: python -m api\n"
               "      health: 'http://127.0.0.1:{port}/healthz'\n      health_timeout: 2m\n"
               "      infra: {postgres: {provision: provision/api.yaml}}\n  db: {dev: {infra: {postgres: {}}}}\n")
    assert dev["api"].start == "python -m api" and dev["api"].health == "http://127.0.0.1:{port}/healthz"
    assert dev["api"].health_timeout == 120.0
    assert dev["api"].postgres is not None and dev["api"].postgres.provision == "provision/api.yaml"
    assert dev["db"].postgres is not None and dev["db"].postgres.provision is None


def test_bad_dev_settings_are_located_and_explained() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(BASE + "  api:\n    dev:\n      health: '127.0.0.1:{port}'\n"
                            "      infra: {postgres: {provision: ../x.yaml}, redis: {}}\n")
    text = str(bad.value)
    assert "services.api.dev.health" in text and "http(s) URL" in text
    assert "services.api.dev.infra.postgres.provision" in text and "'..'" in text
    assert "services.api.dev.infra.redis" in text
