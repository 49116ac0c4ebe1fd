"""The reports of Forge's lifecycle commands, as typed records with one ``to_json``.

Each command (``deploy``, ``rollback``, ``rollout``, ``reconcile``, ``migrate``, ``status``, ``release``)
builds one of these while it runs and the CLI prints ``to_json()`` with ``--json`` (the
DESIGN.md JSON report contract): the keys and values are the report's fields, nested records
and step results (anything with a ``to_json``) are converted in place, and a field still
:data:`UNSET` is left out (a step that did not run has no key, which is not the same as a key
whose value is ``null``). A field whose JSON key is not a Python name says so in its metadata
(``from``).

A failed command raises :class:`forgegen.errors.DeployFailed` (``release``:
:class:`~forgegen.errors.ReleaseFailed`) carrying its report. How a report
is shown to people lives in :mod:`forgegen.runtime.present`.

This module imports nothing from the package but :mod:`forgegen.errors`.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from forgegen.errors import ForgeError, Reportable


class Unset(enum.Enum):
    """The value of a report field whose key is left out of the JSON (the step did not run)."""

    UNSET = "unset"


UNSET = Unset.UNSET


def _key(name: str) -> dict[str, str]:
    """Field metadata: the field's JSON key (for keys that are not Python names)."""
    return {"key": name}


def to_json_value(value: Any) -> Any:
    """``value`` as JSON data: records and step results through their ``to_json``, containers
    element by element."""
    if hasattr(value, "to_json") and not isinstance(value, type):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return value


@dataclass
class Record:
    """A report record (a dataclass) whose JSON is its fields: ``UNSET`` ones are left out, a
    field with metadata ``flatten`` (a mapping of step results) is merged in at the top level,
    ``internal`` ones are not shown, ``key`` renames one."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is UNSET or f.metadata.get("internal"):
                continue
            if f.metadata.get("flatten"):
                out.update(to_json_value(value))
                continue
            out[f.metadata.get("key", f.name)] = to_json_value(value)
        return out


@dataclass(kw_only=True)
class StepError(Record):
    """The error that ended a command: its class name, message and hint."""

    type: str
    message: str
    hint: str | None

    @classmethod
    def of(cls, err: ForgeError) -> StepError:
        return cls(type=type(err).__name__, message=err.message, hint=err.hint)


@dataclass(kw_only=True)
class Timed(Record):
    """A report with ``timings`` (``<step>_seconds`` and ``total_seconds``) since it was made."""

    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic, repr=False, metadata={"internal": True})

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record how long the body took as ``timings[<name>_seconds]`` (also when it raised)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.timings[f"{name}_seconds"] = round(time.monotonic() - t0, 3)

    def finish(self) -> None:
        """``timings.total_seconds``: the time since the report was made."""
        self.timings["total_seconds"] = round(time.monotonic() - self.started, 3)


# ---------------------------------------------------------------------------------------------
# forge deploy / forge rollback (and a release's per-service deploy)


@dataclass(kw_only=True)
class RollbackAttempt(Record):
    """What a failed deploy's automatic rollback (``rollback_on_failure``) did."""

    to: str | Unset = UNSET
    outcome: str | Unset = UNSET
    reason: str | Unset = UNSET
    error: str | Unset = UNSET


@dataclass(kw_only=True)
class RollRecord(Timed):
    """GitOps edit → reconcile → rollout of one tag: the step results under their step names
    (``gitops``, ``reconcile``, ``rollout``, and ``rollback_…`` for the automatic rollback),
    the outcome, where it failed and why."""

    outcome: str = "running"
    steps: dict[str, Any] = field(default_factory=dict, metadata={"flatten": True})
    failed_step: str | Unset = UNSET
    error: StepError | Unset = UNSET
    rollback: RollbackAttempt | Unset = UNSET

    def failed(self, step: str, err: ForgeError) -> None:
        """Mark the record failed at ``step``; a partial result the error carries becomes the step's entry."""
        self.outcome = "failed"
        self.failed_step = step
        self.error = StepError.of(err)
        result = getattr(err, "result", None)
        if result is not None and hasattr(result, "to_json"):
            self.steps.setdefault(step, result)


