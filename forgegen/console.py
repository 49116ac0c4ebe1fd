"""Terminal conventions shared by the three CLIs (forgegen, forge, forge-provision).

* The one place that maps exceptions to exit codes (STYLE.md point 25): a ForgeError prints its
  message without a traceback and exits 1 (2 for usage/configuration); Ctrl-C exits 130;
  anything else prints the traceback and exits 3.
* stdout is for results (``--json``, ``schema``); progress and logs go to stderr. With
  ``--json`` a failure is a JSON document too (:func:`error_document`), unless the command
  already printed its own report.
* Everything printed here (messages, reports, progress, log lines) passes through the one
  redaction, :func:`forgegen.urls.redact`.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from forgegen import urls
from forgegen.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, ForgeError

log = logging.getLogger("forge")
_emitted: list[bool] = [False]  # whether this run printed its JSON document already


class RedactingFormatter(logging.Formatter):
    """Log lines pass through the one redaction (:func:`forgegen.urls.redact`)."""

    def format(self, record: logging.LogRecord) -> str:
        return urls.redact(super().format(record))


def setup_logging(verbose: int = 0) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def say(message: str = "") -> None:
    """A progress line for people, on stderr."""
    click.echo(urls.redact(message), err=True)


def emit_json(document: Any) -> None:
    """The one JSON document a command prints on stdout with ``--json``."""
    click.echo(urls.redact(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str)))
    _emitted[0] = True


def error_document(exc: BaseException, exit_code: int) -> dict[str, Any]:
    """A failure as JSON: its kind, message, hint, exit code and, for input files, every
    located problem (``file``, ``line``, ``column``, ``path``, ``message``)."""
    if isinstance(exc, ForgeError):
        message, hint = exc.message, exc.hint
    elif isinstance(exc, click.ClickException):
        message, hint = exc.format_message(), None
    else:
        message, hint = str(exc), None
    problems = [vars(p) for p in exc.problems] if isinstance(exc, ConfigError) else []
    if problems:
        message = f"{len(problems)} problem{'' if len(problems) == 1 else 's'} in {problems[0]['file']}"
    kind = "UsageError" if isinstance(exc, click.ClickException) else type(exc).__name__
    return {"ok": False, "error": {"kind": kind, "message": message, "hint": hint,
                                   "exit_code": exit_code, "problems": problems}}


def _wants_json(args: list[str] | None) -> bool:
    argv = sys.argv[1:] if args is None else args
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def run_cli(command: click.Command, prog_name: str, args: list[str] | None = None) -> int:
    """Run a click command and turn whatever happens into an exit code."""
    _emitted[0] = False
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE if exc.exit_code in (1, 2) else exc.exit_code
        if _wants_json(args) and not _emitted[0]:
            emit_json(error_document(exc, code))
        return code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except ForgeError as exc:
        click.echo(f"{prog_name}: error: {urls.redact(str(exc))}", err=True)
        if _wants_json(args) and not _emitted[0]:
            emit_json(error_document(exc, exc.exit_code))
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except Exception:  # noqa: BLE001 - the internal-error path
        click.echo(f"{prog_name}: internal error (a bug in Forge; please report it with this trace):", err=True)
        click.echo(urls.redact(traceback.format_exc()), err=True, nl=False)
        return EXIT_INTERNAL


def entry_point(command: click.Command, prog_name: str) -> Callable[[], None]:
    def main() -> None:
        sys.exit(run_cli(command, prog_name))
    return main


def live(message: str) -> None:
    """A progress line that the next one replaces (bytes as they go), only on a terminal: off a
    terminal nothing is written (logs stay line-based). ``live("")`` clears it."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + message + ("\r" if message else ""))
        sys.stderr.flush()


def terminal_live() -> Callable[[str], None] | None:
    """:func:`live` when stderr is a terminal, else ``None`` (callers then stay line-based)."""
    return live if sys.stderr.isatty() else None
