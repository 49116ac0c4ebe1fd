"""forge-provision attic against the Attic stand-in over real HTTP (tests/attic_standin)."""

from __future__ import annotations

import base64
import json
import os
import stat
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from forge_provision.attic import dump_toml, run_attic
from forge_provision.cli import main
from forge_provision.schema import parse_attic
from forge_provision.tokens import make_token, read_token, secret_key
from forgegen.errors import ConfigError, ProvisionError
from tests.attic_standin.server import mint, verify

DAY = 86400


def config(server, tmp_path: Path, **extra) -> dict:
    cfg = {
        "version": 1,
        "server": {"endpoint": server.endpoint, "token_secret_env": "ATTIC_SECRET"},
        "caches": [
            {"name": "main", "priority": 30, "upstream_cache_key_names": ["cache.nixos.org-1", "other-1"]},
            {"name": "ci-scratch", "public": True},
        ],
        "tokens": [
            {"sub": "ci", "validity": "1y", "pull": ["main", "ci-*"], "push": ["ci-*"],
             "client_config": {"path": str(tmp_path / "attic" / "config.toml"), "server_name": "forge"}},
            {"sub": "nodes", "validity": "90d", "pull": ["main"], "token_file": str(tmp_path / "pull.token")},
        ],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(autouse=True)
def _secret(attic_server, monkeypatch):
    monkeypatch.setenv("ATTIC_SECRET", attic_server.secret_base64)


def apply(cfg: dict, **kw):
    return run_attic(parse_attic(cfg), "apply", **kw)


def test_apply_creates_caches_and_a_second_apply_changes_nothing(attic_server, tmp_path):
    cfg = config(attic_server, tmp_path)
    first = apply(cfg)
    assert [c.action for c in first.changes] == [
        "create cache", "create cache", "mint token", "write client config", "mint token", "write token file"]
    assert attic_server.caches["main"]["priority"] == 30
    assert attic_server.caches["main"]["upstream_cache_key_names"] == ["cache.nixos.org-1", "other-1"]
    assert attic_server.caches["ci-scratch"]["is_public"] is True
    assert all(r.sub == "forge-provision" for r in attic_server.requests)

    attic_server.requests.clear()
    assert apply(cfg).changes == []
    assert {r.method for r in attic_server.requests} == {"GET"}
    assert run_attic(parse_attic(cfg), "plan").changes == []


def test_existing_cache_is_reconfigured_with_only_the_fields_that_differ(attic_server, tmp_path):
    attic_server.add_cache("main", priority=41, is_public=True)
    cfg = config(attic_server, tmp_path, tokens=[])
    planned = run_attic(parse_attic(cfg), "plan")
    assert planned.changes[0].action == "configure cache"
    assert planned.changes[0].detail == {"is_public": {"from": True, "to": False},
                                         "priority": {"from": 41, "to": 30},
                                         "upstream_cache_key_names": {"from": ["cache.nixos.org-1"],
                                                                      "to": ["cache.nixos.org-1", "other-1"]}}
    assert attic_server.caches["main"]["priority"] == 41  # plan changed nothing
    apply(cfg)
    patches = [r.body for r in attic_server.requests if r.method == "PATCH"]
    assert patches == [{"is_public": False, "priority": 30,
                        "upstream_cache_key_names": ["cache.nixos.org-1", "other-1"]}]
    assert apply(cfg).changes == []


def test_already_exists_counts_as_success_and_settings_are_reconciled(attic_server, tmp_path):
    attic_server.add_cache("main", priority=99)
    attic_server.hide_once.add("main")  # someone else creates it between our GET and our POST
    outcome = apply(config(attic_server, tmp_path, tokens=[]))
    assert "already existed" in outcome.notes[0]
    assert [r.method for r in attic_server.requests if "main" in r.path] == ["GET", "POST", "GET", "PATCH"]
    assert attic_server.caches["main"]["priority"] == 30


def test_minted_tokens_verify_on_the_server_and_carry_exactly_their_permissions(attic_server, tmp_path):
    apply(config(attic_server, tmp_path))
    client_cfg = tmp_path / "attic" / "config.toml"
    assert stat.S_IMODE(client_cfg.stat().st_mode) == 0o600
    data = tomllib.loads(client_cfg.read_text())
    assert data["default-server"] == "forge"
    assert data["servers"]["forge"]["endpoint"] == attic_server.endpoint
    ci = data["servers"]["forge"]["token"]
    claims = verify(attic_server.secret, ci)
    assert claims["sub"] == "ci" and claims["exp"] - claims["nbf"] == 31557600
    assert claims["https://jwt.attic.rs/v1"] == {"caches": {"ci-*": {"r": 1, "w": 1}, "main": {"r": 1}}}
    pull = (tmp_path / "pull.token").read_text().strip()
    assert stat.S_IMODE((tmp_path / "pull.token").stat().st_mode) == 0o600

    def call(method: str, url: str, token: str, body=None) -> int:
        req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    api = attic_server.endpoint + "_api/v1/cache-config/"
    assert call("GET", api + "main", pull) == 200
    assert call("GET", attic_server.endpoint + "main/nix-cache-info", pull) == 200
    assert call("PATCH", api + "main", pull, {"priority": 1}) == 403
    assert call("GET", api + "ci-private", pull) == 401  # no permission at all: no discovery
    assert call("GET", api + "ci-other", ci) == 404
    assert call("POST", api + "ci-new", ci, {"keypair": "Generate", "is_public": False, "store_dir": "/nix/store",
                                             "priority": 41, "upstream_cache_key_names": []}) == 403
    # Nix sends the token as the Basic-auth password.
    basic = base64.b64encode(b"x:" + pull.encode()).decode()
    req = urllib.request.Request(attic_server.endpoint + "main/nix-cache-info", headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req) as resp:
        assert b"Priority: 30" in resp.read()


def test_tokens_are_kept_until_due_and_reminted_when_permissions_change(attic_server, tmp_path):
    cfg = config(attic_server, tmp_path)
    apply(cfg)
    before = (tmp_path / "pull.token").read_text()
    assert apply(cfg).changes == []
    # 90d validity, renewed in the last quarter: 70 days later it is due.
    later = apply(cfg, now=int(verify(attic_server.secret, before.strip())["nbf"]) + 70 * DAY)
    assert ("mint token", "nodes") in [(c.action, c.target) for c in later.changes]
    assert ("mint token", "ci") not in [(c.action, c.target) for c in later.changes]
    cfg["tokens"][1]["push"] = ["main"]
    changed = apply(cfg)
    assert [(c.action, c.target) for c in changed.changes] == [("mint token", "nodes"),
                                                               ("write token file", str(tmp_path / "pull.token"))]
    claims = read_token(secret_key(attic_server.secret_base64), (tmp_path / "pull.token").read_text())
    assert claims["https://jwt.attic.rs/v1"]["caches"] == {"main": {"r": 1, "w": 1}}


def test_client_config_keeps_other_servers(attic_server, tmp_path):
    path = tmp_path / "attic" / "config.toml"
    path.parent.mkdir()
    path.write_text('default-server = "home"\n\n[servers.home]\nendpoint = "https://home.example/"\ntoken = "t"\n')
    cfg = config(attic_server, tmp_path)
    cfg["tokens"][0]["client_config"]["default"] = False
    apply(cfg)
    data = tomllib.loads(path.read_text())
    assert data["default-server"] == "home"
    assert data["servers"]["home"] == {"endpoint": "https://home.example/", "token": "t"}
    assert set(data["servers"]) == {"home", "forge"}


def test_toml_writer_escapes_what_toml_needs():
    data = {"default-server": 'we"ird', "servers": {"a b": {"endpoint": "x\\y\n", "token": "t\u0001"}}}
    assert tomllib.loads(dump_toml(data)) == data


def test_an_existing_admin_token_from_the_environment_is_used(attic_server, tmp_path, monkeypatch):
    admin = mint(attic_server.secret, "ops", {"*": {"r": 1, "cc": 1, "cr": 1}})
    monkeypatch.setenv("ATTIC_TOKEN", admin)
    cfg = config(attic_server, tmp_path, tokens=[])
    cfg["server"] = {"endpoint": attic_server.endpoint, "token_env": "ATTIC_TOKEN"}
    apply(cfg)
    assert {r.sub for r in attic_server.requests} == {"ops"}
    assert set(attic_server.caches) == {"main", "ci-scratch"}


def test_a_token_without_permission_fails_with_what_to_do(attic_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTIC_TOKEN", mint(attic_server.secret, "reader", {"main": {"r": 1}}))
    cfg = config(attic_server, tmp_path, tokens=[])
    cfg["server"] = {"endpoint": attic_server.endpoint, "token_env": "ATTIC_TOKEN"}
    path = tmp_path / "attic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["attic", "apply", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Attic refused to create cache 'main' (HTTP 403 AccessError" in err
    assert "--create-cache main" in err
    assert os.environ["ATTIC_TOKEN"] not in err


def test_wrong_secret_unreachable_server_and_missing_variable(attic_server, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTIC_SECRET", base64.b64encode(b"not-the-server-secret").decode())
    with pytest.raises(ProvisionError, match="HTTP 401 Unauthorized"):
        apply(config(attic_server, tmp_path))
    cfg = config(attic_server, tmp_path)
    cfg["server"]["endpoint"] = "http://127.0.0.1:9/"
    with pytest.raises(ProvisionError, match="cannot reach Attic at http://127.0.0.1:9/"):
        apply(cfg)
    monkeypatch.delenv("ATTIC_SECRET")
    with pytest.raises(ConfigError, match=r"\$ATTIC_SECRET .* is not set"):
        apply(config(attic_server, tmp_path))
    assert attic_server.caches == {}


def test_cli_plan_and_apply_print_no_token(attic_server, tmp_path, capsys):
    path = tmp_path / "attic.yaml"
    path.write_text(yaml.safe_dump(config(attic_server, tmp_path)))
    assert main(["attic", "plan", "--config", str(path), "--check"]) == 1
    assert main(["attic", "apply", "--config", str(path), "--json"]) == 0
    assert main(["attic", "apply", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no changes; the caches and tokens match the config" in out
    token = (tmp_path / "pull.token").read_text().strip()
    assert token not in out and attic_server.secret_base64 not in out


def test_our_tokens_match_the_standin_encoder():
    key = b"0123456789abcdef"
    ours = make_token(key, "x", {"c": {"r": 1}}, validity=60)
    assert verify(key, ours)["https://jwt.attic.rs/v1"] == {"caches": {"c": {"r": 1}}}
    assert read_token(key, mint(key, "y", {"c": {"w": 1}}))["sub"] == "y"
    assert read_token(b"other", ours) is None
    head, body, _ = ours.split(".")
    assert read_token(key, f"{head}.{body}.") is None
