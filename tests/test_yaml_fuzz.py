"""Fuzz: random and hostile YAML through ``forgegen check``, ``forge-provision postgres plan``
and the GitOps overlay reader: exit 0 or 2 (1 for a plan that validated and then could not
reach a server), never 3, within a memory limit (RLIMIT_AS) and a per-input timeout.

Runs derandomized in CI (the hypothesis profile); ``benchmarks/yaml_fuzz.py`` explores with
random seeds and many more examples. Every failure ever found is kept as an ``@example``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.strategies import hostile_yaml

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1 << 30
TIMEOUT = 60.0  # per input; the bugs this guards against never finished
ALLOWED = {"check": {0, 2}, "provision": {0, 1, 2}, "overlay": {0}}


class FuzzWorker:
    """``tests/yaml_fuzz_worker.py`` in a child process under a memory limit."""

    def __init__(self) -> None:
        self.proc = self._start()

    @staticmethod
    def _start() -> subprocess.Popen[str]:
        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "yaml_fuzz_worker.py")], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=limit)

    def run(self, kind: str, text: str) -> tuple[int, str]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"kind": kind, "text": text}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            self.proc = self._start()  # the next example gets a fresh worker
            return -1, f"no answer within {TIMEOUT:g}s or the worker died (memory limit?)"
        answer = json.loads(line)
        return answer["rc"], answer["stderr"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def check_one(worker: FuzzWorker, kind: str, text: str) -> None:
    rc, stderr = worker.run(kind, text)
    assert rc in ALLOWED[kind], f"{kind} exited {rc} on {text[:300]!r}:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    if rc == 2:
        assert ".yaml" in stderr, stderr  # located: the file is named


@pytest.fixture(scope="module")
def worker() -> Iterator[FuzzWorker]:
    w = FuzzWorker()
    yield w
    w.close()


KNOWN = [
    "a: &a [*a]\n",
    "a: &a {<<: *a}\n",
    "x: !foo bar\n",
    "x: !!int abc\n",
    "x: !!timestamp 2001-13-45\n",
    "x: " + "[" * 500 + "]" * 500 + "\n",
    "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    'version: []\nversion: "\\u0000"\n',  # found by benchmarks/yaml_fuzz.py: NUL in a path (overlay)
    'version: "\\ud800"\n',  # found by benchmarks/yaml_fuzz.py: a lone surrogate in a path (overlay)
]


@pytest.mark.parametrize("kind", sorted(ALLOWED))
@settings(max_examples=int(os.environ.get("FORGE_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(text=hostile_yaml)
@example(text=KNOWN[0])
@example(text=KNOWN[1])
@example(text=KNOWN[2])
@example(text=KNOWN[3])
@example(text=KNOWN[4])
@example(text=KNOWN[5])
@example(text=KNOWN[6])
@example(text=KNOWN[7])
@example(text=KNOWN[8])
def test_hostile_yaml_exits_0_or_2_within_bounds(worker: FuzzWorker, kind: str, text: str) -> None:
    check_one(worker, kind, text)


@settings(max_examples=int(os.environ.get("FORGE_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(["", "version: 1\nproject: shop\n"]), text=hostile_yaml)
def test_hostile_yaml_after_valid_keys_exits_0_or_2(worker: FuzzWorker, prefix: str, text: str) -> None:
    check_one(worker, "check", prefix + text)
