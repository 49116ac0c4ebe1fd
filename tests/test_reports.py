"""The typed reports (forgegen.runtime.reports): one to_json, keys exactly as the JSON contract has them."""

from __future__ import annotations

import json

import pytest

from forgegen import errors
from forgegen.errors import DeployFailed, ReconcileError, ReleaseFailed, exit_code
from forgegen.runtime import present
from forgegen.runtime.reports import (
    DeployReport,
    GitState,
    MigrateReport,
    MigrationFailure,
    ReconcileEntry,
    ReconcileReport,
    RollbackAttempt,
    StatusReport,
    StatusRow,
    StepError,
    WorkloadState,
)


class Result:
    """A step result: anything with a to_json."""

    def __init__(self, **doc: object) -> None:
        self.doc = doc

    def to_json(self) -> dict:
        return dict(self.doc)


def test_a_field_not_set_has_no_key_and_a_none_field_is_null() -> None:
    report = DeployReport(command="rollback", service="api", environment="prod")
    assert set(report.to_json()) == {"command", "service", "environment", "outcome", "timings"}
    report.from_tag = None  # the ledger ran and found no tag: "from" is there, null
    doc = report.to_json()
    assert doc["from"] is None and "from_tag" not in doc and "to" not in doc


def test_step_results_are_top_level_keys_in_their_own_json() -> None:
    report = DeployReport(command="deploy", service="api", environment="prod", source_commit="abc1234")
    report.steps["gitops"] = Result(commit="c1", previous_tag="t0")
    report.steps["rollback_rollout"] = Result(outcome="success")
    with report.timed("gitops"):
        pass
    report.rollback = RollbackAttempt(to="t0", outcome="success")
    report.finish()
    doc = report.to_json()
    assert doc["gitops"] == {"commit": "c1", "previous_tag": "t0"}
    assert doc["rollback_rollout"] == {"outcome": "success"} and doc["rollback"] == {"to": "t0", "outcome": "success"}
    assert set(doc["timings"]) == {"gitops_seconds", "total_seconds"} and "steps" not in doc
    json.dumps(doc)  # JSON data all the way down


def test_a_failed_step_records_where_why_and_the_partial_result_the_error_carries() -> None:
    report = DeployReport(command="deploy", service="api", environment="prod")
    err = ReconcileError("Flux did not apply abc", hint="flux get kustomizations")
    err.result = Result(outcome="timeout", revision="")
    report.failed("reconcile", err)
    doc = report.to_json()
    assert (doc["outcome"], doc["failed_step"]) == ("failed", "reconcile")
    assert doc["error"] == {"type": "ReconcileError", "message": "Flux did not apply abc", "hint": "flux get kustomizations"}
    assert doc["reconcile"] == {"outcome": "timeout", "revision": ""}


def test_status_report_is_healthy_only_when_every_row_is() -> None:
    good = StatusRow(service="api", environment="prod", namespace="shop", git=GitState(tag="t1", digest=None, commit="c"),
                     workload=WorkloadState(found=True, healthy=True, image="r/api:t1"), flux={"ready": True})
    missing = StatusRow(service="web", environment="prod", namespace="shop", git=None,
                        workload=WorkloadState(found=False, healthy=False), flux=None, errors=["git: gone"])
    assert good.judge() and not missing.judge()
    doc = StatusReport(project="shop", services=[good, missing]).to_json()
    assert doc["command"] == "status" and doc["healthy"] is False
    assert doc["services"][1] == {"service": "web", "environment": "prod", "namespace": "shop", "errors": ["git: gone"],
                                  "git": None, "workload": {"found": False, "healthy": False}, "flux": None,
                                  "healthy": False}


def test_reconcile_and_migrate_reports_keep_their_keys() -> None:
    rec = ReconcileReport(target="prod", environment="prod")
    rec.reconciles.append(ReconcileEntry(cluster=None, commit="c1", kustomizations=["apps"], result=None))
    rec.error = StepError(type="ReconcileError", message="m", hint=None)
    assert set(rec.to_json()) == {"command", "target", "environment", "outcome", "reconciles", "timings", "error"}
    assert rec.to_json()["reconciles"] == [{"cluster": None, "commit": "c1", "kustomizations": ["apps"], "result": None}]
    mig = MigrateReport(service="api", environment="prod", namespace="shop", tag="t1")
    mig.migrations.append(MigrationFailure(name="schema", error="cannot create the Job"))
    assert set(mig.to_json()) == {"command", "service", "environment", "namespace", "tag", "outcome", "migrations",
                                  "timings"}
    assert mig.to_json()["migrations"] == [{"name": "schema", "error": "cannot create the Job", "outcome": "failed"}]


def test_deploy_and_release_failures_are_in_the_error_tree_and_carry_their_report() -> None:
    report = DeployReport(command="deploy", service="api", environment="prod")
    err = DeployFailed("deploy of api failed", report, exit_code=errors.EXIT_PENDING)
    assert isinstance(err, errors.ForgeError) and exit_code(err) == 4
    assert err.document() == report.to_json()
    released = ReleaseFailed("release stopped", {"command": "release", "not_done": []})
    assert isinstance(released, DeployFailed) and exit_code(released) == 1
    assert released.document() == {"command": "release", "not_done": []}


@pytest.mark.parametrize(("report", "line"), [
    (DeployReport(command="deploy", service="api", environment="prod", outcome="success", image="r/api:t1"),
     "forge deploy api:prod: success (r/api:t1)"),
    (DeployReport(command="rollback", service="api", environment="prod", outcome="success"),
     "forge rollback api:prod: success"),
    (MigrateReport(service="api", environment="prod", namespace="shop", tag="t1", outcome="success"),
     "forge migrate api:prod: success"),
    (ReconcileReport(target="prod", environment="prod", outcome="success",
                     reconciles=[ReconcileEntry(cluster=None, commit="c1", kustomizations=["a"],
                                                result=Result(revision="main@sha1:c1"))]),
     "forge reconcile prod: success (main@sha1:c1)"),
    ({"command": "release", "target": "shop", "outcome": "success", "environments": ["staging", "prod"],
      "images": {"api": "r/api:t1"}}, "forge release shop: success (staging, prod; api:t1)"),
])
def test_each_report_kind_has_its_closing_line(report: object, line: str) -> None:
    assert present.verdict(report) == line
