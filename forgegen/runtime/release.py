"""``forge release``: every service (or one), environment by environment, with migrations and gates.

The order, as Kargo and Skaffold users expect it:

1. **Pre-flight**, before anything changes: the plan's services and environments, a Kubernetes
   connection that answers for every environment involved, registry credentials, promotion
   (an environment promoted from one outside this release must find that environment already
   running the same tag), and approvals — an environment with ``promotion.require_approval``
   needs ``--yes`` or an interactive "y"; with neither, :class:`~forgegen.errors.ApprovalRequired`
   (exit 2) before anything is pushed.
2. **Push** each service's image once: built one after the other, then pushed ``concurrency`` at a
   time (``registry.run_push``); the first failure starts no new push.
3. **Per environment, in promotion order**, per service in dependency order
   (``steps.dependency_order``): the migrations (Kubernetes Jobs, :mod:`forgegen.runtime.migrate`),
   then the deploy (GitOps commit → Flux reconcile → rollout: ``deploy.roll``, with
   ``rollback_on_failure`` as in ``forge deploy``), then the verification checks
   (:mod:`forgegen.runtime.verify`).
4. **Gate** after each environment: every service of it healthy (git, workload and Flux agree, as
   ``forge status`` judges) and verified, before the next environment starts.

Independent services of one environment run in parallel, at most ``concurrency`` (``--concurrency``,
default 4) at a time: a service starts once the services it ``depends_on`` succeeded there. The
first failure starts nothing new; the running services finish (or roll back), and the report
lists the services in dependency order whatever order they finished in.

Before pushing, the release takes one Kubernetes ``Lease`` per product and environment
(:mod:`forgegen.runtime.lock`); another release waits ``--lock-timeout`` seconds or exits 2 naming
the holder. The report is kept under the state directory (``$FORGE_STATE_DIR``, else
``$XDG_STATE_HOME/forge``, else ``~/.local/state/forge``: ``releases/<project>.json``);
``--resume [REPORT.json]`` continues a failed release of the same source commit, services and
environments, skipping what the report says is done (pushes, environments whose gate passed,
services that succeeded, migrations that succeeded, a deploy that succeeded) — ``skipped`` lists them.

The first failure stops the release. The report (``--json``) says where — ``failed`` is
``{environment, service, step}`` with step one of ``preflight``, ``push``, ``migrate:<name>``,
``deploy:<gitops|reconcile|rollout>``, ``check:<name>``, ``federation``, ``gate`` — and lists in ``not_done``
every step that did not run. :class:`ReleaseFailed` carries that report (exit 1): a
:class:`~forgegen.runtime.reports.ReleaseReport`, whose ``to_json()`` is what ``--json`` prints and
the state directory keeps.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from forgegen.errors import (
    ApprovalRequired,
    ClusterUnreachable,
    ForgeError,
    MigrationFailed,
    ReleaseFailed,
    RolloutFailed,
    RolloutPending,
    UsageError,
)
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import deploy as deploy_mod
from forgegen.runtime import federation, gitops, kube, lock, migrate, present, registry, verify
from forgegen.runtime import stages as kinds
from forgegen.runtime.build import run_builds
from forgegen.runtime.reports import (
    FailedAt,
    GateResult,
    GateRow,
    MigrationFailure,
    PushedRef,
    ReleaseReport,
    Resumed,
    ResumedFrom,
    RollRecord,
    ServiceEntry,
    StageEntry,
    StepError,
    StepsRow,
    Unset,
)
from forgegen.runtime.steps import dependency_order
from forgegen.runtime.tags import SourceRevision, image_tags

log = logging.getLogger(__name__)
Say = Callable[[str], None]
Ask = Callable[[str], bool]
Clients = dict[tuple[str | None, str | None], Any]  # (kubeconfig, context) -> API client


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
    from forgegen.runtime import kubeapi

    try:
        kubeapi.VersionApi(api).get_code(_request_timeout=(5, 10))
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


@dataclass
class Options:
    """How a release runs: parallelism, the lock, and the report it resumes (``--resume``)."""

    concurrency: int = 4
    lock_timeout: float = 0.0
    lock_duration: int = lock.DURATION
    resume: dict[str, Any] | None = None
    resume_from: str | None = None
    state_dir: Path | None = None
    stage: str = "full"  # or "pre" (prerelease), "comprehensive" (comprehensive-release): forgegen.runtime.stages


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where Forge keeps the last report of each product's release (for ``--resume``)."""
    env = os.environ if environ is None else environ
    if env.get("FORGE_STATE_DIR"):
        return Path(env["FORGE_STATE_DIR"])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "forge"


def last_report_path(project: str, directory: Path | None = None) -> Path:
    return (directory or state_dir()) / "releases" / f"{project}.json"


