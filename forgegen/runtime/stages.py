"""Release stages: ``prerelease`` and ``comprehensive-release`` are ``forge release`` with more steps.

``forge release --stage STAGE`` runs the same pre-flight, lock, push, per-environment steps, gates
and report as a release (:mod:`forgegen.runtime.release`); the stage adds or leaves out:

* ``full`` (the default): the release as it always was, through every environment.
* ``pre`` (app ``prerelease``): build every image, run each service's tests (a failing test stops
  before anything is pushed), push, then only the **first** environment (migrations, deploy,
  checks, gate). The report's ``ready_to_promote`` names each service, its image and the
  environments it can go to next, and the command that promotes it.
* ``comprehensive`` (app ``comprehensive-release``): build, tests, push, then every environment in
  order; after the first environment's gate, each service's ``integration`` and ``e2e`` tests run
  against that environment, and the next environment starts only when they pass.

The tests are the service's development commands from the plan (``services.S.dev`` in deploy.yaml,
what ``nix run .#test:S`` runs), run by :func:`run_tests` in the service's directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from forgegen import process
from forgegen.errors import ForgeError, TestsFailed
from forgegen.plan import ServicePlan, TargetPlan

STAGES = ("full", "pre", "comprehensive")
APPS = {"pre": "prerelease", "comprehensive": "comprehensive-release", "full": "release"}
# Levels run against the first environment before promotion (comprehensive); None is the
# service's test command (``dev.test``), run before anything is pushed.
PROMOTION_LEVELS = ("integration", "e2e")
TEST_TIMEOUT = 3600.0


def has_tests(stage: str) -> bool:
    return stage in ("pre", "comprehensive")


def promotion_levels(stage: str) -> tuple[str, ...]:
    return PROMOTION_LEVELS if stage == "comprehensive" else ()


def test_command(svc: ServicePlan, level: str | None) -> str | None:
    """The command of ``level`` (None: the service's test command), or None when not configured."""
    value = svc.dev.test if level is None else getattr(svc.dev, level, None)
    return value if isinstance(value, str) and value else None


def test_env(svc: ServicePlan, target: TargetPlan | None, image: str | None) -> dict[str, str]:
    """What a test command is told: the service, and where it runs when it runs against an environment."""
    env = {"FORGE_SERVICE": svc.name}
    if image:
        env["FORGE_IMAGE"] = image
    if target is not None:
        env |= {"FORGE_ENVIRONMENT": target.environment, "FORGE_NAMESPACE": target.namespace}
    return env


def run_tests(svc: ServicePlan, level: str | None, *, source: str | Path, target: TargetPlan | None = None,
              image: str | None = None, say: Callable[[str], None],
              environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one level of ``svc``'s tests (``bash -c COMMAND`` in its directory under ``source``);
    the report entry. ``outcome`` is ``passed``, ``failed`` or ``not configured`` (never "passed"
    for a level that has no command)."""
    name = "test" if level is None else f"test:{level}"
    command = test_command(svc, level)
    entry: dict[str, Any] = {"service": svc.name, "level": level or "test", "command": command,
                             "environment": target.environment if target else None}
    if command is None:
        say(f"{svc.name}: {name}: not configured (services.{svc.name}.dev.{level or 'test'} in deploy.yaml)")
        return {**entry, "outcome": "not configured"}
    where = Path(source) / svc.path
    say(f"{svc.name}: {name}: {command}" + (f" (against {target.environment})" if target else ""))
    result = process.run(("bash", "-c", command), cwd=where, env={**(environ or {}), **test_env(svc, target, image)},
                         timeout=TEST_TIMEOUT, check=False, what=f"run the {name} of {svc.name}")
    tail = (result.stdout + result.stderr).splitlines()[-20:]
    ok = result.returncode == 0
    say(f"{svc.name}: {name}: {'passed' if ok else f'failed (exit code {result.returncode})'}")
    return {**entry, "outcome": "passed" if ok else "failed", "exit_code": result.returncode,
            "log_tail": [] if ok else tail}


def tests_error(entry: dict[str, Any], *, before: str) -> ForgeError:
    """The error a failed test entry stops the release with."""
    place = f" against {entry['environment']}" if entry["environment"] else ""
    level = "" if entry["level"] == "test" else f"{entry['level']} "
    return TestsFailed(
        f"the {level}tests of {entry['service']} failed{place} (`{entry['command']}` exited with "
        f"{entry['exit_code']}); {before}",
        hint=f"the report has the last lines of its output; run `nix run .#test:{entry['service']}` to see it all")


def ready_to_promote(pairs: list[tuple[ServicePlan, TargetPlan]], images: dict[str, str],
                     environments: list[str]) -> list[dict[str, Any]]:
    """After a prerelease: per service released in the first environment, its image and where it goes next."""
    first = pairs[0][1].environment
    rows = []
    for svc, _ in pairs:
        nxt = [t.environment for t in svc.targets if t.environment in environments and t.environment != first]
        rows.append({"service": svc.name, "image": images[svc.name], "verified_in": first, "next": nxt,
                     "promote_with": (f"forge release {svc.name} --environments {nxt[0]}" if nxt else None)})
    return rows
