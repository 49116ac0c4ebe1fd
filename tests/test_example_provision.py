"""The provisioning apps of the example (deploy.yaml's `provision`): `nix run .#provision:postgres`
and `.#provision:attic` run `forge-provision <kind> provision` on the example's own files, against a
real PostgreSQL and the Attic stand-in (the files' host and endpoint pointed at them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.nixenv import Flake

pytestmark = [pytest.mark.nix]

OWNER_PW = "owner-pw-for-nix-run"
APP_PW = "app-pw-for-nix-run"


def _point_at(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new), encoding="utf-8")


def _env(pg, tmp_path: Path, secret: str = "") -> dict[str, str]:
    return {"PGADMIN_PASSWORD": pg.admin_password if pg else "", "SHOP_OWNER_PASSWORD": OWNER_PW,
            "SHOP_APP_PASSWORD": APP_PW, "ATTIC_SERVER_TOKEN_HS256_SECRET_BASE64": secret,
            "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def _state(pg) -> list:
    return [pg.query("SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1"),
            pg.query("SELECT datname FROM pg_database ORDER BY 1")]


def test_provision_postgres_through_nix_run_dry_run_then_for_real(shop: Flake, pg, tmp_path: Path) -> None:
    _point_at(shop.dir / "provision" / "postgres.yaml", "port: 5432", f"port: {pg.port}")
    shop.commit("the test's PostgreSQL")
    env = _env(pg, tmp_path)
    before = _state(pg)
    proc = shop.run_app("provision:postgres", "--dry-run", "--json", env=env, stdin=subprocess.DEVNULL)
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True and doc["mode"] == "plan" and doc["statements_executed"] == 0
    assert doc["server"] == f"127.0.0.1:{pg.port}"
    sql = [c["sql"] for c in doc["changes"]]
    assert any(s.startswith('CREATE ROLE "shop_owner"') for s in sql), sql
    assert any(s.startswith('CREATE DATABASE "shop"') for s in sql), sql
    assert OWNER_PW not in proc.stdout + proc.stderr and APP_PW not in proc.stdout + proc.stderr
    assert _state(pg) == before  # nothing changed

    proc = shop.run_app("provision:postgres", "--json", env=env, stdin=subprocess.DEVNULL)
    applied = json.loads(proc.stdout)
    assert applied["dry_run"] is False and applied["mode"] == "apply" and applied["statements_executed"] > 0
    assert ("shop",) in pg.query("SELECT datname FROM pg_database")
    with pg.connect("shop", user="shop_app", password=APP_PW) as conn:  # the app role logs in
        assert conn.execute("SELECT has_schema_privilege('shop', 'USAGE')").fetchone() == (True,)
    again = json.loads(shop.run_app("provision:postgres", "--dry-run", "--json", env=env).stdout)
    assert again["changes"] == []  # provisioned: nothing left to do


def test_provision_attic_through_nix_run_dry_run_changes_nothing(shop: Flake, attic_server, tmp_path: Path) -> None:
    _point_at(shop.dir / "provision" / "attic.yaml", "http://127.0.0.1:8080/", attic_server.endpoint)
    shop.commit("the test's Attic")
    env = _env(None, tmp_path, attic_server.secret_base64)
    proc = shop.run_app("provision:attic", "--dry-run", "--json", env=env, stdin=subprocess.DEVNULL)
    doc = json.loads(proc.stdout)
    assert doc["dry_run"] is True and doc["mode"] == "plan" and doc["endpoint"] == attic_server.endpoint
    assert [(c["action"], c["object"]) for c in doc["changes"]] == [
        ("create cache", "shop"), ("mint token", "shop-ci"),
        ("write client config", str(tmp_path / "xdg" / "attic" / "config.toml"))]
    assert attic_server.caches == {}  # nothing changed on the server
    assert {r.method for r in attic_server.requests} == {"GET"}
    assert not (tmp_path / "xdg").exists()  # nor on this machine


def test_provision_app_passes_any_file_name_and_the_users_arguments_exactly(tmp_path: Path) -> None:
    """The hostile golden config's provision files (`${HOME}`, quotes, a tab, `''${y}`) reach
    forge-provision as exactly those files, in order, with the user's arguments appended."""
    from forgegen import render
    from forgegen.schema import load_config
    from tests.fixtures.nixenv import ROOT, tool_path

    config = load_config(ROOT / "tests" / "golden" / "hostile" / "deploy.yaml")
    for rel, text in render.render(config).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    for rel in (*config.provision.postgres, *config.provision.attic):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"version: 1 # {rel}\n", encoding="utf-8")
    pkgs = ROOT / "tests" / "nixpkgs-standin" / "pkgs.nix"
    expr = f"""
      let
        forge = {{ lib = import {ROOT / "lib"}; }};
        pkgs = import {pkgs} {{ system = "x86_64-linux"; }};
        # forge-provision that prints its arguments (NUL-separated) and the config it was given
        runtime = pkgs.writeShellApplication {{ name = "forge-provision"; text = ''
          printf '%s\\0' "$@"; cat "$4"; printf '\\n'
        ''; }};
        project = import {tmp_path / "nix" / "forge"} {{ inherit forge pkgs runtime; system = "x86_64-linux"; }};
        app = kind: project.apps."provision:${{kind}}".program;
      in pkgs.runCommand "provision-apps" {{ }} "printf '%s\\n%s\\n' ${{app "postgres"}} ${{app "attic"}} > $out"
    """
    built = subprocess.run(["nix", "build", "--impure", "--out-link", str(tmp_path / "result"), "--expr", expr],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": tool_path()})
    assert built.returncode == 0, built.stderr
    postgres_app, attic_app = (tmp_path / "result").read_text().split()
    for kind, program, files in (("postgres", postgres_app, config.provision.postgres),
                                 ("attic", attic_app, config.provision.attic)):
        run = subprocess.run([program, "--dry-run", "a b $HOME"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        calls = run.stdout.split("version: 1 # ")
        assert len(calls) == len(files) + 1
        for call, rel in zip(calls[1:], files, strict=True):
            assert call.startswith(rel + "\n")  # the file's own content: the right file, copied to the store
        argvs = [c.rsplit("\n", 1)[-1] if i else c for i, c in enumerate(calls[:-1])]
        for argv, rel in zip(argvs, files, strict=True):
            args = argv.split("\0")[:-1]
            assert args[:3] == [kind, "provision", "--config"] and args[4:] == ["--dry-run", "a b $HOME"]
            # copied alone to the store, named after the file (bytes a store path cannot hold as `_`)
            safe = re.sub(rb"[^A-Za-z0-9+._?=-]", b"_", Path(rel).name.encode()).decode()
            assert args[3].startswith("/nix/store/") and args[3].endswith("-provision-" + safe), args[3]


def test_a_provision_file_missing_from_the_flake_is_named_with_what_to_do(shop: Flake, tmp_path: Path) -> None:
    (shop.dir / "provision" / "attic.yaml").unlink()
    shop.commit("attic.yaml removed")
    proc = shop.run_app("provision:attic", "--dry-run", check=False, env=_env(None, tmp_path, "c2VjcmV0"))
    assert proc.returncode != 0
    assert "provision/attic.yaml does not exist; create it or fix deploy.yaml's provision" in proc.stderr, proc.stderr
    assert "git add" in proc.stderr
    assert proc.stdout == ""
