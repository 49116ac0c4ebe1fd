"""The development loop: ``forge test`` (the test pyramid), ``forge e2e prepare|run`` and
``forge dev up|down|status``, with the local infrastructure of :mod:`forgegen.runtime.infra`.

A service's levels run in order (unit, integration, e2e), each in the service's directory as
``bash -c 'COMMAND "$@"'`` in a process group of its own; the first failing level stops the
pyramid and is named. ``dev.test``, when set, is one command that replaces the pyramid. The
integration level gets the service's ``dev.infra`` (a throwaway PostgreSQL, an Attic cache), the
e2e level that and the service itself (``dev.start`` on ``$PORT``, ready when ``dev.health``
answers 2xx).
Whatever a level starts is torn down when it ends, fails, or is interrupted (SIGINT, SIGTERM,
SIGHUP); a run killed outright is cleaned up by the next one (see :mod:`infra`).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgegen import process
from forgegen.errors import ForgeError, UsageError
from forgegen.runtime import infra
from forgegen.runtime.steps import Step

if TYPE_CHECKING:
    from forgegen.plan import Plan, ServicePlan

LEVELS = ("unit", "integration", "e2e")
RESULTS_DIR = Path(".forge") / "test-results"
CHROMIUM = Path("/usr/bin/chromium")


class TestsFailed(ForgeError):
    """A test level failed (exit 1); the report names it."""


class ServiceFailed(ForgeError):
    """The service started for e2e tests exited or never became healthy."""


@dataclass
class Context:
    root: Path  # the repository root: services' paths and .forge/ are relative to it
    say: Callable[[str], None]
    stdout: int | None = None  # where commands' stdout goes (stderr with --json)
    args: tuple[str, ...] = ()  # extra arguments for the command ("$@")


# ---------------------------------------------------------------------------------------------
# Sessions: what one level (or dev-up, or e2e-prepare) starts, recorded before it starts


@dataclass
class Session:
    ctx: Context
    svc: ServicePlan
    what: str
    path: Path
    owned: bool = True  # a run owned by this process (False: a dev session, until `forge dev down`)
    env: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.record = self.record or {"service": self.svc.name, "what": self.what,
                                      "kind": "run" if self.owned else "dev",
                                      "owner": infra.me() if self.owned else None,
                                      "postgres": None, "attic": None, "processes": []}

    def save(self) -> None:
        infra.write_record(self.path, self.record)

    def close(self) -> None:
        with infra.shielded():
            infra.teardown(self.record)
            self.path.unlink(missing_ok=True)

    def start_infra(self) -> None:
        """The service's ``dev.infra``: PostgreSQL, then Attic (whose ``atticd`` is looked for
        before anything starts: without one, nothing does)."""
        atticd = infra.atticd_bin(self.svc.name) if self.svc.dev.attic is not None else None
        if self.svc.dev.postgres is not None:
            self.start_postgres()
        if atticd is not None:
            self.start_attic(atticd)

    def start_attic(self, binary: str) -> None:
        plan = self.svc.dev.attic
        assert plan is not None
        root = infra.new_attic_root()
        entry: dict[str, Any] = {"root": root, "config": str(Path(root) / "server.toml"), "cache": plan.cache}
        self.record["attic"] = entry
        self.save()

        def spawned(group: dict[str, Any]) -> None:
            entry.update(group)
            self.save()

        self.ctx.say(f"forge: {self.svc.name}: starting Attic ({binary})")
        attic = infra.start_attic(binary, root, plan.cache, plan.public, spawned)
        self.env.update(attic.env())
        self.ctx.say(f"forge: {self.svc.name}: Attic on {attic.endpoint} (cache {attic.cache}"
                     + (", public)" if plan.public else ")"))

    def start_postgres(self) -> None:
        pg_plan = self.svc.dev.postgres
        assert pg_plan is not None
        root = infra.new_pg_root()
        self.record["postgres"] = {"root": root}
        self.save()
        self.ctx.say(f"forge: {self.svc.name}: starting PostgreSQL")
        pg = infra.start_postgres(root, database=self.svc.name.replace("-", "_"))
        self.record["postgres"].update(port=pg.port, database=pg.database)
        self.save()
        self.env.update(pg.env())
        if pg_plan.provision:
            databases = infra.provision(pg, self.ctx.root / pg_plan.provision, self.env, Path(root))
            if databases:
                self.env.update(DATABASE_URL=pg.url(databases[0]), PGDATABASE=databases[0])
        self.ctx.say(f"forge: {self.svc.name}: PostgreSQL on 127.0.0.1:{pg.port} ({self.env['PGDATABASE']})")

    def spawn(self, name: str, command: str, env: dict[str, str], *, log: Path | None = None,
              args: tuple[str, ...] = ()) -> Any:
        """``bash -c 'COMMAND "$@"'`` in the service's directory, in a process group of its own
        (``"$@"`` only when there are ``args``: a compound command such as a loop stays valid)."""
        dev_path = os.environ.get("FORGE_DEV_PATH")  # the type's tools (the flake app sets it)
        if dev_path:
            env = {**env, "PATH": f"{dev_path}:{env.get('PATH', os.environ.get('PATH', ''))}"}
        out = log.open("ab") if log else None
        try:
            with infra.deferred():  # a signal now is handled once the process is recorded
                script = f'{command} "$@"' if args else command
                proc = process.spawn(["bash", "-c", script, f"{name}:{self.svc.name}", *args],
                                     cwd=service_dir(self.ctx, self.svc), env=env, new_session=True,
                                     stdout=out if out else self.ctx.stdout, stderr=process.STDOUT if out else None)
                self.record["processes"].append({"name": name, "pgid": proc.pid, "start": infra.start_time(proc.pid),
                                                 **({"log": str(log)} if log else {})})
                self.save()
        finally:
            if out:
                out.close()
        return proc

    def start_service(self, log: Path) -> str:
        """Run ``dev.start`` on a free port (output to ``log``) and wait for ``dev.health``; the base URL."""
        dev = self.svc.dev
        if dev.start is None:
            raise UsageError(f"{self.svc.name}: services.{self.svc.name}.dev.start is not configured",
                             hint="set the command that runs the service on $PORT in deploy.yaml, then forgegen sync")
        port = infra.free_port()
        base = f"http://127.0.0.1:{port}"
        self.env.update(PORT=str(port), FORGE_BASE_URL=base)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"")
        self.ctx.say(f"forge: {self.svc.name}: starting `{dev.start}` on port {port} (log: {log})")
        proc = self.spawn("start", dev.start, self.env, log=log)
        self.record["port"] = port
        self.save()
        wait_ready(self.svc, proc, port, log)
        return base


def service_dir(ctx: Context, svc: ServicePlan) -> Path:
    directory = ctx.root / svc.path
    if not directory.is_dir():
        raise UsageError(f"{svc.name}: directory {directory} not found",
                         hint="run forge from the repository root, or fix services." + svc.name + ".path")
    return directory


def wait_ready(svc: ServicePlan, proc: Any, port: int, log: Path) -> None:
    """Until ``dev.health`` answers 2xx (or, without one, the port accepts connections); fails
    at once when the service exits, and after ``dev.health_timeout``."""
    from forgegen import pattern

    url = pattern.fill(svc.dev.health, {"port": str(port)}) if svc.dev.health else None
    deadline = time.monotonic() + svc.dev.health_timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceFailed(f"{svc.name}: `{svc.dev.start}` exited with {proc.returncode} before it was ready"
                                f"\n  log ({log}):\n    " + _tail(log), hint="run the start command by hand to see why")
        ok, last = _probe(url, port)
        if ok:
            return
        time.sleep(0.2)
    raise ServiceFailed(f"{svc.name}: not ready within {svc.dev.health_timeout:g}s ({url or f'port {port}'}: {last})"
                        f"\n  log ({log}):\n    " + _tail(log),
                        hint=f"raise services.{svc.name}.dev.health_timeout, or check dev.health")


def _probe(url: str | None, port: int) -> tuple[bool, str]:
    if url is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True, "accepting connections"
        except OSError as err:
            return False, str(err)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a URL the user configured
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return False, str(getattr(err, "reason", err))


def _tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n    ".join(text.strip().splitlines()[-lines:]) or "(empty)"


# ---------------------------------------------------------------------------------------------
# The pyramid


def levels_of(svc: ServicePlan) -> list[tuple[str, str | None]]:
    if svc.dev.test is not None:
        return [("test", svc.dev.test)]
    return [(lv, svc.dev.level(lv)) for lv in LEVELS]


def select_levels(svc: ServicePlan, only: str | None) -> list[tuple[str, str | None]]:
    """The levels to run; bad or unconfigured requests are usage errors (exit 2)."""
    levels = levels_of(svc)
    if only is not None:
        known = dict(levels)
        if only not in known:
            if only in LEVELS:  # dev.test is set
                raise UsageError(f"{svc.name}: services.{svc.name}.dev.test replaces the test pyramid, so there is "
                                 f"no {only} level", hint=f"run `forge test {svc.name}`, or unset dev.test")
            raise UsageError(f"{svc.name}: unknown test level {only!r}; use one of: {', '.join(LEVELS)}")
        if known[only] is None:
            raise UsageError(f"{svc.name}: the {only} level is not configured",
                             hint=f"set services.{svc.name}.dev.{only} in deploy.yaml and run forgegen sync")
        return [(only, known[only])]
    if all(cmd is None for _, cmd in levels):
        raise UsageError(f"{svc.name}: no test level is configured ({svc.type} services have no defaults)",
                         hint=f"set services.{svc.name}.dev.unit, .integration or .e2e (or dev.test) in deploy.yaml")
    return levels


def level_env(ctx: Context, svc: ServicePlan, level: str) -> dict[str, str]:
    results = ctx.root / RESULTS_DIR / svc.name / level
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    env = {"FORGE_TEST_RESULTS": str(results), "FORGE_SERVICE": svc.name, "FORGE_TEST_LEVEL": level}
    if CHROMIUM.exists():
        env["CHROMIUM_PATH"] = str(CHROMIUM)
    return env


def run_level(ctx: Context, svc: ServicePlan, level: str, command: str, *,
              against: dict[str, str] | None = None, log: Path | None = None) -> int:
    """One level with what it needs started first, and stopped after; the command's exit code.
    ``against``: the environment of a deployed service to test (FORGE_BASE_URL, ...): nothing is
    started locally. ``log``: where the command's output goes (else ``ctx.stdout``)."""
    path = infra.dev_dir(ctx.root) / "runs" / f"{os.getpid()}-{svc.name}.json"
    session = Session(ctx, svc, f"test {level}", path)
    session.save()
    try:
        env = level_env(ctx, svc, level)
        if against is None and level in ("integration", "e2e", "test"):
            session.start_infra()
        if against is None and level == "e2e" and svc.dev.start is not None:
            session.start_service(Path(env["FORGE_TEST_RESULTS"]) / "service.log")
        proc = session.spawn(level, command, {**session.env, **env, **(against or {})}, args=ctx.args, log=log)
        code: int = proc.wait()
        return code
    finally:
        session.close()