def _save(report: ReleaseReport, options: Options) -> None:
    path = last_report_path(report.project, options.state_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as err:
        log.warning("could not keep the release report in %s: %s", path, err)


def load_resume(plan: Plan, spec: str, options_dir: Path | None = None) -> tuple[dict[str, Any], str]:
    """The report ``--resume [REPORT.json]`` names (default: the last one Forge kept)."""
    path = Path(spec) if spec not in ("", "last") else last_report_path(plan.project, options_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--resume: no release report at {path}",
                         hint="pass the report of the failed release (`forge release --json > report.json`), "
                              "or run the release without --resume") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"--resume: cannot read the release report {path}: {err}") from err
    if not isinstance(doc, dict) or doc.get("command") != "release" or doc.get("project") != plan.project:
        raise UsageError(f"--resume: {path} is not a release report of {plan.project}")
    if doc.get("outcome") != "failed":
        raise UsageError(f"--resume: the release in {path} did not fail (outcome {doc.get('outcome')!r}); "
                         "nothing to resume", hint="run the release without --resume")
    return doc, str(path)


def _check_resume(prev: dict[str, Any], report: ReleaseReport) -> None:
    mine = {"source_commit": report.source_commit, "services": report.services,
            "environments": report.environments, "stage": report.stage, "registry": report.registry}
    for key, value in mine.items():
        if prev.get(key, {"stage": "full", "registry": report.registry}.get(key)) != value:
            raise UsageError(f"--resume: the failed release had {key} {prev.get(key)!r}, this one {value!r}",
                             hint="resume with the same source commit, services and --environments, "
                                  "(and --stage, FORGE_REGISTRY), or run a new release without --resume")


def run_release(plan: Plan, services: list[str] | None, environments: list[str], *, revision: SourceRevision,
                yes: bool = False, ask: Ask | None = None, flake: str = ".", say: Say = log.info,
                cwd: str | Path | None = None, options: Options | None = None) -> ReleaseReport:
    """``forge release [S] [--environments a,b]``: returns the report; raises :class:`ReleaseFailed`
    (report inside) when a step fails, :class:`ApprovalRequired` / ``UsageError`` / ``ConfigError``
    / :class:`~forgegen.runtime.lock.ReleaseLocked` (exit 2) when pre-flight refuses before anything
    changed. The report is kept under the state directory for ``--resume``."""
    opts = options or Options()
    t0 = time.monotonic()
    order, all_stages = plan_stages(plan, services, environments)
    stages_ = all_stages[:1] if opts.stage == "pre" else all_stages  # a prerelease: the first environment only
    report = _new_report(plan, services, order, stages_, revision, opts, started=t0)
    try:
        _run(plan, services, order, all_stages, stages_, report, revision=revision, yes=yes, ask=ask, flake=flake,
             say=say, cwd=cwd, opts=opts)
    except ReleaseFailed:  # raised by _stop, with this report
        _save(report, opts)
        for line in present.not_done(report):
            say(line)
        raise
    _save(report, opts)
    return report


def _preflight(plan: Plan, stages: list[Stage], order: list[ServicePlan], report: ReleaseReport, *,
               revision: SourceRevision, yes: bool, ask: Ask | None, what: str,
               cwd: str | Path | None) -> dict[tuple[str | None, str | None], Any]:
    """Configuration errors exit 2 and unreachable clusters exit 1, both before any change."""
    if ask is None:  # nobody to ask: say so first (the interactive question comes last, after the checks)
        report.approvals = _approve(stages, yes=yes, ask=None, what=what)
    connections: dict[tuple[str | None, str | None], tuple[str, kube.Connection]] = {}
    for stage in stages:
        for _, target in stage.pairs:
            connections.setdefault(_client_key(target), (stage.environment, kube.resolve(*_client_key(target))))
    registry.resolve_credentials(plan.registry)  # raises UsageError for half-set credentials
    clients: Clients = {}
    try:
        for key, (env, conn) in connections.items():
            clients[key] = kube.client_for(conn)
            _probe(clients[key], env, conn)
    except ForgeError as err:
        _stop(report, stages, order, where=("preflight", None, None), err=err, push_done=False)
    _check_promotion(plan, stages, revision, cwd)
    if ask is not None:
        report.approvals = _approve(stages, yes=yes, ask=ask, what=what)
    return clients


def _take_locks(plan: Plan, stages: list[Stage], clients: Clients, opts: Options, what: str,
                say: Say) -> list[lock.Lease]:
    """The Lease of every environment, in promotion order; all or none."""
    holder = lock.identity()
    leases: list[lock.Lease] = []
    try:
        for stage in stages:
            target = stage.pairs[0][1]
            leases.append(lock.acquire(_own_client(target), namespace=target.namespace,
                                       name=lock.lease_name(plan.project, stage.environment), holder=holder,
                                       what=what, wait=opts.lock_timeout, duration=opts.lock_duration, say=say))
    except BaseException:
        for lease in leases:
            lease.release()
        raise
    return leases


