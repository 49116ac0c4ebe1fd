"""``forge``: the runtime the generated flake apps call (``forge <command> --plan plan.json``).

Each callback parses options, calls one typed function, and prints the result.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from forgegen import __version__, console
from forgegen.errors import ForgeError

if TYPE_CHECKING:
    from forgegen.plan import Plan
    from forgegen.runtime.steps import Step
    from forgegen.runtime.tags import SourceRevision

# Everything else is imported inside the commands: ``forge --version`` and ``--help`` import
# neither the plan nor any step (tests/test_startup.py); plan.plan_relpath('SERVICE') is this path.
PLAN_HELP = ("the JSON plan written by `forgegen sync` (the flake apps pass it; default: "
             "nix/forge/plans/SERVICE.json of this repository)")


def _steps() -> ModuleType:
    """The module forgegen.runtime.steps, imported when a command runs (not for --help)."""
    from forgegen.runtime import steps

    return steps


def _plan_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path),
                        envvar="FORGE_PLAN", help=PLAN_HELP)(f)


def _load(plan_path: Path | None, target: str | None) -> Plan:
    """The plan given with --plan, else the one `forgegen sync` wrote in this repository; with
    FORGE_REGISTRY applied (forgegen.runtime.registry_env), which the output then shows."""
    from forgegen.plan import find_plan, load_plan
    from forgegen.runtime import registry_env

    plan = load_plan(plan_path) if plan_path is not None else find_plan(
        target.partition(":")[0] or None if target else None)
    plan, changed = registry_env.apply(plan, os.environ)
    if changed is not None:
        click.get_current_context().meta["forge.registry_override"] = changed
        console.say(f"FORGE_REGISTRY: images go to {changed['to']} instead of {changed['from']}")
    return plan


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A JSON result, with the FORGE_REGISTRY override it ran under (if any)."""
    changed = click.get_current_context().meta.get("forge.registry_override")
    return {**doc, "registry_override": changed} if changed else doc


def _complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of SERVICE[:ENVIRONMENT] from the plans (--plan, or this repository's)."""
    from click.shell_completion import CompletionItem

    from forgegen.plan import find_plan, find_root, load_plan, service_names

    try:
        plan_path = ctx.params.get("plan_path")
        plans = [load_plan(plan_path)] if plan_path else [find_plan(n) for n in service_names(find_root())]
    except ForgeError:
        return []
    words = [w for p in plans for s in p.services for w in (s.name, *(f"{s.name}:{t.environment}" for t in s.targets))]
    return [CompletionItem(w) for w in words if w.startswith(incomplete)]


def _target_argument(name: str, metavar: str, *, required: bool = True) -> Callable[..., Any]:
    return click.argument(name, metavar=metavar, required=required, shell_complete=_complete_target)


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")(f)
    f = click.option("--dry-run", is_flag=True, help="print every step with resolved values; change nothing")(f)
    return _plan_option(f)


def _revision_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--allow-dirty", is_flag=True, help="tag an image built from uncommitted changes")(f)
    return click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path), default=".",
                        show_default=True, help="the source checkout whose commit names the image")(f)


def print_steps(command: str, target: str, steps: list[Step], json_output: bool,
                extra: dict[str, Any] | None = None) -> None:
    """The ``--dry-run`` output: numbered steps (stdout is the result here), or one JSON document."""
    if json_output:
        doc = {"command": command, "target": target, "dry_run": True,
               "steps": [s.to_json() for s in steps], **(extra or {})}
        console.emit_json(_shown(doc))
        return
    click.echo(f"forge {command} {target} --dry-run: {len(steps)} step(s), nothing will change")
    for i, step in enumerate(steps, 1):
        click.echo(f"{i:>3}. [{step.name}] {step.summary}")


def _revision(source_dir: Path, allow_dirty: bool, dry_run: bool = False) -> SourceRevision:
    """The commit to tag. A dry run describes a dirty tree too (``_source_facts`` says the real run
    would refuse it); the real run refuses it unless ``allow_dirty``."""
    from forgegen.runtime.tags import source_revision

    return source_revision(source_dir, os.environ, allow_dirty=allow_dirty or dry_run)