def run_levels(ctx: Context, svc: ServicePlan, levels: list[tuple[str, str | None]], *,
               against: dict[str, str] | None = None, keep_log: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """Run ``levels`` in order (a level without a command is ``not-configured``); after the first
    failing one the rest are ``not-run``. The entries and the failed level. ``keep_log``: each
    level's output goes to ``output.log`` in its results directory (the entry's ``log``)."""
    entries: list[dict[str, Any]] = []
    failed: str | None = None
    for name, command in levels:
        entry: dict[str, Any] = {"level": name, "command": command}
        entries.append(entry)
        if command is None:
            entry["outcome"] = "not-configured"
            ctx.say(f"forge test {svc.name}:{name}: not configured (services.{svc.name}.dev.{name})")
            continue
        if failed is not None:
            entry["outcome"] = "not-run"
            continue
        ctx.say(f"forge test {svc.name}:{name}: {command}")
        results = ctx.root / RESULTS_DIR / svc.name / name
        log = results / "output.log" if keep_log else None  # (level_env empties results first)
        code = run_level(ctx, svc, name, command, against=against, log=log)
        entry.update(outcome="passed" if code == 0 else "failed", exit_code=code, results=str(results),
                     **({"log": str(log)} if log else {}))
        ctx.say(f"forge test {svc.name}:{name}: {entry['outcome']}" + (f" (exit {code})" if code else ""))
        if code != 0:
            failed = name
    return entries, failed


def pyramid(ctx: Context, svc: ServicePlan, only: str | None) -> dict[str, Any]:
    entries, failed = run_levels(ctx, svc, select_levels(svc, only))
    return {"service": svc.name, "outcome": "failed" if failed else "passed", "failed_level": failed,
            "levels": entries}


def run_tests(ctx: Context, plan: Plan, target: str | None) -> dict[str, Any]:
    """``forge test [SERVICE[:LEVEL]]``: the report; raises :class:`TestsFailed` after it when a
    level failed (the CLI prints the report first)."""
    services, only = _targets(plan, target)
    infra.sweep(ctx.root, ctx.say)
    with infra.interruptible():
        reports = [pyramid(ctx, svc, only) for svc in services]
    failed = [r for r in reports if r["failed_level"]]
    return {"command": "test", "target": target or plan.project, "outcome": "failed" if failed else "passed",
            "services": reports}


def raise_for_tests(doc: dict[str, Any]) -> None:
    failed = [r for r in doc["services"] if r["failed_level"]]
    if failed:
        raise TestsFailed("; ".join(f"{r['service']}: the {r['failed_level']} level failed" for r in failed)
                          + " (later levels did not run)",
                          hint=f"results and logs under {RESULTS_DIR}/<service>/<level>")


def _targets(plan: Plan, target: str | None) -> tuple[list[ServicePlan], str | None]:
    if not target:
        return list(plan.services), None
    name, _, level = target.partition(":")
    return [plan.service(name)], level or None


def describe_tests(ctx: Context, plan: Plan, target: str | None) -> list[Step]:
    services, only = _targets(plan, target)
    steps = []
    for svc in services:
        for name, command in select_levels(svc, only):
            if command is None:
                steps.append(Step("skip", f"{svc.name}:{name}: not configured", {"service": svc.name, "level": name}))
                continue
            steps += _level_steps(ctx, svc, name, command)
    return steps


def _level_steps(ctx: Context, svc: ServicePlan, level: str, command: str) -> list[Step]:
    where = {"service": svc.name, "level": level}
    steps = []
    if level in ("integration", "e2e", "test") and svc.dev.postgres is not None:
        steps.append(Step("postgres", f"{svc.name}:{level}: start a throwaway PostgreSQL on a free loopback port"
                          + (f", provisioned from {svc.dev.postgres.provision}" if svc.dev.postgres.provision else ""),
                          {**where, "provision": svc.dev.postgres.provision}))
    if level in ("integration", "e2e", "test") and svc.dev.attic is not None:
        steps.append(Step("attic", f"{svc.name}:{level}: start a throwaway Attic server (atticd) on a free loopback "
                          f"port with the cache {svc.dev.attic.cache}",
                          {**where, "cache": svc.dev.attic.cache, "public": svc.dev.attic.public}))
    if level == "e2e" and svc.dev.start is not None:
        steps.append(Step("start", f"{svc.name}:e2e: run `{svc.dev.start}` on $PORT, wait for "
                          f"{svc.dev.health or 'the port'} (up to {svc.dev.health_timeout:g}s)",
                          {**where, "start": svc.dev.start, "health": svc.dev.health}))
    results = str(RESULTS_DIR / svc.name / level)
    steps.append(Step("run", f"{svc.name}:{level}: `{command}` in {svc.path} (results: {results})",
                      {**where, "command": command, "path": svc.path, "results": results}))
    if len(steps) > 1:
        steps.append(Step("teardown", f"{svc.name}:{level}: stop what the level started", where))
    return steps


# ---------------------------------------------------------------------------------------------
# dev up / down / status, e2e prepare / run


def _dev_paths(ctx: Context, name: str) -> tuple[Path, Path]:
    base = infra.dev_dir(ctx.root)
    return base / f"{name}.json", base / f"{name}.env"


def _dev_running(svc: ServicePlan, record: dict[str, Any]) -> bool:
    """Whether what ``dev.infra`` declares runs, as declared."""
    pg, attic = record.get("postgres"), record.get("attic")
    if svc.dev.postgres is not None and not (pg and infra.postgres_running(pg["root"])):
        return False
    if svc.dev.attic is None:
        return not attic  # one no longer declared: start again without it
    return bool(attic and attic.get("cache") == svc.dev.attic.cache and infra.attic_running(attic))


def dev_up(ctx: Context, svc: ServicePlan) -> dict[str, Any]:
    """Start the service's ``dev.infra`` (idempotent) and write ``.forge/dev/<service>.env``."""
    path, env_file = _dev_paths(ctx, svc.name)
    record = infra.read_record(path)
    if record is not None and env_file.is_file() and _dev_running(svc, record):
        ctx.say(f"forge dev up {svc.name}: already up (env: {env_file})")
        return {"service": svc.name, "state": "up", "changed": False, **_public(record, env_file)}
    if record is not None:  # left half-started, or its server died: start again
        Session(ctx, svc, "dev", path, owned=False, record=record).close()
    session = Session(ctx, svc, "dev", path, owned=False)
    session.save()
    try:
        session.start_infra()
        infra.write_env_file(env_file, session.env)
    except BaseException:
        session.close()
        env_file.unlink(missing_ok=True)
        raise
    state = "up" if svc.dev.postgres is not None or svc.dev.attic is not None else "nothing to start"
    ctx.say(f"forge dev up {svc.name}: {state} (env: {env_file})")
    return {"service": svc.name, "state": state, "changed": True, **_public(session.record, env_file)}


def _public(record: dict[str, Any], env_file: Path) -> dict[str, Any]:
    pg, attic = record.get("postgres") or {}, record.get("attic") or {}
    return {"env_file": str(env_file), "postgres": {"port": pg.get("port"), "database": pg.get("database")} if pg else None,
            "attic": {"port": attic.get("port"), "cache": attic.get("cache"),
                      "endpoint": f"http://127.0.0.1:{attic.get('port')}/"} if attic else None,
            "port": record.get("port")}


def dev_down(ctx: Context, svc: ServicePlan) -> dict[str, Any]:
    """Stop what ``dev up``/``e2e prepare`` started for the service (idempotent)."""
    path, env_file = _dev_paths(ctx, svc.name)
    record = infra.read_record(path)
    env_file.unlink(missing_ok=True)
    if record is None:
        ctx.say(f"forge dev down {svc.name}: nothing runs")
        return {"service": svc.name, "state": "down", "changed": False}
    Session(ctx, svc, "dev", path, owned=False, record=record).close()
    ctx.say(f"forge dev down {svc.name}: stopped")
    return {"service": svc.name, "state": "down", "changed": True}


def dev_status(ctx: Context) -> dict[str, Any]:
    """What runs under ``.forge/dev``: dev sessions and test runs, with their servers and processes."""
    entries = []
    for path, record in infra.records(ctx.root):
        pg, attic = record.get("postgres") or {}, record.get("attic") or {}
        procs = [{"name": p.get("name"), "pgid": p.get("pgid"), "running": process.group_alive(int(p["pgid"]))}
                 for p in record.get("processes") or []]
        entries.append({"service": record.get("service"), "kind": record.get("kind"), "what": record.get("what"),
                        "record": str(path.relative_to(ctx.root)),
                        "owner": (record.get("owner") or {}).get("pid"),
                        "owner_running": infra.alive(record.get("owner")) if record.get("owner") else None,
                        "postgres": {"port": pg.get("port"), "running": infra.postgres_running(pg["root"])} if pg else None,
                        "attic": {"port": attic.get("port"), "cache": attic.get("cache"),
                                  "running": infra.attic_running(attic)} if attic else None,
                        "port": record.get("port"), "processes": procs})
    return {"command": "dev status", "sessions": entries}


def render_status(doc: dict[str, Any]) -> str:
    if not doc["sessions"]:
        return "nothing runs (no session under .forge/dev)"
    lines = []
    for e in doc["sessions"]:
        parts = [f"{e['service']} [{e['what']}]"]
        if e["postgres"]:
            parts.append(f"postgres :{e['postgres']['port']} {'running' if e['postgres']['running'] else 'stopped'}")
        if e.get("attic"):
            port = f" :{e['attic']['port']}" if e["attic"]["port"] else ""
            parts.append(f"attic{port} ({e['attic']['cache']}) " + ("running" if e["attic"]["running"] else "stopped"))
        if e["port"]:
            parts.append(f"service :{e['port']}")
        parts += [f"{p['name']} {'running' if p['running'] else 'exited'}" for p in e["processes"]]
        if e["owner"] is not None:
            parts.append(f"owner pid {e['owner']} {'running' if e['owner_running'] else 'gone'}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def e2e_prepare(ctx: Context, svc: ServicePlan) -> dict[str, Any]:
    """``dev up``, then start the service and wait until it is healthy (idempotent)."""
    path, env_file = _dev_paths(ctx, svc.name)
    record = infra.read_record(path) or {}
    starts = [p for p in record.get("processes") or [] if p.get("name") == "start"]
    if starts and all(process.group_alive(int(p["pgid"])) for p in starts) and env_file.is_file():
        env = infra.read_env_file(env_file)
        if "FORGE_BASE_URL" in env and _probe(_health_url(svc, int(env["PORT"])), int(env["PORT"]))[0]:
            ctx.say(f"forge e2e prepare {svc.name}: already running at {env['FORGE_BASE_URL']}")
            return {"service": svc.name, "base_url": env["FORGE_BASE_URL"], "changed": False, "env_file": str(env_file)}
        dev_down(ctx, svc)
    dev_up(ctx, svc)
    session = Session(ctx, svc, "dev", path, owned=False, record=infra.read_record(path) or {},
                      env=infra.read_env_file(env_file))
    session.record["what"] = "e2e"
    try:
        base = session.start_service(infra.dev_dir(ctx.root) / f"{svc.name}.service.log")
        infra.write_env_file(env_file, session.env)
    except BaseException:
        dev_down(ctx, svc)
        raise
    ctx.say(f"forge e2e prepare {svc.name}: ready at {base} (env: {env_file}; stop with `forge dev down {svc.name}`)")
    return {"service": svc.name, "base_url": base, "changed": True, "env_file": str(env_file)}


def _health_url(svc: ServicePlan, port: int) -> str | None:
    from forgegen import pattern

    return pattern.fill(svc.dev.health, {"port": str(port)}) if svc.dev.health else None


def e2e_run(ctx: Context, svc: ServicePlan) -> dict[str, Any]:
    """Run the e2e command against what ``e2e prepare`` started (its env file)."""
    command = select_levels(svc, "e2e")[0][1]
    assert command is not None
    _, env_file = _dev_paths(ctx, svc.name)
    env = infra.read_env_file(env_file) if env_file.is_file() else {}
    if "FORGE_BASE_URL" not in env:
        raise UsageError(f"{svc.name}: the service is not running for e2e tests",
                         hint=f"run `forge e2e prepare {svc.name}` first")
    path = infra.dev_dir(ctx.root) / "runs" / f"{os.getpid()}-{svc.name}.json"
    infra.sweep(ctx.root, ctx.say)
    session = Session(ctx, svc, "e2e run", path)
    session.save()
    try:
        with infra.interruptible():
            ctx.say(f"forge e2e run {svc.name}: {command} (FORGE_BASE_URL={env['FORGE_BASE_URL']})")
            code = session.spawn("e2e", command, {**env, **level_env(ctx, svc, "e2e")}, args=ctx.args).wait()
    finally:
        session.close()
    entry = {"level": "e2e", "command": command, "outcome": "passed" if code == 0 else "failed", "exit_code": code,
             "results": str(ctx.root / RESULTS_DIR / svc.name / "e2e")}
    return {"command": "e2e run", "target": svc.name, "outcome": entry["outcome"],
            "services": [{"service": svc.name, "outcome": entry["outcome"],
                          "failed_level": None if code == 0 else "e2e", "levels": [entry]}]}
