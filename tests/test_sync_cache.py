"""The quick no-op sync (forgegen/synccache.py): trusted only when deploy.yaml, Forge's code and
every file under nix/forge are as the last sync left them; anything else takes the full path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.nixenv import ROOT

SHOP = (ROOT / "examples" / "shop" / "deploy.yaml").read_text()


def sync(repo: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(repo.parent / "cache")}
    return subprocess.run([sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "forgegen", "sync",
                           *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120)


def verbs(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {c["path"]: c["action"] for c in json.loads(proc.stdout)["files"]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "deploy.yaml").write_text(SHOP)
    assert sync(tmp_path / "repo").returncode == 0
    return tmp_path / "repo"


def imported(proc: subprocess.CompletedProcess[str]) -> set[str]:
    return {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_a_no_op_sync_parses_nothing_and_reports_every_file_identical(repo: Path) -> None:
    proc = sync(repo, "--json", importtime=True)
    assert proc.returncode == 0, proc.stderr
    assert set(verbs(proc).values()) == {"identical"} and "nix/forge/default.nix" in verbs(proc)
    assert json.loads(proc.stdout)["services"] == 4  # the example: api, web, inventory, mailer
    assert not {"pydantic", "yaml", "jinja2", "forgegen.schema"} & imported(proc)


def test_an_edited_generated_file_is_put_back(repo: Path) -> None:
    plan = repo / "nix/forge/plans/api.json"
    good = plan.read_bytes()
    plan.write_bytes(good.replace(b'"api"', b'"apx"', 1))
    proc = sync(repo, "--json")
    assert verbs(proc)["nix/forge/plans/api.json"] == "overwrite"
    assert plan.read_bytes() == good


def test_a_changed_deploy_yaml_is_rendered(repo: Path) -> None:
    (repo / "deploy.yaml").write_text(SHOP + "\n# a comment changes the bytes, not the output\n")
    proc = sync(repo, "--json", importtime=True)
    assert "forgegen.schema" in imported(proc)  # the full path ran
    assert set(verbs(proc).values()) == {"identical"}
    (repo / "deploy.yaml").write_text(SHOP.replace("type: python", "tyep: python", 1))
    proc = sync(repo)
    assert proc.returncode == 2 and "tyep" in proc.stderr


def test_an_extra_generated_file_is_removed_and_a_symlink_takes_the_full_path(repo: Path) -> None:
    extra = repo / "nix/forge/plans/gone.json"
    extra.write_text('{"generator": "forgegen"}\n')
    assert verbs(sync(repo, "--json"))["nix/forge/plans/gone.json"] == "remove"
    assert not extra.exists()
    index = repo / "nix/forge/default.nix"
    outside = repo.parent / "outside.nix"
    outside.write_bytes(index.read_bytes())
    index.unlink()
    index.symlink_to(outside)
    proc = sync(repo, importtime=True)
    assert "forgegen.schema" in imported(proc)


def test_another_forge_takes_the_full_path(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgegen import synccache

    monkeypatch.setenv("XDG_CACHE_HOME", str(repo.parent / "cache"))
    assert synccache.noop(repo / "deploy.yaml") is not None  # the stamp as the last sync wrote it
    stamp = next((repo.parent / "cache" / "forge" / "sync").glob("*.json"))
    doc = json.loads(stamp.read_text())
    doc["key"] = "0" * 64  # what a stamp written by other code (or another deploy.yaml) holds
    stamp.write_text(json.dumps(doc))
    assert synccache.noop(repo / "deploy.yaml") is None


def test_the_output_directory_is_the_renderer_s() -> None:
    from forgegen import render, synccache

    assert synccache.OUTPUT_DIR == render.OUTPUT_DIR
