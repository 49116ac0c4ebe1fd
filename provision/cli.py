"""``forge-provision``: PostgreSQL and Attic from YAML, with a plan.

    forge-provision postgres plan  --config db.yaml [--json] [--check]
    forge-provision postgres apply --config db.yaml [--json] [--dry-run] [--rotate-passwords] [--lock-timeout S]
    forge-provision postgres drift --config db.yaml [--json] [--check]
    forge-provision attic plan|apply --config attic.yaml [--json] [--dry-run]

``provision`` is an alias of ``apply``. ``apply --dry-run`` reports exactly what ``plan`` does (the
same code path; nothing is changed), and with ``--json`` adds ``"dry_run": true``.
    forge-provision schema postgres|attic

Results go to stdout (the plan, the drift report, the apply summary, or one JSON document with
``--json``); progress and warnings go to stderr. Exit codes come from ``forgegen.errors``:
0 done, 1 failed (or ``--check`` found something), 2 bad usage or configuration, 3 internal
error, 130 interrupted. This module imports neither psycopg nor the provisioning modules
until a command runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import click

from forgegen import __version__, console
from forgegen.console import run_cli, setup_logging
from forgegen.errors import EXIT_FAILED, EXIT_OK

CONFIG = click.option("--config", "-c", "config", required=True, envvar="FORGE_PROVISION_CONFIG",
                      type=click.Path(dir_okay=False), help="The provisioning YAML file.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
CHECK = click.option("--check", is_flag=True, help="Exit 1 when there is anything to report.")
DRY_RUN = click.option("--dry-run", is_flag=True,
                       help="Report what would change, exactly as `plan` does; change nothing.")
JOBS = click.option("--jobs", "-j", default=4, show_default=True, type=click.IntRange(1, 64),
                    help="Databases read and changed in parallel.")


def _json(data: object) -> None:
    """The one JSON document on stdout (``--json``), through the console's one output channel."""
    console.emit_json(data)


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        console.say(f"warning: {line}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", count=True, help="More logging on stderr (-vv for debug).")
@click.version_option(__version__, prog_name="forge-provision")
def cli(verbose: int) -> None:
    """Provision PostgreSQL databases and Attic caches from YAML, idempotently, with a plan."""
    setup_logging(verbose)


@cli.group(short_help="Databases, roles, extensions, schemas, grants, CDC")
def postgres() -> None:
    """Databases, roles, extensions, schemas, grants and CDC publications."""


@postgres.command("plan")
@CONFIG
@JSON
@CHECK
@JOBS
def postgres_plan(config: str, as_json: bool, check: bool, jobs: int) -> int:
    """Print the statements apply would run; change nothing."""
    outcome = _postgres_plan(config, as_json, jobs=jobs)
    return EXIT_FAILED if check and outcome.changes else EXIT_OK


def _postgres_plan(config: str, as_json: bool, *, jobs: int, rotate_passwords: bool = False,
                   extra: dict[str, object] | None = None):
    """`plan`, and `apply --dry-run` (the same report; its JSON adds ``extra``)."""
    from forge_provision import postgres as pg
    from forge_provision import report, schema

    outcome = pg.run(schema.load_postgres(config), "plan", jobs=jobs, rotate_passwords=rotate_passwords)
    _warn(outcome.warnings)
    _json({**outcome.to_json(), **(extra or {})}) if as_json else click.echo(report.postgres_plan(outcome), nl=False)
    return outcome


@postgres.command("apply", short_help="Make the server match the config")
@CONFIG
@JSON
@DRY_RUN
@JOBS
@click.option("--rotate-passwords", is_flag=True, help="Set every configured password, even working ones.")
@click.option("--lock-timeout", default=0.0, show_default=True, type=click.FloatRange(0, 86400),
              help="Seconds to wait for another apply against the same server to finish.")