@dataclass(kw_only=True)
class DeployReport(RollRecord):
    """``forge deploy`` and ``forge rollback``: the roll record plus what was pushed or chosen."""

    command: Literal["deploy", "rollback"]
    service: str
    environment: str
    source_commit: str | Unset = UNSET
    image: str | Unset = UNSET
    digest: str | None | Unset = UNSET
    from_tag: str | None | Unset = field(default=UNSET, metadata=_key("from"))
    to: str | Unset = UNSET


# ---------------------------------------------------------------------------------------------
# forge rollout


@dataclass(kw_only=True)
class RolloutReport(Record):
    """``forge rollout``: which service and environment, and the rollout result's fields."""

    service: str
    environment: str
    result: Reportable = field(metadata={"flatten": True})
    command: Literal["rollout"] = "rollout"


# ---------------------------------------------------------------------------------------------
# forge reconcile


@dataclass(kw_only=True)
class ReconcileEntry(Record):
    """One Flux source reconciled: the cluster, the commit asked for, the Kustomizations, the result."""

    cluster: str | None
    commit: str
    kustomizations: list[str]
    result: Reportable | None | Unset = UNSET


@dataclass(kw_only=True)
class ReconcileReport(Timed):
    target: str
    environment: str
    command: Literal["reconcile"] = "reconcile"
    outcome: str = "running"
    reconciles: list[ReconcileEntry] = field(default_factory=list)
    error: StepError | Unset = UNSET


# ---------------------------------------------------------------------------------------------
# forge migrate


@dataclass(kw_only=True)
class MigrationFailure(Record):
    """A migration that could not be run or watched (no result of its own)."""

    name: str
    error: str
    outcome: str = "failed"


@dataclass(kw_only=True)
class MigrateReport(Timed):
    service: str
    environment: str
    namespace: str
    tag: str
    command: Literal["migrate"] = "migrate"
    outcome: str = "running"
    migrations: list[Reportable] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# forge status (and a release's gate)


@dataclass(kw_only=True)
class GitState(Record):
    """The tag (and pinned digest) the GitOps repository deploys, at its head commit."""

    tag: str | None
    digest: str | None
    commit: str


@dataclass(kw_only=True)
class WorkloadState(Record):
    """The workload as the cluster has it, and the one health judgement for the image git deploys.
    A workload that is not there has only ``found`` and ``healthy``."""

    found: bool
    healthy: bool
    image: str | None | Unset = UNSET
    desired: int | Unset = UNSET
    updated: int | Unset = UNSET
    ready: int | Unset = UNSET
    available: int | Unset = UNSET
    observed: bool | Unset = UNSET
    verdict: str | Unset = UNSET
    message: str | None | Unset = UNSET


@dataclass(kw_only=True)
class StatusRow(Record):
    """One service in one environment: git, the workload, Flux, whether they agree, what went wrong."""

    service: str
    environment: str
    namespace: str
    errors: list[str] = field(default_factory=list)
    git: GitState | None = None
    workload: WorkloadState | None = None
    flux: dict[str, Any] | None = None
    healthy: bool = False

    def judge(self) -> bool:
        """Healthy: no error, git read, the workload found and healthy, Flux ready."""
        w, f = self.workload, self.flux
        self.healthy = bool(not self.errors and self.git and w and w.found and w.healthy and f and f.get("ready"))
        return self.healthy


@dataclass(kw_only=True)
class StatusReport(Record):
    project: str
    services: list[StatusRow]
    command: Literal["status"] = "status"
    healthy: bool = field(init=False)

    def __post_init__(self) -> None:
        self.healthy = all(r.healthy for r in self.services)


# ---------------------------------------------------------------------------------------------
# forge release


