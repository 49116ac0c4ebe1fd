"""Hardening leftovers (issue 12, item 7): no write through a symlink leaving the project, temp
directories of a killed run cleaned on the next one, no secret in a ``repr``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from forge_provision.postgres import Secrets
from forgegen import generator
from forgegen.runtime import build
from forgegen.runtime import registry as forge_registry
from forgegen.runtime.gitops import GitOpsRepo
from tests.fixtures.gitops import seed_remote
from tests.fixtures.registry import ImageFlake, forge_plan
from tests.test_yamlsource import MINIMAL  # the smallest valid deploy.yaml

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent



def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_sync_refuses_to_write_through_a_symlink_leaving_the_project(tmp_path: Path) -> None:
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "deploy.yaml").write_text(MINIMAL)
    (project / "nix").mkdir()
    (project / "nix" / "forge").symlink_to(outside, target_is_directory=True)
    res = subprocess.run([str(BIN / "forgegen"), "sync"], cwd=project, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert "symlink" in res.stderr and "nix/forge" in res.stderr
    assert list(outside.iterdir()) == []


def test_sync_refuses_a_symlinked_file_leaving_the_project(tmp_path: Path) -> None:
    project, outside = tmp_path / "project", tmp_path / "outside.nix"
    project.mkdir()
    (project / "deploy.yaml").write_text(MINIMAL)
    generator.sync(project / "deploy.yaml")
    outside.write_text("mine\n")
    target = project / "nix" / "forge" / "default.nix"
    target.unlink()
    target.symlink_to(outside)
    res = subprocess.run([str(BIN / "forgegen"), "sync"], cwd=project, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert outside.read_text() == "mine\n"


def test_postgres_secrets_repr_shows_no_value() -> None:
    text = repr(Secrets("admin-PLANTED", {"shop_app": "app-PLANTED"}))
    assert "PLANTED" not in text


def test_gitops_clone_temp_dirs_of_a_killed_run_are_cleaned(tmp_path: Path) -> None:
    remote = seed_remote(ROOT / "examples" / "gitops", tmp_path / "remote.git")
    repo = GitOpsRepo.open(f"file://{remote}", "main", cache=tmp_path / "cache")
    repo.workdir.parent.mkdir(parents=True)
    stale = repo.workdir.with_name(f"{repo.workdir.name}.tmp-{_dead_pid()}-0123abcd")
    live = repo.workdir.with_name(f"{repo.workdir.name}.tmp-{os.getpid()}-0123abcd")
    for d in (stale, live):
        (d / "objects").mkdir(parents=True)
    with repo.locked():
        repo.sync()
    assert not stale.exists()
    assert live.exists()  # a running process's clone in progress is left alone


def test_oci_layout_temp_dirs_of_a_killed_run_are_cleaned(image_flake: ImageFlake, tmp_path: Path) -> None:
    layouts = tmp_path / "layouts"
    stale = layouts / f".tmp-{_dead_pid()}-abcd1234"
    live = layouts / f".tmp-{os.getpid()}-abcd1234"
    for d in (stale, live):
        (d / "blobs").mkdir(parents=True)
    built = build.run_build(forge_plan("127.0.0.1:1"), "api", flake=image_flake.ref, push_cache=False)
    forge_registry.oci_layout(built.images[0], layouts)
    assert not stale.exists()
    assert live.exists()
