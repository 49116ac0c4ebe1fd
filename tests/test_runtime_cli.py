"""``forge`` outside the flake apps: plans found from the repository, completion from the plans."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen import plan as planmod
from forgegen import render, schema
from tests.fixtures.nixenv import ROOT

BIN = Path(sys.executable).parent


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """examples/shop, committed in a fresh git repository (deploy.yaml and nix/forge at its root)."""
    dst = tmp_path / "shop"
    shutil.copytree(ROOT / "examples" / "shop", dst)
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "shop"]):
        subprocess.run(argv, cwd=dst, check=True, capture_output=True)
    (dst / "services" / "api").mkdir(parents=True, exist_ok=True)
    return dst


def test_the_plan_paths_are_where_sync_writes_them() -> None:
    config = schema.load_config(ROOT / "examples" / "shop" / "deploy.yaml")
    files = render.render(config)
    assert planmod.plan_relpath(None) in files
    for name in config.services:
        assert planmod.plan_relpath(name) in files


def test_deploy_without_plan_finds_the_service_plan_from_a_subdirectory(repo: Path) -> None:
    proc = run("forge", "deploy", "api", "--dry-run", "--json", "--source", str(repo), cwd=repo / "services" / "api")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["service"], doc["environment"]) == ("api", "staging")  # the first environment


def test_status_and_release_without_plan_cover_every_service(repo: Path) -> None:
    proc = run("forge", "release", "--dry-run", "--json", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert '"api' in text and '"web' in text


def test_an_unknown_service_names_the_known_ones(repo: Path) -> None:
    proc = run("forge", "deploy", "nope", "--dry-run", cwd=repo)
    assert proc.returncode == 2
    assert "unknown service 'nope'" in proc.stderr and "use one of: api, inventory, mailer, web" in proc.stderr


@pytest.mark.parametrize("name", ["../plans/api", "/etc/passwd", "_project", "api/../api"])
def test_a_service_name_is_looked_up_never_joined_into_a_path(repo: Path, name: str) -> None:
    # '../plans/api' used to load plans/api.json and fail later, '/etc/passwd' to name plans/etc/passwd.json.
    proc = run("forge", "deploy", name, "--dry-run", cwd=repo)
    assert proc.returncode == 2
    assert f"unknown service {name!r}: " in proc.stderr and "has no plan for it" in proc.stderr
    assert "passwd.json" not in proc.stderr and "use one of: api, inventory, mailer, web" in proc.stderr


def test_outside_a_repository_forge_says_to_pass_plan(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    proc = run("forge", "deploy", "api", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no Forge plans found" in proc.stderr and "--plan" in proc.stderr


def test_shell_completion_offers_services_and_environments(repo: Path) -> None:
    env = {"_FORGE_COMPLETE": "bash_complete", "COMP_WORDS": "forge deploy ap", "COMP_CWORD": "2"}
    proc = run("forge", cwd=repo, env=env)
    assert proc.returncode == 0, proc.stderr
    words = [line.split(",", 1)[1] for line in proc.stdout.splitlines()]
    assert words == ["api", "api:staging", "api:production"]


def test_deploy_help_names_the_default_environment() -> None:
    proc = run("forge", "deploy", "--help", cwd=ROOT)
    assert "Without :ENVIRONMENT, the service's first environment in promotion order" in " ".join(proc.stdout.split())
