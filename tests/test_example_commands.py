"""Every command of the tool Forge replaces (issue 15's table) has an app in the example, and each
runs through `nix run` with --dry-run --json: one JSON document saying what it would do."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fixtures.nixenv import Flake

pytestmark = [pytest.mark.nix]


def dry(shop: Flake, app: str, *args: str) -> dict:
    proc = shop.run_app(app, *args, "--dry-run", "--json", stdin=subprocess.DEVNULL)
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True and doc["steps"], (app, doc)
    return doc


def names(doc: dict) -> list[str]:
    return [s["step"] for s in doc["steps"]]


def places(doc: dict) -> set[str | None]:
    return {s["details"].get("environment") for s in doc["steps"]}


def test_every_row_of_the_table_runs_through_nix_run_with_dry_run_and_json(shop: Flake) -> None:
    # flux-reconcile
    doc = dry(shop, "reconcile:staging")
    assert doc["command"] == "reconcile" and doc["environment"] == "staging" and set(names(doc)) == {"reconcile"}
    doc = dry(shop, "reconcile:api:staging")
    assert doc["target"] == "api:staging" and doc["steps"][0]["details"]["kustomizations"] == ["apps-staging"]
    # run-migrations
    doc = dry(shop, "migrate:api:production")
    [step] = doc["steps"]
    assert step["step"] == "migrate" and step["details"]["job"]["kind"] == "Job"
    assert step["details"]["job"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["api", "migrate"]
    # product-release / orchestrate-release: release (push, migrate, deploy, checks, federation, gates)
    for app in ("release", "release:api"):
        doc = dry(shop, app)
        assert doc["command"] == "release" and doc["stage"] == "full"
        assert doc["environments"] == ["staging", "production"] and places(doc) >= {"staging", "production"}
        assert {"push", "migrate", "gitops-edit", "reconcile", "rollout", "gate"} <= set(names(doc))
        assert not any(n.startswith("test") for n in names(doc))
    # prerelease: build, tests (each service's unit then integration level), push, the first
    # environment, what is ready to promote
    every = ["api", "web", "inventory", "mailer"]
    for app, services in (("prerelease", every), ("prerelease:api", ["api"])):
        doc = dry(shop, app)
        assert doc["stage"] == "pre" and doc["environments"] == ["staging"]
        tests = [(s["details"]["service"], s["step"]) for s in doc["steps"] if s["step"].startswith("test")]
        assert tests == [(s, f"test:{lv}") for s in services for lv in ("unit", "integration")]
        assert names(doc).index("test:integration") < names(doc).index("push")
        assert "production" not in places(doc) and names(doc)[-1] == "ready-to-promote"
    # comprehensive-release: tests, push, every environment, e2e against the first one
    for app, services in (("comprehensive-release", every), ("comprehensive-release:web", ["web"])):
        doc = dry(shop, app)
        assert doc["stage"] == "comprehensive" and doc["environments"] == ["staging", "production"]
        order = names(doc)
        assert order.index("test:integration") < order.index("push")
        first_gate = order.index("gate")
        e2e = doc["steps"][first_gate + 1:first_gate + 1 + len(services)]
        assert [(s["step"], s["details"]["service"], s["details"]["environment"]) for s in e2e] == [
            ("test:e2e", s, "staging") for s in services]
        # api is reached at its verify check's origin; web declares no way to reach it: said so (as do
        # inventory and mailer, whose types have no e2e default: they have no e2e level)
        by_service = {s["details"]["service"]: s["details"] for s in e2e}
        assert by_service.get("api", {"base_url": "http://api.shop.svc"})["base_url"] == "http://api.shop.svc"
        assert by_service["web"]["configured"] is False and "services.web.dev.base_url" in by_service["web"]["hint"]
        assert "production" in places(doc)