def _new_report(plan: Plan, services: list[str] | None, order: list[ServicePlan], stages_: list[Stage],
                revision: SourceRevision, opts: Options, *, started: float) -> ReleaseReport:
    """The release report as it starts (the one place its shape is set; steps fill it in)."""
    report = ReleaseReport(
        stage=opts.stage, target=services[0] if services and len(services) == 1 else plan.project,
        project=plan.project, source_commit=revision.sha7,
        registry="/".join(p for p in (plan.registry.host, plan.registry.organization) if p),
        environments=[s.environment for s in stages_], services=[s.name for s in order],
        concurrency=opts.concurrency, started=started)
    if kinds.has_tests(opts.stage):
        report.tests = []
    if opts.stage == "pre":
        report.ready_to_promote = []
    if opts.resume is not None:
        _check_resume(opts.resume, report)
        report.resumed_from = ResumedFrom(report=opts.resume_from, failed=opts.resume.get("failed"))
        report.skipped = []
    return report


def _run(plan: Plan, services: list[str] | None, order: list[ServicePlan], all_stages: list[Stage],
         stages_: list[Stage], report: ReleaseReport, *, revision: SourceRevision, yes: bool, ask: Ask | None,
         flake: str, say: Say, cwd: str | Path | None, opts: Options) -> None:
    what = order[0].name if services and len(order) == 1 else f"{plan.project} ({', '.join(s.name for s in order)})"
    clients = _preflight(plan, stages_, order, report, revision=revision, yes=yes, ask=ask, what=what, cwd=cwd)
    leases = _take_locks(plan, stages_, clients, opts, f"{what} at {revision.sha7}", say)
    report.locks = [lease.info for lease in leases]
    renewer = lock.Renewer(leases)
    try:
        say(f"release {what} at {revision.sha7}: {' → '.join(s.environment for s in stages_)}"
            + ("" if opts.stage == "full" else f" ({kinds.APPS[opts.stage]})"))
        builds = _test_all(plan, stages_, order, report, flake=flake, say=say, opts=opts)
        pushed = _push_all(plan, stages_, order, report, revision=revision, flake=flake, say=say, opts=opts,
                           builds=builds)
        for si in range(len(stages_)):
            _release_stage(plan, stages_, si, order, report, clients=clients, pushed=pushed, revision=revision,
                           say=say, cwd=cwd, opts=opts)
            if si == 0:
                _promotion_tests(plan, stages_, order, report, flake=flake, say=say, opts=opts)
        if opts.stage == "pre":
            ready = report.ready_to_promote = kinds.ready_to_promote(list(stages_[0].pairs), report.images,
                                                                     [s.environment for s in all_stages])
            for row in ready:
                say(f"ready to promote: {row['image']} (verified in {row['verified_in']})"
                    + (f" to {', '.join(row['next'])}: {row['promote_with']}" if row["next"] else ""))
        report.outcome = "success"
        report.finish()
    finally:
        renewer.stop()
        for lease in leases:
            lease.info.setdefault("released_at", None)
        if any(lease.lost for lease in leases):
            report.lock_lost = [lease.lost for lease in leases if lease.lost]


def _test_all(plan: Plan, stages_: list[Stage], order: list[ServicePlan], report: ReleaseReport, *, flake: str,
              say: Say, opts: Options) -> dict[str, Any]:
    """A stage with tests: build every image, then run each service's tests; the first failure stops
    the release before anything is pushed. The builds, for the push. (A service the resumed release
    already pushed is neither built nor tested again.)"""
    if not kinds.has_tests(opts.stage):
        return {}
    done = (opts.resume or {}).get("push") or {}
    todo = [svc for svc in order if svc.name not in done]
    builds, failed_build = _build_all(plan, todo, flake=flake, say=say, step="build")
    if failed_build is not None:
        svc, err = failed_build
        _stop(report, stages_, order, where=("build", None, svc.name), err=err, push_done=False,
              pushed=set(done), also_not_done=[
                  StepsRow(environment=None, service=s.name,
                           steps=[kinds.step_name(lv) for lv, _ in kinds.pre_push_levels(s)]) for s in todo])
    tests = report.tests if not isinstance(report.tests, Unset) else []
    for i, svc in enumerate(todo):
        entries = kinds.run_tests(svc, source=flake, say=say)
        tests += entries
        failed = next((e for e in entries if e["outcome"] == "failed"), None)
        if failed is not None:
            rest = [kinds.step_name(e["level"]) for e in entries if e["outcome"] == "not run"]
            later = [StepsRow(environment=None, service=svc.name, steps=rest)] if rest else []
            later += [StepsRow(environment=None, service=s.name,
                               steps=[kinds.step_name(lv) for lv, _ in kinds.pre_push_levels(s)]) for s in todo[i + 1:]]
            _stop(report, stages_, order, where=(kinds.step_name(failed["level"]), None, svc.name),
                  push_done=False, pushed=set(done), err=kinds.tests_error(failed, before="nothing was pushed"),
                  also_not_done=later)
    return builds


