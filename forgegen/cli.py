"""``forgegen``: the generator CLI (init, sync, check, schema, import, lock).

Each callback parses options, calls one typed function from :mod:`forgegen.generator`, and
prints the result. Heavy libraries (kubernetes, psycopg) are never imported from here, and
``generator``/``schema`` (pydantic, jinja2, yaml) only inside the commands that need them, so
``--version`` and ``--help`` start fast (tests/test_startup.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from forgegen import __version__, console
from forgegen.errors import ForgeError

# Option defaults, written here so that building the CLI imports neither the schema nor the
# generator (tests/test_startup.py keeps them equal to schema.DEFAULT_FILE and generator's).
DEFAULT_FILE = "deploy.yaml"
DEFAULT_FORGE_URL = "github:forge-deploy/forge"
DEFAULT_NIXPKGS_URL = "github:NixOS/nixpkgs/nixos-unstable"

CONFIG_OPTION = click.option(
    "--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_FILE, show_default=True, help="the deploy.yaml to read")


class ChangesPending(ForgeError):
    """``sync --check`` found files that would change (exit 1)."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more logging on stderr")
@click.version_option(__version__, prog_name="forgegen")
def cli(verbose: int) -> None:
    """Generate Nix flake apps for your services from deploy.yaml."""
    console.setup_logging(verbose)


@cli.command()
@CONFIG_OPTION
@click.option("--dry-run", is_flag=True, help="show what would change; write nothing")
@click.option("--check", is_flag=True, help="write nothing; exit 1 if anything would change")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
def sync(config_path: Path, dry_run: bool, check: bool, json_output: bool) -> None:
    """Regenerate nix/forge/** from deploy.yaml."""
    from forgegen import synccache

    result = synccache.noop(config_path)  # deploy.yaml and nix/forge as the last sync left them
    if result is None:
        from forgegen import generator

        result = generator.sync(config_path, dry_run=dry_run or check, stamp=True)
    lines = [f"{change.verb:>10}  {change.path}" for change in result.outcome.changes]
    if lines:  # one write for all of them (500 services: ~500 lines)
        console.say("\n".join(lines))
    summary = ", ".join(f"{result.outcome.count(v)} {v}" for v in ("create", "overwrite", "remove", "identical"))
    console.say(f"{'would change' if (dry_run or check) and result.outcome.changed else 'sync'}: {summary}")
    if json_output:
        console.emit_json(result.to_json())
    if check and result.outcome.changed:
        raise ChangesPending("nix/forge is out of date with deploy.yaml", hint="run `forgegen sync` and commit the result")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@cli.command(short_help="Validate deploy.yaml (or FILE); report every problem")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@CONFIG_OPTION
@click.option("--json", "json_output", is_flag=True,
              help="print the validated configuration as JSON (or the located errors)")
def check(file: Path | None, config_path: Path, json_output: bool) -> None:
    """Validate FILE (default: deploy.yaml) and report every problem at once."""
    from forgegen import generator

    config = generator.check(file or config_path)
    if json_output:
        console.emit_json(config.model_dump(mode="json", by_alias=True))
    console.say(f"{file or config_path}: ok ({plural(len(config.services), 'service')}, "
                f"{plural(len(config.environments), 'environment')})")


@cli.command("import", short_help="Turn the old per-service deploy.yaml files into one deploy.yaml")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path),
                metavar="OLD_DEPLOY_YAML...")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("deploy.yaml"),
              show_default=True, help="where to write it ('-' for stdout)")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
def import_cmd(files: tuple[Path, ...], output: Path, force: bool, json_output: bool) -> None:
    """Read the per-service files of the tool Forge replaces (service, registry, cache, manifests)
    and write one deploy.yaml: what carried over as values, what needs a decision as `# DECIDE:`
    comments next to a value that validates."""
    from forgegen import importer

    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        raise click.UsageError(f"{output} exists; pass --force to overwrite it, or -o another file")
    base = Path.cwd() if to_stdout else (output.parent if str(output.parent) else Path("."))
    result = importer.run_import(list(files), base=base)
    if to_stdout and not json_output:
        click.echo(result.text, nl=False)
    elif not to_stdout:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(result.text, encoding="utf-8")
        tmp.replace(output)
    if json_output:
        console.emit_json({"command": "import", "output": None if to_stdout else str(output),
                           "text": result.text if to_stdout else None,
                           "carried_over": result.carried, "decide": result.decide})
    console.say(f"import: {len(files)} file(s) -> {'stdout' if to_stdout else output}: "
                f"{len(result.carried)} value(s) carried over, {len(result.decide)} decision(s) "
                "marked DECIDE")
    for line in result.decide:
        console.say(f"  DECIDE: {line}")