def postgres_apply(config: str, as_json: bool, dry_run: bool, jobs: int, rotate_passwords: bool,
                   lock_timeout: float) -> int:
    """Run only what is needed to make the server match the config (--dry-run: only report it)."""
    from forge_provision import postgres as pg
    from forge_provision import report, schema

    if dry_run:
        _postgres_plan(config, as_json, jobs=jobs, rotate_passwords=rotate_passwords, extra={"dry_run": True})
        return EXIT_OK
    started = time.monotonic()
    outcome = pg.run(schema.load_postgres(config), "apply", rotate_passwords=rotate_passwords, jobs=jobs,
                     lock_timeout=lock_timeout,
                     on_change=lambda ch: console.say(f"apply: {report.change_line(ch)}"))
    _warn(outcome.warnings)
    _json({**outcome.to_json(), "dry_run": False}) if as_json else click.echo(report.postgres_applied(outcome, time.monotonic() - started),
                                                        nl=False)
    return EXIT_OK


@postgres.command("drift", short_help="Report grants and attributes the config lacks")
@CONFIG
@JSON
@CHECK
@JOBS
def postgres_drift(config: str, as_json: bool, check: bool, jobs: int) -> int:
    """Report grants and attributes the databases have but the config does not."""
    from forge_provision import postgres as pg
    from forge_provision import report, schema

    outcome = pg.run(schema.load_postgres(config), "drift", jobs=jobs)
    _warn(outcome.warnings)
    _json(outcome.to_json()) if as_json else click.echo(report.postgres_drift(outcome), nl=False)
    return EXIT_FAILED if check and outcome.findings else EXIT_OK


@cli.group()
def attic() -> None:
    """Attic binary caches and access tokens."""


@attic.command("plan", short_help="Show cache and token changes; change nothing")
@CONFIG
@JSON
@CHECK
def attic_plan(config: str, as_json: bool, check: bool) -> int:
    """Show the caches to create or reconfigure and the tokens to write; change nothing."""
    outcome = _attic_plan(config, as_json)
    return EXIT_FAILED if check and outcome.changes else EXIT_OK


def _attic_plan(config: str, as_json: bool, extra: dict[str, object] | None = None):
    """`attic plan`, and `attic apply --dry-run` (the same report; its JSON adds ``extra``)."""
    from forge_provision import attic as at
    from forge_provision import report, schema

    outcome = at.run_attic(schema.load_attic(config), "plan")
    _json({**outcome.to_json(), **(extra or {})}) if as_json else click.echo(report.attic(outcome, applied=False),
                                                                              nl=False)
    return outcome


@attic.command("apply", short_help="Create and configure caches, mint tokens")
@CONFIG
@JSON
@DRY_RUN
def attic_apply(config: str, as_json: bool, dry_run: bool) -> int:
    """Create and configure the caches, mint tokens and write the client config (--dry-run: only report it)."""
    from forge_provision import attic as at
    from forge_provision import report, schema

    if dry_run:
        _attic_plan(config, as_json, {"dry_run": True})
        return EXIT_OK
    outcome = at.run_attic(schema.load_attic(config), "apply")
    _json({**outcome.to_json(), "dry_run": False}) if as_json else click.echo(report.attic(outcome, applied=True), nl=False)
    return EXIT_OK


# `provision`: the verb of the tool Forge replaces, kept as an alias of `apply`.
postgres.add_command(click.Command("provision", params=postgres_apply.params, callback=postgres_apply.callback,
                                   help="Alias of `apply` (the name the tool Forge replaces used).",
                                   short_help="Alias of apply"))
attic.add_command(click.Command("provision", params=attic_apply.params, callback=attic_apply.callback,
                                help="Alias of `apply` (the name the tool Forge replaces used).",
                                short_help="Alias of apply"))


@cli.command("schema", short_help="Print the JSON Schema of a configuration")
@click.argument("kind", type=click.Choice(["postgres", "attic"]))
def schema_cmd(kind: str) -> int:
    """Print the JSON Schema of a postgres or attic configuration (for editor completion)."""
    from forge_provision import schema

    click.echo(json.dumps(schema.json_schema(kind), indent=2, sort_keys=True))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exceptions become exit codes in forgegen.console, as for forgegen and forge."""
    return run_cli(cli, "forge-provision", list(argv) if argv is not None else None)


if __name__ == "__main__":
    sys.exit(main())