def _promotion_tests(plan: Plan, stages_: list[Stage], order: list[ServicePlan], report: ReleaseReport, *,
                     flake: str, say: Say, opts: Options) -> None:
    """comprehensive: each service's e2e tests against the first environment (its URL there, see
    :mod:`forgegen.runtime.stages`), before the next environment starts."""
    levels = kinds.promotion_levels(opts.stage)
    stage = stages_[0]
    runs = [(svc, target, level) for svc, target in stage.pairs for level in levels]
    for i, (svc, target, level) in enumerate(runs):
        entry = kinds.run_promotion_test(plan, svc, target, level, source=flake, image=report.images[svc.name],
                                         say=say)
        if not isinstance(report.tests, Unset):  # always: a stage with promotion tests has tests
            report.tests.append(entry)
        if entry["outcome"] == "failed":
            later = [StepsRow(environment=stage.environment, service=s.name, steps=[f"test:{lv}"])
                     for s, _, lv in runs[i + 1:]]
            nxt = ", ".join(s.environment for s in stages_[1:]) or "nothing"
            _stop(report, stages_, order, where=(f"test:{level}", stage.environment, svc.name),
                  err=kinds.tests_error(entry, before=f"not promoted to {nxt}"), from_stage=1, also_not_done=later)


@dataclass(frozen=True)
class DonePush:
    """A push the resumed release did (from its report), standing in for a PushResult."""

    doc: dict[str, Any]

    @property
    def deploy_tag(self) -> str:
        return str(self.doc["deploy_tag"])

    @property
    def deploy_digest(self) -> str:
        return str(self.doc["deploy_digest"])

    @property
    def deploy_reference(self) -> str:
        return str(self.doc["deploy_reference"])

    def to_json(self) -> dict[str, Any]:
        return {**self.doc, "resumed": True}


def _push_all(plan: Plan, stages: list[Stage], order: list[ServicePlan], report: ReleaseReport, *,
              revision: SourceRevision, flake: str, say: Say, opts: Options,
              builds: dict[str, Any]) -> dict[str, Any]:
    """Push every image once (built here, or before the tests: ``builds``), ``opts.concurrency`` at
    a time; after the first failure no new push starts (the running ones finish). A resumed
    release keeps the pushes its report has."""
    t_push = time.monotonic()
    pushed: dict[str, Any] = {}
    done = (opts.resume or {}).get("push") or {}
    for svc in order:
        if svc.name in done:
            pushed[svc.name] = DonePush(done[svc.name])
            report.skip(StepsRow(environment=None, service=svc.name, steps=["push"]))
            say(f"{svc.name}: push: done by the resumed release ({pushed[svc.name].deploy_tag}); skipped")
    failures = _push_parallel(plan, [s for s in order if s.name not in done], pushed, revision=revision,
                              flake=flake, say=say, builds=builds, concurrency=opts.concurrency)
    for svc in order:  # in the release's order, whatever order they finished in
        if svc.name in pushed:
            report.push[svc.name] = pushed[svc.name]
            report.images[svc.name] = f"{svc.image.repository}:{pushed[svc.name].deploy_tag}"
    if failures:
        svc, err = next((s, failures[s.name]) for s in order if s.name in failures)
        _stop(report, stages, order, where=("push", None, svc.name), err=err, push_done=False, pushed=set(pushed))
    report.timings["push_seconds"] = round(time.monotonic() - t_push, 3)
    return {s.name: pushed[s.name] for s in order}


def _push_parallel(plan: Plan, todo: list[ServicePlan], pushed: dict[str, Any], *, revision: SourceRevision,
                   flake: str, say: Say, builds: dict[str, Any], concurrency: int) -> dict[str, ForgeError]:
    """Push ``todo``'s images into ``pushed``, at most ``concurrency`` at once; the failures. The
    images not built yet are built first, with one ``nix build`` (:func:`_build_all`)."""
    failures: dict[str, ForgeError] = {}
    more, failed_build = _build_all(plan, [s for s in todo if s.name not in builds], flake=flake, say=say, step="push")
    builds.update(more)
    if failed_build is not None:
        failures[failed_build[0].name] = failed_build[1]
        return failures
    pending = list(todo)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="forge-push") as pool:
        running: dict[Future[Any], ServicePlan] = {}
        while pending or running:
            while pending and not failures and len(running) < max(1, concurrency):
                svc = pending.pop(0)
                running[pool.submit(registry.run_push, plan, svc.name, revision=revision, flake=flake,
                                    build=builds.get(svc.name), progress=_prefixed(say, f"{svc.name}: push: "))] = svc
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                svc = running.pop(fut)
                try:
                    pushed[svc.name] = fut.result()
                except ForgeError as err:
                    failures[svc.name] = err
    return failures


