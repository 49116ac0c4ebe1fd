"""Human-readable text for plans, applied changes and drift (the CLI prints it).

Statements are shown through their redacted twin (``Change.shown``): passwords appear as
``'***'``. A plan reads as a SQL script grouped by database, each statement with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _scope(scope: str) -> str:
    return "cluster" if not scope else 'database "' + scope.replace('"', '""') + '"'


def statement(change: Any) -> str:
    text = change.shown.as_string(None) + ";"
    return text + (f"  -- {change.reason}" if change.reason else "")


def change_line(change: Any) -> str:
    return f"{_scope(change.scope)}: {statement(change)}"


def postgres_plan(outcome: Any) -> str:
    if not outcome.changes:
        return f"-- {outcome.server}: no changes; the databases match the config.\n"
    lines: list[str] = []
    current = None
    for change in outcome.changes:
        if change.scope != current:
            current = change.scope
            lines.append(f"-- {_scope(current)}")
        lines.append(statement(change))
    lines.append(f"-- {outcome.server}: {summary(outcome.changes, 'to run')}; "
                 "`forge-provision postgres apply` runs them.")
    return "\n".join(lines) + "\n"


def summary(changes: Iterable[Any], verb: str) -> str:
    changes = list(changes)
    scopes: dict[str, int] = {}
    for change in changes:
        scopes[change.scope] = scopes.get(change.scope, 0) + 1
    parts = [f"{_scope(s)} {n}" for s, n in scopes.items()]
    noun = "change" if len(changes) == 1 else "changes"
    return f"{len(changes)} {noun} {verb}" + (f" ({', '.join(parts)})" if parts else "")


def postgres_applied(outcome: Any, seconds: float) -> str:
    if not outcome.changes:
        return (f"{outcome.server}: no changes; the databases already match the config "
                f"({outcome.statements} statements executed, {outcome.queries} catalogue queries, {seconds:.2f}s).\n")
    return f"{outcome.server}: {summary(outcome.changes, 'applied')} in {seconds:.2f}s.\n"


def postgres_drift(outcome: Any) -> str:
    if not outcome.findings:
        return f"-- {outcome.server}: no drift; nothing in the databases is missing from the config.\n"
    lines: list[str] = []
    current = None
    for finding in outcome.findings:
        if finding.scope != current:
            current = finding.scope
            lines.append(f"-- {_scope(current)}")
        mark = "  [apply removes it: prune: true]" if finding.pruned else ""
        lines.append(f"{finding.target}: {finding.detail}{mark}")
    pruned = sum(1 for f in outcome.findings if f.pruned)
    lines.append(f"-- {len(outcome.findings)} item(s) in the database but not in the config; "
                 f"{pruned} would be removed by apply (prune: true), the rest are only reported.")
    return "\n".join(lines) + "\n"


def attic(outcome: Any, *, applied: bool) -> str:
    if not outcome.changes:
        return f"{outcome.endpoint}: no changes; the caches and tokens match the config.\n"
    verb = "applied" if applied else "to make"
    lines = []
    for change in outcome.changes:
        detail = ", ".join(f"{k}={v}" for k, v in change.detail.items())
        lines.append(f"{'~' if applied else '+'} {change.action} {change.target}" + (f" ({detail})" if detail else ""))
    lines += [f"note: {n}" for n in outcome.notes]
    n = len(outcome.changes)
    lines.append(f"{outcome.endpoint}: {n} change{'s' if n != 1 else ''} {verb}.")
    return "\n".join(lines) + "\n"
