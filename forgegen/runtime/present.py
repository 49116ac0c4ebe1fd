"""How ``forge`` shows its reports to people (stderr; stdout with ``--json`` is the report itself).

Every renderer here takes a report's JSON document (``to_json()`` of a record in
:mod:`forgegen.runtime.reports`, or a step result's) or, for a command's closing lines
(:func:`verdict`, :func:`not_done`), the typed report, and returns text; the one place that writes
is the output channel the CLI passes around (``say``, :func:`forgegen.console.say`), plus the
live progress line of :class:`ProgressPrinter` on a terminal. Nothing here decides an outcome.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from typing import Any

from forgegen import urls
from forgegen.runtime import reports

# The kubelet names a pod "pod=NAME_NAMESPACE(UID)" (or "in pod NAME_NAMESPACE(UID)" in events);
# the report names the pod on its own line, so the text shows neither the repeat nor the UID.
KUBELET_POD = re.compile(r"\s*(?:in )?pod[= ]\S+?_\S+?\([0-9a-f-]{36}\)")


def without_kubelet_pod(text: str) -> str:
    """``text`` without the kubelet's ``pod=NAME_NAMESPACE(UID)`` reference."""
    return KUBELET_POD.sub("", text).strip()


class ProgressPrinter:
    """kubectl-style progress on stderr: a live line on a terminal, plain new lines otherwise;
    everything passes through the one redaction (:func:`forgegen.urls.redact`), as ``console.say`` does."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._status: Any = None
        if self.live:
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False)
            self._status = self.console.status("")
            self._status.start()

    def __call__(self, message: str) -> None:
        message = urls.redact(message)
        if self.live:
            self.console.print(message, markup=False)
            self._status.update(message)
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def say(self, text: str) -> None:
        """A block of plain lines (after the live line is closed)."""
        self.stream.write(urls.redact(text) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def rollout_report(doc: Mapping[str, Any]) -> str:
    """The human summary of a rollout report (a rollout result's JSON)."""
    w = doc["workload"]
    where = f"{w['namespace']}/{w['kind']}/{w['name']}"
    if doc["outcome"] == "success":
        return f"rollout of {where} succeeded: {doc['message']} ({doc['timings']['elapsed_seconds']:.1f}s)"
    if doc["outcome"] == "pending-on-delete":
        return f"rollout of {where} PENDING (OnDelete): {doc['message']}"
    out = [f"rollout of {where} {'timed out' if doc['outcome'] == 'timeout' else 'FAILED'}: {doc['reason']}",
           f"  {without_kubelet_pod(str(doc['message'] or ''))}"]
    if doc.get("pod"):
        bits = [f"pod {doc['pod']}", f"container {doc['container']}"]
        if doc.get("exit_code") is not None:
            bits.append(f"exit code {doc['exit_code']}")
        if doc.get("restart_count") is not None:
            bits.append(f"restarts {doc['restart_count']}")
        out.append("  " + ", ".join(bits))
    out += [f"  also: {e}" for e in doc.get("evidence") or []]
    for key, title in (("previous", "previous container"), ("current", "current container")):
        logs = doc["logs"].get(key) or []
        if logs:
            out.append(f"  last {len(logs)} log lines of the {title}:")
            out += [f"    | {line}" for line in logs]
    if doc.get("events"):
        out.append("  recent Warning events:")
        out += [f"    {e['last_seen']}  {e['object']}  {e['reason']}: {without_kubelet_pod(str(e['message'] or ''))}"
                + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else "") for e in doc["events"][-10:]]
    return "\n".join(out)


def status_table(doc: Mapping[str, Any]) -> str:
    """The ``forge status`` table (kubectl-like columns), then each row's errors."""
    header = ("SERVICE", "ENV", "GIT TAG", "RUNNING", "READY", "UP-TO-DATE", "AVAILABLE", "FLUX", "HEALTHY")
    rows = [header]
    for r in doc["services"]:
        w = r.get("workload") or {}
        f = r.get("flux") or {}
        running = (w.get("image") or "-").rpartition(":")[2] if w.get("found") else "-"
        applied = "-"
        if f:
            ks = f.get("kustomizations") or []
            applied = ("Ready" if f.get("ready") else "NotReady") + (
                f" {(ks[0].get('last_applied_revision') or '')[-12:]}" if ks else "")
        rows.append((r["service"], r["environment"], (r.get("git") or {}).get("tag") or "-", running,
                     f"{w.get('ready', '-')}/{w.get('desired', '-')}" if w.get("found") else "-",
                     str(w.get("updated", "-")) if w.get("found") else "-",
                     str(w.get("available", "-")) if w.get("found") else "-", applied,
                     "yes" if r["healthy"] else "no"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    for r in doc["services"]:
        for e in r["errors"]:
            lines.append(f"{r['service']}/{r['environment']}: {e}")
    return "\n".join(lines)


def not_done(report: reports.ReleaseReport) -> list[str]:
    """A release report's ``not_done`` for people: one line per environment/service."""
    lines = []
    for d in report.not_done:
        place = "/".join(p for p in (d.environment, d.service) if p) or "-"
        lines.append(f"not done: {place}: {', '.join(d.steps)}")
    return lines


@functools.singledispatch
def verdict(report: Any) -> str:
    """The closing line of a lifecycle command, by the kind of its report."""
    raise TypeError(f"no verdict line for {type(report).__name__}")


@verdict.register
def _(report: reports.DeployReport | reports.MigrateReport) -> str:
    image = report.image if isinstance(report, reports.DeployReport) else reports.UNSET
    return (f"forge {report.command} {report.service}:{report.environment}: {report.outcome}"
            + (f" ({image})" if image and not isinstance(image, reports.Unset) else ""))


@verdict.register
def _(report: reports.ReconcileReport) -> str:
    doc = report.to_json()
    return (f"forge reconcile {report.target}: {report.outcome} ("
            + ", ".join((r.get("result") or {}).get("revision") or r["commit"] for r in doc["reconciles"]) + ")")


@verdict.register
def _(report: reports.ReleaseReport) -> str:
    return (f"forge release {report.target}: {report.outcome} ({', '.join(report.environments)}; "
            + ", ".join(f"{s}:{ref.rpartition(':')[2]}" for s, ref in report.images.items()) + ")")