def _build_all(plan: Plan, todo: list[ServicePlan], *, flake: str, say: Say,
               step: str) -> tuple[dict[str, Any], tuple[ServicePlan, ForgeError] | None]:
    """Build ``todo``'s images with one ``nix build`` (one evaluation; not one process per service:
    Nix 2.8 evaluating one flake in several processes at once trips over its own evaluation cache,
    "SQLite database … is busy", then "attribute … unexpectedly missing"). The builds, and the
    first service whose build failed, with its error."""
    if not todo:
        return {}, None
    results = run_builds(plan, [s.name for s in todo], flake=flake, progress=say,
                         progress_for=lambda name: _prefixed(say, f"{name}: {step}: "))
    builds = {name: r for name, r in results.items() if not isinstance(r, ForgeError)}
    failed = next(((svc, r) for svc in todo if isinstance(r := results.get(svc.name), ForgeError)), None)
    return builds, failed


def _release_stage(plan: Plan, stages: list[Stage], si: int, order: list[ServicePlan], report: ReleaseReport, *,
                   clients: Clients, pushed: dict[str, Any], revision: SourceRevision, say: Say,
                   cwd: str | Path | None, opts: Options) -> None:
    """One environment: its services in parallel (``depends_on`` kept), then the gate."""
    stage = stages[si]
    t_stage = time.monotonic()
    prev_stage = next((s for s in (opts.resume or {}).get("stages") or [] if s["environment"] == stage.environment),
                      None)
    if prev_stage is not None and prev_stage.get("outcome") == "success":
        report.stages.append(Resumed(prev_stage))
        report.skip(StepsRow(environment=stage.environment, service=None, steps=["services", "gate"]))
        say(f"release: {stage.environment}: done by the resumed release; skipped")
        return
    previous = {e["service"]: e for e in (prev_stage or {}).get("services") or []}
    entry_stage = StageEntry(environment=stage.environment, approval=report.approvals[stage.environment])
    report.stages.append(entry_stage)
    say(f"release: {stage.environment} ({si + 1}/{len(stages)}): {', '.join(s.name for s, _ in stage.pairs)}")
    entries, failures = _run_services(plan, stage, clients, pushed, revision, say, cwd, opts.concurrency, previous,
                                      report)
    entry_stage.services = [entries[s.name] for s, _ in stage.pairs if s.name in entries]
    if failures:
        first = next(f for s, _ in stage.pairs for f in failures if f[0].name == s.name)
        entry_stage.outcome = "failed"
        entry_stage.gate = GateResult(outcome="not evaluated", reason=f"{first[0].name} failed at {first[1]}")
        if len(failures) > 1:
            report.failures = [FailedAt(environment=stage.environment, service=s.name, step=st)
                               for s, _ in stage.pairs for (f, st, _e) in failures if f.name == s.name]
        _stop(report, stages, order, where=(first[1], stage.environment, first[0].name), err=first[2],
              position=(si, {f[0].name: f[1] for f in failures}, set(entries)))
    fed_err = _federation(plan, stage, clients, entry_stage, revision, say, cwd)
    if fed_err is not None:
        _stop(report, stages, order, where=("federation", stage.environment, None), err=fed_err,
              position=(si, {}, set(entries)))
    gate = entry_stage.gate = _gate(plan, stage, clients, entry_stage, pushed, cwd)
    entry_stage.elapsed_seconds = round(time.monotonic() - t_stage, 3)
    if gate.outcome != "passed":
        entry_stage.outcome = "failed"
        rows = gate.services if not isinstance(gate.services, Unset) else {}
        bad = next(s for s, row in rows.items() if not (row.healthy and row.verified))
        _stop(report, stages, order, where=("gate", stage.environment, bad),
              err=ForgeError(f"the gate of {stage.environment} did not pass: {gate.reason}",
                             hint=f"`forge status` shows what runs where; {stage.environment} is left as it is"),
              position=(si, {}, set(entries)), gate_failed=True)
    entry_stage.outcome = "success"
    say(f"release: {stage.environment}: gate passed (every service healthy and verified)")


Failure = tuple[ServicePlan, str, ForgeError]


