"""The typed reports (forgegen.runtime.reports): one to_json, keys exactly as the JSON contract has them."""

from __future__ import annotations

import json

import pytest

from forgegen import errors
from forgegen.errors import DeployFailed, PushError, ReconcileError, ReleaseFailed, exit_code
from forgegen.plan import build_plan
from forgegen.runtime import present, release
from forgegen.runtime.reports import (
    DeployReport,
    GateResult,
    GitState,
    MigrateReport,
    MigrationFailure,
    PushedRef,
    ReconcileEntry,
    ReconcileReport,
    ReleaseReport,
    Resumed,
    RollbackAttempt,
    RollRecord,
    ServiceEntry,
    StageEntry,
    StatusReport,
    StatusRow,
    StepError,
    StepsRow,
    WorkloadState,
)
from forgegen.runtime.tags import SourceRevision
from forgegen.schema import load_config
from tests.fixtures.nixenv import ROOT


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
    stopped = ReleaseReport(stage="full", target="shop", project="shop", source_commit="abc1234", registry="r",
                            environments=["staging"], services=["api"], concurrency=4, outcome="failed")
    released = ReleaseFailed("release stopped", stopped)
    assert isinstance(released, DeployFailed) and exit_code(released) == 1
    assert released.document() == stopped.to_json() and released.document()["not_done"] == []


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
    (ReleaseReport(stage="full", target="shop", project="shop", source_commit="abc1234", registry="r",
                   environments=["staging", "prod"], services=["api"], concurrency=4, outcome="success",
                   images={"api": "r/api:t1"}), "forge release shop: success (staging, prod; api:t1)"),
])
def test_each_report_kind_has_its_closing_line(report: object, line: str) -> None:
    assert present.verdict(report) == line


RELEASE_KEYS = {"command", "stage", "target", "project", "source_commit", "registry", "environments", "services",
                "outcome", "approvals", "push", "images", "stages", "failed", "not_done", "locks", "concurrency",
                "timings"}


def new_release_report(stage: str = "full", resume: dict | None = None) -> tuple[ReleaseReport, list, list]:
    """A release report of the example shop as ``forge release`` starts it."""
    plan = build_plan(load_config(ROOT / "examples" / "shop" / "deploy.yaml"))
    order, stages = release.plan_stages(plan, None, ["staging", "production"])
    opts = release.Options(stage=stage, resume=resume, resume_from="/state/releases/shop.json" if resume else None)
    report = release._new_report(plan, None, order, stages, SourceRevision("abc1234", "git"), opts, started=0.0)
    return report, order, stages


@pytest.mark.parametrize(("stage", "extra"), [("full", set()), ("comprehensive", {"tests"}),
                                              ("pre", {"tests", "ready_to_promote"})])
def test_a_release_report_starts_with_failed_null_nothing_not_done_and_the_keys_of_its_stage(
        stage: str, extra: set[str]) -> None:
    doc = new_release_report(stage)[0].to_json()
    assert set(doc) == RELEASE_KEYS | extra
    assert (doc["command"], doc["stage"], doc["target"], doc["outcome"]) == ("release", stage, "shop", "running")
    assert doc["failed"] is None and doc["not_done"] == [] and doc["stages"] == [] and doc["timings"] == {}
    assert doc["registry"] == "localhost:5000/shop" and doc["environments"] == ["staging", "production"]
    assert all(doc[key] == [] for key in extra)


def test_a_resumed_release_report_says_what_it_resumes_and_lists_what_it_skipped() -> None:
    first, order, _ = new_release_report()
    prev = {**first.to_json(), "outcome": "failed",
            "failed": {"environment": "production", "service": "api", "step": "deploy:rollout"}}
    report = new_release_report(resume=prev)[0]
    report.skip(StepsRow(environment=None, service="api", steps=["push"]))
    report.stages.append(Resumed({"environment": "staging", "outcome": "success"}))
    doc = report.to_json()
    assert set(doc) == RELEASE_KEYS | {"resumed_from", "skipped"}
    assert doc["resumed_from"] == {"report": "/state/releases/shop.json", "failed": prev["failed"]}
    assert doc["skipped"] == [{"environment": None, "service": "api", "steps": ["push"]}]
    assert doc["stages"] == [{"environment": "staging", "outcome": "success", "resumed": True}]
    with pytest.raises(errors.UsageError, match="--resume: the failed release had source_commit"):
        new_release_report(resume={**prev, "source_commit": "0000000"})


def test_a_stopped_release_has_failed_error_and_not_done_and_nothing_it_did_not_have() -> None:
    report, order, stages = new_release_report()
    with pytest.raises(ReleaseFailed) as caught:
        release._stop(report, stages, order, where=("push", None, "web"), err=PushError("no registry", hint="h"),
                      push_done=False, pushed={"api"})
    doc = caught.value.document()
    assert doc == report.to_json() and set(doc) == RELEASE_KEYS | {"error"}
    assert doc["outcome"] == "failed" and "total_seconds" in doc["timings"]
    assert doc["failed"] == {"environment": None, "service": "web", "step": "push"}
    assert doc["error"] == {"type": "PushError", "message": "no registry", "hint": "h"}
    assert {"environment": None, "service": "web", "steps": ["push"]} in doc["not_done"]
    assert {"environment": "production", "service": None, "steps": ["gate"]} in doc["not_done"]
    assert "api" not in {d["service"] for d in doc["not_done"] if d["environment"] is None}
    assert "not done: web: push" in present.not_done(report)
    assert "not done: production: gate" in present.not_done(report)


def test_a_release_stage_entry_nests_service_entries_and_a_gate_as_the_json_has_them() -> None:
    entry = ServiceEntry(service="api", environment="staging", namespace="shop", image="r/api:t1",
                         push=PushedRef(tag="t1", digest="sha256:1", reference="r/api:t1@sha256:1"))
    stage = StageEntry(environment="staging", approval="not required", services=[entry])
    assert stage.to_json() == {
        "environment": "staging", "approval": "not required", "outcome": "running", "gate": None,
        "services": [{"service": "api", "environment": "staging", "namespace": "shop", "image": "r/api:t1",
                      "push": {"tag": "t1", "digest": "sha256:1", "reference": "r/api:t1@sha256:1"},
                      "outcome": "running", "migrations": [], "deploy": None, "checks": []}]}
    entry.migrations.append(MigrationFailure(name="schema", error="cannot create the Job"))
    entry.deploy = RollRecord()
    entry.deploy.steps["gitops"] = Result(commit="c1")
    stage.gate = GateResult(outcome="not evaluated", reason="api failed at migrate:schema")
    stage.elapsed_seconds = 1.5
    doc = stage.to_json()
    assert doc["gate"] == {"outcome": "not evaluated", "reason": "api failed at migrate:schema"}
    assert doc["elapsed_seconds"] == 1.5 and "federation" not in doc
    assert doc["services"][0]["migrations"] == [{"name": "schema", "error": "cannot create the Job", "outcome": "failed"}]
    assert doc["services"][0]["deploy"] == {"timings": {}, "outcome": "running", "gitops": {"commit": "c1"}}
    json.dumps(doc)
