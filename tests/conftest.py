"""Shared test setup.

* Every test runs with HOME, KUBECONFIG and XDG_* pointing into its own tmp_path.
* Nix runs offline (no substituters, no flake registry) with flakes enabled.
* Hypothesis runs the ``ci`` profile: derandomized (the same draws on every run, so CI is
  deterministic), no deadline, failures printed with their reproduction blob. ``explore``
  (``HYPOTHESIS_PROFILE=explore``, used by ``scripts/explore-properties``, never in CI) draws at
  random; every failure it finds is kept as an ``@example`` on the property test.
* With FORGE_STRICT_SKIPS=1 (set by .ci/test) a skipped test fails the session: in CI every
  component is installed by .ci/setup, so a skip means something is missing.

Fixtures for the real components live in their own plugin modules under tests/fixtures/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
NIX_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nflake-registry =\n"

settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None, database=None)
settings.register_profile("explore", derandomize=False, print_blob=True, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Every module in tests/fixtures/ is a fixture plugin (registry, postgres, kube stand-in, ...).
pytest_plugins = sorted(
    "tests.fixtures." + p.stem for p in (ROOT / "tests" / "fixtures").glob("*.py") if p.stem != "__init__"
)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", str(home / ".kube" / "config"))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("NIX_CONFIG", NIX_CONFIG)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Forge Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "forge-test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Forge Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "forge-test@example.invalid")
    for var in ("RELEASE_GIT_SHA", "GIT_SHA", "GHCR_TOKEN", "FORGE_REGISTRY_USER",
                "FORGE_REGISTRY_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("FORGE_STRICT_SKIPS") == "1" and _skipped:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if os.environ.get("FORGE_STRICT_SKIPS") == "1" and _skipped:
        terminalreporter.write_line(
            f"FORGE_STRICT_SKIPS: {len(_skipped)} test(s) skipped; in CI nothing may skip "
            "(install the missing component in .ci/setup):", red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}", red=True)
