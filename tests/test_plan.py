"""The JSON plan: versioned, complete, and usable outside Nix (`forge … --plan plans/<svc>.json`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen.errors import ConfigError, UsageError
from forgegen.plan import PLAN_VERSION, build_plan, load_plan
from forgegen.schema import load_config
from tests.fixtures.nixenv import ROOT

SHOP = ROOT / "examples" / "shop"


def test_a_service_fragment_loads_with_the_product_settings_next_to_it() -> None:
    plan = load_plan(SHOP / "nix" / "forge" / "plans" / "api.json")
    assert plan == build_plan(load_config(SHOP / "deploy.yaml"), ["api"])
    assert plan.registry.host == "localhost:5000"
    assert [t.environment for t in plan.service("api").targets] == ["staging", "production"]


def test_forge_dry_run_works_outside_nix_with_a_fragment(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "from forgegen.runtime.cli import main; main()", "deploy",
                           "--plan", str(SHOP / "nix" / "forge" / "plans" / "web.json"), "web:production",
                           "--dry-run", "--json"], capture_output=True, text=True, env={"RELEASE_GIT_SHA": "1234567",
                                                                                       "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["environment"] == "production"
    assert doc["steps"][1]["details"]["tags"] == ["amd64-1234567", "amd64-latest"]


def test_plan_version_and_origin_are_checked(tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"generator": "forgegen", "plan_version": PLAN_VERSION + 1, "services": []}))
    with pytest.raises(ConfigError, match="plan version 2 is not supported"):
        load_plan(bad)
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not a Forge plan"):
        load_plan(bad)
    with pytest.raises(UsageError, match="does not exist"):
        load_plan(tmp_path / "missing.json")


def test_unknown_service_and_environment_say_what_exists() -> None:
    plan = load_plan(SHOP / "nix" / "forge" / "plans" / "_project.json")
    with pytest.raises(UsageError, match="unknown service 'nope'"):
        plan.service("nope")
    whole = build_plan(load_config(SHOP / "deploy.yaml"))
    with pytest.raises(UsageError) as info:
        whole.service("api").target("qa")
    assert "use one of: staging, production" in str(info.value)
