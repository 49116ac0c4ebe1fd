"""The provisioning YAML schemas: located errors, constraints, cross-references; the CLI shell."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forge_provision.cli import main
from forge_provision.schema import load_attic, load_postgres, parse_postgres
from forgegen.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "db.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_examples_validate():
    cfg = load_postgres(ROOT / "examples/provision/postgres.yaml")
    assert [d.name for d in cfg.databases] == ["shop", "analytics"]
    assert cfg.databases[0].cdc.tables[0].schema_ == "shop"
    attic = load_attic(ROOT / "examples/provision/attic.yaml")
    assert attic.caches and attic.tokens


def test_problems_are_located_one_per_line(tmp_path):
    path = write(tmp_path, """\
version: 1
roles:
  - name: app
    login: yes-please
    pasword_env: APP_PW
  - name: pg_mine
databases:
  - name: app
    owner: nobody
    grants:
      - role: app
        schema: public
        tables: [SELECT, DROP]
""")
    with pytest.raises(ConfigError) as err:
        load_postgres(path)
    lines = str(err.value).splitlines()
    assert f"{path}:4:12: roles[0].login: expected true or false (got 'yes-please'); write true or false" in lines[0]
    assert lines[1] == f"{path}:5:5: roles[0].pasword_env: unknown key 'pasword_env'; did you mean 'password_env'?"
    assert lines[2].startswith(f"{path}:6:11: roles[1].name: 'pg_mine': names starting with 'pg_' are reserved")
    assert lines[3].startswith(f"{path}:13:17: databases[0].grants[0].tables: unknown privilege 'DROP'")


def test_references_to_undeclared_roles_are_located(tmp_path):
    path = write(tmp_path, """\
version: 1
roles:
  - name: app
databases:
  - name: app
    owner: nobody
    cdc: {role: app, publication: p}
""")
    with pytest.raises(ConfigError) as err:
        load_postgres(path)
    text = str(err.value)
    assert f"{path}:6:12: databases[0].owner: role 'nobody' is not declared; declare it under 'roles'" in text
    assert "databases[0].cdc.role: the CDC role 'app' must have login: true and replication: true" in text


@pytest.mark.parametrize("text, message", [
    ("roles: []\n", "'version' is missing; add 'version: 1' at the top"),
    ("version: 7\n", "unsupported version 7"),
    ("- a\n", "must be a YAML mapping"),
    ("version: 1\nroles: [\n", "not valid YAML"),
])
def test_bad_files_exit_2_with_the_file_named(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    assert main(["postgres", "plan", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err


def test_missing_file_and_bad_usage_exit_2(tmp_path, capsys):
    assert main(["postgres", "plan", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["postgres", "explode"]) == 2
    assert main(["--help"]) == 0


def test_names_postgres_would_truncate_or_reject_are_refused():
    long = "ä" * 32  # 64 bytes
    with pytest.raises(ConfigError) as err:
        parse_postgres({"version": 1, "roles": [{"name": long}, {"name": "public"}, {"name": "a\x00b"}],
                        "databases": [{"name": "d", "cdc": {"role": "x", "publication": "p", "slot": "Bad-Slot"}}]})
    text = str(err.value)
    assert "is 64 bytes long" in text
    assert "'public' is reserved" in text
    assert "NUL" in text
    assert "not a valid replication slot name" in text


def test_privileges_are_normalised():
    cfg = parse_postgres({"version": 1, "roles": [{"name": "r"}], "databases": [{"name": "d", "grants": [
        {"role": "r", "schema": "s", "tables": "all", "sequences": ["usage"], "database_privileges": ["temp"]}]}]})
    grant = cfg.databases[0].grants[0]
    assert grant.tables == ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    assert grant.sequences == ("USAGE",) and grant.database_privileges == ("TEMPORARY",)


def test_cli_import_does_not_load_psycopg_or_the_runner():
    code = ("import sys, forge_provision.cli; "
            "bad = [m for m in ('psycopg', 'forge_provision.postgres', 'forge_provision.attic') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