def _source_facts(revision: SourceRevision, allow_dirty: bool) -> dict[str, Any]:
    """What a dry run reports about the source: its commit, and whether the tree is dirty (with a
    warning, also on stderr, when the real run would refuse it)."""
    facts: dict[str, Any] = {"source_commit": revision.sha7}
    if revision.dirty:
        facts["source_dirty"] = True
        if not allow_dirty:
            warning = (f"the source tree has uncommitted changes: the real run refuses them (tag {revision.sha7} "
                       "would not describe the image); commit or stash them, or pass --allow-dirty")
            console.say(f"forge: warning: {warning}")
            facts["warnings"] = [warning]
    return facts


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more logging on stderr (-vv for debug)")
@click.version_option(__version__, prog_name="forge")
def cli(verbose: int) -> None:
    """Build, push, deploy, watch and roll back Nix-built services through GitOps and Flux."""
    console.setup_logging(verbose)


@cli.command(short_help="Build SERVICE's image with Nix")
@_common
@_revision_options
@_target_argument("service", "SERVICE")
def build(plan_path: Path | None, json_output: bool, dry_run: bool, source_dir: Path, allow_dirty: bool,
          service: str) -> None:
    """Build SERVICE's image with Nix for each of its architectures."""
    plan = _load(plan_path, service)
    svc, _ = _steps().split_target(service, plan)
    if dry_run:
        print_steps("build", svc.name, _steps().describe("build", plan, svc, None, None), json_output)
        return
    from forgegen.runtime.build import run_build

    result = run_build(plan, svc.name, flake=str(source_dir), progress=console.say, live=console.terminal_live())
    if json_output:
        console.emit_json({"command": "build", **result.to_json()})
    else:
        for image in result.images:
            click.echo(image.store_path)


@cli.command(short_help="Build and push SERVICE's image under deterministic tags")
@_common
@_revision_options
@_target_argument("service", "SERVICE")
def push(plan_path: Path | None, json_output: bool, dry_run: bool, source_dir: Path, allow_dirty: bool,
         service: str) -> None:
    """Build SERVICE's image and push it under <arch>-<sha7> and <arch>-latest."""
    plan = _load(plan_path, service)
    svc, _ = _steps().split_target(service, plan)
    revision = _revision(source_dir, allow_dirty, dry_run)
    if dry_run:
        print_steps("push", svc.name, _steps().describe("push", plan, svc, None, revision), json_output,
                    _source_facts(revision, allow_dirty))
        return
    from forgegen.runtime.registry import run_push

    result = run_push(plan, svc.name, revision=revision, flake=str(source_dir), progress=console.say,
                      live=console.terminal_live())
    if json_output:
        console.emit_json(_shown({"command": "push", **result.to_json()}))
    else:
        click.echo(result.deploy_reference)


@cli.command(short_help='Build, push, commit the tag, reconcile Flux, watch')
@_common
@_revision_options
@click.option("--pin-digest", is_flag=True, help="write the pushed digest next to the tag (name:tag@digest)")
@_target_argument("target", "SERVICE[:ENVIRONMENT]")
def deploy(plan_path: Path | None, json_output: bool, dry_run: bool, source_dir: Path, allow_dirty: bool,
           pin_digest: bool, target: str) -> None:
    """Build, push, write the tag to the GitOps repo, reconcile Flux, and watch the rollout.

    Without :ENVIRONMENT, the service's first environment in promotion order (the first of
    deploy.yaml's environments it is deployed to)."""
    plan = _load(plan_path, target)
    svc, tgt = _steps().split_target(target, plan)
    revision = _revision(source_dir, allow_dirty, dry_run)
    if dry_run:
        assert tgt is not None
        steps = _steps().describe("deploy", plan, svc, tgt, revision)
        print_steps("deploy", f"{svc.name}:{tgt.environment}", steps, json_output,
                    {"service": svc.name, "environment": tgt.environment, **_source_facts(revision, allow_dirty)})
        return
    from forgegen.runtime import deploy as deploy_mod

    _report(lambda: deploy_mod.run_deploy(plan, svc.name, tgt.environment if tgt else None, revision=revision,
                                          flake=str(source_dir), say=console.say, pin_digest=pin_digest),
            json_output)


def _report(run: Callable[[], Any], json_output: bool) -> None:
    """Run a lifecycle command; print its JSON report (also when it failed), then the verdict."""
    from forgegen.errors import DeployFailed
    from forgegen.runtime import present

    try:
        report = run()
    except DeployFailed as err:
        if json_output:
            console.emit_json(_shown(err.document()))
        raise
    if json_output:
        console.emit_json(_shown(report.to_json()))
    console.say(present.verdict(report))


