"""Verification checks: is the service doing its job after the rollout? (``services.S.verify``)

Two kinds, as deploy.yaml declares them:

* ``http`` — ``GET url`` (standard library ``urllib``, redirects followed): passes when the
  status is ``expect_status`` and, when ``contains`` is set, the body contains that text.
* ``command`` — the argv runs locally through :mod:`forgegen.process` (never a shell):
  passes on exit code 0.

Each attempt gets the check's ``timeout``; a failed attempt is retried ``retries`` times with a
short doubling pause (:data:`BACKOFF`). :func:`run_check` never raises for a check that does not
pass: it returns a :class:`CheckResult` with every attempt's error, and the caller decides
(:func:`raise_for_check` turns a failed result into :class:`~forgegen.errors.VerificationFailed`).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forgegen import process
from forgegen.errors import CommandError, VerificationFailed
from forgegen.plan import CheckPlan

log = logging.getLogger(__name__)

BACKOFF = (0.25, 2.0)  # first pause between attempts, and its cap (doubling in between)
BODY_LIMIT = 1 << 20  # read at most this much of a response body for ``contains``


@dataclass
class CheckResult:
    name: str
    kind: str  # "http" | "command"
    target: str  # the URL, or the argv joined for people
    outcome: str = "failed"  # "passed" | "failed"
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # one per failed attempt, oldest first
    status: int | None = None  # the last HTTP status seen
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "passed"

    @property
    def last_error(self) -> str | None:
        return self.errors[-1] if self.errors else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "target": self.target, "outcome": self.outcome,
                "attempts": self.attempts, "last_error": self.last_error, "errors": list(self.errors),
                "status": self.status, "elapsed_seconds": round(self.elapsed, 3)}


def http_attempt(url: str, *, expect_status: int, contains: str | None, timeout: float) -> tuple[int | None, str | None]:
    """One GET: ``(status, None)`` when it passes, ``(status or None, why not)`` otherwise."""
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "forge-verify"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - the URL is the user's check
            status, body = resp.status, resp.read(BODY_LIMIT)
    except urllib.error.HTTPError as err:  # a non-2xx answer is still an answer
        status, body = err.code, (err.read(BODY_LIMIT) if err.fp is not None else b"")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return None, f"GET {url}: {type(reason).__name__ if not str(reason) else reason}"
    if status != expect_status:
        return status, f"GET {url}: HTTP {status}, expected {expect_status}"
    if contains is not None and contains not in body.decode("utf-8", errors="replace"):
        return status, f"GET {url}: HTTP {status}, but the body does not contain {contains!r}"
    return status, None


def command_attempt(argv: tuple[str, ...], *, timeout: float) -> str | None:
    """One run of the check's command: ``None`` on exit 0, otherwise why it did not pass."""
    try:
        result = process.run(argv, timeout=timeout, check=False, what=f"run the check `{' '.join(argv)}`")
    except CommandError as err:  # not on PATH, or did not finish in time
        return err.message
    if result.returncode == 0:
        return None
    tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-5:]
    return f"`{' '.join(argv)}` exited with {result.returncode}" + (f": {' | '.join(tail)}" if tail else "")


def run_check(check: CheckPlan, *, progress: Callable[[str], None] | None = None,
              sleep: Callable[[float], None] = time.sleep) -> CheckResult:
    """Run ``check`` with its retries; returns the outcome and every attempt's error."""
    t0 = time.monotonic()
    if check.http is not None:
        http = check.http
        result = CheckResult(check.name, "http", str(http["url"]))
    elif check.command:
        result = CheckResult(check.name, "command", " ".join(check.command))
    else:
        result = CheckResult(check.name, "none", "-", outcome="passed")
        return result
    pause = BACKOFF[0]
    for attempt in range(check.retries + 1):
        if attempt:
            sleep(pause)
            pause = min(pause * 2, BACKOFF[1])
        result.attempts += 1
        if check.http is not None:
            status, error = http_attempt(str(check.http["url"]), expect_status=int(check.http.get("expect_status") or 200),  # type: ignore[call-overload]
                                         contains=check.http.get("contains"), timeout=check.timeout)  # type: ignore[arg-type]
            result.status = status
        else:
            assert check.command is not None
            error = command_attempt(check.command, timeout=check.timeout)
        if error is None:
            result.outcome = "passed"
            break
        result.errors.append(error)
        log.debug("check %s attempt %d: %s", check.name, result.attempts, error)
        if progress is not None and attempt < check.retries:
            progress(f"check {check.name}: {error}; retrying ({attempt + 1}/{check.retries})")
    result.elapsed = time.monotonic() - t0
    return result


def raise_for_check(result: CheckResult, *, service: str, environment: str) -> None:
    """A failed check as :class:`VerificationFailed` (what, value, where, next step)."""
    if result.ok:
        return
    raise VerificationFailed(
        f"check {result.name} of {service} in {environment} failed after {result.attempts} attempt(s): "
        f"{result.last_error}",
        hint=f"try {result.target} by hand; the check is services.{service}.verify[{result.name}] in deploy.yaml")