def _run_services(plan: Plan, stage: Stage, clients: Clients, pushed: dict[str, Any], revision: SourceRevision,
                  say: Say, cwd: str | Path | None, concurrency: int, previous: dict[str, dict[str, Any]],
                  report: ReleaseReport) -> tuple[dict[str, ServiceEntry | Resumed], list[Failure]]:
    """Start each service once its dependencies in this environment succeeded, at most
    ``concurrency`` at a time; after the first failure start nothing new and let the running
    ones finish (or roll back)."""
    names = {s.name for s, _ in stage.pairs}
    deps = {s.name: [d for d in s.depends_on if d in names] for s, _ in stage.pairs}
    pending = list(stage.pairs)
    entries: dict[str, ServiceEntry | Resumed] = {}
    ok: set[str] = set()
    failures: list[Failure] = []
    accept = _descendant_test(cwd)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="forge-release") as pool:
        running: dict[Future[Any], tuple[ServicePlan, ServiceEntry]] = {}
        while pending or running:
            for svc, target in list(pending):
                if failures or len(running) >= concurrency:
                    break
                if not all(d in ok for d in deps[svc.name]):
                    continue
                pending.remove((svc, target))
                prev = previous.get(svc.name)
                if prev is not None and prev.get("outcome") == "success":
                    entries[svc.name] = Resumed(prev)
                    report.skip(StepsRow(environment=stage.environment, service=svc.name, steps=service_steps(svc)))
                    ok.add(svc.name)
                    continue
                entry = _service_entry(svc, target, pushed[svc.name])
                entries[svc.name] = entry
                # its own ApiClient: watch streams left half-read must not hand a connection to another thread
                running[pool.submit(_release_service, plan, svc, target, _own_client(target), entry,
                                    pushed[svc.name].deploy_tag, revision, say, cwd, prev, accept, report)] = (svc, entry)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                svc, entry = running.pop(fut)
                step = fut.result()
                entry.outcome = "failed" if step else "success"
                if step:
                    failures.append((svc, step[0], step[1]))
                else:
                    ok.add(svc.name)
            if not running and not failures and pending and not any(
                    all(d in ok for d in deps[s.name]) for s, _ in pending):
                break  # cannot happen with a valid plan (dependencies come first)
    return entries, failures


def _own_client(target: TargetPlan) -> Any:
    """A Kubernetes ApiClient (connection pool) of its own, for one thread."""
    return kube.client_for(kube.resolve(*_client_key(target)))


Accept = Callable[[tuple[str, str]], Callable[[str], Callable[[str], bool]]]


def _prefixed(say: Say, prefix: str) -> Say:
    return lambda message: say(prefix + message)


def _descendant_test(cwd: str | Path | None) -> Accept:
    """``accept(ours)(sha)``: does the GitOps commit Flux fetched contain ours (a parallel deploy
    pushed on top of it)? Asked of the cached clone, fetched when it does not know ``sha``."""
    memo: dict[tuple[str, str], bool] = {}
    guard = threading.Lock()

    def for_target(repo_spec: tuple[str, str]) -> Callable[[str], Callable[[str], bool]]:
        def accept(ours: str) -> Callable[[str], bool]:
            def test(sha: str) -> bool:
                key = (ours, sha)
                with guard:
                    if key in memo:
                        return memo[key]
                repo = gitops.GitOpsRepo.open(repo_spec[0], repo_spec[1], cwd=cwd)
                with repo.locked():
                    if repo.git("cat-file", "-e", f"{sha}^{{commit}}", check=False, what="look up a commit").returncode:
                        repo.fetch()
                    res = repo.git("merge-base", "--is-ancestor", ours, sha, check=False,
                                   what="check that Flux's commit contains ours")
                with guard:
                    memo[key] = res.returncode == 0
                return memo[key]
            return test
        return accept
    return for_target


def _service_entry(svc: ServicePlan, target: TargetPlan, pushed: Any) -> ServiceEntry:
    return ServiceEntry(service=svc.name, environment=target.environment, namespace=target.namespace,
                        image=f"{svc.image.repository}:{pushed.deploy_tag}",
                        push=PushedRef(tag=pushed.deploy_tag, digest=pushed.deploy_digest,
                                       reference=pushed.deploy_reference))