@cli.command(short_help='Watch a rollout; fail fast with the reason and the logs')
@_common
@_target_argument("target", "SERVICE:ENVIRONMENT")
def rollout(plan_path: Path | None, json_output: bool, dry_run: bool, target: str) -> None:
    """Watch SERVICE's rollout in ENVIRONMENT; fail fast with the reason and the logs."""
    plan = _load(plan_path, target)
    svc, tgt = _steps().split_target(target, plan, need_env=True)
    assert tgt is not None
    if dry_run:
        print_steps("rollout", f"{svc.name}:{tgt.environment}", _steps().describe("rollout", plan, svc, tgt, None), json_output)
        return
    from forgegen.runtime.rollout import raise_for_outcome, run_rollout

    doc = run_rollout(plan, svc.name, tgt.environment, json_output=json_output).to_json()
    if json_output:
        console.emit_json(doc)
    raise_for_outcome(doc)


@cli.command(short_help='Put the previous image back (commit, reconcile, watch)')
@_common
@click.option("--to", "to_tag", metavar="TAG", help="roll back to this tag (default: the previous distinct tag)")
@_target_argument("target", "SERVICE:ENVIRONMENT")
def rollback(plan_path: Path | None, json_output: bool, dry_run: bool, to_tag: str | None, target: str) -> None:
    """Put the previous image back: commit it to the GitOps repo, reconcile, watch."""
    plan = _load(plan_path, target)
    svc, tgt = _steps().split_target(target, plan, need_env=True)
    assert tgt is not None
    if dry_run:
        print_steps("rollback", f"{svc.name}:{tgt.environment}",
                    _steps().describe("rollback", plan, svc, tgt, None, to_tag=to_tag), json_output)
        return
    from forgegen.runtime import deploy as deploy_mod

    _report(lambda: deploy_mod.run_rollback(plan, svc.name, tgt.environment, to=to_tag, say=console.say), json_output)


@cli.command(short_help='What runs where: tag in git, image, replicas, Flux')
@_common
@click.option("--environments", "environments", metavar="ENV[,ENV…]", help="only these environments")
@_target_argument("service", "[SERVICE]", required=False)
def status(plan_path: Path | None, json_output: bool, dry_run: bool, environments: str | None, service: str | None) -> None:
    """What runs where: the tag in git, the image running, replicas, Flux's applied revision."""
    plan = _load(plan_path, service)
    svc = _steps().split_target(service, plan)[0] if service else None
    if dry_run:
        print_steps("status", service or plan.project, _steps().describe("status", plan, svc, None, None), json_output)
        return
    from forgegen.runtime import deploy as deploy_mod
    from forgegen.runtime import present

    report = deploy_mod.run_status(plan, svc.name if svc else None, environments=_environments(plan, environments))
    if json_output:
        console.emit_json(report.to_json())
    else:
        click.echo(present.status_table(report.to_json()))
    deploy_mod.raise_for_status(report)


@cli.command(short_help='Every service (or one), environment by environment')
@_common
@_revision_options
@click.option("--environments", "environments", metavar="ENV[,ENV…]",
              help="only these environments (taken in promotion order)")
@click.option("--yes", "-y", is_flag=True, help="approve every environment that requires approval")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
              help="services deployed at once per environment (depends_on order kept)")
@click.option("--lock-timeout", type=click.FloatRange(0), default=0.0, show_default=True, metavar="SECONDS",
              help="wait this long for another release's lock (a Kubernetes Lease) before exiting 2")
@click.option("--lock-duration", type=click.IntRange(5, 3600), default=30, show_default=True, metavar="SECONDS",
              help="the Lease's duration: renewed every third of it; another release takes it over this long "
                   "after the last renewal")
@click.option("--resume", "resume", is_flag=False, flag_value="last", default=None, metavar="[REPORT.json]",
              help="continue a failed release from its report (default: the last one Forge kept), skipping what is done")
@click.option("--stage", type=click.Choice(["full", "pre", "comprehensive"]), default="full", show_default=True,
              help="pre (prerelease): build, test, push, the first environment, what is ready to promote; "
                   "comprehensive: build, test, push, every environment, e2e tests against the first one before promotion")
