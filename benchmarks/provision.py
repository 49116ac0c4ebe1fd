"""Benchmark forge-provision postgres on a throwaway PostgreSQL 15 cluster.

50 databases, each with an owner role, an app role (with a password), three extensions and
grants (schema, tables, sequences, functions, default privileges). Prints the first apply
time, the second apply time with the number of statements it executed (target: 0, under 1 s),
and the time of a plan on the converged cluster.

    .venv/bin/python benchmarks/provision.py [--databases 50] [--jobs 4] [--rounds 5] [--before DIR]

The in-process figures time ``run()`` in this process (imports already paid). The CLI figure is
the wall time of the whole command, ``forge-provision postgres apply --config FILE`` as a new
process (Python start-up and imports included), median of ``--rounds``. ``--before DIR`` runs
another Forge checkout (e.g. an extracted ``git archive main``) in alternate rounds, so before and
after meet the same load (benchmarks/trees.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.trees import PYTHON_FLAGS, code_dir, variant_env  # noqa: E402
from forge_provision.postgres import run  # noqa: E402
from forge_provision.schema import parse_postgres  # noqa: E402
from tests.fixtures.postgres import start_cluster, stop_cluster  # noqa: E402


def config(server, n: int) -> dict:
    roles, databases = [], []
    for i in range(n):
        owner, app = f"svc{i:02d}_owner", f"svc{i:02d}_app"
        roles += [{"name": owner}, {"name": app, "login": True, "password_env": "APP_PASSWORD",
                                    "connection_limit": 20}]
        databases.append({
            "name": f"svc{i:02d}", "owner": owner,
            "extensions": [{"name": "pgcrypto"}, {"name": "pg_trgm"}, {"name": "uuid-ossp"}],
            "schemas": [{"name": "app", "owner": owner}],
            "grants": [{"role": app, "database_privileges": ["CONNECT"], "schema": "app",
                        "schema_privileges": ["USAGE"], "tables": ["SELECT", "INSERT", "UPDATE", "DELETE"],
                        "sequences": ["USAGE", "SELECT"], "functions": ["EXECUTE"]},
                       {"role": app, "schema": "public", "schema_privileges": ["USAGE"],
                        "functions": ["EXECUTE"]}],
        })
    return server.config(roles, databases)


def timed(cfg, mode: str, jobs: int):
    started = time.perf_counter()
    outcome = run(cfg, mode, jobs=jobs)
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another checkout's code, run in alternate rounds")
    args = parser.parse_args()
    server = start_cluster()
    try:
        os.environ.update(PGADMIN_PASSWORD=server.admin_password, APP_PASSWORD="bench-app-pw")
        cfg = parse_postgres(config(server, args.databases))
        first_s, first = timed(cfg, "apply", args.jobs)
        second_s, second = timed(cfg, "apply", args.jobs)
        plan_s, plan = timed(cfg, "plan", args.jobs)
        serial_s, serial = timed(cfg, "apply", 1)
        print(f"forge-provision postgres: {args.databases} databases, {2 * args.databases} roles, "
              f"3 extensions each, jobs={args.jobs}")
        print(f"  first apply:   {first_s:7.3f} s  {first.statements:5d} statements executed")
        print(f"  second apply:  {second_s:7.3f} s  {second.statements:5d} statements executed, "
              f"{second.queries} catalogue queries  (target: 0 statements, < 1 s)")
        print(f"  plan (no-op):  {plan_s:7.3f} s  {len(plan.changes):5d} changes planned")
        print(f"  second apply with --jobs 1: {serial_s:.3f} s, {serial.statements} statements")
        print(f"  ratio first/second apply: {first_s / second_s:.1f}x")
        cli_rounds(config(server, args.databases), args)
        assert second.statements == 0 and serial.statements == 0 and not plan.changes
    finally:
        stop_cluster(server)


def cli_rounds(doc: dict, args: argparse.Namespace) -> None:
    """The second apply as a command: wall time of a new process, before/after alternating."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="forge-bench-provision-") as tmp:
        variants: dict[str, Path | None] = {"after": None}
        if args.before:  # both as `python -S` with their own code first (benchmarks/trees.py)
            variants = {"after": code_dir(ROOT, Path(tmp) / "after"), "before": code_dir(args.before, Path(tmp) / "before")}
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        path = Path(tmp) / "postgres.yaml"
        path.write_text(yaml.safe_dump(doc))
        for _ in range(args.rounds):
            for name, tree in variants.items():
                env = {**os.environ, **(variant_env(tree) if tree else {})}
                started, before = time.perf_counter(), os.times()
                proc = subprocess.run([sys.executable, *(PYTHON_FLAGS if tree else []), "-c", "import sys; from forge_provision.cli import main; "
                                       "sys.exit(main())", "postgres", "apply", "--config", str(path),
                                       "--jobs", str(args.jobs)], env=env, cwd=tmp, capture_output=True, text=True)
                walls[name].append(time.perf_counter() - started)
                after = os.times()
                cpus[name].append(after.children_user + after.children_system
                                  - before.children_user - before.children_system)
                assert proc.returncode == 0, proc.stderr
    print(f"  second apply, CLI wall (new process), median of {args.rounds} "
          f"(load average {os.getloadavg()[0]:.1f}):")
    for name, values in walls.items():
        print(f"    {name:<7} {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f}); "
              f"CPU of forge-provision itself {statistics.median(cpus[name]):.3f} s")


if __name__ == "__main__":
    main()