def _migrations(svc: ServicePlan, target: TargetPlan, api: Any, entry: ServiceEntry, image: str, tag: str,
                say: Say, prev: dict[str, Any] | None, skipped: list[str]) -> tuple[str, ForgeError] | None:
    where = f"{target.environment}/{svc.name}"
    done = {m["name"]: m for m in (prev or {}).get("migrations") or [] if m.get("outcome") == "success"}
    for m in svc.migrations:
        step = f"migrate:{m.name}"
        if m.name in done:
            entry.migrations.append(Resumed(done[m.name]))
            skipped.append(step)
            continue
        try:
            result = migrate.run_migration(api, service=svc.name, migration=m, namespace=target.namespace,
                                           image=m.image or image, tag=tag, progress=lambda msg: say(f"{where}: {msg}"))
        except ForgeError as err:
            entry.migrations.append(MigrationFailure(name=m.name, error=err.message))
            return step, err
        entry.migrations.append(result)
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
    return None


def _release_service(plan: Plan, svc: ServicePlan, target: TargetPlan, api: Any, entry: ServiceEntry, tag: str,
                     revision: SourceRevision, say: Say, cwd: str | Path | None, prev: dict[str, Any] | None = None,
                     accept: Callable[..., Any] | None = None,
                     report: ReleaseReport | None = None) -> tuple[str, ForgeError] | None:
    """Migrations, deploy, checks for one service in one environment; the failed step, or None.
    ``prev`` is this service's entry in a resumed release: what succeeded there is not done again."""
    where = f"{target.environment}/{svc.name}"
    image = f"{svc.image.repository}:{tag}"
    skipped: list[str] = []
    try:
        failed = _migrations(svc, target, api, entry, image, tag, say, prev, skipped)
        if failed is not None:
            return failed
        if prev is not None and (prev.get("deploy") or {}).get("outcome") == "success":
            entry.deploy = Resumed(prev["deploy"])
            skipped.append("deploy")
            say(f"{where}: deploy: done by the resumed release; skipped")
        else:
            failed = _deploy(plan, svc, target, api, entry, tag, revision, say, cwd, accept)
            if failed is not None:
                return failed
        for c in svc.verify:
            result_c = verify.run_check(c, progress=lambda msg: say(f"{where}: {msg}"))
            entry.checks.append(result_c)
            say(f"{where}: check {c.name}: {result_c.outcome}" + (f" ({result_c.last_error})" if not result_c.ok else ""))
            if not result_c.ok:
                try:
                    verify.raise_for_check(result_c, service=svc.name, environment=target.environment)
                except ForgeError as err:
                    return f"check:{c.name}", err
        return None
    finally:
        if skipped and report is not None:
            report.skip(StepsRow(environment=target.environment, service=svc.name, steps=skipped))


def _deploy(plan: Plan, svc: ServicePlan, target: TargetPlan, api: Any, entry: ServiceEntry, tag: str,
            revision: SourceRevision, say: Say, cwd: str | Path | None,
            accept: Callable[..., Any] | None) -> tuple[str, ForgeError] | None:
    """GitOps commit → reconcile → rollout (and ``rollback_on_failure``), into the entry's roll record."""
    where = f"{target.environment}/{svc.name}"
    record = entry.deploy = RollRecord()
    try:
        rolled = deploy_mod.roll(plan, svc, target, api, tag=tag, source_commit=revision.sha7, record=record,
                                 prefix="", say=_prefixed(say, f"{where}: "), cwd=cwd, expected_digest=entry.push.digest,
                                 accept=accept((target.gitops.repo, target.gitops.branch)) if accept else None)
    except ForgeError as err:
        return f"deploy:{'gitops' if isinstance(record.failed_step, Unset) else record.failed_step}", err
    record.outcome = rolled.outcome
    if not rolled.ok:
        record.failed_step = "rollout"
        if svc.rollout.rollback_on_failure and rolled.outcome != "pending-on-delete":  # never for OnDelete
            deploy_mod.rollback_after_failure(plan, svc, target, api, record.steps["gitops"].previous_tag, tag,
                                              revision, record, _prefixed(say, f"{where}: "), cwd)
        message = deploy_mod.rollout_message(record, svc.name, target.environment)
        pending = rolled.outcome == "pending-on-delete"
        return "deploy:rollout", (RolloutPending if pending else RolloutFailed)(message,
                                                                                hint=deploy_mod.rollout_hint(record))
    return None


def _federation(plan: Plan, stage: Stage, clients: Clients, entry_stage: StageEntry, revision: SourceRevision,
                say: Say, cwd: str | Path | None) -> ForgeError | None:
    """The federation step (:mod:`forgegen.runtime.federation`), when subgraphs are deployed here;
    the error that stops the release, or None."""
    try:
        fed = federation.run_federation(plan, stage.environment, api=clients[_client_key(stage.pairs[0][1])],
                                        source_commit=revision.sha7, say=say, cwd=cwd)
    except ForgeError as err:
        entry_stage.federation = {"outcome": "failed", "errors": getattr(err, "errors", [])}
        entry_stage.outcome = "failed"
        return err
    if fed is not None:
        entry_stage.federation = fed
    return None