@_target_argument("service", "[SERVICE]", required=False)
def release(plan_path: Path | None, json_output: bool, dry_run: bool, source_dir: Path, allow_dirty: bool,
            environments: str | None, yes: bool, concurrency: int, lock_timeout: float, lock_duration: int,
            resume: str | None, stage: str, service: str | None) -> None:
    """Every service (or SERVICE), environment by environment, with migrations and gates.

    Independent services of an environment run in parallel (--concurrency); a Kubernetes Lease
    per product and environment keeps two releases apart (--lock-timeout); --resume continues a
    failed release; --stage pre|comprehensive adds the services' tests (the apps prerelease and
    comprehensive-release)."""
    plan = _load(plan_path, service)
    services = [_steps().split_target(service, plan)[0]] if service else list(plan.services)
    envs = _environments(plan, environments)
    revision = _revision(source_dir, allow_dirty, dry_run)
    if dry_run:
        steps = _steps().release_steps(plan, services, envs, revision, stage=stage)
        shown = envs[:1] if stage == "pre" else envs
        print_steps("release", service or plan.project, steps, json_output,
                    {"environments": shown, **_source_facts(revision, allow_dirty), "stage": stage})
        return
    from forgegen.runtime import release as release_mod

    ask = (lambda q: click.confirm(q, default=False, err=True)) if sys.stdin.isatty() else None
    options = release_mod.Options(concurrency=concurrency, lock_timeout=lock_timeout, lock_duration=lock_duration,
                                  stage=stage)
    if resume is not None:
        options.resume, options.resume_from = release_mod.load_resume(plan, resume)
    _report(lambda: release_mod.run_release(plan, [s.name for s in services] if service else None, envs,
                                            revision=revision, yes=yes, ask=ask, flake=str(source_dir),
                                            say=console.say, options=options), json_output)


@cli.command(short_help="Reconcile Flux to the GitOps head (or --revision) and wait")
@_common
@click.option("--revision", metavar="SHA", help="wait for this GitOps commit (default: the branch head)")
@click.option("--timeout", type=float, metavar="SECONDS", help="override flux.timeout")
@_target_argument("target", "[SERVICE:]ENVIRONMENT")
def reconcile(plan_path: Path | None, json_output: bool, dry_run: bool, revision: str | None,
              timeout: float | None, target: str) -> None:
    """Ask Flux to apply the GitOps branch head (or --revision) in ENVIRONMENT and wait until every
    Kustomization has: the objects of every service deployed there, or of SERVICE only. The same
    pinned reconcile, evidence and exit codes as inside `forge deploy`."""
    from forgegen.runtime import ops

    plan = _load(plan_path, target if ":" in target else None)
    env, groups = ops.reconcile_targets(plan, target)
    if dry_run:
        steps = [_steps()._reconcile_step(ops.replaced(t, flux=ops.replaced(t.flux, kustomizations=ks)))
                 for t, ks in groups]
        print_steps("reconcile", target, steps, json_output, {"environment": env, "revision": revision or "head"})
        return
    _report(lambda: ops.run_reconcile(plan, target, revision=revision, timeout=timeout, say=console.say), json_output)


@cli.command(short_help="Run SERVICE's migrations in ENVIRONMENT as Kubernetes Jobs")
@_common
@_revision_options
@click.option("--tag", metavar="TAG", help="the image tag to migrate with (default: <arch>-<sha7> of --source)")
@_target_argument("target", "SERVICE:ENVIRONMENT")
def migrate(plan_path: Path | None, json_output: bool, dry_run: bool, source_dir: Path, allow_dirty: bool,
            tag: str | None, target: str) -> None:
    """Run SERVICE's migrations in ENVIRONMENT, as `forge release` does before the GitOps commit:
    one Job per migration and tag; a Job that already succeeded is not run again."""
    from forgegen.runtime import ops
    from forgegen.runtime.tags import image_tags

    plan = _load(plan_path, target)
    svc, tgt = _steps().split_target(target, plan, need_env=True)
    assert tgt is not None
    tag = tag or image_tags(_revision(source_dir, allow_dirty, dry_run).sha7, svc.image.architectures).deploy_tag
    if dry_run:
        jobs = ops.migration_jobs(plan, svc, tgt, tag)
        steps = [_steps().Step("migrate", f"create {j['metadata']['namespace']}/Job/{j['metadata']['name']} "
                                         f"(skipped if it already succeeded) and wait", {"job": j}) for j in jobs]
        print_steps("migrate", f"{svc.name}:{tgt.environment}", steps, json_output,
                    {"service": svc.name, "environment": tgt.environment, "tag": tag})
        if not json_output:
            import json as _json

            for j in jobs:
                click.echo(_json.dumps(j, indent=2))
        return
    _report(lambda: ops.run_migrate(plan, svc, tgt, tag=tag, say=console.say), json_output)