@cli.command(short_help="Pin the services' external git sources in deploy.lock")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@CONFIG_OPTION
@click.option("--update", is_flag=True, help="move the pins (of SERVICEs, or all) to their ref's current commit")
@click.option("--dry-run", is_flag=True, help="resolve and show the pins; write nothing")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
def lock(services: tuple[str, ...], config_path: Path, update: bool, dry_run: bool, json_output: bool) -> None:
    """Pin every `services.S.source` (rev and narHash) in deploy.lock, then sync nix/forge.
    Existing pins stay unless --update; SERVICEs need --update."""
    from forgegen import generator

    if services and not update:
        raise click.UsageError("naming services is for --update (forgegen lock --update SERVICE...)")
    result = generator.lock(config_path, update=services, update_all=update and not services, dry_run=dry_run)
    for c in result.lock.changes:
        moved = f"{(c.previous or '')[:12]} -> {(c.rev or '')[:12]}" if c.verb == "update" else (c.rev or c.previous or "")[:12]
        console.say(f"{c.verb:>10}  {c.service} {moved}")
    console.say(f"lock ({result.lock.via}): {result.lock.path.name} "
                + ("would change" if dry_run and result.lock.changed else "written" if result.lock.written else "unchanged"))
    if result.sync is not None:
        console.say("sync: " + ", ".join(f"{result.sync.outcome.count(v)} {v}" for v in ("create", "overwrite", "remove", "identical")))
    if json_output:
        console.emit_json(result.to_json())


@cli.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of deploy.yaml (for editor completion)."""
    from forgegen import schema

    click.echo(json.dumps(schema.json_schema(), indent=2, sort_keys=True))


@cli.command(short_help="Start a project: deploy.yaml, flake.nix, nix/forge")
@click.option("--project", help="project name (default: the directory's name)")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option("--forge-url", default=DEFAULT_FORGE_URL, show_default=True, metavar="FLAKEREF",
              help="Forge's flake, e.g. a release (github:forge-deploy/forge/v0.1.0) or a local checkout "
                   "(git+file:///abs/forge)")
@click.option("--nixpkgs-url", default=DEFAULT_NIXPKGS_URL, show_default=True, metavar="FLAKEREF",
              help="the nixpkgs flake your images are built with")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
def init(project: str | None, root: Path, forge_url: str, nixpkgs_url: str, json_output: bool) -> None:
    """Start a project: a commented deploy.yaml, a flake.nix wired to nix/forge, and a first sync."""
    from forgegen import generator

    result = generator.init(root, project=project, forge_url=forge_url, nixpkgs_url=nixpkgs_url)
    for name in result.written:
        console.say(f"{'create':>10}  {name}")
    if result.flake_snippet:
        console.say("flake.nix exists and was left alone; add these lines to it:\n" + result.flake_snippet)
    console.say(f"sync: {result.sync.outcome.count('create')} files in nix/forge")
    console.say("next: flakes see only files git tracks, and the apps tag images with the commit:\n"
                "  git init -q && git add -A && nix flake lock && git commit -qm 'Deploy with Forge'\n"
                "  nix run .#deploy:api -- --dry-run     # every step, nothing changes\n"
                "then edit deploy.yaml, run `forgegen sync`, and commit again")
    if json_output:
        console.emit_json(result.to_json())


@cli.command("add-service", short_help="Scaffold a new service: source, tests, deploy.yaml, flake, GitOps")
@click.argument("name")
@click.option("--type", "kind", required=True, metavar="TYPE", help="rust, python, go, node or generic")
@click.option("--path", help="where the service's source goes (default: services/NAME)")
@CONFIG_OPTION
@click.option("--gitops-dir", type=click.Path(file_okay=False, path_type=Path),
              help="a working tree of the GitOps repository to add the overlays to "
                   "(default: gitops.repo when it is a local working tree)")
@click.option("--dry-run", is_flag=True, help="show what would be written; write nothing")
@click.option("--json", "json_output", is_flag=True, help="print one JSON report on stdout")
def add_service(name: str, kind: str, path: str | None, config_path: Path, gitops_dir: Path | None,
                dry_run: bool, json_output: bool) -> None:
    """Scaffold service NAME of type TYPE: a working HTTP service (GET /healthz) with tests at
    each level its type defines, its deploy.yaml entry (comments kept), the flake packages NAME
    and NAME-image (or the lines to add, when flake.nix is not one Forge wrote), the GitOps
    overlay of each environment; then sync."""
    from forgegen import generator, scaffold

    result = scaffold.plan(config_path, name, kind, path=path, gitops_dir=gitops_dir)
    verb = "would " if dry_run else ""
    for target in sorted(result.files):
        console.say(f"{verb + 'create':>16}  {target}")
    for target in sorted(result.edits):
        console.say(f"{verb + 'edit':>16}  {target}")
    if result.flake_snippet:
        console.say("flake.nix is not one Forge wrote (no add-service marker); add these lines to its "
                    "packages:\n" + result.flake_snippet)
    for note in result.notes:
        console.say(note)
    doc = result.to_json() | {"dry_run": dry_run}
    if not dry_run:
        scaffold.write(result)
        synced = generator.sync(config_path, stamp=True)
        console.say(f"sync: {synced.outcome.count('create')} created, {synced.outcome.count('overwrite')} updated")
        doc["sync"] = synced.to_json()
        console.say(f"next: git add -A, then `forge test {name}` and `nix run .#deploy:{name}`")
    if json_output:
        console.emit_json(doc)


main = console.entry_point(cli, "forgegen")
