"""From (config, catalogue state) to the statements that make them agree: pure, no I/O.

A :class:`Planner` compares one part of the config with one snapshot of the catalogue and
records three things: the :class:`Change`s to run (each a ``psycopg.sql`` composition plus a
redacted twin for display), warnings (differences PostgreSQL cannot change in place), and
:class:`Finding`s for drift: grants and attributes the database has but the config does not.
A finding becomes a change (a REVOKE, a NO… attribute, a DROP EXTENSION) only where the object
that owns it says ``prune: true``. Every statement is idempotent by construction: it is only
planned when the catalogue shows it is needed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forge_provision.catalog import ClusterState, DatabaseInfo, DatabaseState
from forge_provision.schema import Cdc, Database, Grant, PostgresConfig, Role

CLUSTER = ""
KIND_KEYWORD = {"table": "TABLES", "sequence": "SEQUENCES", "function": "FUNCTIONS"}
# Role attributes: config field -> (catalogue field, keyword when true, keyword when false, default)
ATTRIBUTES = {
    "createdb": ("createdb", "CREATEDB", "NOCREATEDB", False),
    "createrole": ("createrole", "CREATEROLE", "NOCREATEROLE", False),
    "replication": ("replication", "REPLICATION", "NOREPLICATION", False),
    "bypassrls": ("bypassrls", "BYPASSRLS", "NOBYPASSRLS", False),
    "inherit": ("inherit", "INHERIT", "NOINHERIT", True),
}


@dataclass(frozen=True)
class Change:
    """One statement to run. ``shown`` is ``statement`` with secrets replaced by ``'***'``."""

    scope: str  # "" for the cluster, else the database name
    phase: str  # roles | create-database | structure | grants | cdc | slot
    action: str
    target: str
    statement: Any
    shown: Any
    reason: str = ""


@dataclass(frozen=True)
class Finding:
    """Something the database has that the config does not mention (drift)."""

    scope: str
    target: str
    detail: str
    pruned: bool  # apply removes it because the owning object says prune: true


@dataclass
class Planner:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def add(self, scope: str, phase: str, action: str, target: str, statement: Any,
            shown: Any = None, reason: str = "") -> None:
        self.changes.append(Change(scope, phase, action, target, statement,
                                   statement if shown is None else shown, reason))

    def drift(self, scope: str, target: str, detail: str, pruned: bool) -> None:
        self.findings.append(Finding(scope, target, detail, pruned))

    def extend(self, other: Planner) -> None:
        self.changes += other.changes
        self.warnings += other.warnings
        self.errors += other.errors
        self.findings += other.findings


def _sql():
    from psycopg import sql

    return sql


def _keywords(words: Iterable[str]) -> Any:
    """Privilege or attribute keywords: constants validated by the schema, never user text."""
    sql = _sql()
    return sql.SQL(", ").join(sql.SQL(w) for w in words)


def _ident(*parts: str) -> Any:
    return _sql().Identifier(*parts)


def _q(name: str) -> str:
    """A name for messages (double-quoted like PostgreSQL prints identifiers)."""
    return '"' + name.replace('"', '""') + '"'


# -- cluster: roles, memberships, databases ---------------------------------------------------

def plan_cluster(cfg: PostgresConfig, cluster: ClusterState, passwords: dict[str, tuple[str, str]]) -> Planner:
    """Roles, role attributes and passwords, memberships, CREATE/ALTER DATABASE.

    ``passwords`` maps a role name to (verifier, reason) for each role whose password must be
    set this run; the verifier is computed by the caller (libpq's SCRAM) and never shown.
    """
    out = Planner()
    _plan_roles(cfg, cluster, passwords, out)
    _plan_memberships(cfg, cluster, out)
    for db in cfg.databases:
        _plan_database_settings(db, cluster.databases.get(db.name), out)
    return out


def _plan_roles(cfg: PostgresConfig, cluster: ClusterState, passwords: dict[str, tuple[str, str]],
                out: Planner) -> None:
    sql = _sql()
    creates: list[Change] = []
    alters: list[Change] = []
    for role in cfg.roles:
        current = cluster.roles.get(role.name)
        password = passwords.get(role.name)
        name = _ident(role.name)
        if _expiry(role.valid_until) is not None and _expiry(role.valid_until) < time.time():
            out.warnings.append(f"role {_q(role.name)}: valid_until {role.valid_until} is in the past, so its "
                                "password does not log in; set a later time or 'infinity'")
        if current is None:
            opts = _create_options(role)
            statement, shown = opts, list(opts)
            if password:
                statement = opts + [sql.SQL("PASSWORD {}").format(sql.Literal(password[0]))]
                shown = opts + [sql.SQL("PASSWORD '***'")]
            creates.append(Change(CLUSTER, "roles", "create role", _q(role.name),
                                  sql.SQL("CREATE ROLE {} WITH {}").format(name, sql.SQL(" ").join(statement)),
                                  sql.SQL("CREATE ROLE {} WITH {}").format(name, sql.SQL(" ").join(shown))))
        else:
            opts = _alter_options(role, current, cfg, out)
            if opts:
                statement = sql.SQL("ALTER ROLE {} WITH {}").format(name, sql.SQL(" ").join(opts))
                alters.append(Change(CLUSTER, "roles", "alter role", _q(role.name), statement, statement,
                                     "attributes differ from the config"))
            if password:
                alters.append(Change(CLUSTER, "roles", "set password", _q(role.name),
                                     sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(name, sql.Literal(password[0])),
                                     sql.SQL("ALTER ROLE {} WITH PASSWORD '***'").format(name), password[1]))
        have_path = current.search_path if current else None
        if (have_path or ()) != role.search_path:
            statement = sql.SQL("ALTER ROLE {} RESET search_path").format(name) if not role.search_path else \
                sql.SQL("ALTER ROLE {} SET search_path TO {}").format(
                    name, sql.SQL(", ").join(_ident(p) for p in role.search_path))
            alters.append(Change(CLUSTER, "roles", "set search_path", _q(role.name), statement, statement,
                                 f"search_path is {', '.join(have_path)}" if have_path else ""))
    out.changes += creates + alters


def _expiry(valid_until: str) -> float | None:
    """Seconds since the epoch, or None for infinity."""
    from datetime import datetime

    return None if valid_until == "infinity" else datetime.fromisoformat(valid_until).timestamp()


def _plan_memberships(cfg: PostgresConfig, cluster: ClusterState, out: Planner) -> None:
    sql = _sql()
    for role in cfg.roles:
        for group in role.member_of:
            if (role.name, group) not in cluster.memberships:
                out.add(CLUSTER, "roles", "grant membership", f"{_q(role.name)} in {_q(group)}",
                        sql.SQL("GRANT {} TO {}").format(_ident(group), _ident(role.name)))
        for member, group in sorted(cluster.memberships):
            if member == role.name and group not in role.member_of:
                out.drift(CLUSTER, f"role {_q(role.name)}", f"is a member of {_q(group)}", role.prune)
                if role.prune:
                    out.add(CLUSTER, "roles", "revoke membership", f"{_q(role.name)} in {_q(group)}",
                            sql.SQL("REVOKE {} FROM {}").format(_ident(group), _ident(role.name)),
                            reason="prune: not in member_of")
    # Members of a managed role hold its privileges: report the ones the config does not make.
    configured = {(r.name, g) for r in cfg.roles for g in r.member_of}
    managed = {r.name for r in cfg.roles}
    for member, group in sorted(cluster.memberships):
        if group in managed and (member, group) not in configured and member != cluster.admin:
            out.drift(CLUSTER, f"role {_q(group)}", f"{_q(member)} is a member of it (and has its privileges)", False)


def _plan_database_settings(db: Database, info: DatabaseInfo | None, out: Planner) -> None:
    sql = _sql()
    settings = []
    if (info.allow_connections if info else True) != db.allow_connections:
        settings.append(sql.SQL("ALLOW_CONNECTIONS {}").format(sql.SQL("true" if db.allow_connections else "false")))
    if (info.connection_limit if info else -1) != db.connection_limit:
        settings.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(db.connection_limit)))
    if info is None:
        parts = [sql.SQL("CREATE DATABASE {}").format(_ident(db.name))]
        if db.owner:
            parts.append(sql.SQL("OWNER {}").format(_ident(db.owner)))
        parts.append(sql.SQL("TEMPLATE template0 ENCODING {}").format(sql.Literal(db.encoding)))
        if db.locale:
            parts.append(sql.SQL("LOCALE {}").format(sql.Literal(db.locale)))
        out.add(db.name, "create-database", "create database", _q(db.name), sql.SQL(" ").join(parts + settings))
        return
    if db.owner and info.owner != db.owner:
        out.add(CLUSTER, "roles", "alter database owner", _q(db.name),
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(_ident(db.name), _ident(db.owner)),
                reason=f"owned by {_q(info.owner)}")
    if settings:
        out.add(CLUSTER, "roles", "alter database", _q(db.name),
                sql.SQL("ALTER DATABASE {} WITH {}").format(_ident(db.name), sql.SQL(" ").join(settings)),
                reason="connection settings differ from the config")
    if _norm_encoding(info.encoding) != _norm_encoding(db.encoding):
        out.warnings.append(f"database {_q(db.name)} has encoding {info.encoding} but the config says "
                            f"{db.encoding}; PostgreSQL cannot change it in place: change the config "
                            "or dump, recreate and restore the database")
    if db.locale and (info.collate != db.locale or info.ctype != db.locale):
        out.warnings.append(f"database {_q(db.name)} has locale {info.collate}/{info.ctype} but the config "
                            f"says {db.locale}; PostgreSQL cannot change it in place: change the config "
                            "or dump, recreate and restore the database")


def _norm_encoding(value: str) -> str:
    return value.upper().replace("-", "").replace("_", "")


def _create_options(role: Role) -> list[Any]:
    sql = _sql()
    opts = [sql.SQL("LOGIN" if role.login else "NOLOGIN")]
    if role.connection_limit != -1:
        opts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(role.connection_limit)))
    for name, (_, yes, no, default) in ATTRIBUTES.items():
        value = getattr(role, name)
        if value is not None and value != default:
            opts.append(sql.SQL(yes if value else no))
    if role.valid_until != "infinity":
        opts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role.valid_until)))
    return opts


def _alter_options(role: Role, current: Any, cfg: PostgresConfig, out: Planner) -> list[Any]:
    sql = _sql()
    opts: list[Any] = []
    if current.login != role.login:
        opts.append(sql.SQL("LOGIN" if role.login else "NOLOGIN"))
    if current.connection_limit != role.connection_limit:
        opts.append(sql.SQL("CONNECTION LIMIT {}").format(sql.Literal(role.connection_limit)))
    target = f"role {_q(role.name)}"
    for name, (field_, yes, no, default) in ATTRIBUTES.items():
        want = getattr(role, name)
        have = getattr(current, field_)
        if want is not None:
            if have != want:
                opts.append(sql.SQL(yes if want else no))
        elif have != default:
            out.drift(CLUSTER, target, f"has {yes if have else no}, which the config does not set", role.prune)
            if role.prune:
                opts.append(sql.SQL(yes if default else no))
    want_until = _expiry(role.valid_until)
    if (want_until is None) != (current.valid_until is None) or (
            want_until is not None and abs(want_until - current.valid_until) > 0.001):
        opts.append(sql.SQL("VALID UNTIL {}").format(sql.Literal(role.valid_until)))
    if current.superuser:
        can_prune = role.prune and role.name != cfg.connection.user
        out.drift(CLUSTER, target, "has SUPERUSER, which the config does not set", can_prune)
        if can_prune:
            opts.append(sql.SQL("NOSUPERUSER"))
    return opts


# -- one database: schemas and extensions ------------------------------------------------------

def schema_owner(db: Database, schema: str) -> str | None:
    """The owner the config gives a schema: its own ``owner``, else the database owner."""
    for s in db.schemas:
        if s.name == schema and s.owner:
            return s.owner
    return db.owner


def plan_structure(db: Database, state: DatabaseState) -> Planner:
    """CREATE/ALTER SCHEMA and CREATE/ALTER (and with prune, DROP) EXTENSION."""
    sql = _sql()
    out = Planner()
    for schema in db.schemas:
        owner = schema_owner(db, schema.name)
        if schema.name not in state.schemas:
            statement = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema.name))
            if owner:
                statement = sql.SQL("{} AUTHORIZATION {}").format(statement, _ident(owner))
            out.add(db.name, "structure", "create schema", _q(schema.name), statement)
        elif owner and state.schemas[schema.name] != owner:
            out.add(db.name, "structure", "alter schema owner", _q(schema.name),
                    sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(_ident(schema.name), _ident(owner)),
                    reason=f"owned by {_q(state.schemas[schema.name])}")
    wanted = {e.name for e in db.extensions}
    for ext in db.extensions:
        have = state.extensions.get(ext.name)
        if have is None:
            statement = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(_ident(ext.name))
            if ext.schema_:
                statement = sql.SQL("{} SCHEMA {}").format(statement, _ident(ext.schema_))
            out.add(db.name, "structure", "create extension", _q(ext.name), statement)
        elif ext.schema_ and have != ext.schema_:
            out.add(db.name, "structure", "move extension", _q(ext.name),
                    sql.SQL("ALTER EXTENSION {} SET SCHEMA {}").format(_ident(ext.name), _ident(ext.schema_)),
                    reason=f"installed in schema {_q(have)}")
    for name in sorted(set(state.extensions) - wanted - {"plpgsql"}):
        out.drift(db.name, f"extension {_q(name)}", "is installed but not in the config", db.prune)
        if db.prune:
            out.add(db.name, "structure", "drop extension", _q(name),
                    sql.SQL("DROP EXTENSION {}").format(_ident(name)), reason="prune: not in the config")
    return out


def pending_object_schemas(db: Database, structure: Planner) -> set[str]:
    """Schemas where this run creates extensions, so new objects appear before grants run."""
    created = {c.target for c in structure.changes if c.action == "create extension"}
    return {e.schema_ or "public" for e in db.extensions if _q(e.name) in created}


# -- one database: privileges --------------------------------------------------------------------

OBJECT_KINDS = ("table", "sequence", "function")


@dataclass(frozen=True)
class Acting:
    """Who runs the statements: a superuser can act as any grantor (``SET ROLE``)."""

    admin: str = ""
    superuser: bool = True


@dataclass
class _Grants:
    """What every privilege step of one database needs to see."""

    db: Database
    state: DatabaseState
    info: DatabaseInfo | None
    acting: Acting
    out: Planner
    new_objects_in: set[str]

    @property
    def scope(self) -> str:
        return self.db.name

    @property
    def db_owner(self) -> str | None:
        # The configured owner: apply changes the owner before it plans the grants (issue 13.11);
        # a database this run creates without an owner belongs to the admin.
        return self.db.owner or (self.info.owner if self.info else self.acting.admin or None)

    def configured(self, role: str, schema: str | None) -> Grant | None:
        return next((g for g in self.db.grants if g.role == role and g.schema_ == schema), None)

    def prunes(self, role: str, schema: str | None) -> bool:
        grant = self.configured(role, schema)
        return grant.prune if grant else (self.db.prune or any(g.prune for g in self.db.grants if g.role == role))


def _privileges_of(grant: Grant, kind: str) -> tuple[str, ...]:
    return {"table": grant.tables, "sequence": grant.sequences, "function": grant.functions}[kind]


def plan_grants(db: Database, state: DatabaseState, info: DatabaseInfo | None,
                new_objects_in: set[str] = frozenset(), acting: Acting = Acting()) -> Planner:
    """Database, schema, object and default privileges, and (drift) every grant not configured.

    ``new_objects_in``: schemas where extensions created by this run will have added functions
    the snapshot cannot show yet (only used by ``plan``; ``apply`` re-reads the catalogue after
    creating extensions, so it grants on exactly what exists).
    """
    ctx = _Grants(db, state, info, acting, Planner(), set(new_objects_in))
    _plan_database_privileges(ctx)
    for g in db.grants:
        if g.schema_ is not None:
            _plan_schema_grant(ctx, g)
    _drift_schema_grants(ctx)
    _drift_object_grants(ctx)
    _drift_default_grants(ctx)
    _drift_public_grants(ctx)
    return ctx.out


def _plan_database_privileges(ctx: _Grants) -> None:
    sql, db, out = _sql(), ctx.db, ctx.out
    db_privs: dict[str, list[str]] = {}  # the union over a role's grant entries
    for g in db.grants:
        db_privs.setdefault(g.role, [])
        db_privs[g.role] += [p for p in g.database_privileges if p not in db_privs[g.role]]
    have_db = ctx.info.grants if ctx.info else frozenset()
    for role, privs in db_privs.items():
        missing = [p for p in privs if (role, p) not in have_db]
        if missing and role != ctx.db_owner:
            out.add(ctx.scope, "grants", "grant", f"database {_q(db.name)} to {_q(role)}",
                    sql.SQL("GRANT {} ON DATABASE {} TO {}").format(_keywords(missing), _ident(db.name), _ident(role)))
    for grantee, priv in sorted(have_db):
        if grantee.startswith("pg_") or priv in db_privs.get(grantee, ()):
            continue
        pruned = db.prune or any(g.prune for g in db.grants if g.role == grantee)
        out.drift(ctx.scope, f"database {_q(db.name)}", f"{_q(grantee)} has {priv}", pruned)
        if not pruned:
            continue
        target = f"database {_q(db.name)} from {_q(grantee)}"
        revoke = sql.SQL("REVOKE {} ON DATABASE {} FROM {}").format(_keywords([priv]), _ident(db.name),
                                                                     _ident(grantee))
        foreign = sorted(g for e, p, g in ctx.info.foreign_grants if (e, p) == (grantee, priv))
        for grantor in foreign:
            statement = _as_grantor(ctx, grantor, revoke, f"{priv} on {target}")
            if statement is not None:
                out.add(ctx.scope, "grants", "revoke", target, statement,
                        reason=f"prune: not in the config (granted by {_q(grantor)})")
        if not foreign or (grantee, priv) in ctx.info.owner_grants:
            out.add(ctx.scope, "grants", "revoke", target, revoke, reason="prune: not in the config")


def _schema_owner_role(ctx: _Grants, schema: str) -> str | None:
    owner_cfg = schema_owner(ctx.db, schema) if any(s.name == schema for s in ctx.db.schemas) else None
    owner = owner_cfg or ctx.state.schemas.get(schema)
    return ctx.db_owner if owner == "pg_database_owner" else owner  # PostgreSQL 15's public schema


def _plan_schema_grant(ctx: _Grants, g: Grant) -> None:
    sql, out, schema = _sql(), ctx.out, g.schema_
    owner = _schema_owner_role(ctx, schema)
    if schema not in ctx.state.schemas and not any(s.name == schema for s in ctx.db.schemas):
        out.errors.append(f"database {_q(ctx.db.name)}: the grant to {_q(g.role)} names schema {_q(schema)}, "
                          "which neither exists nor is listed under 'schemas'; add it there")
        return
    have = ctx.state.schema_grants.get(schema, set())
    missing = [p for p in g.schema_privileges if (g.role, p) not in have]
    if missing and g.role != owner:
        out.add(ctx.scope, "grants", "grant", f"schema {_q(schema)} to {_q(g.role)}",
                sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(_keywords(missing), _ident(schema), _ident(g.role)))
    for kind in OBJECT_KINDS:
        privs = _privileges_of(g, kind)
        total = ctx.state.object_totals.get((schema, kind), 0)
        owned = ctx.state.object_owned.get((schema, kind, g.role), 0)
        missing = [p for p in privs
                   if total - owned - ctx.state.object_grants.get((schema, kind, g.role, p), 0) > 0
                   or (kind == "function" and schema in ctx.new_objects_in)]
        if missing:
            out.add(ctx.scope, "grants", "grant", f"all {KIND_KEYWORD[kind].lower()} in {_q(schema)} to {_q(g.role)}",
                    sql.SQL("GRANT {} ON ALL {} IN SCHEMA {} TO {}").format(
                        _keywords(missing), sql.SQL(KIND_KEYWORD[kind]), _ident(schema), _ident(g.role)))
    if g.future:
        _plan_default_privileges(ctx, g, owner)


def _plan_default_privileges(ctx: _Grants, g: Grant, schema_owner_role: str | None) -> None:
    sql, out, schema = _sql(), ctx.out, g.schema_
    owners = list(g.future_owners) if g.future_owners is not None else (
        [schema_owner_role] if schema_owner_role else [])
    if not owners and (g.tables or g.sequences or g.functions):
        out.warnings.append(f"database {_q(ctx.db.name)}: future objects in {_q(schema)} get no privileges for "
                            f"{_q(g.role)}: the schema has no owner in the config; set future_owners")
    for owner in owners:
        if owner == g.role:
            continue
        for kind in OBJECT_KINDS:
            have = ctx.state.default_grants.get((owner, schema, kind), set())
            missing = [p for p in _privileges_of(g, kind) if (g.role, p) not in have]
            if missing:
                out.add(ctx.scope, "grants", "default privileges",
                        f"future {KIND_KEYWORD[kind].lower()} of {_q(owner)} in {_q(schema)} to {_q(g.role)}",
                        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT {} ON {} TO {}").format(
                            _ident(owner), _ident(schema), _keywords(missing), sql.SQL(KIND_KEYWORD[kind]),
                            _ident(g.role)))


def _as_grantor(ctx: _Grants, grantor: str, statement: Any, what: str) -> Any | None:
    """``statement`` run as ``grantor``: only the grantor of a privilege can revoke it.

    PostgreSQL 15 accepts ``REVOKE … GRANTED BY`` only for the current user, and a superuser's
    REVOKE acts as the object's owner, so the statement runs under ``SET LOCAL ROLE``.
    None (with a warning) when the admin can act neither as the grantor nor as a superuser.
    """
    sql = _sql()
    if grantor == ctx.acting.admin:
        return statement
    if not ctx.acting.superuser:
        ctx.out.warnings.append(f"database {_q(ctx.db.name)}: cannot prune {what}: it was granted by "
                                f"{_q(grantor)} and only that role (or a superuser) can revoke it; connect as "
                                "a superuser or revoke it as that role")
        return None
    return sql.SQL("SET LOCAL ROLE {}; {}; RESET ROLE").format(_ident(grantor), statement)


def _drift_schema_grants(ctx: _Grants) -> None:
    sql, out, state = _sql(), ctx.out, ctx.state
    for schema in sorted(state.schema_grants):
        for grantee, priv in sorted(state.schema_grants[schema]):
            grant = ctx.configured(grantee, schema)
            if grantee.startswith("pg_") or (grant and priv in grant.schema_privileges):
                continue
            pruned = ctx.prunes(grantee, schema)
            out.drift(ctx.scope, f"schema {_q(schema)}", f"{_q(grantee)} has {priv}", pruned)
            if not pruned:
                continue
            target = f"schema {_q(schema)} from {_q(grantee)}"
            revoke = sql.SQL("REVOKE {} ON SCHEMA {} FROM {}").format(_keywords([priv]), _ident(schema),
                                                                       _ident(grantee))
            for grantor in sorted(state.schema_grantors.get((schema, grantee, priv), ())):
                statement = _as_grantor(ctx, grantor, revoke, f"{priv} on {target}")
                if statement is not None:
                    out.add(ctx.scope, "grants", "revoke", target, statement,
                            reason=f"prune: not in the config (granted by {_q(grantor)})")
            if (schema, grantee, priv) in state.schema_owner_grants:
                out.add(ctx.scope, "grants", "revoke", target, revoke, reason="prune: not in the config")


def _drift_object_grants(ctx: _Grants) -> None:
    sql, out, state = _sql(), ctx.out, ctx.state
    by_grantor: list[Change] = []  # run first: a grantor may itself lose its grant option
    by_owner: list[Change] = []
    for (schema, kind, grantee, priv), count in sorted(state.object_grants.items()):
        grant = ctx.configured(grantee, schema)
        if grantee.startswith("pg_") or (grant and priv in _privileges_of(grant, kind)):
            continue
        pruned = ctx.prunes(grantee, schema)
        plural = KIND_KEYWORD[kind].lower() if count != 1 else kind
        out.drift(ctx.scope, f"schema {_q(schema)}", f"{_q(grantee)} has {priv} on {count} {plural}", pruned)
        if not pruned:
            continue
        target = f"all {KIND_KEYWORD[kind].lower()} in {_q(schema)} from {_q(grantee)}"
        everything = sql.SQL("REVOKE {} ON ALL {} IN SCHEMA {} FROM {}").format(
            _keywords([priv]), sql.SQL(KIND_KEYWORD[kind]), _ident(schema), _ident(grantee))
        for (s, k, e, p, grantor), objects in sorted(state.object_grantors.items()):
            if (s, k, e, p) != (schema, kind, grantee, priv):
                continue
            revoke = everything if kind == "function" else sql.SQL("REVOKE {} ON {} {} FROM {}").format(
                _keywords([priv]), sql.SQL(kind.upper()), sql.SQL(", ").join(_ident(*o) for o in objects),
                _ident(grantee))
            statement = _as_grantor(ctx, grantor, revoke, f"{priv} on {target}")
            if statement is not None:
                by_grantor.append(Change(ctx.scope, "grants", "revoke", target, statement, statement,
                                         f"prune: not in the config (granted by {_q(grantor)})"))
        if state.object_owner_grants.get((schema, kind, grantee, priv), count):
            by_owner.append(Change(ctx.scope, "grants", "revoke", target, everything, everything,
                                   "prune: not in the config"))
    out.changes += by_grantor + by_owner


def _drift_default_grants(ctx: _Grants) -> None:
    sql, out, state, db = _sql(), ctx.out, ctx.state, ctx.db
    for (owner, schema, kind), entries in sorted(state.default_grants.items()):
        for grantee, priv in sorted(entries):
            grant = ctx.configured(grantee, schema)
            wanted: tuple[str, ...] = ()
            if grant and grant.future:
                owners = grant.future_owners if grant.future_owners is not None else (
                    schema_owner(db, schema), state.schemas.get(schema), ctx.db_owner)
                if owner in owners:
                    wanted = _privileges_of(grant, kind)
            if grantee.startswith("pg_") or priv in wanted:
                continue
            pruned = ctx.prunes(grantee, schema)
            out.drift(ctx.scope, f"schema {_q(schema)}",
                      f"future {KIND_KEYWORD[kind].lower()} of {_q(owner)} give {_q(grantee)} {priv}", pruned)
            if pruned:
                out.add(ctx.scope, "grants", "revoke default privileges",
                        f"future {KIND_KEYWORD[kind].lower()} of {_q(owner)} in {_q(schema)} from {_q(grantee)}",
                        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE {} ON {} FROM {}").format(
                            _ident(owner), _ident(schema), _keywords([priv]), sql.SQL(KIND_KEYWORD[kind]),
                            _ident(grantee)),
                        reason="prune: not in the config")


# What PUBLIC holds on its own in PostgreSQL 15: USAGE on schema public, EXECUTE on functions.
PUBLIC_DEFAULTS = {("schema", "public", "USAGE"), ("function", None, "EXECUTE")}


def _drift_public_grants(ctx: _Grants) -> None:
    """Report (never prune) what PUBLIC, that is every role, may do in the schemas the config manages."""
    managed = {s.name for s in ctx.db.schemas} | {g.schema_ for g in ctx.db.grants if g.schema_}
    for schema in sorted(managed):
        for priv in sorted(ctx.state.public_schema_grants.get(schema, ())):
            if ("schema", schema, priv) not in PUBLIC_DEFAULTS:
                ctx.out.drift(ctx.scope, f"schema {_q(schema)}", f"PUBLIC has {priv}", False)
    for (schema, kind, priv), count in sorted(ctx.state.public_object_grants.items()):
        if schema in managed and (kind, None, priv) not in PUBLIC_DEFAULTS:
            plural = KIND_KEYWORD[kind].lower() if count != 1 else kind
            ctx.out.drift(ctx.scope, f"schema {_q(schema)}", f"PUBLIC has {priv} on {count} {plural}", False)


def drift_publications(db: Database, state: DatabaseState) -> Planner:
    """Publications in a managed database that the config does not declare (reported only)."""
    out = Planner()
    for pub in sorted(state.publications):
        if db.cdc is None or pub != db.cdc.publication:
            n = len(state.publication_tables.get(pub, ()))
            what = "FOR ALL TABLES" if state.publications[pub] else f"publishes {n} table{'s' if n != 1 else ''}"
            out.drift(db.name, f"publication {_q(pub)}", f"{what}, is not in the config", False)
    return out


# -- one database: CDC -------------------------------------------------------------------------

def cdc_tables(cdc: Cdc | None) -> list[tuple[str, str]]:
    if cdc is None or cdc.tables == "all":
        return []
    return [(t.schema_, t.name) for t in cdc.tables]


def cdc_settings_warnings(cfg: PostgresConfig, cluster: ClusterState) -> list[str]:
    """What the server's settings will refuse: publications need wal_level = logical to be
    decoded, each new slot a free one of max_replication_slots, each consumer a WAL sender."""
    cdc = [db for db in cfg.databases if db.cdc]
    if not cdc or not cluster.settings:
        return []
    out: list[str] = []
    wal_level = cluster.settings.get("wal_level", "logical")
    for db in cdc:
        if wal_level != "logical":
            out.append(f"database {_q(db.name)}: CDC needs wal_level = logical but the server has {wal_level!r}: "
                       "set it (ALTER SYSTEM SET wal_level = logical) and restart the server"
                       + ("; creating the replication slot fails until then" if db.cdc.slot else ""))
    new_slots = [db.cdc.slot for db in cdc if db.cdc.slot and db.cdc.slot not in cluster.slots]
    limit = int(cluster.settings.get("max_replication_slots", "0"))
    if new_slots and len(cluster.slots) + len(new_slots) > limit:
        out.append(f"max_replication_slots is {limit} and {len(cluster.slots)} slot(s) exist, so the new slot(s) "
                   f"{', '.join(_q(s) for s in new_slots)} do not fit: raise it on the server and restart")
    if int(cluster.settings.get("max_wal_senders", "0")) == 0:
        out.append("max_wal_senders is 0: CDC consumers cannot stream changes; raise it on the server and restart")
    return out


def plan_cdc(db: Database, state: DatabaseState, cluster: ClusterState) -> Planner:
    """The publication (and, in its own phase, the logical replication slot)."""
    sql = _sql()
    out = Planner()
    cdc = db.cdc
    if cdc is None:
        return out
    scope, pub = db.name, cdc.publication
    want_all = cdc.tables == "all"
    wanted = cdc_tables(cdc)
    present = [t for t in wanted if t in state.tables]
    for schema, table in wanted:
        if (schema, table) not in state.tables:
            out.warnings.append(f"database {_q(db.name)}: table {_q(schema)}.{_q(table)} for publication {_q(pub)} "
                                "does not exist yet; it is added by the next apply after it is created")
    for schema, table in sorted(state.tables_without_identity):
        if want_all or (schema, table) in wanted:
            out.warnings.append(f"database {_q(db.name)}: table {_q(schema)}.{_q(table)} has no primary key or "
                                f"replica identity; publication {_q(pub)} publishes it, so its UPDATEs and DELETEs "
                                "will fail: add a primary key or ALTER TABLE … REPLICA IDENTITY FULL")

    def create() -> None:
        statement = sql.SQL("CREATE PUBLICATION {}").format(_ident(pub))
        if want_all:
            statement = sql.SQL("{} FOR ALL TABLES").format(statement)
        elif present:
            statement = sql.SQL("{} FOR TABLE {}").format(
                statement, sql.SQL(", ").join(_ident(s, t) for s, t in present))
        out.add(scope, "cdc", "create publication", _q(pub), statement)

    if pub not in state.publications:
        create()
    elif state.publications[pub] != want_all:
        have = "FOR ALL TABLES" if state.publications[pub] else "a table list"
        out.drift(scope, f"publication {_q(pub)}", f"is {have}, the config wants the other", cdc.prune)
        if cdc.prune:
            out.add(scope, "cdc", "drop publication", _q(pub), sql.SQL("DROP PUBLICATION {}").format(_ident(pub)),
                    reason="prune: recreate with the configured tables")
            create()
        else:
            out.warnings.append(f"database {_q(db.name)}: publication {_q(pub)} is {have}; PostgreSQL 15 cannot "
                                "switch between FOR ALL TABLES and a table list in place: set cdc.prune: true to "
                                "recreate it")
    elif not want_all:
        have_tables = state.publication_tables.get(pub, set())
        add = [t for t in present if t not in have_tables]
        if add:
            out.add(scope, "cdc", "add tables to publication", _q(pub),
                    sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        _ident(pub), sql.SQL(", ").join(_ident(s, t) for s, t in add)))
        for schema, table in sorted(have_tables - set(wanted)):
            out.drift(scope, f"publication {_q(pub)}", f"publishes {_q(schema)}.{_q(table)}", cdc.prune)
            if cdc.prune:
                out.add(scope, "cdc", "drop table from publication", _q(pub),
                        sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(_ident(pub), _ident(schema, table)),
                        reason="prune: not in cdc.tables")
    if cdc.slot:
        slot = cluster.slots.get(cdc.slot)
        if slot is None:
            out.add(scope, "slot", "create replication slot", _q(cdc.slot),
                    sql.SQL("SELECT pg_create_logical_replication_slot({}, 'pgoutput')").format(sql.Literal(cdc.slot)))
        elif slot.slot_type != "logical" or slot.database != db.name or slot.plugin != "pgoutput":
            out.errors.append(f"replication slot {_q(cdc.slot)} exists as a {slot.slot_type} slot "
                              f"(database {slot.database}, plugin {slot.plugin}), not a pgoutput slot in "
                              f"{_q(db.name)}; choose another cdc.slot name or drop that slot")
    return out
