"""Run a PostgreSQL provisioning config: plan, apply or report drift.

The order of a run:

1. Read every password variable the config names. A missing one fails here, before any
   connection is made, naming the variable and the role (never a value).
2. Connect as the admin (TLS ``verify-full`` and SCRAM-SHA-256 only unless the config allows
   less); ``apply`` takes the run's advisory lock there, so two applies never interleave. Read
   the cluster (roles, memberships, databases, slots) and, in
   parallel, every configured database that exists. Plan everything; stop on any error.
3. ``apply`` only: cluster changes (roles, attributes, passwords, memberships, database owners)
   in one transaction; then each ``CREATE DATABASE`` on its own (it cannot run in a
   transaction); then, per database with something to do, one transaction that re-reads the
   catalogue, runs the structural changes (schemas, extensions), re-reads again so grants see
   the objects the extensions created, runs grants and the publication, and commits; then the
   replication slot (which must not run in a transaction that wrote).

Because each step is planned from the catalogue, a run that dies anywhere converges on the next.
A failed statement is explained by its SQLSTATE (``forge_provision.failures``).

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

from forge_provision.catalog import (
    ClusterState,
    DatabaseInfo,
    DatabaseState,
    available_extensions,
    inspect_cluster,
    inspect_database,
)
from forge_provision.failures import explain, explain_connect
from forge_provision.plan import (
    Acting,
    Change,
    Finding,
    Planner,
    _q,
    cdc_settings_warnings,
    cdc_tables,
    drift_publications,
    pending_object_schemas,
    plan_cdc,
    plan_cluster,
    plan_grants,
    plan_structure,
)
from forge_provision.schema import Connection, Database, PostgresConfig
from forgegen.errors import ConfigError, Problem, ProvisionError

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

REQUIRE_AUTH_LIBPQ = 160000  # libpq 16 added require_auth


def connection_params(c: Connection) -> dict[str, Any]:
    """libpq parameters for the admin connection and for password checks: TLS as configured
    (verify-full by default) and, unless ``allow_insecure_auth``, SCRAM-SHA-256 only, so a server
    (or anyone in between) cannot make libpq send a password in clear or as an MD5 hash."""
    import psycopg

    params: dict[str, Any] = {"host": c.host, "port": c.port, "connect_timeout": c.connect_timeout,
                              "sslmode": c.tls.mode, "application_name": APPLICATION_NAME}
    if c.tls.root_cert:
        params["sslrootcert"] = c.tls.root_cert
    if not c.allow_insecure_auth:
        if psycopg.pq.version() < REQUIRE_AUTH_LIBPQ:
            raise ProvisionError(
                f"libpq {psycopg.pq.version()} cannot enforce SCRAM-SHA-256 authentication (require_auth "
                "needs libpq 16 or later), so a server could ask for the password in clear",
                hint="install psycopg[binary] (it bundles a recent libpq), or set "
                     "connection.allow_insecure_auth: true for a server on this machine")
        params["require_auth"] = "scram-sha-256"
    return params


def connect(cfg: PostgresConfig, secrets: Secrets, dbname: str | None = None, *, autocommit: bool = True):
    import psycopg

    c = cfg.connection
    dbname = dbname or c.dbname
    try:
        return psycopg.connect(**connection_params(c), user=c.user, password=secrets.admin_password,
                               dbname=dbname, autocommit=autocommit)
    except psycopg.Error as err:
        reason = redact(str(err).strip(), secrets).replace("\n", " ")
        found = explain_connect(reason, user=c.user, password_env=c.password_env, dbname=dbname,
                                where=f"{c.host}:{c.port}")
        condition = f" [{found.condition}]" if found.condition else ""
        raise ProvisionError(
            f"cannot connect to PostgreSQL at {c.host}:{c.port} (database {dbname!r}) as {c.user!r}: "
            f"{reason}{condition}", hint=found.hint) from err


def statement_error(where: str, doing: str, err: Any, secrets: Secrets, *, broken: bool = False,
                    statement: str | None = None, rolled_back: bool = True) -> ProvisionError:
    """A failed statement as a ProvisionError: the server's message, its SQLSTATE and what to do."""
    text = redact(str(err).strip(), secrets)
    found = explain(getattr(err, "sqlstate", None), text, broken=broken)
    condition = f" [{found.condition}]" if found.condition else ""
    if found.connection_lost:
        message = f"{where}: the connection to PostgreSQL was lost during {doing}: {text}{condition}"
    else:
        message = f"{where}: {doing} failed: {text}{condition}"
    if statement and not found.connection_lost:
        message += f"\n  statement: {statement}"
    return ProvisionError(message, hint=("that transaction was rolled back; " if rolled_back else "") + found.hint)


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
    try:  # the admin connection's TLS and SCRAM-only rules: a role's password is never sent in clear
        psycopg.connect(**connection_params(c), user=role, password=password, dbname=c.dbname).close()
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
        if current.expired and not current.verifier_readable:
            return role.name, "VALID UNTIL has passed, so logging in cannot check the password", None
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

