"""Verification checks (forgegen.runtime.verify) against a real local HTTP server and real commands."""

from __future__ import annotations

import sys

import pytest

from forgegen.errors import VerificationFailed
from forgegen.plan import CheckPlan
from forgegen.runtime.verify import raise_for_check, run_check
from tests.fixtures.health import Health
from tests.kube_standin.cluster import free_port


def http_check(url: str, *, retries: int = 0, expect: int = 200, contains: str | None = None) -> CheckPlan:
    return CheckPlan(name="health", http={"url": url, "expect_status": expect, "contains": contains},
                     command=None, timeout=5.0, retries=retries)


def command_check(*argv: str, retries: int = 0, timeout: float = 10.0) -> CheckPlan:
    return CheckPlan(name="smoke", http=None, command=argv, timeout=timeout, retries=retries)


def no_sleep(_: float) -> None:
    pass


def test_http_check_passes_on_the_expected_status_and_text(health: Health) -> None:
    result = run_check(http_check(health.url, contains="db reachable"))
    assert result.ok and result.attempts == 1 and result.status == 200 and result.last_error is None
    assert result.to_json()["outcome"] == "passed"


def test_http_check_retries_until_the_service_answers() -> None:
    h = Health([503, 503, 200])
    try:
        pauses: list[float] = []
        lines: list[str] = []
        result = run_check(http_check(h.url, retries=3), sleep=pauses.append, progress=lines.append)
    finally:
        h.close()
    assert result.ok and result.attempts == 3
    assert result.errors == [f"GET {h.url}: HTTP 503, expected 200"] * 2
    assert pauses == [0.25, 0.5]  # a short doubling backoff
    assert lines and "retrying (1/3)" in lines[0]


def test_http_check_fails_with_the_last_error_after_its_retries() -> None:
    h = Health([500])
    try:
        result = run_check(http_check(h.url, retries=2), sleep=no_sleep)
    finally:
        h.close()
    assert not result.ok and result.attempts == 3 and result.status == 500
    assert result.last_error == f"GET {h.url}: HTTP 500, expected 200"
    with pytest.raises(VerificationFailed, match=r"check health of api in staging failed after 3 attempt\(s\): .*HTTP 500") as err:
        raise_for_check(result, service="api", environment="staging")
    assert err.value.hint and "services.api.verify[health]" in err.value.hint


def test_http_check_fails_when_the_body_lacks_the_text(health: Health) -> None:
    result = run_check(http_check(health.url, contains="version 2"), sleep=no_sleep)
    assert not result.ok and "does not contain 'version 2'" in (result.last_error or "")


def test_http_check_reports_a_refused_connection() -> None:
    url = f"http://127.0.0.1:{free_port()}/healthz"
    result = run_check(http_check(url, retries=1), sleep=no_sleep)
    assert not result.ok and result.attempts == 2 and result.status is None
    assert "refused" in (result.last_error or "").lower()


def test_command_check_passes_on_exit_zero_and_fails_with_the_output() -> None:
    assert run_check(command_check(sys.executable, "-c", "print('fine')")).ok
    bad = run_check(command_check(sys.executable, "-c", "import sys; print('smoke: 2 of 5 failed'); sys.exit(4)"),
                    sleep=no_sleep)
    assert not bad.ok and "exited with 4" in (bad.last_error or "") and "smoke: 2 of 5 failed" in (bad.last_error or "")


def test_command_check_times_out_per_attempt_and_names_a_missing_program() -> None:
    slow = run_check(command_check(sys.executable, "-c", "import time; time.sleep(30)", timeout=0.3), sleep=no_sleep)
    assert not slow.ok and "did not finish within 0.3s" in (slow.last_error or "")
    missing = run_check(command_check("forge-no-such-smoke-test"), sleep=no_sleep)
    assert not missing.ok and "'forge-no-such-smoke-test' is not on PATH" in (missing.last_error or "")
