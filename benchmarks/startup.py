"""Benchmark: start-up of the three CLIs (`--version`, and `forge deploy --help`), command wall.

Each command runs as its console script does (``forgegen.entry``; a checkout without that
module through its CLI module's ``main``), with ``-c`` and ``sys.argv``: the editable install's
path finder, which an installed wheel does not have, is in every figure including ``python -c pass``.

Each figure is the wall time (and CPU seconds, user+sys) of a new process, median of
``--rounds``, next to ``python -c pass`` (the anchor: Python's own start-up). ``--before DIR``
runs another checkout (e.g. an extracted ``git archive main``) in alternate rounds; every variant
then runs as ``python -S`` with its own code first (benchmarks/trees.py). Prints figures only.

    .venv/bin/python benchmarks/startup.py [--rounds 15] [--before DIR]
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

# (the console script's entry in forgegen.entry, the CLI module a checkout without it enters by, argv)
COMMANDS = {
    "python -c pass": None,
    "forge --version": ("forge", "forgegen.runtime.cli", ["--version"]),
    "forgegen --version": ("forgegen", "forgegen.cli", ["--version"]),
    "forge-provision --version": ("forge_provision", "forge_provision.cli", ["--version"]),
    "forge deploy --help": ("forge", "forgegen.runtime.cli", ["deploy", "--help"]),
}


def once(command: tuple[str, str, list[str]] | None, flags: list[str], env: dict[str, str], cwd: str,
         ) -> tuple[float, float]:
    code = "pass"
    if command is not None:
        code = (f"import sys\ntry:\n    from forgegen.entry import {command[0]} as main\n"
                f"except ImportError:\n    from {command[1]} import main\nsys.exit(main())")
    argv = [sys.executable, *flags, "-c", code, *(command[2] if command else [])]
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - t0
    after = os.times()
    # main before h14 had no `forge-provision --version`: it exits 2 after loading the CLI
    assert proc.returncode in (0, 2), proc.stderr
    return wall, after.children_user + after.children_system - before.children_user - before.children_system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--before", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="forge-bench-startup-") as tmp:
        variants: dict[str, Path | None] = {"after": None}
        if args.before:
            variants = {"after": code_dir(ROOT, Path(tmp) / "after"), "before": code_dir(args.before, Path(tmp) / "before")}
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for label, command in COMMANDS.items():
                for name, tree in variants.items():
                    flags = PYTHON_FLAGS if tree else []
                    env = {**os.environ, **(variant_env(tree) if tree else {})}
                    results.setdefault((label, name), []).append(once(command, flags, env, tmp))
    print(f"CLI start-up, command wall (new process), median of {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}:")
    print(f"  {'':<28}" + "".join(f"{name + ' wall / CPU':>26}" for name in variants))
    for label in COMMANDS:
        cells = []
        for name in variants:
            rows = results[(label, name)]
            cells.append(f"{statistics.median(r[0] for r in rows):.3f} / {statistics.median(r[1] for r in rows):.3f} s")
        print(f"  {label:<28}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
