"""Local infrastructure for the development loop: a throwaway PostgreSQL and Attic server per
service, and the records that let any later run find and stop what a killed run left behind.

Every session (one ``forge test`` level, an ``e2e-prepare``, a ``dev-up``) is a JSON record under
``.forge/dev/``: ``runs/<pid>-<service>.json`` for a run owned by a ``forge`` process (its pid and
start time), ``<service>.json`` for ``forge dev up`` (owned by nobody, until ``forge dev down``).
A record is written *before* anything it names starts, and lists the PostgreSQL and Attic
directories and the process groups started, so a run killed with SIGKILL is cleaned up by the next ``forge test``,
``forge e2e`` or ``forge dev`` (:func:`sweep`): a run record whose owner no longer runs is torn down.

PostgreSQL's data lives in a temporary directory owned by ``postgres`` when Forge runs as root
(the server refuses root), started with ``pg_ctl`` on a free loopback port, password (SCRAM)
authentication for TCP, fsync off. Attic is the real ``atticd`` (``$FORGE_ATTICD`` or PATH) with
its config, SQLite database and local storage in a temporary directory, a fresh HS256 secret, and
one cache created with forge-provision's Attic code.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from forgegen import process
from forgegen.errors import ForgeError, UsageError

log = logging.getLogger(__name__)

DEV_DIR = Path(".forge") / "dev"
ADMIN = "postgres"
PG_TIMEOUT = 120.0
PASSWORD_ENV = "FORGE_DEV_PGPASSWORD"  # the admin password, for forge-provision's derived config


class InfraError(ForgeError):
    """Local infrastructure could not start."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: unwind (``finally`` tears down), then exit 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_held: list[list[int] | None] = [None]  # signals that arrived inside deferred()


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted` for the duration (main thread only)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if _held[0] is not None:
            _held[0].append(signum)
            return
        raise Interrupted(signum)
    previous = {s: signal.signal(s, handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold :class:`Interrupted` back until the block ends (start a process *and* record it).
    Not the signal mask: a child started inside would inherit it."""
    outer = _held[0]
    _held[0] = outer if outer is not None else []
    try:
        yield
    finally:
        held, _held[0] = _held[0], outer
        if outer is None and held:
            raise Interrupted(held[0])


@contextmanager
def shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP while tearing down (a second Ctrl-C must not leave a server)."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
# Processes


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None when it does not run."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def alive(owner: Mapping[str, Any] | None) -> bool:
    """Whether the process a record names (``{"pid", "start"}``) still runs."""
    return owner is not None and start_time(int(owner["pid"])) == owner["start"]


def me() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": start_time(os.getpid())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(group: Mapping[str, Any]) -> None:
    """Stop a recorded process group ``{"pgid", "start"}``: the leader with that start time, or
    members left after the leader exited (a pid that still names a group is not reused)."""
    pgid = int(group["pgid"])
    leader = start_time(pgid)
    if leader is not None and leader != group.get("start"):
        return  # the pid was reused: not ours
    process.kill_group(pgid)


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def pg_bin() -> Path:
    """Where initdb and pg_ctl are: $FORGE_PG_BIN, PostgreSQL 15's directory, else PATH."""
    if os.environ.get("FORGE_PG_BIN"):
        return Path(os.environ["FORGE_PG_BIN"])
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = process.which("initdb")
    if found is None:
        raise InfraError("cannot start PostgreSQL: initdb is not installed",
                         hint="install the PostgreSQL server (Debian: postgresql-15) or set FORGE_PG_BIN")
    return Path(found).resolve().parent


def _as_postgres(*argv: str | Path) -> list[str]:
    args = [str(a) for a in argv]
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Postgres:
    root: str
    port: int
    password: str = field(repr=False)
    database: str

    @property
    def data(self) -> Path:
        return Path(self.root) / "data"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://{ADMIN}:{self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url(), "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": ADMIN,
                "PGDATABASE": self.database, "PGPASSWORD": self.password}


def new_pg_root() -> str:
    """A fresh directory for a cluster, readable only by the server's user."""
    root = Path(tempfile.mkdtemp(prefix=f"forge-dev-pg-{os.getpid()}-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    return str(root)


def start_postgres(root: str, database: str) -> Postgres:
    """initdb into ``root`` and start the server on a free loopback port (another port if one is
    taken between choosing and binding)."""
    bindir = pg_bin()
    password = secrets.token_hex(16)
    pwfile = Path(root) / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        process.run(_as_postgres(bindir / "initdb", "-D", Path(root) / "data", "-U", ADMIN, f"--pwfile={pwfile}",
                                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                 "--locale=C.UTF-8", "--no-sync"), timeout=PG_TIMEOUT, what="initialise PostgreSQL")
    finally:
        pwfile.unlink(missing_ok=True)
    last: ForgeError | None = None
    for _ in range(3):
        pg = Postgres(root=root, port=free_port(), password=password, database=database)
        opts = (f"-c listen_addresses=127.0.0.1 -c port={pg.port} -c unix_socket_directories={root} "
                "-c fsync=off -c full_page_writes=off")
        result = process.run(_as_postgres(bindir / "pg_ctl", "-w", "-D", pg.data, "-l", Path(root) / "server.log",
                                          "-o", opts, "start"), timeout=PG_TIMEOUT, check=False)
        if result.returncode == 0:
            _create_database(bindir, pg)
            return pg
        last = InfraError(f"cannot start PostgreSQL in {root}: pg_ctl exited with {result.returncode}",
                          hint=f"see {root}/server.log")
    assert last is not None
    raise last


def _create_database(bindir: Path, pg: Postgres) -> None:
    if pg.database == ADMIN:
        return
    process.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", ADMIN, pg.database],
                env={"PGPASSWORD": pg.password}, timeout=PG_TIMEOUT, what="create the development database")


def stop_postgres(root: str) -> None:
    """Stop the cluster in ``root`` (immediate shutdown) and remove its directory."""
    data = Path(root) / "data"
    if (data / "postmaster.pid").exists():
        ctl = pg_bin() / "pg_ctl"
        process.run(_as_postgres(ctl, "-D", data, "-m", "immediate", "-w", "stop"), timeout=PG_TIMEOUT, check=False)
        deadline = time.monotonic() + PG_TIMEOUT
        while time.monotonic() < deadline and postgres_running(root):
            time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)


def postgres_running(root: str) -> bool:
    """Whether the postmaster of ``root`` runs (its pid file names a live, non-zombie process)."""
    try:
        pid = int((Path(root) / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return start_time(pid) is not None


def provision(pg: Postgres, config: Path, env_out: dict[str, str], state: Path) -> list[str]:
    """Apply a forge-provision config to the local server: its ``connection`` is replaced by this
    server's; every role ``password_env`` not set in the environment gets a fresh password (added
    to ``env_out``). Returns the databases it declares."""
    from forgegen import yamlsource

    if not config.is_file():
        raise UsageError(f"the provisioning config {config} does not exist",
                         hint="fix services.<service>.dev.infra.postgres.provision in deploy.yaml (relative to it)")
    doc = yamlsource.load_file(config).data
    if not isinstance(doc, dict):
        raise UsageError(f"{config}: not a forge-provision config (a mapping expected)")
    doc = dict(doc)
    doc["connection"] = {"host": "127.0.0.1", "port": pg.port, "user": ADMIN, "password_env": PASSWORD_ENV,
                         "tls": {"mode": "disable"}, "dbname": ADMIN}
    for role in doc.get("roles") or []:
        var = role.get("password_env") if isinstance(role, dict) else None
        if var and var not in os.environ and var not in env_out:
            env_out[var] = secrets.token_hex(12)
    derived = state / "provision.json"
    derived.write_text(json.dumps(doc))
    passwords = {k: v for k, v in env_out.items() if k not in pg.env()}
    process.run(["forge-provision", "postgres", "apply", "--config", str(derived)],
                env={**passwords, PASSWORD_ENV: pg.password}, timeout=600, secrets=[pg.password, *passwords.values()],
                what=f"provision the development PostgreSQL from {config}")
    return [d["name"] for d in doc.get("databases") or [] if isinstance(d, dict) and "name" in d]


# ---------------------------------------------------------------------------------------------
# Attic

ATTIC_TIMEOUT = 60.0
ATTIC_ATTEMPTS = 3  # another port when the chosen one is taken before atticd binds it
# The token lives as long as the server may (a dev session can stay up for months); the server's
# secret dies with the session's directory, and with it every token.
ATTIC_TOKEN_VALIDITY = 366 * 24 * 3600
ATTIC_GRANTS = ("pull", "push", "delete", "create_cache", "configure_cache", "configure_cache_retention",
                "destroy_cache")  # everything, on the one cache
ATTIC_SECRET_ENV = "FORGE_DEV_ATTIC_SECRET"  # how the HS256 secret reaches forge-provision (never argv)


def atticd_bin(service: str) -> str:
    """The ``atticd`` to run: ``$FORGE_ATTICD``, else the one on PATH; a usage error (exit 2)
    naming ``services.S.dev.infra.attic`` without one."""
    where = f"services.{service}.dev.infra.attic"
    configured = os.environ.get("FORGE_ATTICD", "").strip()
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return os.path.abspath(configured)  # atticd runs in its own directory
        raise UsageError(f"{where}: cannot start the Attic server: FORGE_ATTICD={configured} is not an executable file",
                         hint="point FORGE_ATTICD at the atticd binary (package attic-server), or unset it to use "
                              "atticd from PATH")
    found = process.which("atticd")
    if found is None:
        raise UsageError(f"{where}: cannot start the Attic server: atticd is not on PATH (and FORGE_ATTICD is not set)",
                         hint="install attic-server (nixpkgs `attic-server`, or build zhaofengli/attic) so that atticd "
                              "is on PATH, or set FORGE_ATTICD to its path; or remove dev.infra.attic from deploy.yaml")
    return found


@dataclass
class Attic:
    root: str
    port: int
    cache: str
    token: str = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """The variables Forge's Attic code reads (:mod:`forgegen.runtime.attic_env`)."""
        return {"ATTIC_CACHE_URL": self.endpoint, "ATTIC_CACHE_NAME": self.cache, "ATTIC_TOKEN": self.token}


def new_attic_root() -> str:
    """A fresh directory (mode 0700) for the server's config, database, storage and token."""
    return tempfile.mkdtemp(prefix=f"forge-dev-attic-{os.getpid()}-")


def attic_config(root: Path, port: int, secret_base64: str) -> str:
    """atticd's ``server.toml``, in the layout of zhaofengli/attic at commit 047060c
    (server/src/config.rs: the HS256 secret under ``[jwt.signing]``, ``[chunking]`` required,
    ``deny_unknown_fields`` at the top). Loopback only, SQLite and local storage under ``root``,
    garbage collection off. Strings are JSON strings, which TOML reads as basic strings."""
    q = json.dumps
    return ("# atticd configuration of a Forge development session (zhaofengli/attic 047060c layout)\n"
            f"listen = {q(f'127.0.0.1:{port}')}\nallowed-hosts = []\napi-endpoint = {q(f'http://127.0.0.1:{port}/')}\n"
            f"\n[database]\nurl = {q(f'sqlite://{root}/server.db?mode=rwc')}\n"
            f"\n[storage]\ntype = \"local\"\npath = {q(str(root / 'storage'))}\n"
            "\n[chunking]\nnar-size-threshold = 65536\nmin-size = 16384\navg-size = 65536\nmax-size = 262144\n"
            "\n[compression]\ntype = \"zstd\"\n\n[garbage-collection]\ninterval = \"0s\"\n"
            f"\n[jwt.signing]\ntoken-hs256-secret-base64 = {q(secret_base64)}\n")


def start_attic(binary: str, root: str, cache: str, public: bool, spawned: Callable[[dict[str, Any]], None]) -> Attic:
    """Start ``atticd`` in ``root`` on a free loopback port with a fresh HS256 secret, wait until
    it answers HTTP, then create ``cache`` and mint its token with forge-provision.
    ``spawned`` records the process group the moment it exists (before it is waited for)."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    (Path(root) / "storage").mkdir(exist_ok=True)
    config, log_path = Path(root) / "server.toml", Path(root) / "server.log"
    last = ""
    for _ in range(ATTIC_ATTEMPTS):
        port = free_port()
        _write_private(config, attic_config(Path(root), port, secret))
        proc = _spawn_atticd(binary, config, log_path, spawned, port)
        last = _wait_attic(proc, port, log_path)
        if not last:
            break
    else:
        raise InfraError(f"cannot start the Attic server in {root}: {last}", hint=f"see {root}/server.log")
    endpoint = f"http://127.0.0.1:{port}/"
    return Attic(root=root, port=port, cache=cache, token=provision_attic(Path(root), endpoint, secret, cache, public))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _spawn_atticd(binary: str, config: Path, log_path: Path, spawned: Callable[[dict[str, Any]], None],
                  port: int) -> Any:
    with log_path.open("ab") as out, deferred():  # a signal now is handled once the process is recorded
        proc = process.spawn([binary, "-f", str(config), "--mode", "monolithic"], cwd=config.parent,
                             stdout=out, stderr=process.STDOUT, new_session=True)
        spawned({"pgid": proc.pid, "start": start_time(proc.pid), "port": port})
    return proc


def _wait_attic(proc: Any, port: int, log_path: Path) -> str:
    """"" once the server answers HTTP on ``port``; else why not (it exited, or the deadline)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + ATTIC_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n    ".join(log_path.read_text(errors="replace").strip().splitlines()[-10:])
            return f"atticd exited with {proc.returncode}\n  log ({log_path}):\n    {tail or '(empty)'}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310 - loopback
                return ""
        except urllib.error.HTTPError:
            return ""  # any HTTP answer: the server is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    process.kill_group(proc.pid)
    return f"atticd did not answer on 127.0.0.1:{port} within {ATTIC_TIMEOUT:g}s"


def provision_attic(root: Path, endpoint: str, secret: str, cache: str, public: bool) -> str:
    """``forge-provision attic apply`` on the local server: create ``cache`` (with its ten-minute
    admin token minted from the secret) and mint the session's token into ``root/token``; the
    token. The secret goes by the environment, the token by a file (mode 0600): neither in argv."""
    token_file = root / "token"
    doc = {"version": 1, "server": {"endpoint": endpoint, "token_secret_env": ATTIC_SECRET_ENV},
           "caches": [{"name": cache, "public": public}],
           "tokens": [{"sub": "forge-dev", "validity": ATTIC_TOKEN_VALIDITY, "token_file": str(token_file),
                       **{grant: [cache] for grant in ATTIC_GRANTS}}]}
    derived = root / "provision.json"
    derived.write_text(json.dumps(doc))
    process.run(["forge-provision", "attic", "apply", "--config", str(derived)], env={ATTIC_SECRET_ENV: secret},
                timeout=120, secrets=[secret], what=f"create the Attic cache {cache} on the development server")
    return token_file.read_text().strip()


def attic_running(entry: Mapping[str, Any]) -> bool:
    """Whether the atticd a record names (``pgid`` and ``start``) runs."""
    return entry.get("pgid") is not None and alive({"pid": entry["pgid"], "start": entry.get("start")})


def stop_attic(entry: Mapping[str, Any]) -> None:
    """Stop the recorded atticd, and one started but not yet recorded (killed in between: found by
    its config path in the command line), then remove its directory."""
    if entry.get("pgid") is not None:
        stop_group(entry)
    config = entry.get("config")
    if config:
        for pid in _pids_with_argument(str(config)):
            process.kill_group(pid)
    shutil.rmtree(entry["root"], ignore_errors=True)


def _pids_with_argument(argument: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in args and start_time(int(cmdline.parent.name)) is not None:
            found.append(int(cmdline.parent.name))
    return found


# ---------------------------------------------------------------------------------------------
# Records


def dev_dir(root: Path) -> Path:
    return root / DEV_DIR


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def teardown(record: Mapping[str, Any]) -> None:
    """Stop every process group and the PostgreSQL a record names (each at most once)."""
    for group in reversed(record.get("processes") or []):
        stop_group(group)
    attic = record.get("attic")
    if attic and attic.get("root"):
        stop_attic(attic)
    pg = record.get("postgres")
    if pg and pg.get("root"):
        stop_postgres(pg["root"])


def records(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every record under ``.forge/dev`` (dev sessions, then runs)."""
    base = dev_dir(root)
    paths = sorted(base.glob("*.json")) + sorted((base / "runs").glob("*.json"))
    return [(p, r) for p in paths if (r := read_record(p)) is not None]


def sweep(root: Path, say: Any = None) -> list[str]:
    """Tear down the runs whose owner no longer runs (killed before its own teardown)."""
    cleaned = []
    for path, record in records(root):
        if record.get("kind") != "run" or alive(record.get("owner")):
            continue
        with shielded():
            teardown(record)
            path.unlink(missing_ok=True)
        what = f"{record.get('service')} ({record.get('what', 'run')}, pid {record.get('owner', {}).get('pid')})"
        cleaned.append(what)
        if say:
            say(f"forge: stopped what an interrupted run left: {what}")
    return cleaned


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """KEY=value lines (values single-quoted for the shell), readable by the owner only."""
    lines = [f"{k}='" + v.replace("'", "'\\''") + "'" for k, v in sorted(env.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and value.startswith("'") and value.endswith("'"):
            env[key] = value[1:-1].replace("'\\''", "'")
    return env
