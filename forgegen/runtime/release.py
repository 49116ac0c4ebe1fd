"""``forge release``: every service (or one), environment by environment, with migrations and gates.

The order, as Kargo and Skaffold users expect it:

1. **Pre-flight**, before anything changes: the plan's services and environments, a Kubernetes
   connection that answers for every environment involved, registry credentials, promotion
   (an environment promoted from one outside this release must find that environment already
   running the same tag), and approvals — an environment with ``promotion.require_approval``
   needs ``--yes`` or an interactive "y"; with neither, :class:`~forgegen.errors.ApprovalRequired`
   (exit 2) before anything is pushed.
2. **Push** each service's image once (``registry.run_push``).
3. **Per environment, in promotion order**, per service in dependency order
   (``steps.dependency_order``): the migrations (Kubernetes Jobs, :mod:`forgegen.runtime.migrate`),
   then the deploy (GitOps commit → Flux reconcile → rollout: ``deploy._roll``, with
   ``rollback_on_failure`` as in ``forge deploy``), then the verification checks
   (:mod:`forgegen.runtime.verify`).
4. **Gate** after each environment: every service of it healthy (git, workload and Flux agree, as
   ``forge status`` judges) and verified, before the next environment starts.

The first failure stops the release. The report (``--json``) says where — ``failed`` is
``{environment, service, step}`` with step one of ``preflight``, ``push``, ``migrate:<name>``,
``deploy:<gitops|reconcile|rollout>``, ``check:<name>``, ``federation``, ``gate`` — and lists in ``not_done``
every step that did not run. :class:`ReleaseFailed` carries that report (exit 1).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from forgegen.errors import (ApprovalRequired, ClusterUnreachable, ForgeError, MigrationFailed, RolloutFailed,
                             RolloutPending, UsageError)
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import deploy as deploy_mod
from forgegen.runtime import federation, gitops, kube, migrate, registry, verify
from forgegen.runtime.steps import dependency_order
from forgegen.runtime.tags import SourceRevision, image_tags

log = logging.getLogger(__name__)
Say = Callable[[str], None]
Ask = Callable[[str], bool]


class ReleaseFailed(deploy_mod.DeployFailed):
    """A release stopped at a failed step; ``report`` says where and what was not done (exit 1)."""


@dataclass(frozen=True)
class Stage:
    """One environment of the release: its services (dependency order) and their targets."""

    environment: str
    pairs: tuple[tuple[ServicePlan, TargetPlan], ...]

    @property
    def needs_approval(self) -> bool:
        return any(t.promotion.require_approval for _, t in self.pairs)


def service_steps(svc: ServicePlan) -> list[str]:
    """The steps one service takes in one environment, in order."""
    return [f"migrate:{m.name}" for m in svc.migrations] + ["deploy"] + [f"check:{c.name}" for c in svc.verify]


def plan_stages(plan: Plan, services: list[str] | None, environments: list[str]) -> tuple[list[ServicePlan], list[Stage]]:
    """The services (dependency order) and the environments (promotion order) this release covers."""
    chosen = [plan.service(n) for n in services] if services else list(plan.services)
    order = dependency_order(chosen)
    unknown = [e for e in environments if e not in plan.environments]
    if unknown:
        raise UsageError(f"unknown environment(s) {', '.join(unknown)} for forge release",
                         hint=f"use --environments with some of: {', '.join(plan.environments)}")
    envs = sorted(dict.fromkeys(environments), key=plan.environments.index)
    stages = []
    for env in envs:
        pairs = tuple((s, t) for s in order for t in s.targets if t.environment == env)
        if pairs:
            stages.append(Stage(env, pairs))
    if not stages:
        raise UsageError(f"nothing to release: none of {', '.join(s.name for s in order)} is deployed to "
                         f"{', '.join(envs) or '(no environment)'}",
                         hint="list environments under services.<name>.environments in deploy.yaml, or pick others "
                              "with --environments")
    return order, stages


def _client_key(target: TargetPlan) -> tuple[str | None, str | None]:
    return (target.kubeconfig, target.kube_context)


def _probe(api: Any, env: str, conn: kube.Connection) -> None:
    from kubernetes import client

    try:
        client.VersionApi(api).get_code(_request_timeout=(5, 10))
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        raise ClusterUnreachable(
            f"cannot reach the Kubernetes API for environment {env} ({conn.describe()}): "
            f"{type(err).__name__}: {getattr(err, 'reason', None) or err}",
            hint="check the kube context (`kubectl --context … version`) before releasing; nothing was changed") from err


def _approve(stages: list[Stage], *, yes: bool, ask: Ask | None, what: str) -> dict[str, str]:
    approvals: dict[str, str] = {}
    for stage in stages:
        if not stage.needs_approval:
            approvals[stage.environment] = "not required"
        elif yes:
            approvals[stage.environment] = "--yes"
        elif ask is None:
            raise ApprovalRequired(
                f"environment {stage.environment} requires approval (promotion.require_approval in deploy.yaml), "
                "and there is no terminal to ask on; nothing was pushed or changed",
                hint=f"re-run with --yes to approve releasing {what} to {stage.environment}, "
                     "or run it in a terminal and answer y")
        elif ask(f"Release {what} to {stage.environment}?"):
            approvals[stage.environment] = "interactive"
        else:
            raise ApprovalRequired(f"the release of {what} to {stage.environment} was not approved; "
                                   "nothing was pushed or changed",
                                   hint="re-run and answer y, or pass --yes")
    return approvals


def _check_promotion(plan: Plan, stages: list[Stage], revision: SourceRevision, cwd: str | Path | None) -> None:
    """An environment promoted from one outside this release needs that one to run the same tag."""
    released = {s.environment for s in stages}
    for stage in stages:
        for svc, target in stage.pairs:
            source = target.promotion.from_environment
            if not source or source in released or not target.promotion.require_verification:
                continue
            if not any(t.environment == source for t in svc.targets):
                continue
            tag = image_tags(revision.sha7, svc.image.architectures).deploy_tag
            there = gitops.current_tag(plan, svc.name, source, cwd=cwd)
            if there != tag:
                raise UsageError(
                    f"{svc.name} cannot be promoted to {stage.environment} at {tag}: it is promoted from {source}, "
                    f"which runs {there or 'nothing'} (per the GitOps repository)",
                    hint=f"release {source} first, e.g. `forge release --environments {source},{stage.environment}`")


def run_release(plan: Plan, services: list[str] | None, environments: list[str], *, revision: SourceRevision,
                yes: bool = False, ask: Ask | None = None, flake: str = ".", say: Say = log.info,
                cwd: str | Path | None = None) -> dict[str, Any]:
    """``forge release [S] [--environments a,b]``: returns the report; raises :class:`ReleaseFailed`
    (report inside) when a step fails, :class:`ApprovalRequired` / ``UsageError`` / ``ConfigError``
    (exit 2) when pre-flight refuses before anything changed."""
    try:
        return _run(plan, services, environments, revision=revision, yes=yes, ask=ask, flake=flake, say=say, cwd=cwd)
    except ReleaseFailed as err:
        for line in render_not_done(err.report):
            say(line)
        raise


def _run(plan: Plan, services: list[str] | None, environments: list[str], *, revision: SourceRevision,
         yes: bool, ask: Ask | None, flake: str, say: Say, cwd: str | Path | None) -> dict[str, Any]:
    t0 = time.monotonic()
    order, stages = plan_stages(plan, services, environments)
    what = order[0].name if services and len(order) == 1 else f"{plan.project} ({', '.join(s.name for s in order)})"
    report: dict[str, Any] = {
        "command": "release", "target": services[0] if services and len(services) == 1 else plan.project,
        "project": plan.project, "source_commit": revision.sha7,
        "environments": [s.environment for s in stages], "services": [s.name for s in order],
        "outcome": "running", "approvals": {}, "push": {}, "images": {}, "stages": [],
        "failed": None, "not_done": [], "timings": {},
    }
    # -- 1. pre-flight: configuration errors exit 2 and unreachable clusters exit 1, both before any change
    if ask is None:  # nobody to ask: say so first (the interactive question comes last, after the checks)
        report["approvals"] = _approve(stages, yes=yes, ask=None, what=what)
    connections = {}
    for stage in stages:
        for _, target in stage.pairs:
            connections.setdefault(_client_key(target), (stage.environment, kube.resolve(*_client_key(target))))
    registry.resolve_credentials(plan.registry)  # raises UsageError for half-set credentials
    clients: dict[tuple[str | None, str | None], Any] = {}
    try:
        for key, (env, conn) in connections.items():
            clients[key] = kube.client_for(conn)
            _probe(clients[key], env, conn)
    except ForgeError as err:
        _stop(report, stages, order, t0, where=("preflight", None, None), err=err, push_done=False)
    _check_promotion(plan, stages, revision, cwd)
    if ask is not None:
        report["approvals"] = _approve(stages, yes=yes, ask=ask, what=what)
    say(f"release {what} at {revision.sha7}: {' → '.join(s.environment for s in stages)}")

    # -- 2. push every image once
    t_push = time.monotonic()
    pushed: dict[str, Any] = {}
    for svc in order:
        try:
            result = registry.run_push(plan, svc.name, revision=revision, flake=flake,
                                       progress=lambda m, n=svc.name: say(f"{n}: push: {m}"))
        except ForgeError as err:
            _stop(report, stages, order, t0, where=("push", None, svc.name), err=err, push_done=False,
                  pushed=set(pushed))
        pushed[svc.name] = result
        report["push"][svc.name] = result.to_json()
        report["images"][svc.name] = f"{svc.image.repository}:{result.deploy_tag}"
    report["timings"]["push_seconds"] = round(time.monotonic() - t_push, 3)

    # -- 3. environment by environment
    for si, stage in enumerate(stages):
        t_stage = time.monotonic()
        entry_stage: dict[str, Any] = {"environment": stage.environment, "outcome": "running",
                                       "approval": report["approvals"][stage.environment], "services": [], "gate": None}
        report["stages"].append(entry_stage)
        say(f"release: {stage.environment} ({si + 1}/{len(stages)}): {', '.join(s.name for s, _ in stage.pairs)}")
        for pi, (svc, target) in enumerate(stage.pairs):
            api = clients[_client_key(target)]
            entry = _service_entry(svc, target, pushed[svc.name])
            entry_stage["services"].append(entry)
            step = _release_service(plan, svc, target, api, entry, pushed[svc.name].deploy_tag, revision, say, cwd)
            if step is not None:
                entry["outcome"] = "failed"
                entry_stage["outcome"] = "failed"
                entry_stage["gate"] = {"outcome": "not evaluated",
                                       "reason": f"{svc.name} failed at {step[0]}"}
                _stop(report, stages, order, t0, where=(step[0], stage.environment, svc.name), err=step[1],
                      position=(si, pi, step[0]))
            entry["outcome"] = "success"
        fed_err = _federation(plan, stage, clients, entry_stage, revision, say, cwd)
        if fed_err is not None:
            _stop(report, stages, order, t0, where=("federation", stage.environment, None), err=fed_err,
                  position=(si, len(stage.pairs), "federation"))
        gate = _gate(plan, stage, clients, entry_stage, pushed, cwd)
        entry_stage["gate"] = gate
        entry_stage["elapsed_seconds"] = round(time.monotonic() - t_stage, 3)
        if gate["outcome"] != "passed":
            entry_stage["outcome"] = "failed"
            bad = next(s for s, row in gate["services"].items() if not (row["healthy"] and row["verified"]))
            _stop(report, stages, order, t0, where=("gate", stage.environment, bad),
                  err=ForgeError(f"the gate of {stage.environment} did not pass: {gate['reason']}",
                                 hint=f"`forge status` shows what runs where; {stage.environment} is left as it is"),
                  position=(si, len(stage.pairs), "gate"))
        entry_stage["outcome"] = "success"
        say(f"release: {stage.environment}: gate passed (every service healthy and verified)")
    report["outcome"] = "success"
    report["timings"]["total_seconds"] = round(time.monotonic() - t0, 3)
    return report


def _service_entry(svc: ServicePlan, target: TargetPlan, pushed: Any) -> dict[str, Any]:
    return {"service": svc.name, "environment": target.environment, "namespace": target.namespace,
            "outcome": "running", "image": f"{svc.image.repository}:{pushed.deploy_tag}",
            "push": {"tag": pushed.deploy_tag, "digest": pushed.deploy_digest, "reference": pushed.deploy_reference},
            "migrations": [], "deploy": None, "checks": []}


def _release_service(plan: Plan, svc: ServicePlan, target: TargetPlan, api: Any, entry: dict[str, Any], tag: str,
                     revision: SourceRevision, say: Say, cwd: str | Path | None) -> tuple[str, ForgeError] | None:
    """Migrations, deploy, checks for one service in one environment; the failed step, or None."""
    where = f"{target.environment}/{svc.name}"
    image = f"{svc.image.repository}:{tag}"
    for m in svc.migrations:
        step = f"migrate:{m.name}"
        try:
            result = migrate.run_migration(api, service=svc.name, migration=m, namespace=target.namespace,
                                           image=m.image or image, tag=tag, progress=lambda msg: say(f"{where}: {msg}"))
        except ForgeError as err:
            entry["migrations"].append({"name": m.name, "outcome": "failed", "error": err.message})
            return step, err
        entry["migrations"].append(result.to_json())
        if not result.ok:
            say(f"{where}: migration {m.name} {result.outcome}: {result.reason}: {result.message}"
                + (f" (exit code {result.exit_code})" if result.exit_code is not None else ""))
            for line in result.logs[-20:]:
                say(f"    | {line}")
            return step, MigrationFailed(
                f"migration {m.name} of {svc.name} in {target.environment} {result.outcome}: {result.reason}: "
                f"{result.message}" + (f" (exit code {result.exit_code})" if result.exit_code is not None else ""),
                hint=f"the report has the last log lines of {result.pod or 'its pod'}; "
                     f"`kubectl -n {target.namespace} logs job/{result.job}` shows them all; nothing was committed "
                     f"to the GitOps repository for {svc.name}")
    deploy: dict[str, Any] = {"outcome": "running", "timings": {}}
    entry["deploy"] = deploy
    try:
        rolled = deploy_mod._roll(plan, svc, target, api, tag=tag, source_commit=revision.sha7, report=deploy,
                                  prefix="", say=lambda msg: say(f"{where}: {msg}"), cwd=cwd,
                                  expected_digest=(entry.get("push") or {}).get("digest"))
    except ForgeError as err:
        return f"deploy:{deploy.get('failed_step', 'gitops')}", err
    deploy["outcome"] = rolled.outcome
    if not rolled.ok:
        deploy["failed_step"] = "rollout"
        if svc.rollout.rollback_on_failure and rolled.outcome != "pending-on-delete":  # never for OnDelete
            deploy_mod._rollback_after_failure(plan, svc, target, api, deploy["gitops"].get("previous_tag"), tag,
                                               revision, deploy, lambda msg: say(f"{where}: {msg}"), cwd)
        message = deploy_mod._rollout_message({**deploy, "service": svc.name, "environment": target.environment})
        pending = rolled.outcome == "pending-on-delete"
        return "deploy:rollout", (RolloutPending if pending else RolloutFailed)(message, hint=deploy_mod._rollout_hint(deploy))
    for c in svc.verify:
        result_c = verify.run_check(c, progress=lambda msg: say(f"{where}: {msg}"))
        entry["checks"].append(result_c.to_json())
        say(f"{where}: check {c.name}: {result_c.outcome}" + (f" ({result_c.last_error})" if not result_c.ok else ""))
        if not result_c.ok:
            try:
                verify.raise_for_check(result_c, service=svc.name, environment=target.environment)
            except ForgeError as err:
                return f"check:{c.name}", err
    return None


def _federation(plan: Plan, stage: Stage, clients: dict, entry_stage: dict[str, Any], revision: SourceRevision,
                say: Say, cwd: str | Path | None) -> ForgeError | None:
    """The federation step (:mod:`forgegen.runtime.federation`), when subgraphs are deployed here;
    the error that stops the release, or None."""
    try:
        fed = federation.run_federation(plan, stage.environment, api=clients[_client_key(stage.pairs[0][1])],
                                        source_commit=revision.sha7, say=say, cwd=cwd)
    except ForgeError as err:
        entry_stage["federation"] = {"outcome": "failed", "errors": getattr(err, "errors", [])}
        entry_stage["outcome"] = "failed"
        return err
    if fed is not None:
        entry_stage["federation"] = fed
    return None


def _gate(plan: Plan, stage: Stage, clients: dict, entry_stage: dict[str, Any], pushed: dict[str, Any],
          cwd: str | Path | None) -> dict[str, Any]:
    """Every service of the environment healthy (as ``forge status`` judges) and verified."""
    rows: dict[str, Any] = {}
    entries = {e["service"]: e for e in entry_stage["services"]}
    for svc, target in stage.pairs:
        row = deploy_mod.status_row(plan, svc, target, lambda target=target: clients[_client_key(target)], cwd=cwd)
        tag = pushed[svc.name].deploy_tag
        if row.get("git") and row["git"]["tag"] != tag:
            row["errors"].append(f"git: the GitOps repository now deploys {row['git']['tag']}, not {tag}")
        checks = entries[svc.name]["checks"]
        rows[svc.name] = {"healthy": row["healthy"] and not row["errors"], "verified": all(c["outcome"] == "passed" for c in checks),
                          "checks": len(checks), "errors": row["errors"],
                          "running": (row.get("workload") or {}).get("image"),
                          "flux_ready": (row.get("flux") or {}).get("ready")}
    bad = [f"{n} {'not healthy' if not r['healthy'] else 'not verified'}" + (f" ({'; '.join(r['errors'])})" if r["errors"] else "")
           for n, r in rows.items() if not (r["healthy"] and r["verified"])]
    return {"outcome": "passed" if not bad else "failed", "services": rows, "reason": "; ".join(bad) or None}


def _stop(report: dict[str, Any], stages: list[Stage], order: list[ServicePlan], t0: float, *,
          where: tuple[str, str | None, str | None], err: ForgeError, push_done: bool = True,
          pushed: set[str] | None = None, position: tuple[int, int, str] | None = None) -> NoReturn:
    """Record where the release stopped and everything that did not run; raise :class:`ReleaseFailed`."""
    step, env, service = where
    report["outcome"] = "failed"
    report["failed"] = {"environment": env, "service": service, "step": step}
    report["error"] = {"type": type(err).__name__, "message": err.message, "hint": err.hint}
    not_done: list[dict[str, Any]] = []
    if not push_done:
        not_done += [{"environment": None, "service": s.name, "steps": ["push"]}
                     for s in order if s.name not in (pushed or set())]
    first_stage = 0
    if position is not None:
        si, pi, failed_step = position
        stage = stages[si]
        if pi < len(stage.pairs):
            steps = service_steps(stage.pairs[pi][0])
            at = steps.index("deploy" if failed_step.startswith("deploy:") else failed_step)
            if steps[at + 1:]:
                not_done.append({"environment": stage.environment, "service": stage.pairs[pi][0].name,
                                 "steps": steps[at + 1:]})
            for svc, _ in stage.pairs[pi + 1:]:
                not_done.append({"environment": stage.environment, "service": svc.name, "steps": service_steps(svc)})
        if failed_step != "gate":  # a service step or the federation step failed: the gate did not run
            not_done.append({"environment": stage.environment, "service": None, "steps": ["gate"]})
        first_stage = si + 1
    for stage in stages[first_stage:]:
        for svc, _ in stage.pairs:
            not_done.append({"environment": stage.environment, "service": svc.name, "steps": service_steps(svc)})
        not_done.append({"environment": stage.environment, "service": None, "steps": ["gate"]})
    report["not_done"] = not_done
    report["timings"]["total_seconds"] = round(time.monotonic() - t0, 3)
    place = " / ".join(p for p in (env, service, step) if p)
    later = [s.environment for s in stages[first_stage:]]
    tail = f"; not started: {', '.join(later)}" if later else ""
    raise ReleaseFailed(f"release of {report['target']} stopped at {place}: {err.message}{tail}", report,
                        hint=err.hint or "the report's not_done lists every step that did not run") from err


def render_not_done(report: dict[str, Any]) -> list[str]:
    """``not_done`` for people: one line per environment/service."""
    lines = []
    for d in report.get("not_done") or []:
        place = "/".join(p for p in (d["environment"], d["service"]) if p) or "-"
        lines.append(f"not done: {place}: {', '.join(d['steps'])}")
    return lines
