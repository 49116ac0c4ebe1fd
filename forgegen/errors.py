"""The one exception tree of Forge.

Every error a user can see derives from :class:`ForgeError`. Its message has four parts:
what failed, the offending value, where (file and YAML path, or ``namespace/kind/name``), and
the next step. The CLI maps the classes to exit codes in one place (``exit_code``):

* :class:`UsageError` and :class:`ConfigError` (bad usage or configuration) exit 2,
* every other :class:`ForgeError` (the operation failed) exits 1,
* anything else is an internal error and exits 3,
* :class:`RolloutPending` (an OnDelete workload waits for its pods to be deleted) exits 4.

This module imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_PENDING = 4
EXIT_INTERRUPTED = 130


class ForgeError(Exception):
    """Base of every error Forge reports to a user (exit code 1 unless a subclass says)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(ForgeError):
    """The command line was wrong (exit code 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file: ``file:line:col: path: message``."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(ForgeError):
    """An input file is unreadable or invalid (exit code 2). Carries every problem at once;
    the message shows the first ``MAX_SHOWN`` of them (a generated file can have thousands)."""

    exit_code = EXIT_USAGE
    MAX_SHOWN = 100

    def __init__(self, problems: Sequence[Problem] | str, *, hint: str | None = None) -> None:
        if isinstance(problems, str):
            self.problems: tuple[Problem, ...] = ()
            text = problems
        else:
            self.problems = tuple(problems)
            text = "\n".join(str(p) for p in self.problems[:self.MAX_SHOWN])
            if len(self.problems) > self.MAX_SHOWN:
                text += (f"\n... and {len(self.problems) - self.MAX_SHOWN} more problems "
                         "(fix these first, then check again)")
        super().__init__(text, hint=hint)

    @classmethod
    def single(cls, file: str, message: str, *, line: int | None = None,
               column: int | None = None, path: str = "") -> ConfigError:
        return cls([Problem(file, line, column, path, message)])


class RenderError(ForgeError):
    """A template or value could not be rendered into Nix (a bug or an unsupported value)."""


class CommandError(ForgeError):
    """An external command failed. Shows the command, exit code, stdout and stderr."""

    def __init__(self, message: str, *, argv: Iterable[str] = (), returncode: int | None = None,
                 stdout: str = "", stderr: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class ToolMissing(CommandError):
    """An executable Forge needs is not on PATH."""


class BuildError(ForgeError):
    """``nix build`` of an image failed."""


class PushError(ForgeError):
    """Pushing an image to the registry failed or could not be verified."""


class GitOpsError(ForgeError):
    """Editing, committing or pushing the GitOps repository failed."""


class GitOpsFileError(GitOpsError):
    """A GitOps file Forge must not edit as it is: not valid YAML, or ambiguous (a duplicate key,
    an image listed twice, a shared entry). Bad input: exit code 2."""

    exit_code = EXIT_USAGE


class Reportable(Protocol):
    """A report or step result: what ``--json`` prints is its ``to_json()``."""

    def to_json(self) -> dict[str, Any]: ...


class ReconcileError(ForgeError):
    """Flux did not apply our revision (not Ready, or timed out). ``result`` is the partial
    reconcile result for the report, when the wait got that far."""

    result: Reportable | None = None


class RolloutFailed(ForgeError):
    """The workload's rollout failed (crash loop, bad image, deadline exceeded, ...)."""


class RolloutTimeout(RolloutFailed):
    """The rollout did not finish before the deadline."""


class RolloutPending(ForgeError):
    """An OnDelete StatefulSet/DaemonSet has the new template, but some pods still run the old
    one until they are deleted: neither a success nor a failure (exit 4, never rolled back)."""

    exit_code = EXIT_PENDING


class DeployFailed(ForgeError):
    """A lifecycle command (deploy, rollback, status, reconcile, migrate) failed; ``report`` is its
    report, printed with ``--json`` (exit 1, or ``exit_code``: 4 for a pending OnDelete rollout)."""

    def __init__(self, message: str, report: Reportable, *, hint: str | None = None,
                 exit_code: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report
        if exit_code is not None:
            self.exit_code = exit_code

    def document(self) -> dict[str, Any]:
        """The report as JSON data."""
        return self.report.to_json()


class ReleaseFailed(DeployFailed):
    """A release stopped at a failed step; ``report`` says where and what was not done (exit 1)."""


class ClusterUnreachable(ForgeError):
    """The Kubernetes API of an environment does not answer (checked before a release changes anything)."""


class MigrationFailed(ForgeError):
    """A migration Job failed, timed out, or could not be created or watched."""


class VerificationFailed(ForgeError):
    """A verification check (HTTP or command) did not pass within its retries."""


class TestsFailed(ForgeError):
    """A service's tests failed during a release stage (before the push, or against an environment)."""


class ApprovalRequired(UsageError):
    """An environment needs approval (``--yes`` or an interactive "y") and did not get it (exit 2)."""


class ProvisionError(ForgeError):
    """Provisioning PostgreSQL or an Attic cache failed."""


def exit_code(err: BaseException) -> int:
    """The process exit code for an exception (the one place that decides it)."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, ForgeError):
        return err.exit_code
    return EXIT_INTERNAL
