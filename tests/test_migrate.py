"""Migrations as Kubernetes Jobs (forgegen.runtime.migrate), watched through the real kubernetes
client, on both backends (``kube_any``): the stand-in's Job controller and scripted kubelet, and
the real control plane's Job controller with the simulated kubelet (tests/kubelet_sim)."""

from __future__ import annotations

import json
import re

import pytest

from forgegen.plan import MigrationPlan
from forgegen.runtime.migrate import Verdict, assess, job_name, run_migration
from tests.fixtures.kube import Kube
from tests.kube_standin import ImageScript, completes, image_pull_error

pytestmark = [pytest.mark.kube]

IMAGE = "registry.test/shop/api:amd64-abc1234"
TAG = "amd64-abc1234"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def migration(name: str = "schema", *, timeout: float = 30.0, image: str | None = None) -> MigrationPlan:
    return MigrationPlan(name=name, command=("api", "migrate"), image=image, timeout=timeout)


def migrate(kube: Kube, m: MigrationPlan | None = None, *, image: str = IMAGE, tag: str = TAG, lines: list | None = None):
    return run_migration(kube.api(), service="api", migration=m or migration(), namespace=kube.namespace, image=image,
                         tag=tag, progress=(lines.append if lines is not None else None))


def job_pods(kube: Kube, job: str = "api-migrate-schema-amd64-abc1234") -> list[dict]:
    out = kube.kubectl("get", "pods", "-n", kube.namespace, "-l", f"job-name={job}", "-o", "json").stdout
    return json.loads(out)["items"]


def test_job_name_is_deterministic_and_a_dns_label_of_at_most_63_characters() -> None:
    assert job_name("api", "schema", "amd64-abc1234") == "api-migrate-schema-amd64-abc1234"
    long = job_name("a-very-long-service-name", "backfill-customer-addresses", "amd64-abc1234")
    assert len(long) <= 63 and DNS_LABEL.match(long)
    assert long == job_name("a-very-long-service-name", "backfill-customer-addresses", "amd64-abc1234")
    assert long != job_name("a-very-long-service-name", "backfill-customer-addresses", "amd64-abc1235")


