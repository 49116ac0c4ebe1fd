"""``forge extract-schema``, ``forge codegen``, ``forge codegen-sync``, ``forge update-cargo-nix``:
the generated-code commands (the work is in :mod:`forgegen.runtime.codegen`, imported when a
command runs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from forgegen import console

if TYPE_CHECKING:
    from forgegen.plan import Plan

ROOT_HELP = "the repository root (paths in deploy.yaml are relative to it; default: where the plans are, else .)"
CHECK_HELP = "write nothing; exit 1 naming the generated files that are out of date (for CI)"


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    from forgegen.runtime.cli import _common

    f = click.option("--root", "root", type=click.Path(file_okay=False, path_type=Path), help=ROOT_HELP)(f)
    return _common(f)


def _setup(plan_path: Path | None, service: str | None, root: Path | None) -> tuple[Plan, Path]:
    from forgegen.plan import find_root
    from forgegen.runtime.cli import _load

    plan = _load(plan_path, service)
    if root is None:
        root = Path.cwd() if plan_path is not None else find_root()
    return plan, root.resolve()


def _run(command: str, plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None,
         service: str | None, check: bool, *, extract: bool, generate: bool) -> None:
    from forgegen.runtime import codegen

    plan, repo = _setup(plan_path, service, root)
    if dry_run:
        steps = codegen.describe(plan, service, extract=extract, generate=generate)
        if json_output:
            console.emit_json({"command": command, "target": service or plan.project, "dry_run": True, "steps": steps})
        for i, step in enumerate(steps, 1):
            console.say(f"{i:>3}. [{step['step']}] {step['service']}: "
                        + (f"{step['url']} -> {step['output']}" if step["step"] == "extract-schema" else step["command"]))
        return
    doc = codegen.run(repo, plan, service, extract=extract, generate=generate, check=check, say=console.say)
    if json_output:
        console.emit_json({"command": command, "target": service or plan.project, **doc})


def register(cli: click.Group) -> None:
    @cli.command("extract-schema", short_help="Fetch the GraphQL schema of the running SERVICE into its file")
    @_options
    @click.option("--check", is_flag=True, help=CHECK_HELP)
    @click.argument("service", metavar="SERVICE")
    def extract_schema(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, check: bool,
                       service: str) -> None:
        """Ask SERVICE (codegen.extract.url) for its schema: `_service { sdl }` when it answers it,
        else the standard introspection query printed as SDL; write it to codegen.extract.output."""
        _run("extract-schema", plan_path, json_output, dry_run, root, service, check, extract=True, generate=False)

    @cli.command(short_help="Run the GraphQL code generator of SERVICE, or of every service")
    @_options
    @click.option("--check", is_flag=True, help=CHECK_HELP)
    @click.argument("service", metavar="[SERVICE]", required=False)
    def codegen(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, check: bool,
                service: str | None) -> None:
        """Run codegen.command in the service's directory (its pinned npm packages from Forge's cache);
        only the files under codegen.outputs are written back."""
        _run("codegen", plan_path, json_output, dry_run, root, service, check, extract=False, generate=True)

    @cli.command("codegen-sync", short_help="Extract every declared schema, then run every code generator")
    @_options
    @click.option("--check", is_flag=True, help=CHECK_HELP)
    def codegen_sync(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, check: bool) -> None:
        """Sync generated code: extract-schema for every service that declares codegen.extract, then
        codegen for every service that declares codegen.command. --check fails when the committed
        files are out of date."""
        _run("codegen-sync", plan_path, json_output, dry_run, root, None, check, extract=True, generate=True)

    @cli.command("update-cargo-nix", short_help="Regenerate SERVICE's Cargo.nix (crate2nix)")
    @_options
    @click.argument("service", metavar="SERVICE")
    def update_cargo_nix(plan_path: Path | None, json_output: bool, dry_run: bool, root: Path | None, service: str) -> None:
        """Run `crate2nix generate` in a Rust service's directory when it has a Cargo.nix; for any
        other service, say that its build needs none (exit 0)."""
        from forgegen.runtime import codegen

        plan, repo = _setup(plan_path, service, root)
        doc = codegen.update_cargo_nix(repo, plan.service(service), dry_run=dry_run, say=console.say)
        if json_output:
            console.emit_json({"command": "update-cargo-nix", "target": service, **doc})
