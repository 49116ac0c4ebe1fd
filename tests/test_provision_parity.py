"""Parity with Terraform's PostgreSQL provider: hand edits are found and fixed or reported (issue 13)."""

from __future__ import annotations

import pytest
from psycopg import errors as pgerrors

from tests.test_provision_postgres import (  # noqa: F401
    APP_PW,
    _passwords,
    apply,
    drift,
    owner_exec,
    plan,
    shop,
)

pytestmark = pytest.mark.postgres


def shown(outcome) -> list[str]:
    return [c.shown.as_string(None) for c in outcome.changes]


def test_valid_until_in_the_past_is_reset_and_a_configured_one_is_kept(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    pg.query("ALTER ROLE shop_app VALID UNTIL '2000-01-01 00:00:00+00'")
    with pytest.raises(pgerrors.OperationalError):
        pg.connect("shop", user="shop_app", password=APP_PW).close()
    assert shown(plan(cfg)) == ['ALTER ROLE "shop_app" WITH VALID UNTIL \'infinity\'']
    apply(cfg)
    pg.connect("shop", user="shop_app", password=APP_PW).close()
    assert apply(cfg).statements == 0

    cfg["roles"][1]["valid_until"] = "2100-01-01T00:00:00Z"
    assert shown(plan(cfg)) == ['ALTER ROLE "shop_app" WITH VALID UNTIL \'2100-01-01T00:00:00+00:00\'']
    apply(cfg)
    assert pg.query("SELECT rolvaliduntil = '2100-01-01 00:00:00+00' FROM pg_roles WHERE rolname = 'shop_app'") \
        == [(True,)]
    assert apply(cfg).statements == 0


def test_an_expired_role_is_fixed_when_the_admin_can_only_check_passwords_by_logging_in(pg, monkeypatch):
    pg.query("CREATE ROLE deployer LOGIN CREATEROLE CREATEDB PASSWORD 'deployer-pw'")
    monkeypatch.setenv("DEPLOYER_PASSWORD", "deployer-pw")
    cfg = pg.config([{"name": "svc", "login": True, "password_env": "APP_PASSWORD"}], [])
    cfg["connection"].update(user="deployer", password_env="DEPLOYER_PASSWORD")
    apply(cfg)
    pg.query("ALTER ROLE svc VALID UNTIL '2000-01-01 00:00:00+00'")
    apply(cfg)
    pg.connect(user="svc", password=APP_PW).close()
    assert apply(cfg).statements == 0


def test_a_configured_valid_until_in_the_past_is_a_warning(pg):
    cfg = shop(pg, slot=None)
    cfg["roles"][1]["valid_until"] = "2001-02-03T04:05:06+00:00"
    assert any("shop_app" in w and "valid_until" in w and "in the past" in w for w in plan(cfg).warnings)


def test_database_connection_settings_are_restored(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    pg.query("ALTER DATABASE shop CONNECTION LIMIT 0")
    pg.query("ALTER DATABASE shop ALLOW_CONNECTIONS false")
    planned = plan(cfg)
    assert shown(planned) == ['ALTER DATABASE "shop" WITH ALLOW_CONNECTIONS true CONNECTION LIMIT  -1']
    assert shown(apply(cfg)) == shown(planned)
    assert pg.query("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = 'shop'") == [(True, -1)]
    assert apply(cfg).statements == 0

    cfg["databases"][0]["connection_limit"] = 30
    assert shown(plan(cfg)) == ['ALTER DATABASE "shop" WITH CONNECTION LIMIT 30']
    apply(cfg)
    assert apply(cfg).statements == 0


def test_role_search_path_is_managed(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    pg.query("ALTER ROLE shop_app SET search_path = evil, public")
    assert shown(plan(cfg)) == ['ALTER ROLE "shop_app" RESET search_path']
    apply(cfg)
    assert pg.query("SELECT count(*) FROM pg_db_role_setting WHERE setrole = 'shop_app'::regrole") == [(0,)]

    cfg["roles"][1]["search_path"] = ["app", "$user", "Odd Schema"]
    assert shown(plan(cfg)) == ['ALTER ROLE "shop_app" SET search_path TO "app", "$user", "Odd Schema"']
    apply(cfg)
    assert apply(cfg).statements == 0
    with pg.connect("shop", user="shop_app", password=APP_PW) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ('app, "$user", "Odd Schema"',)


def test_drift_reports_public_grants_foreign_publications_and_members_of_managed_roles(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.t (id int PRIMARY KEY)")
    owner_exec(pg, "GRANT SELECT ON app.t TO PUBLIC")
    owner_exec(pg, "GRANT CREATE ON SCHEMA app TO PUBLIC")
    pg.query("CREATE PUBLICATION rogue FOR ALL TABLES", dbname="shop")
    pg.query("CREATE ROLE outsider")
    pg.query("GRANT shop_app TO outsider")
    details = {(f.scope, f.target, f.detail) for f in drift(cfg).findings}
    assert ("shop", 'schema "app"', "PUBLIC has CREATE") in details
    assert ("shop", 'schema "app"', "PUBLIC has SELECT on 1 table") in details
    assert ("shop", 'publication "rogue"', "FOR ALL TABLES, is not in the config") in details
    assert ("", 'role "shop_app"', '"outsider" is a member of it (and has its privileges)') in details
    # PostgreSQL's own defaults are not drift: USAGE on schema public, EXECUTE on functions, CONNECT.
    assert not any("PUBLIC has USAGE" in d or "EXECUTE" in d for _, _, d in details)
    assert apply(cfg).statements == 0  # reported, not removed


def test_plan_warns_when_a_publication_covers_a_table_without_replica_identity(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.no_key (note text)")
    owner_exec(pg, "CREATE TABLE app.keyed (id int PRIMARY KEY)")
    owner_exec(pg, "CREATE TABLE app.nothing (id int PRIMARY KEY)")
    owner_exec(pg, "ALTER TABLE app.nothing REPLICA IDENTITY NOTHING")
    warnings = plan(cfg).warnings
    assert any('"app"."no_key"' in w and "primary key" in w and "REPLICA IDENTITY" in w for w in warnings)
    assert any('"app"."nothing"' in w for w in warnings)
    assert not any('"keyed"' in w for w in warnings)
    listed = shop(pg, tables=["app.keyed"], slot=None)
    assert not any("no_key" in w for w in plan(listed).warnings)
