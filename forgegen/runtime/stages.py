"""Release stages: ``prerelease`` and ``comprehensive-release`` are ``forge release`` with more steps.

``forge release --stage STAGE`` runs the same pre-flight, lock, push, per-environment steps, gates
and report as a release (:mod:`forgegen.runtime.release`); the stage adds or leaves out:

* ``full`` (the default): the release as it always was, through every environment.
* ``pre`` (app ``prerelease``): build every image, run each service's tests (a failing test stops
  before anything is pushed), push, then only the **first** environment (migrations, deploy,
  checks, gate). The report's ``ready_to_promote`` names each service, its image and the
  environments it can go to next, and the command that promotes it.
* ``comprehensive`` (app ``comprehensive-release``): build, tests, push, then every environment in
  order; after the first environment's gate, each service's ``e2e`` tests run against that
  environment, and the next environment starts only when they pass.

Which tests run where (the service's test pyramid, run by :mod:`forgegen.runtime.devloop` exactly
as ``forge test S`` runs it):

* **Before the push** (both stages): ``dev.test`` when it is set (it replaces the pyramid), else
  the ``unit`` then the ``integration`` level, each with its ``dev.infra`` (a throwaway
  PostgreSQL and Attic server, as declared; always torn down). The first failing level stops the
  release before anything is pushed, and is named (step ``test:integration``; ``test`` for ``dev.test``).
* **Against the first environment** (comprehensive, after its gate, before promotion): the ``e2e``
  level, with nothing started locally: ``FORGE_BASE_URL`` is the service's URL there —
  ``dev.base_url`` (a pattern over ``{project} {service} {environment} {cluster}``), else the
  origin (scheme://host[:port]) of its first ``http`` verify check — and ``FORGE_ENVIRONMENT``,
  ``FORGE_NAMESPACE``, ``FORGE_IMAGE`` say what it tests. A service without an e2e command, or
  without a URL, is reported ``not configured`` with what to set (never as passed).

Each level's output goes to ``.forge/test-results/S/LEVEL/output.log`` (the report's ``log``; a
failed level's last lines are in ``log_tail``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from forgegen import pattern
from forgegen.errors import ForgeError, TestsFailed
from forgegen.plan import Plan, ServicePlan, TargetPlan

if TYPE_CHECKING:
    from forgegen.runtime.devloop import Context

# devloop is imported where it is used: it imports steps, which imports this module.

STAGES = ("full", "pre", "comprehensive")
APPS = {"pre": "prerelease", "comprehensive": "comprehensive-release", "full": "release"}
# The level run against the first environment before promotion (comprehensive).
PROMOTION_LEVELS = ("e2e",)
OUTCOMES = {"not-configured": "not configured", "not-run": "not run"}  # the release report's spelling


def has_tests(stage: str) -> bool:
    return stage in ("pre", "comprehensive")


def promotion_levels(stage: str) -> tuple[str, ...]:
    return PROMOTION_LEVELS if stage == "comprehensive" else ()


def step_name(level: str) -> str:
    return "test" if level == "test" else f"test:{level}"


def pre_push_levels(svc: ServicePlan) -> list[tuple[str, str | None]]:
    """``dev.test`` when set, else the pyramid's levels that need nothing deployed (unit, integration)."""
    from forgegen.runtime import devloop

    return [(name, command) for name, command in devloop.levels_of(svc) if name not in PROMOTION_LEVELS]


def base_url(plan: Plan, svc: ServicePlan, target: TargetPlan) -> str | None:
    """Where the e2e level reaches ``svc`` deployed in ``target``: ``dev.base_url``, else the
    origin of its first http verify check; None when neither is declared."""
    if svc.dev.base_url:
        return pattern.fill(svc.dev.base_url, {"project": plan.project, "service": svc.name,
                                                "environment": target.environment, "cluster": target.cluster})
    for check in svc.verify:
        if check.http and check.http.get("url"):
            parts = urlsplit(str(check.http["url"]))
            return f"{parts.scheme}://{parts.netloc}"
    return None