@dataclass(frozen=True)
class Resumed:
    """An entry a resumed release takes from the failed release's report (done there, not again):
    its JSON as that report has it, marked ``resumed``."""

    doc: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.doc, "resumed": True}


@dataclass(kw_only=True)
class StepsRow(Record):
    """Steps of one service (``None``: the environment's own, the gate) in one environment
    (``None``: before any, the tests and the push): a ``not_done`` or ``skipped`` row."""

    environment: str | None
    service: str | None
    steps: list[str]


@dataclass(kw_only=True)
class FailedAt(Record):
    """Where a release stopped (``failed``), or one of the failures of an environment (``failures``)."""

    environment: str | None
    service: str | None
    step: str


@dataclass(kw_only=True)
class ResumedFrom(Record):
    """The report a resumed release continues, and where that one stopped."""

    report: str | None
    failed: Mapping[str, Any] | None


@dataclass(kw_only=True)
class PushedRef(Record):
    """The image a service's deploy uses: its tag, digest and full reference."""

    tag: str
    digest: str
    reference: str


@dataclass(kw_only=True)
class ServiceEntry(Record):
    """One service in one environment of a release: its migrations, deploy (the roll record, as
    ``forge deploy`` fills it) and verification checks."""

    service: str
    environment: str
    namespace: str
    image: str
    push: PushedRef
    outcome: str = "running"
    migrations: list[Reportable] = field(default_factory=list)
    deploy: RollRecord | Resumed | None = None
    checks: list[Reportable] = field(default_factory=list)


@dataclass(kw_only=True)
class GateRow(Record):
    """One service at an environment's gate: healthy (as ``forge status`` judges) and verified."""

    healthy: bool
    verified: bool
    checks: int
    errors: list[str]
    running: str | None
    flux_ready: Any


@dataclass(kw_only=True)
class GateResult(Record):
    """An environment's gate: passed, failed (``services`` says who), or not evaluated (a service failed)."""

    outcome: str
    services: dict[str, GateRow] | Unset = UNSET
    reason: str | None


@dataclass(kw_only=True)
class StageEntry(Record):
    """One environment of a release: its services (dependency order), the federation step when
    subgraphs are deployed there, and the gate."""

    environment: str
    approval: str
    outcome: str = "running"
    services: list[ServiceEntry | Resumed] = field(default_factory=list)
    gate: GateResult | None = None
    federation: dict[str, Any] | Unset = UNSET
    elapsed_seconds: float | Unset = UNSET


@dataclass(kw_only=True)
class ReleaseReport(Timed):
    """``forge release``: what it covers, the pushes, each environment, where it stopped and what
    did not run. ``tests`` is there for a stage with tests, ``ready_to_promote`` for a prerelease,
    ``resumed_from`` and ``skipped`` for a resumed release; ``failures`` (more than one service of an
    environment failed), ``error`` and ``lock_lost`` only when they happened."""

    stage: str
    target: str
    project: str
    source_commit: str
    registry: str
    environments: list[str]
    services: list[str]
    concurrency: int
    command: Literal["release"] = "release"
    outcome: str = "running"
    approvals: dict[str, str] = field(default_factory=dict)
    push: dict[str, Reportable] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    stages: list[StageEntry | Resumed] = field(default_factory=list)
    failed: FailedAt | None = None
    not_done: list[StepsRow] = field(default_factory=list)
    locks: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] | Unset = UNSET
    ready_to_promote: list[dict[str, Any]] | Unset = UNSET
    resumed_from: ResumedFrom | Unset = UNSET
    skipped: list[StepsRow] | Unset = UNSET
    failures: list[FailedAt] | Unset = UNSET
    error: StepError | Unset = UNSET
    lock_lost: list[str] | Unset = UNSET

    def skip(self, row: StepsRow) -> None:
        """A step the resumed release did, not done again (``skipped``)."""
        if isinstance(self.skipped, Unset):
            self.skipped = []
        self.skipped.append(row)
