"""Run a PostgreSQL provisioning config: plan, apply or report drift.

The order of a run:

1. Read every password variable the config names. A missing one fails here, before any
   connection is made, naming the variable and the role (never a value).
2. Connect as the admin, read the cluster (roles, memberships, databases, slots) and, in
   parallel, every configured database that exists. Plan everything; stop on any error.
3. ``apply`` only: cluster changes (roles, attributes, passwords, memberships, database owners)
   in one transaction; then each ``CREATE DATABASE`` on its own (it cannot run in a
   transaction); then, per database with something to do, one transaction that re-reads the
   catalogue, runs the structural changes (schemas, extensions), re-reads again so grants see
   the objects the extensions created, runs grants and the publication, and commits; then the
   replication slot (which must not run in a transaction that wrote).

Because each step is planned from the catalogue, a run that dies anywhere converges on the next.

Passwords are set as SCRAM verifiers computed by libpq (the cleartext never reaches the server
or its logs) and sent as ``sql.Literal``; every displayed statement shows ``'***'`` instead. A
password is set when the role is created, with ``--rotate-passwords``, or when logging in with
the configured password would fail: checked against the stored SCRAM verifier exactly as the
server's authentication does, or, when the admin cannot read verifiers, by logging in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
import unicodedata
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from forgegen.errors import ConfigError, Problem, ProvisionError
from forge_provision.catalog import (
    ClusterState, DatabaseInfo, DatabaseState, available_extensions, inspect_cluster, inspect_database,
)
from forge_provision.plan import (
    Change, Finding, Planner, cdc_tables, pending_object_schemas, plan_cdc, plan_cluster, plan_grants,
    plan_structure,
)
from forge_provision.schema import Database, PostgresConfig

log = logging.getLogger(__name__)

APPLICATION_NAME = "forge-provision"
Mode = Literal["plan", "apply", "drift"]


@dataclass
class Outcome:
    """What a run found and did; ``changes`` are planned (plan, drift) or executed (apply)."""

    mode: str
    server: str
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    statements: int = 0  # statements executed that change something
    queries: int = 0  # catalogue reads

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "server": self.server,
            "changed": bool(self.changes) if self.mode != "drift" else False,
            "changes": [change_json(c) for c in self.changes],
            "warnings": list(self.warnings),
            "drift": [{"database": f.scope or None, "object": f.target, "detail": f.detail,
                       "pruned_by_apply": f.pruned} for f in self.findings],
            "statements_executed": self.statements,
            "catalogue_queries": self.queries,
        }


def change_json(change: Change) -> dict[str, Any]:
    return {"database": change.scope or None, "phase": change.phase, "action": change.action,
            "object": change.target, "sql": change.shown.as_string(None), "reason": change.reason or None}


# -- secrets ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Secrets:
    admin_password: str | None = field(repr=False)
    passwords: dict[str, str] = field(repr=False)  # role -> password

    def values(self) -> list[str]:
        return [v for v in (self.admin_password, *self.passwords.values()) if v]


def read_secrets(cfg: PostgresConfig, environ: Mapping[str, str] | None = None) -> Secrets:
    """Every password variable the config names, or a ConfigError naming all missing ones."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def get(var: str, path: str, what: str) -> str | None:
        value = env.get(var)
        if not value:
            state = "is empty" if var in env else "is not set"
            problems.append(Problem("environment", None, None, path,
                                    f"${var} ({what}) {state}; export it before running "
                                    "(passwords are read only from the environment)"))
            return None
        return value

    admin = None
    if cfg.connection.password_env:
        admin = get(cfg.connection.password_env, "connection.password_env",
                    f"password of the admin user {cfg.connection.user!r}")
    passwords: dict[str, str] = {}
    for i, role in enumerate(cfg.roles):
        if role.password_env:
            value = get(role.password_env, f"roles[{i}].password_env", f"password of role {role.name!r}")
            if value:
                passwords[role.name] = value
    if problems:
        raise ConfigError(problems, hint="nothing was changed")
    return Secrets(admin, passwords)


def redact(text: str, secrets: Secrets) -> str:
    for value in secrets.values():
        text = text.replace(value, "***")
    return text


# -- connections ------------------------------------------------------------------------------------

def connect(cfg: PostgresConfig, secrets: Secrets, dbname: str | None = None, *, autocommit: bool = True):
    import psycopg

    c = cfg.connection
    dbname = dbname or c.dbname
    try:
        return psycopg.connect(host=c.host, port=c.port, user=c.user, password=secrets.admin_password,
                               dbname=dbname, sslmode=c.sslmode, connect_timeout=c.connect_timeout,
                               application_name=APPLICATION_NAME, autocommit=autocommit)
    except psycopg.Error as err:
        reason = redact(str(err).strip(), secrets).replace("\n", " ")
        pw = f"${c.password_env}" if c.password_env else "the password (connection.password_env)"
        raise ProvisionError(
            f"cannot connect to PostgreSQL at {c.host}:{c.port} (database {dbname!r}) as {c.user!r}: {reason}",
            hint=f"check that the server is running and reachable, connection.host/port/sslmode in the config, "
                 f"and {pw}") from err