def _gate(plan: Plan, stage: Stage, clients: Clients, entry_stage: StageEntry, pushed: dict[str, Any],
          cwd: str | Path | None) -> GateResult:
    """Every service of the environment healthy (as ``forge status`` judges) and verified."""
    rows: dict[str, GateRow] = {}
    checks: dict[str, list[dict[str, Any]]] = {}
    for entry in entry_stage.services:  # a service this release ran, or one the resumed release had done
        doc = entry.to_json()
        checks[doc["service"]] = doc["checks"]
    status = deploy_mod.status_rows(plan, list(stage.pairs), lambda target: clients[_client_key(target)], cwd=cwd)
    for (svc, _target), row in zip(stage.pairs, status):
        tag = pushed[svc.name].deploy_tag
        if row.git is not None and row.git.tag != tag:
            row.errors.append(f"git: the GitOps repository now deploys {row.git.tag}, not {tag}")
        image = row.workload.image if row.workload is not None else None
        rows[svc.name] = GateRow(healthy=row.healthy and not row.errors,
                                 verified=all(c["outcome"] == "passed" for c in checks[svc.name]),
                                 checks=len(checks[svc.name]), errors=row.errors,
                                 running=None if isinstance(image, Unset) else image,
                                 flux_ready=(row.flux or {}).get("ready"))
    bad = [f"{n} {'not healthy' if not r.healthy else 'not verified'}" + (f" ({'; '.join(r.errors)})" if r.errors else "")
           for n, r in rows.items() if not (r.healthy and r.verified)]
    return GateResult(outcome="passed" if not bad else "failed", services=rows, reason="; ".join(bad) or None)


def _stop(report: ReleaseReport, stages_: list[Stage], order: list[ServicePlan], *,
          where: tuple[str, str | None, str | None], err: ForgeError, push_done: bool = True,
          pushed: set[str] | None = None, position: tuple[int, dict[str, str], set[str]] | None = None,
          gate_failed: bool = False, from_stage: int = 0, also_not_done: list[StepsRow] | None = None) -> NoReturn:
    """Record where the release stopped and everything that did not run; raise :class:`ReleaseFailed`.
    ``position`` is (stage index, failed service → step, services started in that stage);
    ``from_stage`` the first stage not done when there is no position (every earlier one is done)."""
    step, env, service = where
    report.outcome = "failed"
    report.failed = FailedAt(environment=env, service=service, step=step)
    report.error = StepError.of(err)
    not_done: list[StepsRow] = list(also_not_done or [])
    if not push_done:
        not_done += [StepsRow(environment=None, service=s.name, steps=["push"])
                     for s in order if s.name not in (pushed or set())]
    first_stage = from_stage
    if position is not None:
        not_done += _stage_not_done(stages_[position[0]], position[1], position[2], gate_failed)
        first_stage = position[0] + 1
    levels = kinds.promotion_levels(report.stage)
    for si in range(first_stage, len(stages_)):
        not_done += _stage_not_done(stages_[si], {}, set(), False)
    if levels and first_stage <= 1 and (env is None or not step.startswith("test:")):  # comprehensive: the
        # first environment's tests (unless they are what failed: also_not_done has the rest)
        tests = [StepsRow(environment=stages_[0].environment, service=s.name, steps=[f"test:{lv}" for lv in levels])
                 for s, _ in stages_[0].pairs]
        at = next((i for i, d in enumerate(not_done) if d.environment not in (None, stages_[0].environment)),
                  len(not_done))
        not_done[at:at] = tests
    report.not_done = not_done
    report.finish()
    place = " / ".join(p for p in (env, service, step) if p)
    later = [s.environment for s in stages_[first_stage:]]
    tail = f"; not started: {', '.join(later)}" if later else ""
    raise ReleaseFailed(f"release of {report.target} stopped at {place}: {err.message}{tail}", report,
                        hint=err.hint or "the report's not_done lists every step that did not run") from err


def _stage_not_done(stage: Stage, failed: dict[str, str], started: set[str], gate_failed: bool) -> list[StepsRow]:
    """What did not run in one environment: after each failed step, the services not started, the gate."""
    rows: list[StepsRow] = []
    for svc, _ in stage.pairs:
        steps = service_steps(svc)
        if svc.name in failed:
            at = steps.index("deploy" if failed[svc.name].startswith("deploy:") else failed[svc.name])
            if steps[at + 1:]:
                rows.append(StepsRow(environment=stage.environment, service=svc.name, steps=steps[at + 1:]))
        elif svc.name not in started:
            rows.append(StepsRow(environment=stage.environment, service=svc.name, steps=steps))
    if not gate_failed:
        rows.append(StepsRow(environment=stage.environment, service=None, steps=["gate"]))
    return rows
