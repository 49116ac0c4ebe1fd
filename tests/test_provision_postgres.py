"""forge-provision against a real PostgreSQL 15 (tests/fixtures/postgres.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from psycopg import errors as pgerrors
from psycopg import sql

from forge_provision.cli import main
from forge_provision.postgres import Outcome, run
from forge_provision.schema import parse_postgres
from forgegen.errors import ConfigError, ProvisionError

pytestmark = pytest.mark.postgres

APP_PW = "app-S3cr3t'pw \\ ü"
OWNER_PW = "owner-pw-1"
CDC_PW = "cdc-pw-2"


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PASSWORD", APP_PW)
    monkeypatch.setenv("OWNER_PASSWORD", OWNER_PW)
    monkeypatch.setenv("CDC_PASSWORD", CDC_PW)


def apply(cfg: dict, **kw) -> Outcome:
    return run(parse_postgres(cfg), "apply", **kw)


def plan(cfg: dict) -> Outcome:
    return run(parse_postgres(cfg), "plan")


def drift(cfg: dict) -> Outcome:
    return run(parse_postgres(cfg), "drift")


def write(tmp_path: Path, cfg: dict, name: str = "db.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def shop(pg, *, tables="all", slot: str | None = "shop_slot", prune: bool = False) -> dict:
    roles = [
        {"name": "shop_owner", "login": True, "password_env": "OWNER_PASSWORD"},
        {"name": "shop_app", "login": True, "password_env": "APP_PASSWORD", "connection_limit": 20,
         "member_of": ["shop_readers"], "prune": prune},
        {"name": "shop_readers"},
        {"name": "shop_cdc", "login": True, "replication": True, "password_env": "CDC_PASSWORD"},
    ]
    cdc = {"role": "shop_cdc", "publication": "shop_pub", "tables": tables}
    if slot:
        cdc["slot"] = slot
    db = {
        "name": "shop", "owner": "shop_owner", "encoding": "UTF8", "locale": "C.UTF-8",
        "extensions": [{"name": "pgcrypto", "schema": "app"}, {"name": "pg_trgm"}, {"name": "uuid-ossp"}],
        "schemas": [{"name": "app", "owner": "shop_owner"}],
        "grants": [
            {"role": "shop_app", "database_privileges": ["CONNECT"], "schema": "app",
             "schema_privileges": ["USAGE"], "tables": ["SELECT", "INSERT", "UPDATE"],
             "sequences": ["USAGE", "SELECT"], "functions": ["EXECUTE"], "prune": prune},
            {"role": "shop_readers", "schema": "app", "schema_privileges": ["USAGE"], "tables": ["SELECT"]},
            {"role": "shop_cdc", "database_privileges": ["CONNECT"], "schema": "app",
             "schema_privileges": ["USAGE"], "tables": ["SELECT"]},
        ],
        "cdc": cdc,
        "prune": prune,
    }
    return pg.config(roles, [db])


def owner_exec(pg, statement: str, dbname: str = "shop") -> None:
    with pg.connect(dbname, user="shop_owner", password=OWNER_PW) as conn:
        conn.execute(statement)


# -- convergence ------------------------------------------------------------------------------------

def test_apply_converges_from_empty_and_second_apply_changes_nothing(pg, tmp_path, capsys):
    cfg = shop(pg)
    planned = [c.shown.as_string(None) for c in plan(cfg).changes]
    first = apply(cfg)
    assert first.statements > 10
    assert [c.shown.as_string(None) for c in first.changes] == planned  # the plan is what apply runs
    actions = {c.action for c in first.changes}
    assert {"create role", "create database", "create schema", "create extension", "grant",
            "default privileges", "create publication", "create replication slot"} <= actions

    second = apply(cfg)
    assert second.changes == [] and second.statements == 0
    assert plan(cfg).changes == []

    path = write(tmp_path, cfg)
    assert main(["postgres", "apply", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no changes" in out and "0 statements executed" in out

    assert pg.query("SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate "
                    "FROM pg_database WHERE datname = 'shop'") == [("shop", "shop_owner", "UTF8", "C.UTF-8")]
    assert pg.query("SELECT extname, extnamespace::regnamespace::text FROM pg_extension ORDER BY 1",
                    dbname="shop") == [("pg_trgm", "public"), ("pgcrypto", "app"), ("plpgsql", "pg_catalog"),
                                       ("uuid-ossp", "public")]
    assert pg.query("SELECT rolconnlimit, rolcanlogin FROM pg_roles WHERE rolname = 'shop_app'") == [(20, True)]
    assert pg.query("SELECT slot_type, database, plugin FROM pg_replication_slots WHERE slot_name = 'shop_slot'") \
        == [("logical", "shop", "pgoutput")]
    assert pg.query("SELECT puballtables FROM pg_publication WHERE pubname = 'shop_pub'", dbname="shop") == [(True,)]


def test_plan_lists_statements_and_changes_nothing(pg, tmp_path, capsys):
    path = write(tmp_path, shop(pg))
    assert main(["postgres", "plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert 'CREATE ROLE "shop_app" WITH LOGIN CONNECTION LIMIT 20 PASSWORD \'***\';' in out
    assert 'CREATE DATABASE "shop" OWNER "shop_owner" TEMPLATE template0' in out
    assert 'CREATE PUBLICATION "shop_pub" FOR ALL TABLES;' in out
    assert pg.query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'shop%'") == [(0,)]
    assert pg.query("SELECT count(*) FROM pg_database WHERE datname = 'shop'") == [(0,)]

    assert main(["postgres", "plan", "--config", str(path), "--json", "--check"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"] is True and doc["statements_executed"] == 0
    assert {"database": None, "phase": "roles", "action": "create role", "object": '"shop_readers"',
            "sql": 'CREATE ROLE "shop_readers" WITH NOLOGIN', "reason": None} in doc["changes"]


def test_partial_existing_state_converges(pg):
    # A role with other attributes, a database owned by another role, a schema owned by the admin,
    # a table with no grants at all.
    with pg.connect() as conn:
        conn.execute("CREATE ROLE shop_app NOLOGIN CREATEDB CONNECTION LIMIT 3")
        conn.execute("CREATE ROLE shop_owner LOGIN PASSWORD 'wrong'")
        conn.execute("CREATE DATABASE shop")  # owned by postgres
    with pg.connect("shop") as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.orders (id serial PRIMARY KEY, note text)")
    cfg = shop(pg)
    cfg["roles"][1]["createdb"] = False

    before = plan(cfg)
    reasons = {(c.action, c.target): c.reason for c in before.changes}
    assert reasons[("alter database owner", '"shop"')] == 'owned by "postgres"'
    assert reasons[("set password", '"shop_owner"')] == "login with the configured password fails"
    assert ("create role", '"shop_app"') not in reasons

    apply(cfg)
    assert pg.query("SELECT rolcanlogin, rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = 'shop_app'") \
        == [(True, False, 20)]
    assert pg.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'") == [("shop_owner",)]
    assert pg.query("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'app'",
                    dbname="shop") == [("shop_owner",)]
    assert pg.query("SELECT has_table_privilege('shop_app', 'app.orders', 'INSERT'), "
                    "has_sequence_privilege('shop_app', 'app.orders_id_seq', 'USAGE')",
                    dbname="shop") == [(True, True)]
    with pg.connect("shop", user="shop_owner", password=OWNER_PW):
        pass
    assert apply(cfg).statements == 0


def test_cdc_publication_delivers_inserts_to_the_replication_role(pg, tmp_path):
    cfg = shop(pg, tables=["app.orders"], slot=None)
    apply(cfg)  # creates the database; the publication starts empty until the table exists
    owner_exec(pg, "CREATE TABLE app.orders (id int PRIMARY KEY, item text)")
    owner_exec(pg, "CREATE TABLE app.secrets (id int PRIMARY KEY, value text)")
    cfg = shop(pg, tables=["app.orders"], slot="shop_slot")
    second = apply(cfg)
    assert [c.action for c in second.changes] == ["add tables to publication", "create replication slot"]
    assert apply(cfg).statements == 0

    owner_exec(pg, "INSERT INTO app.orders VALUES (1, 'forge-cdc-orders-row')")
    owner_exec(pg, "INSERT INTO app.secrets VALUES (1, 'forge-cdc-secret-row')")
    (lsn,) = pg.query("SELECT pg_current_wal_lsn()::text")[0]
    proc = subprocess.run(
        ["pg_recvlogical", "-h", pg.host, "-p", str(pg.port), "-U", "shop_cdc", "-d", "shop",
         "--slot", "shop_slot", "--start", "--no-loop", "-E", lsn, "-f", "-",
         "-o", "proto_version=1", "-o", "publication_names=shop_pub"],
        env={**os.environ, "PGPASSWORD": CDC_PW}, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"forge-cdc-orders-row" in proc.stdout
    assert b"forge-cdc-secret-row" not in proc.stdout


def test_app_role_can_do_exactly_what_its_grants_say(pg):
    cfg = shop(pg)
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.items (id serial PRIMARY KEY, name text)")  # after apply: default privileges
    owner_exec(pg, "CREATE FUNCTION app.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'")
    owner_exec(pg, "REVOKE EXECUTE ON FUNCTION app.answer() FROM PUBLIC")
    with pg.connect("shop", user="shop_app", password=APP_PW) as conn:
        conn.execute("INSERT INTO app.items (name) VALUES ('a')")  # INSERT + sequence USAGE
        conn.execute("UPDATE app.items SET name = 'b'")
        assert conn.execute("SELECT name FROM app.items").fetchall() == [("b",)]
        assert conn.execute("SELECT app.answer()").fetchone() == (42,)
        assert conn.execute("SELECT length(app.gen_random_uuid()::text)").fetchone() == (36,)
        for forbidden in ("DELETE FROM app.items", "TRUNCATE app.items", "CREATE TABLE app.mine (id int)",
                          "ALTER TABLE app.items ADD COLUMN x int"):
            with pytest.raises(pgerrors.InsufficientPrivilege):
                conn.execute(forbidden)
    with pg.connect("shop", user="shop_cdc", password=CDC_PW) as conn:
        assert conn.execute("SELECT count(*) FROM app.items").fetchone() == (1,)
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("INSERT INTO app.items (name) VALUES ('no')")
        with pytest.raises(pgerrors.InsufficientPrivilege):
            conn.execute("SELECT app.answer()")
    assert apply(cfg).statements == 0  # the new objects were covered by default privileges


# -- hostile input and failures ---------------------------------------------------------------------

HOSTILE_ROLE = 'we"ird Rôle; DROP'
HOSTILE_DB = "Data base \"x\" ü'"
HOSTILE_SCHEMA = 'Sch"éma ma'


def test_hostile_names_converge_and_log_in(pg, monkeypatch):
    monkeypatch.setenv("HOSTILE_PW", "p'w\"; --")
    cfg = pg.config(
        [{"name": HOSTILE_ROLE, "login": True, "password_env": "HOSTILE_PW"}, {"name": "UPPER case"}],
        [{"name": HOSTILE_DB, "owner": "UPPER case",
          "extensions": [{"name": "pgcrypto", "schema": HOSTILE_SCHEMA}],
          "schemas": [{"name": HOSTILE_SCHEMA, "owner": "UPPER case"}],
          "grants": [{"role": HOSTILE_ROLE, "database_privileges": ["connect"], "schema": HOSTILE_SCHEMA,
                      "schema_privileges": ["usage"], "tables": ["select"], "functions": ["execute"]}],
          "cdc": {"role": HOSTILE_ROLE, "publication": 'pub "q"', "tables": "all"}}])
    cfg["roles"][0]["replication"] = True
    assert apply(cfg).statements > 5
    assert apply(cfg).statements == 0
    with pg.connect(HOSTILE_DB, user=HOSTILE_ROLE, password="p'w\"; --") as conn:
        query = sql.SQL("SELECT length({}.digest('x', 'sha256'))").format(sql.Identifier(HOSTILE_SCHEMA))
        assert conn.execute(query).fetchone() == (32,)
    assert pg.query("SELECT pubname FROM pg_publication", dbname=HOSTILE_DB) == [('pub "q"',)]


def test_missing_password_variable_fails_before_any_change(pg, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("APP_PASSWORD")
    monkeypatch.setenv("CDC_PASSWORD", "")
    with pytest.raises(ConfigError) as err:
        apply(shop(pg))
    text = str(err.value)
    assert "$APP_PASSWORD (password of role 'shop_app') is not set" in text
    assert "$CDC_PASSWORD (password of role 'shop_cdc') is empty" in text
    assert "nothing was changed" in text
    assert pg.query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'shop%'") == [(0,)]
    assert main(["postgres", "apply", "--config", str(write(tmp_path, shop(pg)))]) == 2
    assert "roles[1].password_env" in capsys.readouterr().err


def test_unreachable_server_is_reported_with_where_and_what_next(pg, tmp_path, capsys):
    from tests.fixtures.postgres import free_port

    cfg = shop(pg)
    cfg["connection"]["port"] = free_port()
    assert main(["postgres", "plan", "--config", str(write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{cfg['connection']['port']}" in err
    assert "hint: check that the server is running" in err
    assert pg.admin_password not in err


def test_backend_killed_mid_run_converges_on_next_run(pg):
    base = shop(pg, slot=None)
    base["databases"].append({"name": "second", "owner": "shop_owner", "schemas": [{"name": "s"}]})
    apply(base)
    with pg.connect() as conn:
        conn.execute("CREATE ROLE blocker")
    blocker = pg.connect("second", autocommit=False)
    try:
        # Hold the pg_namespace row of schema s: forge-provision's GRANT on it must wait.
        blocker.execute("GRANT USAGE ON SCHEMA s TO blocker")
        full = shop(pg, slot=None)
        full["roles"].append({"name": "late_role"})
        full["databases"].append({"name": "second", "owner": "shop_owner", "schemas": [{"name": "s"}],
                                  "extensions": [{"name": "pg_trgm", "schema": "s"}],
                                  "grants": [{"role": "shop_app", "schema": "s", "schema_privileges": ["USAGE"],
                                              "functions": ["EXECUTE"]}]})
        failure: list[BaseException] = []

        def target() -> None:
            try:
                apply(full, jobs=1)
            except BaseException as err:  # noqa: BLE001 - handed to the test thread
                failure.append(err)

        worker = threading.Thread(target=target)
        worker.start()
        deadline = time.monotonic() + 30
        killed = False
        while time.monotonic() < deadline and not killed:
            rows = pg.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'forge-provision' "
                            "AND datname = 'second' AND wait_event_type = 'Lock'")
            for (pid,) in rows:
                killed = pg.query("SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
            time.sleep(0.02)
        worker.join(30)
        assert killed and not worker.is_alive()
    finally:
        blocker.rollback()
        blocker.close()
    assert len(failure) == 1 and isinstance(failure[0], ProvisionError)
    assert "database 'second'" in str(failure[0]) and "run apply again" in str(failure[0])
    # The killed transaction left nothing half-done in that database.
    assert pg.query("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'", dbname="second") == [(0,)]
    assert apply(full).statements > 0
    assert plan(full).changes == []
    assert pg.query("SELECT has_schema_privilege('shop_app', 's', 'USAGE')", dbname="second") == [(True,)]


# -- passwords ---------------------------------------------------------------------------------------

def verifier(pg, role: str) -> str:
    return pg.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))[0][0]


def test_passwords_never_appear_and_rotate_only_when_needed(pg, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    path = write(tmp_path, shop(pg))
    assert main(["postgres", "plan", "--config", str(path), "--json"]) == 0
    assert main(["postgres", "plan", "--config", str(path)]) == 0
    assert main(["-v", "postgres", "apply", "--config", str(path)]) == 0
    first = verifier(pg, "shop_app")
    assert first.startswith("SCRAM-SHA-256$")

    assert main(["postgres", "apply", "--config", str(path), "--json"]) == 0
    assert verifier(pg, "shop_app") == first  # a working password is left alone

    assert main(["postgres", "apply", "--config", str(path), "--rotate-passwords"]) == 0
    rotated = verifier(pg, "shop_app")
    assert rotated != first
    with pg.connect("shop", user="shop_app", password=APP_PW):
        pass

    with pg.connect() as conn:
        conn.execute("ALTER ROLE shop_app PASSWORD 'changed-behind-our-back'")
    drifted = plan(shop(pg))
    assert [(c.action, c.reason) for c in drifted.changes] == [
        ("set password", "login with the configured password fails")]
    assert main(["postgres", "apply", "--config", str(path)]) == 0
    with pg.connect("shop", user="shop_app", password=APP_PW):
        pass

    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text + (pg.root / "server.log").read_text(errors="replace")
    for secret in (APP_PW, OWNER_PW, CDC_PW, pg.admin_password):
        assert secret not in everything


def test_non_superuser_admin_checks_passwords_by_logging_in(pg, monkeypatch):
    with pg.connect() as conn:
        conn.execute("CREATE ROLE deployer LOGIN CREATEROLE CREATEDB PASSWORD 'deployer-pw'")
    monkeypatch.setenv("DEPLOYER_PASSWORD", "deployer-pw")
    cfg = pg.config([{"name": "svc", "login": True, "password_env": "APP_PASSWORD"}], [])
    cfg["connection"].update(user="deployer", password_env="DEPLOYER_PASSWORD")
    apply(cfg)
    first = verifier(pg, "svc")
    assert apply(cfg).statements == 0 and verifier(pg, "svc") == first
    with pg.connect() as conn:
        conn.execute("ALTER ROLE svc PASSWORD 'other'")
    assert [c.action for c in apply(cfg).changes] == ["set password"]
    with pg.connect(user="svc", password=APP_PW):
        pass


# -- drift and prune -----------------------------------------------------------------------------------

def test_drift_reports_what_the_config_lacks_and_prune_removes_it(pg, tmp_path, capsys):
    cfg = shop(pg)
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.t (id int)")
    with pg.connect() as conn:
        conn.execute("ALTER ROLE shop_app CREATEROLE")
        conn.execute("CREATE ROLE extra_group")
        conn.execute("GRANT extra_group TO shop_app")
    with pg.connect("shop") as conn:
        conn.execute("GRANT DELETE, TRUNCATE ON app.t TO shop_app")
        conn.execute("GRANT CREATE ON SCHEMA app TO shop_app")
        conn.execute("CREATE EXTENSION hstore")

    report = drift(cfg)
    details = {(f.target, f.detail) for f in report.findings}
    assert ('role "shop_app"', "has CREATEROLE, which the config does not set") in details
    assert ('role "shop_app"', 'is a member of "extra_group"') in details
    assert ('schema "app"', '"shop_app" has DELETE on 1 table') in details
    assert ('schema "app"', '"shop_app" has CREATE') in details
    assert ('extension "hstore"', "is installed but not in the config") in details
    assert not any(f.pruned for f in report.findings)
    assert apply(cfg).statements == 0  # without prune nothing is taken away

    path = write(tmp_path, cfg)
    assert main(["postgres", "drift", "--config", str(path), "--check"]) == 1
    assert '"shop_app" has TRUNCATE on 1 table' in capsys.readouterr().out

    pruned = shop(pg, prune=True)
    done = apply(pruned)
    assert {c.action for c in done.changes} == {"alter role", "revoke membership", "revoke", "drop extension"}
    assert drift(pruned).findings == []
    assert pg.query("SELECT has_table_privilege('shop_app', 'app.t', 'DELETE'), "
                    "has_table_privilege('shop_app', 'app.t', 'SELECT')", dbname="shop") == [(False, True)]
    assert apply(pruned).statements == 0