def _environments(plan: Plan, spec: str | None) -> list[str]:
    if not spec:
        return list(plan.environments)
    wanted = [e.strip() for e in spec.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in plan.environments]
    if unknown:
        raise click.BadParameter(f"unknown environment(s) {', '.join(unknown)}; use: {', '.join(plan.environments)}",
                                 param_hint="--environments")
    return sorted(dict.fromkeys(wanted), key=plan.environments.index)  # promotion order


@cli.group("builder-image", short_help="Verify and release the Nix builder image (root flake)")
def builder_image() -> None:
    """The root flake's packages.<system>.nix-builder-image: nix and what a builder needs."""


_FLAKE = click.option("--flake", default=".", show_default=True, help="the Forge flake that defines nix-builder-image")


@builder_image.command("verify", short_help="Build the image; check nix evaluates and builds from its root")
@_FLAKE
@click.option("--system", default=None, help="the image's system (default: this machine's)")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="unpack the image's root filesystem here and keep it")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
@click.option("--dry-run", is_flag=True, help="print every step; change nothing")
def builder_image_verify(flake: str, system: str | None, keep: Path | None, json_output: bool, dry_run: bool) -> int:
    """Build the builder image and check, from its own root filesystem (unshare + chroot, no
    container engine), that nix is there and evaluates and builds a trivial derivation."""
    from forgegen.runtime import builder_image as bi

    if dry_run:
        shown = bi.steps(flake, system or "<this machine's system>")
        if json_output:
            console.emit_json({"command": "builder-image verify", "dry_run": True, "steps": shown})
        else:
            for n, step in enumerate(shown, 1):
                click.echo(f"{n}. {step}")
        return 0
    result = bi.verify(flake, system, keep=keep, say=console.say, live=console.terminal_live())
    if json_output:
        console.emit_json({"command": "builder-image verify", **result.to_json()})
    else:
        click.echo(f"{result.image}: {'verified' if result.ok else 'FAILED'} "
                   f"({sum(c.ok for c in result.checks)} of {len(result.checks)} checks)")
    return 0 if result.ok else 1


@builder_image.command("release", short_help="Push the image under Forge's deterministic tags")
@_FLAKE
@click.option("--registry", required=True, help="registry host[:port]")
@click.option("--organization", required=True, help="path under the registry (the image is <org>/nix-builder)")
@click.option("--insecure", is_flag=True, help="plain HTTP / unverified TLS (a local registry)")
@click.option("--system", "systems", multiple=True, help="systems to push (default: x86_64-linux)")
@click.option("--allow-dirty", is_flag=True, help="tag an image built from uncommitted changes")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
@click.option("--dry-run", is_flag=True, help="print every step; change nothing")
def builder_image_release(flake: str, registry: str, organization: str, insecure: bool, systems: tuple[str, ...],
                          allow_dirty: bool, json_output: bool, dry_run: bool) -> None:
    """Build and push the builder image as <registry>/<organization>/nix-builder:<arch>-<sha7>
    (and <arch>-latest), digest verified, with `forge push`'s credentials and retries."""
    from forgegen.runtime import builder_image as bi

    plan = bi.release_plan(registry, organization, insecure=insecure, systems=systems or ("x86_64-linux",))
    source = flake.removeprefix("path:") if not flake.startswith(("github:", "git+")) else "."
    revision = _revision(Path(source), allow_dirty, dry_run)
    if dry_run:
        print_steps("push", bi.SERVICE, _steps().describe("push", plan, plan.service(bi.SERVICE), None, revision),
                    json_output, _source_facts(revision, allow_dirty))
        return
    from forgegen.runtime.registry import run_push

    result = run_push(plan, bi.SERVICE, revision=revision, flake=flake, progress=console.say,
                      live=console.terminal_live())
    if json_output:
        console.emit_json({"command": "builder-image release", **result.to_json()})
    else:
        click.echo(result.deploy_reference)


from forgegen.runtime import devcli  # noqa: E402 - the development loop's commands (test, e2e, dev)

devcli.register(cli)

from forgegen.runtime import codegencli  # noqa: E402 - generated code (GraphQL schema and types, Cargo.nix)

codegencli.register(cli)

main = console.entry_point(cli, "forge")
