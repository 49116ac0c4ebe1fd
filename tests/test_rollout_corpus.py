"""The rollout verdict over a corpus of real objects (tests/fixtures/rollout_corpus/README.md).

Every ``*.yaml`` below ``tests/fixtures/rollout_corpus/`` (``recorded/`` included) is one case:
objects from a public source or recorded from a real control plane, with the verdict Forge must
give. Where the source's own verdict differs, the case says why in ``differs:`` — and a
``differs:`` that no longer differs fails too, so the list stays true.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from forgegen.plan import RolloutPlan, WorkloadPlan
from forgegen.runtime.rollout import Snapshot, assess

CORPUS = Path(__file__).parent / "fixtures" / "rollout_corpus"
CASES = sorted(CORPUS.rglob("*.yaml"))
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
VERDICTS = ("done", "progressing", "failed", "pending-on-delete")
# The references' own words, as Forge's verdicts (None: no counterpart, so `differs:` is required).
REFERENCE = {
    "kubectl": {"done": "done", "not done": "progressing", "error": None},
    "gitops-engine": {"Healthy": "done", "Progressing": "progressing", "Degraded": "failed", "Suspended": None,
                      "Missing": None, "Unknown": None},
    "kstatus": {"Current": "done", "InProgress": "progressing", "Failed": "failed", "Unknown": None,
                "Terminating": None, "NotFound": None},
}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def load(path: Path) -> dict[str, Any]:
    case = yaml.safe_load(path.read_text())
    where = path.relative_to(CORPUS)
    assert isinstance(case, dict), f"{where}: a case is a mapping"
    assert str(case.get("source") or "").strip(), f"{where}: `source:` is required"
    expected = case.get("expected") or {}
    assert expected.get("verdict") in VERDICTS, f"{where}: expected.verdict must be one of {VERDICTS}"
    workload = case.get("workload") or {}
    assert workload.get("kind") in KINDS, f"{where}: workload.kind must be one of {KINDS}"
    return case


def latest_timestamp(obj: Any) -> float | None:
    """The latest RFC 3339 timestamp anywhere in ``obj`` (the default `now` of a case)."""
    found: list[float] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, datetime):  # YAML reads unquoted timestamps as datetimes
            found.append(o.timestamp())
        elif isinstance(o, str) and TIMESTAMP.match(o):
            found.append(datetime.fromisoformat(o.replace("Z", "+00:00")).timestamp())
    walk(obj)
    return max(found) if found else None


def plain(obj: Any) -> Any:
    """Unquoted YAML timestamps back to the API's strings (as the watch delivers them)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.strftime("%Y-%m-%dT%H:%M:%SZ")
    return obj


def judge(case: dict[str, Any]) -> Any:
    w = plain(case["workload"])
    snap = Snapshot(status_only="pods" not in case)
    snap.replace("workload", [w])
    for resource in ("replicasets", "controllerrevisions", "pods", "events"):
        snap.replace(resource, plain(case.get(resource) or []))
    snap.restart_baseline = {
        p["metadata"].get("uid") or "": dict(counts) for p in snap.pods.values()
        for name, counts in (case.get("restart_baseline") or {}).items() if p["metadata"]["name"] == name}
    containers = (((w.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    container = case.get("container") or (containers[0]["name"] if containers else "app")
    policy = RolloutPlan(**{"deadline": None, "restarts_tolerated": 0, "readiness_grace": 60, "scheduling_grace": 30,
                            "rollback_on_failure": False, **(case.get("policy") or {})})
    now = case.get("now")
    now = (now.timestamp() if isinstance(now, datetime) else datetime.fromisoformat(str(now).replace("Z", "+00:00")).timestamp()) \
        if now else (latest_timestamp(case) or 0.0) + 1.0
    plan = WorkloadPlan(kind=w["kind"], name=w["metadata"]["name"], container=container)
    return assess(snap, plan, policy, case.get("expected_image"), now, expected_digest=case.get("expected_digest"))


def test_the_corpus_has_cases_of_every_kind_from_several_sources() -> None:
    cases = [load(p) for p in CASES]
    assert {c["workload"]["kind"] for c in cases} == set(KINDS)
    assert {(c.get("reference") or {}).get("tool") for c in cases} >= {"kubectl", "gitops-engine", "kstatus"}
    assert len(cases) >= 30


@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(CORPUS)) for p in CASES])
def test_corpus_case(path: Path) -> None:
    case = load(path)
    st = judge(case)
    expected = case["expected"]
    assert st.state == expected["verdict"], f"{st.state}: {st.message} {st.failure}"
    if expected.get("reason"):
        assert st.failure is not None and st.failure.reason == expected["reason"], st.failure
    ref = case.get("reference")
    if ref:
        words = REFERENCE.get(ref["tool"])
        assert words is not None and ref["status"] in words, f"unknown reference {ref}"
        agrees = words[ref["status"]] == expected["verdict"]
        assert agrees or str(case.get("differs") or "").strip(), \
            f"{ref['tool']} says {ref['status']}, Forge {expected['verdict']}: `differs:` must say why"
        assert not (agrees and case.get("differs")), "`differs:` on a case that agrees with its reference"