# -- passwords -------------------------------------------------------------------------------------

def _saslprep(password: str) -> str:
    """Close to RFC 4013 SASLprep as PostgreSQL applies it (falls back to the raw string)."""
    if password.isascii():
        return password
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in password
                     if ch not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufe00\ufeff")
    return unicodedata.normalize("NFKC", mapped)


def verifier_matches(verifier: str | None, role: str, password: str) -> bool | None:
    """Whether ``password`` authenticates against a stored verifier (None: cannot tell)."""
    if verifier is None:
        return False
    if verifier.startswith("SCRAM-SHA-256$"):
        try:
            head, keys = verifier[len("SCRAM-SHA-256$"):].split("$")
            iterations, salt = head.split(":")
            stored_key = base64.b64decode(keys.split(":")[0])
            salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode(), base64.b64decode(salt),
                                         int(iterations))
        except (ValueError, IndexError):
            return None
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
    if verifier.startswith("md5"):
        return hmac.compare_digest(verifier, "md5" + hashlib.md5((password + role).encode()).hexdigest())
    return None


def _login_works(cfg: PostgresConfig, role: str, password: str) -> bool | None:
    import psycopg

    c = cfg.connection
    try:
        psycopg.connect(host=c.host, port=c.port, user=role, password=password, dbname=c.dbname,
                        sslmode=c.sslmode, connect_timeout=c.connect_timeout,
                        application_name=APPLICATION_NAME).close()
    except psycopg.Error as err:
        text = str(err)
        if "password authentication failed" in text or getattr(err, "sqlstate", None) == "28P01":
            return False
        if "not permitted to log in" in text or "does not exist" in text or "permission denied" in text:
            return True  # authentication itself succeeded
        return None
    return True


def passwords_to_set(cfg: PostgresConfig, cluster: ClusterState, secrets: Secrets, *, rotate: bool,
                     warnings: list[str], pool: ThreadPoolExecutor | None = None) -> dict[str, str]:
    """Role -> reason, for every role whose password this run sets (checks run on ``pool``)."""

    def check(role: Any) -> tuple[str, str | None, str | None]:
        password = secrets.passwords[role.name]
        current = cluster.roles.get(role.name)
        if current is None:
            return role.name, "new role", None
        if rotate:
            return role.name, "--rotate-passwords", None
        ok = verifier_matches(current.verifier, role.name, password) if current.verifier_readable else None
        if ok is False and not password.isascii():
            ok = None  # our SASLprep is close, not exact: let the server decide
        if ok is None:
            ok = _login_works(cfg, role.name, password)
        if ok is None:
            return role.name, None, (f"could not check the password of role {role.name!r} (login failed for "
                                     "another reason); it was left unchanged: use --rotate-passwords to set it")
        return role.name, None if ok else "login with the configured password fails", None

    roles = [r for r in cfg.roles if r.name in secrets.passwords]
    results = list(pool.map(check, roles)) if pool else [check(r) for r in roles]
    warnings += [w for _, _, w in results if w]
    return {name: reason for name, reason, _ in results if reason}


# -- the run -------------------------------------------------------------------------------------

@dataclass
class DatabasePlan:
    db: Database
    state: DatabaseState
    planner: Planner


def _plan_database(db: Database, state: DatabaseState, info: DatabaseInfo | None,
                   cluster: ClusterState) -> Planner:
    out = Planner()
    structure = plan_structure(db, state)
    out.extend(structure)
    out.extend(plan_grants(db, state, info, pending_object_schemas(db, structure) if state.exists else
                           {e.schema_ or "public" for e in db.extensions}))
    out.extend(plan_cdc(db, state, cluster))
    return out


