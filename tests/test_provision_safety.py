"""forge-provision: refused schemas, classified server errors, one apply at a time, safe auth (issues 12, 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_provision.cli import main


def test_system_schemas_are_refused_with_their_location(tmp_path: Path, capsys):
    path = tmp_path / "db.yaml"
    path.write_text("""\
version: 1
roles:
  - name: app
databases:
  - name: app
    schemas:
      - name: information_schema
    extensions:
      - name: pgcrypto
        schema: pg_catalog
    grants:
      - role: app
        schema: pg_toast
        tables: [SELECT]
    cdc:
      role: postgres
      publication: p
      tables: [information_schema.tables]
""", encoding="utf-8")
    assert main(["postgres", "plan", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7:15: databases[0].schemas[0].name: 'information_schema' is PostgreSQL's own schema" in err
    assert f"{path}:10:17: databases[0].extensions[0].schema: 'pg_catalog'" in err
    assert f"{path}:13:17: databases[0].grants[0].schema: 'pg_toast'" in err
    assert "databases[0].cdc.tables[0]" in err and "'information_schema'" in err
    assert "choose another" in err
