"""`forge-provision postgres provision` and `attic provision`: the verbs of the tool Forge replaces,
aliases of `apply` (a real PostgreSQL and the Attic stand-in)."""

from __future__ import annotations

import json
import re

import yaml

from forge_provision.cli import main
from tests.test_provision_attic import _secret  # noqa: F401 - autouse: the Attic server's secret
from tests.test_provision_attic import config as attic_config
from tests.test_provision_postgres import _passwords, plan, shop, write  # noqa: F401 - _passwords is autouse


def test_postgres_provision_is_apply(pg, tmp_path, capsys):
    cfg = shop(pg)
    path = write(tmp_path, cfg)
    assert main(["postgres", "provision", "--config", str(path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["changes"]  # it created everything
    assert plan(cfg).changes == []  # provisioned: nothing left to do
    assert main(["postgres", "provision", "--config", str(path)]) == 0
    assert "no changes" in capsys.readouterr().out


def test_attic_provision_is_apply(attic_server, tmp_path, capsys):
    path = tmp_path / "attic.yaml"
    path.write_text(yaml.safe_dump(attic_config(attic_server, tmp_path)))
    assert main(["attic", "provision", "--config", str(path)]) == 0
    assert attic_server.caches
    assert main(["attic", "plan", "--config", str(path), "--check"]) == 0  # nothing left to do
    assert main(["attic", "provision", "--config", str(path)]) == 0
    assert "no changes; the caches and tokens match the config" in capsys.readouterr().out


def _server_state(pg) -> list:
    return [pg.query("SELECT rolname, rolcanlogin, rolpassword IS NOT NULL FROM pg_authid "
                     "WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1"),
            pg.query("SELECT datname, datacl::text FROM pg_database ORDER BY 1"),
            pg.query("SELECT pubname FROM pg_publication ORDER BY 1"),
            pg.query("SELECT slot_name FROM pg_replication_slots ORDER BY 1")]


def test_postgres_dry_run_reports_the_plan_and_changes_nothing(pg, tmp_path, capsys):
    path = write(tmp_path, shop(pg))
    before = _server_state(pg)
    assert main(["postgres", "plan", "--config", str(path)]) == 0
    planned_text = capsys.readouterr().out
    assert main(["postgres", "plan", "--config", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    for verb in ("provision", "apply"):
        assert main(["postgres", verb, "--config", str(path), "--dry-run"]) == 0
        assert capsys.readouterr().out == planned_text  # exactly what plan reports
        assert main(["postgres", verb, "--config", str(path), "--dry-run", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc.pop("dry_run") is True
        assert doc == planned and doc["changes"] and doc["statements_executed"] == 0
        assert any(c["sql"].startswith("CREATE DATABASE") for c in doc["changes"])
    assert _server_state(pg) == before  # nothing changed on the server
    assert main(["postgres", "provision", "--config", str(path), "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert applied["dry_run"] is False and applied["statements_executed"] > 0
    assert _server_state(pg) != before


def _no_clock(text: str) -> str:
    """A plan's text without the minted tokens' expiry (now + validity: the second may tick)."""
    return re.sub(r"expires_at=\d+", "expires_at=N", text)


def test_attic_dry_run_reports_the_plan_and_changes_nothing(attic_server, tmp_path, capsys):
    path = tmp_path / "attic.yaml"
    path.write_text(yaml.safe_dump(attic_config(attic_server, tmp_path)))
    assert main(["attic", "plan", "--config", str(path)]) == 0
    planned_text = capsys.readouterr().out
    assert main(["attic", "plan", "--config", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    for verb in ("provision", "apply"):
        assert main(["attic", verb, "--config", str(path), "--dry-run"]) == 0
        assert _no_clock(capsys.readouterr().out) == _no_clock(planned_text)  # exactly what plan reports
        assert main(["attic", verb, "--config", str(path), "--dry-run", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc.pop("dry_run") is True
        assert [c["action"] for c in doc["changes"]] == [c["action"] for c in planned["changes"]]
        assert "create cache" in [c["action"] for c in doc["changes"]]
    assert attic_server.caches == {}
    assert {r.method for r in attic_server.requests} == {"GET"}
    assert not (tmp_path / "pull.token").exists() and not (tmp_path / "attic").exists()
    assert main(["attic", "provision", "--config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dry_run"] is False
    assert set(attic_server.caches) == {"main", "ci-scratch"}