LOCK_KEY = int.from_bytes(b"forge-pv", "big")  # one advisory lock: one apply at a time per server


@dataclass
class DatabasePlan:
    db: Database
    state: DatabaseState
    planner: Planner
    readable: bool = True  # False: ALLOW_CONNECTIONS false, its contents were not read


def _unreadable(db: Database, info: DatabaseInfo) -> DatabasePlan:
    """A database that does not accept connections: apply enables them first when the config says so."""
    planner = Planner()
    if db.allow_connections:
        planner.warnings.append(f"database {_q(db.name)} does not accept connections (ALLOW_CONNECTIONS false): "
                                "apply enables them, then applies its contents, which this plan cannot show")
    elif db.extensions or db.schemas or db.grants or db.cdc:
        planner.warnings.append(f"database {_q(db.name)}: allow_connections is false, so its extensions, schemas, "
                                "grants and CDC are not managed")
    return DatabasePlan(db, DatabaseState(db.name), planner, readable=False)


def _acting(cluster: ClusterState) -> Acting:
    return Acting(cluster.admin, cluster.admin_is_superuser)


def _plan_database(db: Database, state: DatabaseState, info: DatabaseInfo | None,
                   cluster: ClusterState) -> Planner:
    out = Planner()
    structure = plan_structure(db, state)
    out.extend(structure)
    out.extend(plan_grants(db, state, info, pending_object_schemas(db, structure) if state.exists else
                           {e.schema_ or "public" for e in db.extensions}, _acting(cluster)))
    out.extend(plan_cdc(db, state, cluster))
    out.extend(drift_publications(db, state))
    return out


def run(cfg: PostgresConfig, mode: Mode, *, rotate_passwords: bool = False, jobs: int = 4,
        environ: Mapping[str, str] | None = None, lock_timeout: float = 0,
        on_change: Callable[[Change], None] | None = None) -> Outcome:
    """Plan, apply or report drift for ``cfg`` (see the module docstring for the order).

    ``apply`` holds an advisory lock on the admin connection for the whole run: a second apply
    against the same server waits up to ``lock_timeout`` seconds, then says who holds it.
    """
    secrets = read_secrets(cfg, environ)
    c = cfg.connection
    outcome = Outcome(mode, f"{c.host}:{c.port}")
    with connect(cfg, secrets) as admin:
        if mode == "apply":
            _lock(admin, lock_timeout, secrets)
        cluster, db_plans, plan = _plan(cfg, admin, secrets, outcome, rotate_passwords=rotate_passwords, jobs=jobs)
        if plan.errors:
            raise ProvisionError("cannot provision: " + "; ".join(plan.errors), hint="nothing was changed")
        if mode != "apply":
            outcome.changes = plan.changes
            return outcome
        executor = _Executor(secrets, outcome, on_change)
        _apply_cluster(admin, plan, executor)
        _apply_databases(cfg, secrets, db_plans, cluster, executor, jobs)
    return outcome


