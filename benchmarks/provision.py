"""Benchmark forge-provision postgres on a throwaway PostgreSQL 15 cluster.

50 databases, each with an owner role, an app role (with a password), three extensions and
grants (schema, tables, sequences, functions, default privileges). Prints the first apply
time, the second apply time with the number of statements it executed (target: 0, under 1 s),
and the time of a plan on the converged cluster.

    .venv/bin/python benchmarks/provision.py [--databases 50] [--jobs 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
        assert second.statements == 0 and serial.statements == 0 and not plan.changes
    finally:
        stop_cluster(server)


if __name__ == "__main__":
    main()
