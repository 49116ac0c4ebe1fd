"""forge-provision privileges against a real PostgreSQL 15: grantors, owners, PUBLIC (issue 13)."""

from __future__ import annotations

import pytest

from tests.test_provision_postgres import _passwords, apply, drift, owner_exec, plan, shop  # noqa: F401

pytestmark = pytest.mark.postgres


def as_grantor(pg, grantor: str, statement: str, dbname: str = "shop") -> None:
    """Run ``statement`` with ``grantor`` as the current role (the grantor of what it grants)."""
    with pg.connect(dbname) as conn:
        conn.execute(f'SET ROLE "{grantor}"')
        conn.execute(statement)


def helper_with_grant_option(pg, privileges: str, table: str) -> None:
    with pg.connect() as conn:
        conn.execute("CREATE ROLE helper")
    owner_exec(pg, "GRANT USAGE ON SCHEMA app TO helper")
    owner_exec(pg, f"GRANT {privileges} ON {table} TO helper WITH GRANT OPTION")


def test_a_second_grantor_on_one_table_does_not_hide_another_table_missing_the_grant(pg):
    cfg = shop(pg, slot=None)
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.t1 (id int PRIMARY KEY)")
    owner_exec(pg, "CREATE TABLE app.t2 (id int PRIMARY KEY)")
    owner_exec(pg, "REVOKE SELECT ON app.t2 FROM shop_app")
    helper_with_grant_option(pg, "SELECT", "app.t1")
    as_grantor(pg, "helper", "GRANT SELECT ON app.t1 TO shop_app")  # t1: SELECT from two grantors

    planned = [(c.action, c.target) for c in plan(cfg).changes]
    assert ("grant", 'all tables in "app" to "shop_app"') in planned
    apply(cfg)
    assert pg.query("SELECT has_table_privilege('shop_app', 'app.t2', 'SELECT')", dbname="shop") == [(True,)]
    assert plan(cfg).changes == []


def test_prune_revokes_a_grant_made_by_another_grantor_once(pg):
    cfg = shop(pg, slot=None)
    cfg["databases"][0]["grants"][0]["prune"] = True  # shop_app's grant in schema app
    apply(cfg)
    owner_exec(pg, "CREATE TABLE app.t1 (id int PRIMARY KEY)")
    owner_exec(pg, "CREATE SEQUENCE app.s1")
    helper_with_grant_option(pg, "DELETE, TRUNCATE", "app.t1")
    owner_exec(pg, "GRANT UPDATE ON SEQUENCE app.s1 TO helper WITH GRANT OPTION")
    owner_exec(pg, "GRANT CREATE ON SCHEMA app TO helper WITH GRANT OPTION")
    as_grantor(pg, "helper", "GRANT DELETE, TRUNCATE ON app.t1 TO shop_app")
    as_grantor(pg, "helper", "GRANT UPDATE ON SEQUENCE app.s1 TO shop_app")
    as_grantor(pg, "helper", "GRANT CREATE ON SCHEMA app TO shop_app")
    owner_exec(pg, "GRANT TEMPORARY ON DATABASE shop TO helper WITH GRANT OPTION")
    as_grantor(pg, "helper", "GRANT TEMPORARY ON DATABASE shop TO shop_app")
    owner_exec(pg, "GRANT DELETE ON app.t1 TO shop_app")  # the same privilege from the owner as well

    first = apply(cfg)
    assert first.statements > 0
    assert pg.query("SELECT has_table_privilege('shop_app', 'app.t1', 'DELETE'), "
                    "has_table_privilege('shop_app', 'app.t1', 'TRUNCATE'), "
                    "has_sequence_privilege('shop_app', 'app.s1', 'UPDATE'), "
                    "has_schema_privilege('shop_app', 'app', 'CREATE'), "
                    "has_table_privilege('shop_app', 'app.t1', 'SELECT'), "
                    "'shop_app=T/helper' = ANY(datacl::text[]) FROM pg_database WHERE datname = 'shop'",
                    dbname="shop") == [(False, False, False, False, True, False)]
    second = apply(cfg)
    assert second.statements == 0, [c.shown.as_string(None) for c in second.changes]
    # helper keeps what it was given: it is not a configured role and nothing prunes it.
    assert pg.query("SELECT has_table_privilege('helper', 'app.t1', 'DELETE')", dbname="shop") == [(True,)]
    assert not any(f.pruned for f in drift(cfg).findings)


def test_plan_equals_apply_after_the_database_owner_changed(pg):
    cfg = shop(pg, slot=None)
    cfg["databases"][0]["grants"].append(
        {"role": "shop_readers", "schema": "public", "schema_privileges": ["USAGE"], "tables": ["SELECT"]})
    apply(cfg)
    with pg.connect() as conn:
        conn.execute("CREATE ROLE other_owner")
        conn.execute("ALTER DATABASE shop OWNER TO other_owner")
    planned = [c.shown.as_string(None) for c in plan(cfg).changes]
    applied = [c.shown.as_string(None) for c in apply(cfg).changes]
    assert planned == applied
    assert 'ALTER DATABASE "shop" OWNER TO "shop_owner"' in planned
    assert plan(cfg).changes == []
