"""Exploration (not a test, not in CI): random and hostile YAML through ``forgegen check``,
``forge-provision postgres plan`` and the GitOps overlay reader, with a random seed each run
and many more examples than CI's derandomized ``tests/test_yaml_fuzz.py``.

    .venv/bin/python benchmarks/yaml_fuzz.py [EXAMPLES_PER_ENTRY_POINT]

Prints the seed, the number of inputs per entry point and the slowest input's time. A failure
prints the shrunk input: add it as an ``@example`` in tests/test_yaml_fuzz.py, then fix it.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.strategies import hostile_yaml  # noqa: E402
from tests.test_yaml_fuzz import ALLOWED, FuzzWorker, check_one  # noqa: E402


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    run_seed = random.randrange(2**32)
    print(f"seed {run_seed}, {examples} examples per entry point")
    worker = FuzzWorker()
    try:
        for kind in sorted(ALLOWED):
            slowest = [0.0]

            @seed(run_seed)
            @settings(max_examples=examples, deadline=None, derandomize=False, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(text=hostile_yaml)
            def explore(text: str) -> None:
                t0 = time.perf_counter()
                check_one(worker, kind, text)
                slowest[0] = max(slowest[0], time.perf_counter() - t0)

            explore()
            print(f"{kind:>10}: {examples} inputs, exit codes within {sorted(ALLOWED[kind])}; "
                  f"slowest input {slowest[0]:.3f} s")
    finally:
        worker.close()


if __name__ == "__main__":
    main()