def _lock(admin: Any, timeout: float, secrets: Secrets) -> None:
    """Take the run's advisory lock, waiting at most ``timeout`` seconds for another run."""
    import psycopg

    if admin.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        return
    if timeout > 0:
        try:
            admin.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout * 1000)}ms",))
            admin.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            admin.execute("RESET lock_timeout")
            return
        except psycopg.errors.LockNotAvailable:
            pass
        except psycopg.Error as err:
            raise statement_error("cluster", "waiting for the run lock", err, secrets) from err
    holder = admin.execute("""
        SELECT a.pid, coalesce(host(a.client_addr), 'local'), a.backend_start::timestamp(0)::text
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted
          AND (l.classid::bigint << 32) | l.objid::bigint = %s""", (LOCK_KEY,)).fetchone()
    who = f" (server pid {holder[0]}, from {holder[1]}, connected at {holder[2]})" if holder else ""
    raise ProvisionError(
        f"another forge-provision apply is in progress against {admin.info.host}:{admin.info.port}{who}; "
        "nothing was changed",
        hint="wait for it to finish and run apply again, or pass --lock-timeout SECONDS to wait for it")


def _plan(cfg: PostgresConfig, admin: Any, secrets: Secrets, outcome: Outcome, *, rotate_passwords: bool,
          jobs: int) -> tuple[ClusterState, list[DatabasePlan], Planner]:
    """Read the cluster and every configured database (in parallel) and plan all of it."""
    cluster = inspect_cluster(admin)
    outcome.queries += cluster.queries

    def read(db: Database) -> DatabasePlan:
        info = cluster.databases.get(db.name)
        if info is None:
            state = DatabaseState.empty(db.name)
        elif not (info.allow_connections and db.allow_connections):
            return _unreadable(db, info)
        else:
            with _statement_errors(db.name, "reading the catalogue", secrets), \
                    connect(cfg, secrets, db.name) as conn:
                state = inspect_database(conn, db.name, tables=cdc_tables(db.cdc), cdc=db.cdc is not None)
        return DatabasePlan(db, state, _plan_database(db, state, info, cluster))

    # Database reads and password checks (PBKDF2, GIL released) overlap on one pool.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        reads = [pool.submit(read, db) for db in cfg.databases]
        to_set = passwords_to_set(cfg, cluster, secrets, rotate=rotate_passwords, warnings=outcome.warnings,
                                  pool=pool)
        db_plans = [f.result() for f in reads]
    verifiers = {role: (_verifier(admin, role, secrets.passwords[role]), reason) for role, reason in to_set.items()}
    plan = plan_cluster(cfg, cluster, verifiers)
    plan.warnings += cdc_settings_warnings(cfg, cluster)
    _check_extensions(admin, db_plans, plan, outcome)
    for p in db_plans:
        plan.extend(p.planner)
        outcome.queries += p.state.queries
    order = {db.name: i for i, db in enumerate(cfg.databases)}
    plan.changes.sort(key=lambda ch: (ch.scope != "", order.get(ch.scope, -1)))
    outcome.warnings += plan.warnings
    outcome.findings = plan.findings
    return cluster, db_plans, plan


def _check_extensions(admin: Any, db_plans: list[DatabasePlan], plan: Planner, outcome: Outcome) -> None:
    missing = sorted({e.name for p in db_plans for e in p.db.extensions if e.name not in p.state.extensions})
    if not missing:
        return
    available = available_extensions(admin, missing)
    outcome.queries += 1
    for name in missing:
        if name not in available:
            plan.errors.append(f"extension {name!r} is not available on the server; install the package "
                               "that provides it (e.g. postgresql-15-<name> or contrib) or remove it")