def promotion_test(plan: Plan, svc: ServicePlan, target: TargetPlan, level: str) -> tuple[str | None, str | None, str | None]:
    """(command, base URL, what to set when it cannot run) of ``level`` against ``target``."""
    from forgegen.runtime import devloop

    command = dict(devloop.levels_of(svc)).get(level)
    url = base_url(plan, svc, target)
    if command is None:
        why = (f"services.{svc.name}.dev.test replaces the test pyramid, so there is no {level} level; unset it and "
               f"set services.{svc.name}.dev.{level}" if svc.dev.test is not None
               else f"set services.{svc.name}.dev.{level} in deploy.yaml")
        return None, url, why
    if url is None:
        return command, None, (f"set services.{svc.name}.dev.base_url (e.g. https://{{environment}}.example.com) "
                               f"or give {svc.name} an http verify check, so the tests can reach it")
    return command, url, None


@contextmanager
def _session(root: Path, say: Callable[[str], None]) -> Iterator[Context]:
    """A test context in ``root`` (output to stderr); Ctrl-C and SIGTERM tear down what a level
    started (signal handlers exist in the main thread only)."""
    from forgegen.runtime import devloop, infra

    ctx = devloop.Context(root=root.resolve(), say=say, stdout=2)
    infra.sweep(ctx.root, say)
    if threading.current_thread() is threading.main_thread():
        with infra.interruptible():
            yield ctx
    else:
        yield ctx


def _entry(svc: ServicePlan, level: dict[str, Any], target: TargetPlan | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"service": svc.name, "environment": target.environment if target else None, **level}
    entry["outcome"] = OUTCOMES.get(entry["outcome"], entry["outcome"])
    if entry["outcome"] == "failed" and entry.get("log"):
        try:
            entry["log_tail"] = Path(entry["log"]).read_text(errors="replace").splitlines()[-20:]
        except OSError:
            entry["log_tail"] = []
    return entry


def run_tests(svc: ServicePlan, *, source: str | Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """The tests before the push (:func:`pre_push_levels`, stopping at the first failing level):
    one report entry per level, outcome ``passed``, ``failed``, ``not configured`` or ``not run``."""
    from forgegen.runtime import devloop

    with _session(Path(source), say) as ctx:
        levels, _ = devloop.run_levels(ctx, svc, pre_push_levels(svc), keep_log=True)
    return [_entry(svc, level, None) for level in levels]


def run_promotion_test(plan: Plan, svc: ServicePlan, target: TargetPlan, level: str, *, source: str | Path,
                       image: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """``level`` against ``svc`` deployed in ``target`` (nothing started locally); the report entry."""
    command, url, why = promotion_test(plan, svc, target, level)
    if why is not None:
        say(f"{svc.name}: test:{level} against {target.environment}: not configured ({why})")
        return {"service": svc.name, "environment": target.environment, "level": level, "command": command,
                "base_url": url, "outcome": "not configured", "hint": why}
    assert command is not None and url is not None
    against = {"FORGE_BASE_URL": url, "FORGE_ENVIRONMENT": target.environment, "FORGE_NAMESPACE": target.namespace,
               **({"FORGE_IMAGE": image} if image else {})}
    say(f"{svc.name}: test:{level} against {target.environment} (FORGE_BASE_URL={url})")
    from forgegen.runtime import devloop

    with _session(Path(source), say) as ctx:
        [entry], _ = devloop.run_levels(ctx, svc, [(level, command)], against=against, keep_log=True)
    return {**_entry(svc, entry, target), "base_url": url}


def tests_error(entry: dict[str, Any], *, before: str) -> ForgeError:
    """The error a failed test entry stops the release with."""
    place = f" against {entry['environment']}" if entry["environment"] else ""
    level = "" if entry["level"] == "test" else f"{entry['level']} "
    target = entry["service"] if entry["level"] == "test" else f"{entry['service']}:{entry['level']}"
    rerun = ("" if entry["environment"] else f"; `forge test {target}` runs it again")
    return TestsFailed(
        f"the {level}tests of {entry['service']} failed{place} (`{entry['command']}` exited with "
        f"{entry['exit_code']}); {before}",
        hint=f"the report has the last lines of its output, {entry.get('log') or 'its log'} all of it{rerun}")


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
