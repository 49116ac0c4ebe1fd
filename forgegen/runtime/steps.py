"""What a command will do, step by step, with every value resolved (``--dry-run``).

A pure function of the plan, the target and the source revision: the same description the real
run follows, so ``--dry-run`` can be trusted to show what happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forgegen import pattern
from forgegen.errors import UsageError
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import stages
from forgegen.runtime.federation import dry_run_steps
from forgegen.runtime.gitops import manifest_path
from forgegen.runtime.tags import ImageTags, SourceRevision, image_tags


@dataclass(frozen=True)
class Step:
    name: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "summary": self.summary, "details": self.details}


def split_target(arg: str, plan: Plan, *, need_env: bool = False) -> tuple[ServicePlan, TargetPlan | None]:
    """``api`` or ``api:production`` → the service and its target (first environment by default)."""
    name, _, env = arg.partition(":")
    if not name:
        raise UsageError(f"{arg!r} does not name a service; use SERVICE or SERVICE:ENVIRONMENT")
    service = plan.service(name)
    if not env:
        if need_env and len(service.targets) > 1:
            raise UsageError(f"{arg!r} needs an environment",
                             hint=f"use {name}:<environment> with one of: {', '.join(t.environment for t in service.targets)}")
        return service, service.targets[0] if service.targets else None
    return service, service.target(env)


def image_ref(repository: str, tag: str) -> str:
    return f"{repository}:{tag}"


def _build_steps(plan: Plan, service: ServicePlan, systems: tuple[str, ...]) -> list[Step]:
    steps = [Step("build", f"nix build .#packages.{s}.{service.image.package}",
                  {"system": s, "installable": f".#packages.{s}.{service.image.package}"})
             for s in systems]
    if plan.attic is not None:
        steps.append(Step("cache-push", f"attic push {plan.attic.cache} (the image closure, only missing paths)",
                          {"cache": plan.attic.cache, "endpoint": plan.attic.endpoint, "via": "attic"}))
    elif plan.binary_cache:
        steps.append(Step("cache-push", f"nix copy --to {plan.binary_cache} (only missing paths)",
                          {"url": plan.binary_cache, "via": "nix copy"}))
    return steps


def _push_steps(plan: Plan, service: ServicePlan, tags: ImageTags) -> list[Step]:
    repo = service.image.repository
    steps = []
    for system, (sha_tag, latest) in tags.per_arch.items():
        how = "skopeo copy" if plan.registry.push_with == "skopeo" else "missing blobs and the manifest"
        steps.append(Step("push", f"{how} → {image_ref(repo, sha_tag)} (+ {latest})",
                          {"system": system, "repository": repo, "tags": [sha_tag, latest],
                           "registry": plan.registry.host, "attempts": plan.registry.push_attempts,
                           "via": plan.registry.push_with}))
    if tags.index:
        steps.append(Step("push-index", f"OCI image index → {image_ref(repo, tags.index[0])} (+ {tags.index[1]})",
                          {"repository": repo, "tags": list(tags.index),
                           "manifests": [t[0] for t in tags.per_arch.values()]}))
    steps.append(Step("verify", f"check every tag of {repo} resolves to the digest just pushed",
                      {"tags": [t for pair in tags.per_arch.values() for t in pair] + list(tags.index or ())}))
    return steps


def _gitops_steps(service: ServicePlan, target: TargetPlan, tag: str, revision: SourceRevision,
                  project: str) -> list[Step]:
    g = target.gitops
    manifest = manifest_path(target)
    message = pattern.fill(g.commit_message, {
        "project": project, "service": service.name, "environment": target.environment, "cluster": target.cluster,
        "tag": tag, "image": image_ref(service.image.repository, tag), "source_commit": revision.sha7})
    return [
        Step("gitops-edit", f"set {service.image.repository} newTag: {tag} in {manifest}",
             {"repo": g.repo, "branch": g.branch, "file": manifest, "image": service.image.repository, "tag": tag}),
        Step("gitops-check", f"kubectl kustomize {g.path} shows {service.workload.kind}/{service.workload.name} "
                             f"running {image_ref(service.image.repository, tag)}", {"path": g.path}),
        Step("gitops-push", f"commit and push to {g.repo} {g.branch} (on a rejected push: fetch, re-apply the edit, "
                            f"retry; up to {g.push_attempts} attempts)",
             {"message": message, "attempts": g.push_attempts}),
    ]


def _reconcile_step(target: TargetPlan) -> Step:
    f = target.flux
    objects = [f"{f.namespace}/{f.source_kind}/{f.source_name}"] + [f"{f.namespace}/Kustomization/{k}" for k in f.kustomizations]
    return Step("reconcile", f"annotate {', '.join(objects)} and wait until our commit is applied (timeout {f.timeout:g}s)",
                {"source": {"kind": f.source_kind, "name": f.source_name, "namespace": f.namespace},
                 "kustomizations": list(f.kustomizations), "timeout": f.timeout,
                 "cluster": target.cluster, "kube_context": target.kube_context})


def _rollout_step(service: ServicePlan, target: TargetPlan, image: str | None) -> Step:
    w, r = service.workload, service.rollout
    deadline = f"{r.deadline:g}s" if r.deadline else "the workload's progressDeadlineSeconds (default 600s)"
    return Step("rollout", f"watch {target.namespace}/{w.kind}/{w.name} until {w.container} runs {image or 'the new image'} "
                           f"(fail fast; deadline {deadline})",
                {"namespace": target.namespace, "kind": w.kind, "name": w.name, "container": w.container,
                 "expected_image": image, "deadline": r.deadline, "restarts_tolerated": r.restarts_tolerated,
                 "readiness_grace": r.readiness_grace, "scheduling_grace": r.scheduling_grace,
                 "kube_context": target.kube_context, "kubeconfig": target.kubeconfig})


def describe(command: str, plan: Plan, service: ServicePlan | None, target: TargetPlan | None,
             revision: SourceRevision | None, *, to_tag: str | None = None) -> list[Step]:
    """Every step ``command`` takes, in order, with resolved values."""
    steps: list[Step] = []
    tags = image_tags(revision.sha7, service.image.architectures) if (service and revision) else None
    if command in ("build",):
        assert service is not None
        return _build_steps(plan, service, service.image.architectures)
    if command == "push":
        assert service is not None and tags is not None
        return _build_steps(plan, service, service.image.architectures) + _push_steps(plan, service, tags)
    if command == "deploy":
        assert service is not None and target is not None and tags is not None and revision is not None
        steps += _build_steps(plan, service, service.image.architectures)
        steps += _push_steps(plan, service, tags)
        steps += _gitops_steps(service, target, tags.deploy_tag, revision, plan.project)
        steps.append(_reconcile_step(target))
        steps.append(_rollout_step(service, target, image_ref(service.image.repository, tags.deploy_tag)))
        if service.rollout.rollback_on_failure:
            steps.append(Step("rollback-on-failure", "if the rollout fails: write the previous tag back, commit, reconcile, watch",
                              {"enabled": True}))
        return steps
    if command == "rollout":
        assert service is not None and target is not None
        return [_rollout_step(service, target, None)]
    if command == "rollback":
        assert service is not None and target is not None
        g = target.gitops
        chosen = to_tag or "the previous distinct tag in the manifest's git history"
        steps.append(Step("rollback-select", f"choose {chosen} for {service.image.repository}",
                          {"repo": g.repo, "file": manifest_path(target), "to": to_tag}))
        steps.append(Step("verify", f"check {service.image.repository}:<tag> exists in the registry", {}))
        steps += _gitops_steps(service, target, to_tag or "<previous>", revision or SourceRevision("-------", "none"), plan.project)
        steps.append(_reconcile_step(target))
        steps.append(_rollout_step(service, target, None))
        return steps
    if command == "status":
        services = [service] if service else list(plan.services)
        for s in services:
            for t in s.targets:
                steps.append(Step("status", f"{s.name} in {t.environment}: tag in git ({t.gitops.path}), running image, "
                                            f"replica counts, Flux Ready and applied revision",
                                  {"service": s.name, "environment": t.environment, "namespace": t.namespace}))
        return steps
    raise UsageError(f"unknown command {command!r}")


def release_steps(plan: Plan, services: list[ServicePlan], environments: list[str],
                  revision: SourceRevision, *, stage: str = "full") -> list[Step]:
    """Every service, environment by environment, with migrations and verification gates; a
    ``stage`` (:mod:`forgegen.runtime.stages`) adds the tests and, for ``pre``, stops after the first
    environment."""
    steps: list[Step] = []
    order = dependency_order(services)
    envs = [e for e in environments if any(t.environment == e for s in order for t in s.targets)]
    if stage == "pre":
        envs = envs[:1]
    if stages.has_tests(stage):
        steps += [Step("build", f"{s.name}: nix build .#packages.{a}.{s.image.package}", {"service": s.name, "system": a})
                  for s in order for a in s.image.architectures]
        steps += [_test_step(plan, s, level, command, None) for s in order for level, command in stages.pre_push_levels(s)]
    for n, env in enumerate(envs):
        for service in order:
            target = next((t for t in service.targets if t.environment == env), None)
            if target is None:
                continue
            deploy = [Step(s.name, f"{service.name}/{env}: {s.summary}", {**s.details, "service": service.name, "environment": env})
                      for s in describe("deploy", plan, service, target, revision)]
            if stages.has_tests(stage):  # built before the tests
                deploy = [s for s in deploy if s.name != "build"]
            # Migrations run with the pushed image, before the GitOps commit points the cluster at it.
            at = next(i for i, s in enumerate(deploy) if s.name == "gitops-edit")
            migrations = [Step("migrate", f"{service.name}/{env}: run migration {m.name}: {' '.join(m.command)}",
                               {"service": service.name, "environment": env, "command": list(m.command),
                                "image": m.image, "timeout": m.timeout})
                          for m in service.migrations]
            steps += deploy[:at] + migrations + deploy[at:]
            for c in service.verify:
                steps.append(Step("verify-check", f"{service.name}/{env}: check {c.name}",
                                  {"service": service.name, "environment": env, "http": c.http, "command": list(c.command or ())}))
        steps += [Step("federation", f"{env}: fetch {', '.join(s['name'] for s in d['subgraphs'])}'s SDL, compose the "
                       f"supergraph, commit {d['file']}, reconcile", d) for d in dry_run_steps(plan, env)]
        steps.append(Step("gate", f"all of {env} healthy and verified before the next environment", {"environment": env}))
        if n == 0:
            steps += [_test_step(plan, s, lv, None, t) for s in order for t in s.targets if t.environment == env
                      for lv in stages.promotion_levels(stage)]
    if stage == "pre" and envs:
        steps.append(Step("ready-to-promote", f"report each image verified in {envs[0]} and where it goes next",
                          {"environment": envs[0]}))
    return steps


INFRA_NAMES = {"postgres": "PostgreSQL", "attic": "Attic server"}


def _test_step(plan: Plan, service: ServicePlan, level: str, command: str | None, target: TargetPlan | None) -> Step:
    """A test level of a release stage: before the push (``target`` None), or against ``target``."""
    url = why = None
    if target is not None:
        command, url, why = stages.promotion_test(plan, service, target, level)
    elif command is None:
        why = f"set services.{service.name}.dev.{level} in deploy.yaml"
    local = target is None and level != "unit"
    infra = [name for name, plan in (("postgres", service.dev.postgres), ("attic", service.dev.attic))
             if local and plan is not None]
    if why is not None:
        summary = f"{service.name}: {level}: not configured ({why})"
    elif target is not None:
        summary = f"{service.name}: {level}: `{command}` against {target.environment} (FORGE_BASE_URL={url})"
    else:
        started = " and ".join(INFRA_NAMES[i] for i in infra)
        summary = (f"{service.name}: {level}: `{command}`" + (f" with a throwaway {started}" if infra else "")
                   + " (a failure stops before the push)")
    return Step(stages.step_name(level), summary,
                {"service": service.name, "level": level, "command": command, "directory": service.path,
                 "environment": target.environment if target else None, "base_url": url, "infra": infra,
                 "configured": why is None, **({"hint": why} if why else {})})


def dependency_order(services: list[ServicePlan]) -> list[ServicePlan]:
    by_name = {s.name: s for s in services}
    done: list[ServicePlan] = []
    seen: set[str] = set()

    def visit(s: ServicePlan) -> None:
        if s.name in seen:
            return
        seen.add(s.name)
        for dep in s.depends_on:
            if dep in by_name:
                visit(by_name[dep])
        done.append(s)

    for s in services:
        visit(s)
    return done
