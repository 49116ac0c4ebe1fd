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
        assert "test" not in names(doc)
    # prerelease: build, tests, push, the first environment, what is ready to promote
    for app, services in (("prerelease", ["api", "web", "inventory", "mailer"]), ("prerelease:api", ["api"])):
        doc = dry(shop, app)
        assert doc["stage"] == "pre" and doc["environments"] == ["staging"]
        assert [s["details"]["service"] for s in doc["steps"] if s["step"] == "test"] == services
        assert names(doc).index("test") < names(doc).index("push")
        assert "production" not in places(doc) and names(doc)[-1] == "ready-to-promote"
    # comprehensive-release: tests, push, every environment, integration/e2e against the first one
    for app in ("comprehensive-release", "comprehensive-release:web"):
        doc = dry(shop, app)
        assert doc["stage"] == "comprehensive" and doc["environments"] == ["staging", "production"]
        order = names(doc)
        assert order.index("test") < order.index("push")
        first_gate = order.index("gate")
        assert order[first_gate + 1:first_gate + 3] == ["test:integration", "test:e2e"]
        assert doc["steps"][first_gate + 1]["details"]["environment"] == "staging"
        assert "production" in places(doc)
