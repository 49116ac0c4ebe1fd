"""forgegen sync's writer: create / identical / overwrite / remove, --dry-run, --check, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.nixenv import ROOT

SHOP = (ROOT / "examples" / "shop" / "deploy.yaml").read_text()


def forgegen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "deploy.yaml").write_text(SHOP)
    return tmp_path


def verbs(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    out = {}
    for line in proc.stderr.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("create", "identical", "overwrite", "remove"):
            out[parts[1]] = parts[0]
    return out


def test_first_sync_creates_then_second_is_identical_and_writes_nothing(repo: Path) -> None:
    first = forgegen("sync", cwd=repo)
    assert first.returncode == 0, first.stderr
    assert set(verbs(first).values()) == {"create"}
    assert "nix/forge/plans/api.json" in verbs(first)
    before = {p: p.stat().st_mtime_ns for p in (repo / "nix").rglob("*") if p.is_file()}
    second = forgegen("sync", cwd=repo)
    assert set(verbs(second).values()) == {"identical"}
    after = {p: p.stat().st_mtime_ns for p in (repo / "nix").rglob("*") if p.is_file()}
    assert before == after


def test_removed_service_files_are_removed_but_foreign_files_are_kept(repo: Path) -> None:
    forgegen("sync", cwd=repo)
    (repo / "nix" / "forge" / "plans" / "notes.json").write_text('{"mine": true}\n')
    (repo / "nix" / "forge" / "local.nix").write_text("# my own file\n{ }\n")
    (repo / "deploy.yaml").write_text(SHOP.split("\n  web:")[0] + "\n")
    proc = forgegen("sync", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    v = verbs(proc)
    assert "nix/forge/plans/notes.json" not in v and "nix/forge/local.nix" not in v
    assert v["nix/forge/plans/web.json"] == "remove"
    assert v["nix/forge/default.nix"] == "overwrite"
    assert not (repo / "nix" / "forge" / "plans" / "web.json").exists()
    assert (repo / "nix" / "forge" / "plans" / "notes.json").read_text() == '{"mine": true}\n'
    assert (repo / "nix" / "forge" / "local.nix").read_text() == "# my own file\n{ }\n"


def test_dry_run_writes_nothing_and_reports_what_would_change(repo: Path) -> None:
    proc = forgegen("sync", "--dry-run", "--json", cwd=repo)
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["written"] is False and report["changed"] is True
    assert report["summary"]["create"] == len(report["files"]) == 6  # default.nix, _project.json, one plan per service (4)
    assert not (repo / "nix").exists()


def test_check_exits_1_when_out_of_date_and_0_when_fresh(repo: Path) -> None:
    stale = forgegen("sync", "--check", cwd=repo)
    assert stale.returncode == 1
    assert "out of date" in stale.stderr and "forgegen sync" in stale.stderr
    assert not (repo / "nix").exists()
    forgegen("sync", cwd=repo)
    (repo / "nix" / "forge" / "default.nix").write_text("edited by hand\n")
    edited = forgegen("sync", "--check", cwd=repo)
    assert edited.returncode == 1
    assert verbs(edited)["nix/forge/default.nix"] == "overwrite"
    forgegen("sync", cwd=repo)
    assert forgegen("sync", "--check", cwd=repo).returncode == 0


def test_bad_config_leaves_existing_output_untouched(repo: Path) -> None:
    forgegen("sync", cwd=repo)
    before = snapshot(repo / "nix")
    (repo / "deploy.yaml").write_text(SHOP.replace("type: node", "type: cobol"))
    proc = forgegen("sync", cwd=repo)
    assert proc.returncode == 2
    assert "services.web.type" in proc.stderr
    assert snapshot(repo / "nix") == before


def test_config_option_and_missing_file(tmp_path: Path) -> None:
    proc = forgegen("sync", "--config", "elsewhere.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "elsewhere.yaml: file not found" in proc.stderr


def test_init_writes_a_commented_deploy_yaml_and_a_wired_flake(tmp_path: Path) -> None:
    proc = forgegen("init", "--project", "starter", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "deploy.yaml").read_text()
    assert text.count("#") > 10
    assert "import ./nix/forge" in (tmp_path / "flake.nix").read_text()
    assert (tmp_path / "nix" / "forge" / "default.nix").is_file()
    # The root flake's templates.default is the same shape init writes.
    starter = ROOT / "examples" / "starter"
    assert snapshot(tmp_path) == snapshot(starter), "examples/starter is stale: regenerate it with `forgegen init --project starter`"


def test_init_never_overwrites_an_existing_flake(tmp_path: Path) -> None:
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }\n")
    proc = forgegen("init", "--project", "demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "flake.nix").read_text() == "{ outputs = _: { }; }\n"
    assert "import ./nix/forge" in proc.stderr
    again = forgegen("init", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_init_rejects_a_bad_project_name(tmp_path: Path) -> None:
    proc = forgegen("init", "--project", "Not_OK", cwd=tmp_path)
    assert proc.returncode == 2
    assert "DNS-1123" in proc.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "home"] or not any(tmp_path.glob("deploy.yaml"))


def test_a_file_that_cannot_be_written_leaves_every_file_as_it_was(tmp_path: Path) -> None:
    from forgegen import render, writer
    from forgegen.errors import RenderError
    files = {"nix/forge/a.nix": f"{render.GENERATED_MARK}\nnew a\n", "nix/forge/b.nix": "bad \udc80 text\n",
             "nix/forge/c/d.nix": f"{render.GENERATED_MARK}\nnew d\n"}
    (tmp_path / "nix/forge").mkdir(parents=True)
    (tmp_path / "nix/forge/a.nix").write_text(f"{render.GENERATED_MARK}\nold a\n")
    before = snapshot(tmp_path)
    with pytest.raises(RenderError, match="b.nix"):
        writer.write(tmp_path, files, "nix/forge", render.is_generated)
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "nix/forge").iterdir()) == ["a.nix"]  # no temp files left


def test_init_writes_the_given_flake_urls_and_says_to_commit(tmp_path: Path) -> None:
    proc = forgegen("init", "--project", "shop", "--forge-url", "git+file:///srv/forge",
                    "--nixpkgs-url", "path:/srv/nixpkgs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    flake = (tmp_path / "flake.nix").read_text()
    assert 'forge.url = "git+file:///srv/forge";' in flake
    assert 'nixpkgs.url = "path:/srv/nixpkgs";' in flake
    assert "git init -q && git add -A && nix flake lock && git commit" in proc.stderr
    first = (tmp_path / "deploy.yaml").read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=https://")


def test_init_refuses_a_url_that_is_not_a_flake_reference(tmp_path: Path) -> None:
    proc = forgegen("init", "--forge-url", '/srv/forge"; evil', cwd=tmp_path)
    assert proc.returncode == 2
    assert "--forge-url '/srv/forge\"; evil' is not a flake reference" in proc.stderr
    assert not (tmp_path / "deploy.yaml").exists()


def test_check_takes_the_file_as_an_argument_and_counts_in_words(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(SHOP)
    proc = forgegen("check", "mine.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mine.yaml: ok (4 services, 2 environments)" in proc.stderr
    starter = ROOT / "examples" / "starter" / "deploy.yaml"
    proc = forgegen("check", str(starter), cwd=tmp_path)
    assert f"{starter}: ok (1 service, 2 environments)" in proc.stderr


@pytest.mark.parametrize("command", [["check", "deploy.yaml"], ["sync"]])
def test_json_on_an_invalid_file_prints_the_located_errors_as_json(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "deploy.yaml").write_text(SHOP.replace("type: python", "tyep: python", 1))
    proc = forgegen(*command, "--json", cwd=tmp_path)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2 and doc["error"]["kind"] == "ConfigError"
    [problem] = doc["error"]["problems"]
    assert problem["file"] == "deploy.yaml" and problem["line"] > 0 and problem["column"] > 0
    assert problem["message"] == "unknown key 'tyep'; did you mean 'type'?"
    assert "did you mean 'type'?" in proc.stderr  # people still read stderr


def test_json_on_a_usage_error_is_json_too(tmp_path: Path) -> None:
    proc = forgegen("sync", "--json", "--no-such-option", cwd=tmp_path)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["kind"] == "UsageError"


def test_init_and_readme_agree_on_what_a_relative_gitops_repo_is_relative_to() -> None:
    from forgegen import generator

    deploy = generator.init_files("shop")["deploy.yaml"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "relative to where you run the apps (the repository root)" in deploy
    assert "A relative `gitops.repo` path is relative to where you run the app (the repository root)" in readme
