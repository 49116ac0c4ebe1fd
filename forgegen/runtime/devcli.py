"""``forge test``, ``forge e2e prepare|run``, ``forge dev up|down|status``: the development loop's
commands (the work is in :mod:`forgegen.runtime.devloop`, imported when a command runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from forgegen import console

if TYPE_CHECKING:
    from forgegen.plan import Plan
    from forgegen.runtime.devloop import Context

ROOT_HELP = "the repository root (services' paths and .forge/ are relative to it; default: where the plans are, else .)"


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    from forgegen.runtime.cli import _common

    f = click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), help=ROOT_HELP)(f)
    return _common(f)


def _setup(plan_path: Path | None, target: str | None, root: Path | None,
           json_output: bool, args: tuple[str, ...] = ()) -> tuple[Plan, Context]:
    from forgegen.plan import find_root
    from forgegen.runtime.cli import _load
    from forgegen.runtime.devloop import Context

    plan = _load(plan_path, target)
    if root is None:
        root = Path.cwd() if plan_path is not None else find_root()
    return plan, Context(root=root.resolve(), say=console.say, stdout=2 if json_output else None, args=args)


def _services(plan: Plan, service: str | None) -> list[Any]:
    return [plan.service(service)] if service else list(plan.services)


def _emit_or_echo(doc: dict[str, Any], json_output: bool) -> None:
    if json_output:
        console.emit_json(doc)


@click.command(context_settings={"ignore_unknown_options": True},
               short_help="Run the test pyramid (unit, integration, e2e) of a service, or of every one")
@_options
@click.argument("target", metavar="[SERVICE[:LEVEL]]", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def test(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, target: str | None,
         args: tuple[str, ...]) -> None:
    """Run SERVICE's test levels in order (unit, integration, e2e), stopping at the first that fails
    and naming it; LEVEL runs one level; without SERVICE, every service's. Integration and e2e get
    the service's dev.infra (a throwaway PostgreSQL, Attic), e2e the service itself; everything started is
    stopped afterwards, also on Ctrl-C or SIGTERM. ARGS go to the test command."""
    from forgegen.runtime import devloop
    from forgegen.runtime.cli import print_steps

    plan, ctx = _setup(plan_path, target.partition(":")[0] if target else None, root, json_output, args)
    if dry_run:
        print_steps("test", target or plan.project, devloop.describe_tests(ctx, plan, target), json_output)
        return
    doc = devloop.run_tests(ctx, plan, target)
    _emit_or_echo(doc, json_output)
    devloop.raise_for_tests(doc)


@click.group(short_help="Prepare and run end-to-end tests against the locally started service")
def e2e() -> None:
    """`prepare SERVICE` starts its dev.infra and the service (dev.start, on $PORT) and waits for
    dev.health; `run SERVICE` runs its e2e command with FORGE_BASE_URL; `forge dev down SERVICE` stops
    it all. (`forge test SERVICE:e2e` does the three in one go.)"""


@e2e.command("prepare", short_help="Start SERVICE (and its infra) and wait until it is healthy")
@_options
@click.argument("service", metavar="SERVICE")
def e2e_prepare(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, service: str) -> None:
    """Start SERVICE's dev.infra and SERVICE itself (dev.start on a free $PORT), wait for dev.health;
    writes .forge/dev/SERVICE.env (PORT, FORGE_BASE_URL, DATABASE_URL, ATTIC_*). Idempotent."""
    from forgegen.runtime import devloop, infra
    from forgegen.runtime.cli import print_steps

    plan, ctx = _setup(plan_path, service, root, json_output)
    svc = plan.service(service)
    if dry_run:
        steps = [s for s in devloop._level_steps(ctx, svc, "e2e", "") if s.name in ("postgres", "start")]
        print_steps("e2e prepare", service, steps, json_output)
        return
    infra.sweep(ctx.root, ctx.say)
    with infra.interruptible():
        doc = devloop.e2e_prepare(ctx, svc)
    _emit_or_echo({"command": "e2e prepare", **doc}, json_output)


@e2e.command("run", context_settings={"ignore_unknown_options": True},
             short_help="Run SERVICE's e2e tests against what `forge e2e prepare` started")
@_options
@click.argument("service", metavar="SERVICE")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def e2e_run(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, service: str,
            args: tuple[str, ...]) -> None:
    """Run SERVICE's e2e command with the env of `forge e2e prepare` (FORGE_BASE_URL, DATABASE_URL)
    and FORGE_TEST_RESULTS (.forge/test-results/SERVICE/e2e: keep screenshots and traces there)."""
    from forgegen.runtime import devloop
    from forgegen.runtime.cli import print_steps

    plan, ctx = _setup(plan_path, service, root, json_output, args)
    svc = plan.service(service)
    if dry_run:
        command = devloop.select_levels(svc, "e2e")[0][1] or ""
        steps = [s for s in devloop._level_steps(ctx, svc, "e2e", command) if s.name == "run"]
        print_steps("e2e run", service, steps, json_output)
        return
    doc = devloop.e2e_run(ctx, svc)
    _emit_or_echo(doc, json_output)
    devloop.raise_for_tests(doc)


@click.group(short_help="Local development infrastructure: up, down, status")
def dev() -> None:
    """Each service's dev.infra (a PostgreSQL, provisioned when configured; an Attic cache) as local
    processes, state under .forge/dev/, ports, DATABASE_URL and ATTIC_* in .forge/dev/SERVICE.env."""


@dev.command("up", short_help="Start SERVICE's dev.infra (every service's without SERVICE)")
@_options
@click.argument("service", metavar="[SERVICE]", required=False)
def dev_up(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, service: str | None) -> None:
    """Start the declared dev.infra and write .forge/dev/SERVICE.env; idempotent."""
    _dev_each("up", plan_path, json_output, dry_run, root, service)


@dev.command("down", short_help="Stop what `dev up` and `e2e prepare` started")
@_options
@click.argument("service", metavar="[SERVICE]", required=False)
def dev_down(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, service: str | None) -> None:
    """Stop SERVICE's (every service's) local infrastructure and started service; idempotent. Also
    stops what a killed `forge test` left running."""
    _dev_each("down", plan_path, json_output, dry_run, root, service)


def _dev_each(verb: str, plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None,
              service: str | None) -> None:
    from forgegen.runtime import devloop, infra
    from forgegen.runtime.cli import print_steps
    from forgegen.runtime.steps import Step

    plan, ctx = _setup(plan_path, service, root, json_output)
    services = _services(plan, service)
    if dry_run:
        steps = [Step(verb, f"{s.name}: " + (_declared(s) if verb == "up" else "stop its infrastructure and started service"),
                      {"service": s.name, "env_file": str(infra.DEV_DIR / f"{s.name}.env")}) for s in services]
        print_steps(f"dev {verb}", service or plan.project, steps, json_output)
        return
    infra.sweep(ctx.root, ctx.say)
    run = devloop.dev_up if verb == "up" else devloop.dev_down
    with infra.interruptible():
        results = [run(ctx, s) for s in services]
    _emit_or_echo({"command": f"dev {verb}", "target": service or plan.project, "services": results}, json_output)


def _declared(svc: Any) -> str:
    parts = (["PostgreSQL"] if svc.dev.postgres else []) + ([f"Attic (cache {svc.dev.attic.cache})"] if svc.dev.attic else [])
    return "start " + " and ".join(parts) if parts else "nothing declared"


@dev.command("status", short_help="What runs under .forge/dev")
@_options
def dev_status(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None) -> None:
    """The local sessions (dev up, e2e prepare, running tests) with their ports and processes."""
    from forgegen.runtime import devloop

    _, ctx = _setup(plan_path, None, root, json_output)
    doc = devloop.dev_status(ctx)
    if json_output:
        console.emit_json(doc)
    else:
        click.echo(devloop.render_status(doc))


def register(group: click.Group) -> None:
    for command in (test, e2e, dev):
        group.add_command(command)
