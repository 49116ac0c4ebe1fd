"""`forge-provision postgres provision` and `attic provision`: the verbs of the tool Forge replaces,
aliases of `apply` (a real PostgreSQL and the Attic stand-in)."""

from __future__ import annotations

import json

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
