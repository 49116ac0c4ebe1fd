"""Benchmark: forgegen sync for 1, 10, 100, 500 services, and the laziness of the generated Nix.

Prints figures and ratios (not a test; nothing here asserts). Run:
    .venv/bin/python benchmarks/sync.py

Targets (DESIGN.md): 500 services sync in well under 1 s; a no-op re-sync writes 0 files;
`nix eval` of one app's program in a 500-service flake costs under 2x the 1-service case.

The table's times are in-process (``generator.sync`` in this process, imports already paid)
except "CLI no-op s", one run of ``python -m forgegen sync`` as a new process. Then the no-op CLI
wall for 500 services, median of ``--rounds``, with ``--before DIR`` another checkout (e.g. an
extracted ``git archive main``) in alternate rounds (benchmarks/trees.py). ``--no-eval`` skips
the nix eval part.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.trees import PYTHON_FLAGS, code_dir, variant_env  # noqa: E402
from forgegen import generator  # noqa: E402
from tests.fixtures.nixenv import checkout_files, copy_tree  # noqa: E402

NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nflake-registry =\n"


def deploy_yaml(n: int) -> str:
    lines = ["version: 1", "project: bench", "registry: {host: ghcr.io, organization: acme}",
             "gitops: {repo: ../gitops}", "environments:", "  - name: staging", "  - name: production",
             "services:"]
    types = ["rust", "python", "go", "node", "generic"]
    for i in range(n):
        lines.append(f"  svc{i}: {{type: {types[i % 5]}, path: services/svc{i}}}")
    return "\n".join(lines) + "\n"


def snapshot(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def bench_sync(n: int, base: Path) -> dict[str, float]:
    repo = base / f"sync-{n}"
    repo.mkdir()
    (repo / "deploy.yaml").write_text(deploy_yaml(n))
    t0 = time.perf_counter()
    first = generator.sync(repo / "deploy.yaml")
    cold = time.perf_counter() - t0
    before = snapshot(repo / "nix")
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        again = generator.sync(repo / "deploy.yaml")
        runs.append(time.perf_counter() - t0)
    written = sum(1 for c in again.outcome.changes if c.verb != "identical")
    touched = sum(1 for p, m in snapshot(repo / "nix").items() if before.get(p) != m)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "forgegen", "sync"], cwd=repo, capture_output=True)
    cli = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    return {"files": len(first.outcome.changes), "first": cold, "noop": statistics.median(runs),
            "noop_written": written, "noop_touched": touched, "cli_noop": cli}


def flake_for(n: int, base: Path, forge_src: Path, standin: Path) -> Path:
    repo = base / f"flake-{n}"
    repo.mkdir()
    (repo / "deploy.yaml").write_text(deploy_yaml(n))
    shutil.copy(ROOT / "examples" / "starter" / "flake.nix", repo / "flake.nix")
    generator.sync(repo / "deploy.yaml")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    # Lock once so each timed eval measures evaluation, not input resolution.
    subprocess.run(["nix", "flake", "lock", "--override-input", "nixpkgs", f"path:{standin}",
                    "--override-input", "forge", f"path:{forge_src}"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return repo


def bench_eval(repo: Path, app: str, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.run(["nix", "eval", "--raw", "--no-eval-cache", f'.#apps.x86_64-linux."{app}".program'],
                              cwd=repo, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, help="another checkout, run in alternate rounds")
    parser.add_argument("--no-eval", action="store_true", help="skip the nix eval figures")
    args = parser.parse_args()
    os.environ["NIX_CONFIG"] = NIX_CONFIG
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
        base = Path(tmp)
        print("forgegen sync (in-process; median of 5 no-op runs)")
        print(f"{'services':>8} {'files':>6} {'first s':>8} {'no-op s':>8} {'written':>8} {'touched':>8} {'CLI no-op s':>12}")
        for n in (1, 10, 100, 500):
            r = bench_sync(n, base)
            print(f"{n:>8} {r['files']:>6} {r['first']:>8.3f} {r['noop']:>8.3f} {r['noop_written']:>8} "
                  f"{r['noop_touched']:>8} {r['cli_noop']:>12.3f}")
        cli_rounds(base, args)
        if args.no_eval:
            return
        forge_src = copy_tree([f for f in checkout_files() if not f.startswith("benchmarks/")], ROOT, base / "forge-src")
        standin = base / "standin"
        shutil.copytree(ROOT / "tests" / "nixpkgs-standin", standin)
        one = flake_for(1, base, forge_src, standin)
        many = flake_for(500, base, forge_src, standin)
        t1 = bench_eval(one, "deploy:svc0")
        t500 = bench_eval(many, "deploy:svc0")
        print("\nnix eval of one app's program (median of 5, --no-eval-cache)")
        print(f"  1 service:    {t1:.3f} s")
        print(f"  500 services: {t500:.3f} s")
        print(f"  ratio 500/1:  {t500 / t1:.2f}x (target < 2x)")


def cli_rounds(base: Path, args: argparse.Namespace) -> None:
    """The no-op sync of 500 services as a command: wall and CPU of a new process, alternating."""
    repo = base / "sync-500"  # synced by bench_sync
    variants: dict[str, Path | None] = {"after": None}
    if args.before:
        variants = {"after": code_dir(ROOT, base / "after"), "before": code_dir(args.before, base / "before")}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    # Each variant keeps its sync stamp in a cache of its own (alternating variants would otherwise
    # overwrite each other's stamp, and every round would take the full path); round 0 warms it.
    for i in range(args.rounds + 1):
        for name, tree in variants.items():
            env = {**os.environ, **(variant_env(tree) if tree else {}), "XDG_CACHE_HOME": str(base / f"cache-{name}")}
            before = os.times()
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, *(PYTHON_FLAGS if tree else []), "-m", "forgegen", "sync"], cwd=repo,
                                  env=env, capture_output=True)
            if i == 0:
                assert proc.returncode == 0, proc.stderr
                continue
            walls[name].append(time.perf_counter() - t0)
            after = os.times()
            cpus[name].append(after.children_user + after.children_system - before.children_user - before.children_system)
            assert proc.returncode == 0, proc.stderr
    print(f"\nforgegen sync no-op, 500 services, CLI (new process), median of {args.rounds} "
          f"(load average {os.getloadavg()[0]:.1f}):")
    for name in variants:
        print(f"  {name:<7} wall {statistics.median(walls[name]):.3f} s (min {min(walls[name]):.3f}), "
              f"CPU {statistics.median(cpus[name]):.3f} s (min {min(cpus[name]):.3f})")


if __name__ == "__main__":
    main()
