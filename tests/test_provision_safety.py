"""forge-provision: refused schemas, classified server errors, one apply at a time, safe auth (issues 12, 13)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from forge_provision.cli import main
from tests.fixtures.postgres import start_cluster, stop_cluster


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


# -- server errors, classified by SQLSTATE (issue 13.13) ---------------------------------------------

def write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "db.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def replica_only_server():
    """A second cluster whose settings cannot serve CDC: wal_level replica, no free slot, no senders."""
    server = start_cluster({"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "0"})
    try:
        server.query("SELECT pg_create_physical_replication_slot('standby')")  # the only free slot
        yield server
    finally:
        stop_cluster(server)


def cdc_config(server) -> dict:
    return server.config(
        [{"name": "cdc", "login": True, "replication": True, "password_env": "CDC_PASSWORD"}],
        [{"name": "events", "cdc": {"role": "cdc", "publication": "events_pub", "slot": "events_slot"}}])


@pytest.mark.postgres
def test_plan_warns_and_apply_explains_when_the_server_cannot_serve_cdc(replica_only_server, tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("PGADMIN_PASSWORD", replica_only_server.admin_password)
    monkeypatch.setenv("CDC_PASSWORD", "cdc-pw")
    path = write(tmp_path, cdc_config(replica_only_server))
    assert main(["postgres", "plan", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: database \"events\": CDC needs wal_level = logical but the server has 'replica'" in err
    assert "max_replication_slots is 1 and 1 slot(s) exist" in err and "max_wal_senders is 0" in err
    assert main(["postgres", "apply", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "create replication slot \"events_slot\" failed" in err
    assert "object_not_in_prerequisite_state" in err
    assert "set wal_level = logical" in err and "restart" in err
    assert "connection to PostgreSQL was lost" not in err


@pytest.mark.postgres
def test_connection_failures_say_what_was_refused_and_what_to_check(pg, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PGADMIN_PASSWORD", "not-the-password")
    path = write(tmp_path, pg.config())
    assert main(["postgres", "plan", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "password authentication failed" in err
    assert "hint: the server rejected the password of user 'postgres': check $PGADMIN_PASSWORD" in err
    assert "not-the-password" not in err

    monkeypatch.setenv("PGADMIN_PASSWORD", pg.admin_password)
    cfg = pg.config()
    cfg["connection"]["dbname"] = "nope"
    assert main(["postgres", "plan", "--config", str(write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err
    assert "database \"nope\" does not exist" in err
    assert "hint: set connection.dbname to a database that exists" in err


# -- one apply at a time (issue 13.14) -----------------------------------------------------------

def start_apply(path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forge_provision.cli", "postgres", "apply", "--config", str(path),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for(pg, query: str) -> None:
    deadline = time.monotonic() + 60
    while not pg.query(query):
        assert time.monotonic() < deadline, f"never true: {query}"
        time.sleep(0.05)


@pytest.mark.postgres
def test_a_second_apply_says_another_is_in_progress_or_waits_for_it(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("APP_PASSWORD", "app-pw")
    cfg = pg.config([{"name": "app", "login": True, "password_env": "APP_PASSWORD", "connection_limit": 20}],
                    [{"name": "app", "owner": "app"}])
    path = write(tmp_path, cfg)
    assert main(["postgres", "apply", "--config", str(path)]) == 0
    pg.query("ALTER ROLE app CONNECTION LIMIT 3")
    blocker = pg.connect(autocommit=False)
    try:
        blocker.execute("ALTER ROLE app CONNECTION LIMIT 4")  # holds the role's row: the first apply waits
        first = start_apply(path)
        wait_for(pg, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'forge-provision' "
                     "AND wait_event_type = 'Lock' AND wait_event <> 'advisory'")
        (holder,) = pg.query("SELECT pid FROM pg_stat_activity WHERE application_name = 'forge-provision'")[0]

        second = start_apply(path)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert "another forge-provision apply is in progress" in err and f"server pid {holder}" in err
        assert "--lock-timeout" in err and "Traceback" not in err

        third = start_apply(path, "--lock-timeout", "120")
        wait_for(pg, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'forge-provision' "
                     "AND wait_event = 'advisory'")
    finally:
        blocker.rollback()
        blocker.close()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    assert "no changes" in out
    assert pg.query("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app'") == [(20,)]


# -- TLS and authentication: no password in clear (issue 12.4) -----------------------------------------

class CleartextPasswordServer:
    """A fake PostgreSQL server that declines TLS and asks for the password in clear.

    It speaks the start of the real protocol: SSLRequest / GSSENCRequest answered 'N', then the
    StartupMessage answered with AuthenticationCleartextPassword; whatever the client sends next
    is kept in ``received``.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        self.received += data
        return data

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    while True:
                        length = int.from_bytes(self._read(conn, 4), "big")
                        body = self._read(conn, length - 4)
                        if body[:4] in (b"\x04\xd2\x16\x2f", b"\x04\xd2\x16\x30"):  # SSLRequest, GSSENCRequest
                            conn.sendall(b"N")
                            continue
                        break
                    conn.sendall(b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big"))
                    kind = self._read(conn, 1)
                    length = int.from_bytes(self._read(conn, 4), "big")
                    self._read(conn, length - 4)
                    if kind == b"p":
                        conn.sendall(b"E" + (5).to_bytes(4, "big") + b"\x00")
                except (ConnectionError, OSError):
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def cleartext_server():
    server = CleartextPasswordServer()
    yield server
    server.close()


SECRET = "admin-secret-never-in-clear"


def fake_config(server: CleartextPasswordServer, **connection) -> dict:
    return {"version": 1, "connection": {"host": "127.0.0.1", "port": server.port, "password_env": "PGADMIN_PASSWORD",
                                         **connection}}


def test_default_connection_requires_tls_and_never_sends_the_password(cleartext_server, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv("PGADMIN_PASSWORD", SECRET)
    assert main(["postgres", "plan", "--config", str(write(tmp_path, fake_config(cleartext_server)))]) == 1
    err = capsys.readouterr().err
    assert "server does not support SSL" in err
    assert "hint: the server does not offer TLS" in err and "tls.mode: disable" in err
    assert SECRET.encode() not in cleartext_server.received
    assert b"user\x00" not in cleartext_server.received  # not even the startup message went out


def test_without_tls_only_scram_is_accepted_and_the_password_stays_home(cleartext_server, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setenv("PGADMIN_PASSWORD", SECRET)
    cfg = fake_config(cleartext_server, tls={"mode": "disable"})
    assert main(["postgres", "plan", "--config", str(write(tmp_path, cfg))]) == 1
    err = capsys.readouterr().err
    assert "server requested a cleartext password" in err
    assert "the password was not sent" in err and "allow_insecure_auth: true" in err
    assert SECRET.encode() not in cleartext_server.received


def test_role_password_checks_follow_the_same_rules(cleartext_server, monkeypatch):
    from forge_provision.postgres import _login_works
    from forge_provision.schema import parse_postgres

    cfg = parse_postgres(fake_config(cleartext_server, tls={"mode": "disable"}))
    assert _login_works(cfg, "app", "role-secret-never-in-clear") is None  # cannot tell: left unchanged
    assert b"role-secret-never-in-clear" not in cleartext_server.received


def test_allow_insecure_auth_is_the_explicit_way_to_send_a_cleartext_password(cleartext_server, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("PGADMIN_PASSWORD", SECRET)
    cfg = fake_config(cleartext_server, tls={"mode": "disable"}, allow_insecure_auth=True)
    assert main(["postgres", "plan", "--config", str(write(tmp_path, cfg))]) == 1
    assert SECRET.encode() in cleartext_server.received  # the fake server does capture what is sent


def test_secrets_do_not_show_in_repr():
    from forge_provision.postgres import Secrets

    secrets = Secrets("admin-pw", {"app": "app-pw"})
    assert "admin-pw" not in repr(secrets) and "app-pw" not in repr(secrets)