def test_assess_reads_the_job_conditions_and_fails_fast_on_an_unpullable_image() -> None:
    job = {"metadata": {"name": "j"}, "spec": {"backoffLimit": 0}, "status": {"active": 1}}
    assert assess(job, []).state == "running"
    done = {**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert assess(done, []) == Verdict("succeeded", "Complete", "the Job completed", None, None)
    pod = {"metadata": {"name": "j-x", "creationTimestamp": "2025-01-01T00:00:00Z"},
           "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}}]}}
    v = assess(job, [pod])
    assert (v.state, v.reason, v.pod) == ("failed", "ImagePullBackOff", "j-x")


def test_a_migration_job_runs_to_completion(kube_any: Kube) -> None:
    kube = kube_any
    kube.script(IMAGE, completes(logs=("api: migrating",), exit_logs=("api: schema is up to date",)))
    lines: list[str] = []
    result = migrate(kube, lines=lines)
    assert result.ok and not result.already_done, result.to_json()
    assert result.exit_code == 0 and result.reason == "Complete"
    job = kube.get("jobs", "api-migrate-schema-amd64-abc1234")
    assert job["spec"]["backoffLimit"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"] == ["api", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    pods = job_pods(kube)
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    assert any(f"created {kube.namespace}/Job/api-migrate-schema-amd64-abc1234" in line for line in lines)
    # kubectl sees the Job too (batch/v1 in discovery)
    out = kube.kubectl("get", "jobs", "-n", kube.namespace, "-o", "name").stdout
    assert "job.batch/api-migrate-schema-amd64-abc1234" in out


def test_a_succeeded_job_is_not_run_again_for_the_same_tag(kube_any: Kube) -> None:
    kube = kube_any
    assert migrate(kube).ok
    again = migrate(kube)
    assert again.ok and again.already_done
    assert len(job_pods(kube)) == 1
    other = migrate(kube, tag="amd64-fedcba9")  # another tag is another migration run
    assert other.ok and not other.already_done and other.job == "api-migrate-schema-amd64-fedcba9"


def test_a_failing_migration_reports_exit_code_and_last_log_lines(kube_any: Kube) -> None:
    kube = kube_any
    kube.script(IMAGE, completes(exit_code=3, logs=("api: migrating",),
                                 exit_logs=("ERROR: relation \"users\" already exists",)))
    result = migrate(kube)
    assert result.outcome == "failed"
    assert result.reason == "BackoffLimitExceeded" and result.exit_code == 3
    assert result.logs == ["api: migrating", 'ERROR: relation "users" already exists']
    assert result.pod and result.pod.startswith("api-migrate-schema-amd64-abc1234-")
    # backoffLimit 0: exactly one pod ran
    assert len(job_pods(kube)) == 1


def test_a_failed_job_is_replaced_when_the_release_is_run_again(kube_any: Kube) -> None:
    kube = kube_any
    kube.script(IMAGE, completes(exit_code=1))
    first = migrate(kube)
    assert first.outcome == "failed"
    kube.script(IMAGE, completes(exit_code=0))
    lines: list[str] = []
    second = migrate(kube, lines=lines)
    assert second.ok and not second.already_done, second.to_json()
    assert second.pod != first.pod
    assert any("failed before; deleting it" in line for line in lines)


def test_an_unpullable_migration_image_fails_at_once(kube_any: Kube) -> None:
    kube = kube_any
    bad = "registry.test/tools/migrator:missing"
    kube.script(bad, image_pull_error("manifest unknown"))
    result = migrate(kube, migration(image=bad, timeout=60), image=bad)
    assert result.outcome == "failed" and result.reason in ("ErrImagePull", "ImagePullBackOff")
    assert "manifest unknown" in result.message or "Back-off" in result.message


def test_a_migration_that_does_not_finish_times_out(kube_any: Kube) -> None:
    kube = kube_any
    kube.script(IMAGE, ImageScript(completes_after=None))
    result = migrate(kube, migration(timeout=0.5))
    assert result.outcome == "timeout" and result.reason == "Timeout"
    assert "did not finish within 0.5s" in result.message


def test_an_api_that_is_gone_before_the_job_is_created_is_a_migration_failure(kube: Kube) -> None:
    from forgegen.errors import MigrationFailed

    api = kube.api()
    kube.standin.stop()
    with pytest.raises(MigrationFailed) as info:
        run_migration(api, service="api", migration=migration(), namespace="default", image=IMAGE, tag=TAG)
    assert "Kubernetes API" in str(info.value)


def test_an_api_that_goes_away_mid_migration_fails_it_without_waiting_for_the_timeout(kube: Kube) -> None:
    import threading
    import time

    from forgegen.errors import MigrationFailed

    kube.script(IMAGE, ImageScript(logs=("api: migrating",), completes_after=None))  # never finishes
    api = kube.api()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(run_migration(api, service="api", migration=migration(timeout=3600), namespace="default",
                                         image=IMAGE, tag=TAG, api_lost_after=3))
        except Exception as err:  # noqa: BLE001 - the test inspects it
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not kube.standin.list("pods", "default", label_selector=f"job-name=api-migrate-schema-{TAG}"):
        assert time.monotonic() < deadline, "the migration pod never appeared"
        time.sleep(0.02)
    kube.standin.stop()
    worker.join(300)  # a generous bound: before the fix it waited for the migration's hour
    assert outcome, "run_migration did not return after the API went away"
    assert isinstance(outcome[0], MigrationFailed), outcome
    assert "Kubernetes API" in str(outcome[0]) and "connection errors for 3s" in str(outcome[0])