def run(cfg: PostgresConfig, mode: Mode, *, rotate_passwords: bool = False, jobs: int = 4,
        environ: Mapping[str, str] | None = None,
        on_change: Callable[[Change], None] | None = None) -> Outcome:
    """Plan, apply or report drift for ``cfg`` (see the module docstring for the order)."""
    import psycopg

    secrets = read_secrets(cfg, environ)
    c = cfg.connection
    outcome = Outcome(mode, f"{c.host}:{c.port}")
    with connect(cfg, secrets) as admin:
        cluster = inspect_cluster(admin)
        outcome.queries += cluster.queries
        def read(db: Database) -> DatabasePlan:
            if db.name not in cluster.databases:
                state = DatabaseState.empty(db.name)
            else:
                with _lost_connection(db.name), connect(cfg, secrets, db.name) as conn:
                    state = inspect_database(conn, db.name, tables=cdc_tables(db.cdc))
            return DatabasePlan(db, state, _plan_database(db, state, cluster.databases.get(db.name), cluster))

        # Database reads and password checks (PBKDF2, GIL released) overlap on one pool.
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            reads = [pool.submit(read, db) for db in cfg.databases]
            to_set = passwords_to_set(cfg, cluster, secrets, rotate=rotate_passwords, warnings=outcome.warnings,
                                      pool=pool)
            db_plans = [f.result() for f in reads]
        verifiers = {role: (_verifier(admin, role, secrets.passwords[role]), reason)
                     for role, reason in to_set.items()}
        plan = plan_cluster(cfg, cluster, verifiers)
        missing_ext = sorted({e.name for p in db_plans for e in p.db.extensions
                              if e.name not in p.state.extensions})
        if missing_ext:
            available = available_extensions(admin, missing_ext)
            outcome.queries += 1
            for name in missing_ext:
                if name not in available:
                    plan.errors.append(f"extension {name!r} is not available on the server; install the package "
                                       "that provides it (e.g. postgresql-15-<name> or contrib) or remove it")
        for p in db_plans:
            plan.extend(p.planner)
            outcome.queries += p.state.queries
        order = {db.name: i for i, db in enumerate(cfg.databases)}
        plan.changes.sort(key=lambda ch: (ch.scope != "", order.get(ch.scope, -1)))
        outcome.warnings += plan.warnings
        outcome.findings = plan.findings
        if plan.errors:
            raise ProvisionError("cannot provision: " + "; ".join(plan.errors), hint="nothing was changed")
        if mode != "apply":
            outcome.changes = plan.changes
            return outcome

        lock = threading.Lock()

        def execute(conn: Any, change: Change) -> None:
            log.debug("%s: %s", change.scope or "cluster", change.shown.as_string(None))
            try:
                conn.execute(change.statement)
            except psycopg.Error as err:
                where = f"database {change.scope!r}" if change.scope else "cluster"
                if conn.broken or isinstance(err, psycopg.OperationalError):
                    raise ProvisionError(
                        f"{where}: the connection to PostgreSQL was lost during {change.action} {change.target}: "
                        f"{redact(str(err).strip(), secrets)}",
                        hint="that transaction was rolled back; run apply again: it continues from what "
                             "exists") from err
                raise ProvisionError(
                    f"{where}: {change.action} {change.target} failed: "
                    f"{redact(str(err).strip(), secrets)}\n  statement: {change.shown.as_string(None)}",
                    hint="earlier changes in this transaction were rolled back; fix the cause and run apply "
                         "again (it continues from what exists)") from err
            with lock:
                outcome.changes.append(change)
                outcome.statements += 1
                if on_change:
                    on_change(change)

        cluster_changes = [ch for ch in plan.changes if ch.phase == "roles"]
        if cluster_changes:
            with _lost_connection("cluster"), admin.transaction():
                for change in cluster_changes:
                    execute(admin, change)
        for change in plan.changes:
            if change.phase == "create-database":
                with _lost_connection(change.scope):
                    execute(admin, change)

    pending = [p for p in db_plans if any(ch.phase != "roles" for ch in p.planner.changes)]
    failures: list[ProvisionError] = []

    def apply_one(p: DatabasePlan) -> list[Change]:
        done: list[Change] = []

        def ex(conn: Any, change: Change) -> None:
            execute(conn, change)
            done.append(change)

        try:
            _apply_database(cfg, secrets, p.db, cluster, ex)
        except ProvisionError as err:
            failures.append(err)
        return done

    # Per-database changes run in parallel; their lines are reported in config order.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(apply_one, pending))
    outcome.changes.sort(key=lambda ch: (ch.scope != "", order.get(ch.scope, -1)))
    if failures:
        raise ProvisionError("\n".join(str(f) for f in failures),
                             hint=f"{outcome.statements} statement(s) were applied before the failure; "
                                  "run apply again: it continues from what exists")
    return outcome


def _verifier(conn: Any, role: str, password: str) -> str:
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


class _lost_connection:
    """Turn a dropped connection (server restart, killed backend) into a ProvisionError."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: Any, tb: Any) -> bool:
        import psycopg

        if isinstance(err, psycopg.OperationalError):
            where = f"database {self.where!r}" if self.where else "cluster"
            raise ProvisionError(
                f"{where}: the connection to PostgreSQL was lost while applying: {str(err).strip()}",
                hint="that transaction was rolled back; run apply again: it continues from what exists") from err
        return False


def _apply_database(cfg: PostgresConfig, secrets: Secrets, db: Database, cluster: ClusterState,
                    execute: Callable[[Any, Change], None]) -> None:
    from forge_provision.catalog import database_info

    with _lost_connection(db.name), connect(cfg, secrets, db.name, autocommit=False) as conn:
        tables = cdc_tables(db.cdc)
        with conn.transaction():
            state = inspect_database(conn, db.name, tables=tables)
            structure = plan_structure(db, state)
            for change in structure.changes:
                execute(conn, change)
            if structure.changes:
                state = inspect_database(conn, db.name, tables=tables)
            for change in plan_grants(db, state, database_info(conn, db.name)).changes:
                execute(conn, change)
            cdc = plan_cdc(db, state, cluster)
            for change in cdc.changes:
                if change.phase != "slot":
                    execute(conn, change)
        conn.autocommit = True
        for change in cdc.changes:
            if change.phase == "slot":
                execute(conn, change)
