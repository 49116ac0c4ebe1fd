"""What a PostgreSQL error means and what to do next, from its SQLSTATE.

Errors raised by a statement carry a SQLSTATE (``err.sqlstate``). Errors raised while
connecting do not: libpq reports them as text, with the server's ``FATAL`` message inside. For
those, :func:`connect_sqlstate` recognises the server's English messages (and libpq's own:
refused TLS, a refused authentication method, an unreachable host) and gives the SQLSTATE the
server sent (or the class 08 code libpq would use). Anything unrecognised keeps its text and a
hint that names the settings to check.

This module imports nothing from psycopg: it reads ``sqlstate`` and ``str(err)`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The names PostgreSQL gives the codes we explain (Appendix A of its manual).
NAMES = {
    "08000": "connection_exception", "08001": "sqlclient_unable_to_establish_sqlconnection",
    "08003": "connection_does_not_exist", "08006": "connection_failure",
    "08P01": "protocol_violation", "28000": "invalid_authorization_specification",
    "28P01": "invalid_password", "3D000": "invalid_catalog_name", "53300": "too_many_connections",
    "53400": "configuration_limit_exceeded", "55000": "object_not_in_prerequisite_state",
    "55006": "object_in_use", "55P03": "lock_not_available", "57014": "query_canceled",
    "57P01": "admin_shutdown", "57P02": "crash_shutdown", "57P03": "cannot_connect_now",
}

# (pattern in the text of a connection error, SQLSTATE): the server's FATAL messages first.
_CONNECT_PATTERNS = (
    (r"password authentication failed", "28P01"),
    (r"no pg_hba\.conf entry", "28000"),
    (r"is not permitted to log in", "28000"),
    (r"database \".*\" does not exist", "3D000"),
    (r"not currently accepting connections", "55000"),
    (r"too many clients|remaining connection slots are reserved|too many connections for", "53300"),
    (r"the database system is (starting up|shutting down|in recovery mode)", "57P03"),
    (r"server does not support SSL|SSL|certificate|TLS", "08001"),
    (r"authentication method requirement|server requested .* password|channel binding", "08001"),
)


@dataclass(frozen=True)
class Diagnosis:
    sqlstate: str | None
    condition: str  # e.g. "invalid_password (28P01)"; "" when unknown
    hint: str
    connection_lost: bool  # the session is gone: whatever it had not committed was rolled back


def connect_sqlstate(text: str) -> str | None:
    for pattern, code in _CONNECT_PATTERNS:
        if re.search(pattern, text):
            return code
    return "08001" if "connection to server" in text else None


def _condition(code: str | None) -> str:
    if not code:
        return ""
    return f"{NAMES[code]} ({code})" if code in NAMES else f"SQLSTATE {code}"


def explain_connect(text: str, *, user: str, password_env: str | None, dbname: str, where: str) -> Diagnosis:
    """A failed connection: what the server (or libpq) refused and which setting to look at."""
    code = connect_sqlstate(text)
    pw = f"${password_env}" if password_env else "connection.password_env (none is set)"
    if code == "28P01":
        hint = f"the server rejected the password of user {user!r}: check {pw}"
    elif code == "28000":
        hint = (f"the server refuses {user!r} here: pg_hba.conf has no line for this user, database and "
                "address, or the role cannot log in; fix pg_hba.conf or connection.user/host")
    elif code == "3D000":
        hint = f"set connection.dbname to a database that exists (it is {dbname!r}; 'postgres' usually exists)"
    elif code == "53300":
        hint = "the server has no free connection slots: lower --jobs, or raise max_connections on the server"
    elif code == "57P03":
        hint = "the server is starting up or shutting down: run again once it accepts connections"
    elif code == "55000":
        hint = (f"database {dbname!r} does not allow connections (ALLOW_CONNECTIONS false): "
                "set allow_connections: true for it, or ALTER DATABASE … ALLOW_CONNECTIONS true")
    elif re.search(r"authentication method requirement|server requested .* password", text):
        hint = ("the server asked for an authentication weaker than SCRAM-SHA-256, so the password was not "
                "sent: configure scram-sha-256 in the server's pg_hba.conf (and password_encryption); "
                "only for a server on this machine, set connection.allow_insecure_auth: true")
    elif re.search(r"server does not support SSL", text):
        hint = ("the server does not offer TLS: enable ssl on the server; only for a server on this machine, "
                "set connection.tls.mode: disable")
    elif re.search(r"certificate|SSL|TLS", text):
        hint = ("TLS verification failed: set connection.tls.root_cert to the CA that signed the server's "
                "certificate (or 'system'), and connect with the host name in that certificate")
    else:
        hint = f"check that the server is running and reachable at {where}, and connection.host/port"
    return Diagnosis(code, _condition(code), hint, False)


SERVER_SETTINGS = {"wal_level": "wal_level = logical", "max_replication_slots": "a larger max_replication_slots",
                   "max_wal_senders": "a larger max_wal_senders"}


def explain(sqlstate: str | None, text: str, *, broken: bool = False) -> Diagnosis:
    """A failed statement, by its SQLSTATE."""
    code = sqlstate
    again = "run apply again: it continues from what exists"
    lost = broken or bool(code and (code.startswith("08") or code in ("57P01", "57P02")))
    settings = [want for name, want in SERVER_SETTINGS.items() if name in text]
    if code in ("55000", "53400") and settings:
        hint = (f"set {' and '.join(settings)} on the server (ALTER SYSTEM SET …, or postgresql.conf) and "
                f"restart it; then {again}")
    elif code == "55000":
        hint = f"the server is not in a state that allows this (see its message); fix that, then {again}"
    elif code == "53400" and "replication slot" in text:
        hint = f"raise max_replication_slots on the server (and restart it) or drop unused slots; then {again}"
    elif code == "53400":
        hint = f"a server limit was reached (see its message): raise it, then {again}"
    elif code == "53300":
        hint = f"the server has no free connection slots: lower --jobs or raise max_connections; then {again}"
    elif code == "55P03":
        hint = f"another session holds a lock this statement needs (or lock_timeout is set): {again} later"
    elif code == "57014":
        hint = f"the statement was canceled (statement_timeout, or an operator): {again}"
    elif lost:
        hint = f"the connection to PostgreSQL was lost (server restart, killed backend, network): {again}"
    else:
        hint = f"fix the cause, then {again}"
    return Diagnosis(code, _condition(code), hint, lost)