class _Executor:
    """Runs one change on a connection, records it, and explains a failure by its SQLSTATE."""

    def __init__(self, secrets: Secrets, outcome: Outcome, on_change: Callable[[Change], None] | None) -> None:
        self.secrets, self.outcome, self.on_change = secrets, outcome, on_change
        self.lock = threading.Lock()

    def __call__(self, conn: Any, change: Change) -> None:
        import psycopg

        log.debug("%s: %s", change.scope or "cluster", change.shown.as_string(None))
        try:
            conn.execute(change.statement)
        except psycopg.Error as err:
            where = f"database {change.scope!r}" if change.scope else "cluster"
            in_transaction = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
            raise statement_error(where, f"{change.action} {change.target}", err, self.secrets,
                                  broken=conn.broken, statement=change.shown.as_string(None),
                                  rolled_back=conn.broken or in_transaction) from err
        with self.lock:
            self.outcome.changes.append(change)
            self.outcome.statements += 1
            if self.on_change:
                self.on_change(change)


def _apply_cluster(admin: Any, plan: Planner, execute: _Executor) -> None:
    cluster_changes = [ch for ch in plan.changes if ch.phase == "roles"]
    if cluster_changes:
        with _statement_errors("", "applying cluster changes", execute.secrets), admin.transaction():
            for change in cluster_changes:
                execute(admin, change)
    for change in plan.changes:
        if change.phase == "create-database":
            execute(admin, change)


def _apply_databases(cfg: PostgresConfig, secrets: Secrets, db_plans: list[DatabasePlan], cluster: ClusterState,
                     execute: _Executor, jobs: int) -> None:
    """Per-database changes, in parallel; their lines are reported in config order."""
    pending = [p for p in db_plans if p.db.allow_connections
               and (not p.readable or not p.state.exists or any(ch.phase != "roles" for ch in p.planner.changes))]
    failures: list[ProvisionError] = []

    def apply_one(p: DatabasePlan) -> None:
        try:
            _apply_database(cfg, secrets, p.db, cluster, execute)
        except ProvisionError as err:
            failures.append(err)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(apply_one, pending))
    order = {db.name: i for i, db in enumerate(cfg.databases)}
    outcome = execute.outcome
    outcome.changes.sort(key=lambda ch: (ch.scope != "", order.get(ch.scope, -1)))
    if failures:
        raise ProvisionError("\n".join(str(f) for f in failures),
                             hint=f"{outcome.statements} statement(s) were applied before the failure; "
                                  "run apply again: it continues from what exists")


def _verifier(conn: Any, role: str, password: str) -> str:
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


class _statement_errors:
    """Turn a psycopg error outside one statement (a commit, a dropped connection) into a ProvisionError."""

    def __init__(self, where: str, doing: str, secrets: Secrets) -> None:
        self.where, self.doing, self.secrets = where, doing, secrets

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: Any, tb: Any) -> bool:
        import psycopg

        if isinstance(err, psycopg.Error):
            where = f"database {self.where!r}" if self.where else "cluster"
            raise statement_error(where, self.doing, err, self.secrets,
                                  broken=isinstance(err, psycopg.OperationalError)) from err
        return False


def _apply_database(cfg: PostgresConfig, secrets: Secrets, db: Database, cluster: ClusterState,
                    execute: Callable[[Any, Change], None]) -> None:
    from forge_provision.catalog import database_info

    with _statement_errors(db.name, "applying", secrets), connect(cfg, secrets, db.name, autocommit=False) as conn:
        tables = cdc_tables(db.cdc)
        with conn.transaction():
            state = inspect_database(conn, db.name, tables=tables, cdc=db.cdc is not None)
            structure = plan_structure(db, state)
            for change in structure.changes:
                execute(conn, change)
            if structure.changes:
                state = inspect_database(conn, db.name, tables=tables, cdc=db.cdc is not None)
            for change in plan_grants(db, state, database_info(conn, db.name), acting=_acting(cluster)).changes:
                execute(conn, change)
            cdc = plan_cdc(db, state, cluster)
            for change in cdc.changes:
                if change.phase != "slot":
                    execute(conn, change)
        conn.autocommit = True
        for change in cdc.changes:
            if change.phase == "slot":
                execute(conn, change)
