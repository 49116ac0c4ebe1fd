"""The JSON plan: everything the runtime needs, resolved, in one versioned document.

The generator writes one plan per service (``plans/<service>.json``) and one for the project
(``plans/_project.json``); the flake apps pass its store path with ``--plan``. The runtime reads
nothing else from the Nix side, so ``forge deploy --plan plan.json api`` works the same outside
Nix. This module imports only ``schema``, ``pattern`` and ``errors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from forgegen import pattern, schema, urls
from forgegen.errors import ConfigError, UsageError

PLAN_VERSION = 1
GENERATOR = "forgegen"
# The product-wide settings, next to the service plans. Service names are DNS labels, which never
# start with "_", so no service plan can take this name.
PROJECT_FILE = "_project.json"


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialsPlan(PlanModel):
    token_env: str | None
    username_env: str
    password_env: str


class RegistryPlan(PlanModel):
    host: str
    insecure: bool
    credentials: CredentialsPlan
    push_attempts: int


class AtticPlan(PlanModel):
    endpoint: str
    cache: str
    public_key: str | None
    token_env: str


class ImagePlan(PlanModel):
    package: str = Field(description="flake package attribute, built as packages.<system>.<package>")
    repository: str = Field(description="host/organization/name, without a tag")
    architectures: tuple[str, ...]


class WorkloadPlan(PlanModel):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    name: str
    container: str


class RolloutPlan(PlanModel):
    deadline: float | None
    restarts_tolerated: int
    readiness_grace: float
    scheduling_grace: float
    rollback_on_failure: bool


class GitOpsPlan(PlanModel):
    repo: str
    branch: str
    path: str
    file: str
    commit_message: schema.CommitPattern
    push_attempts: int


class FluxPlan(PlanModel):
    namespace: str
    source_kind: str
    source_name: str
    kustomizations: tuple[str, ...]
    timeout: float


class PromotionPlan(PlanModel):
    from_environment: str | None
    require_approval: bool
    require_verification: bool


class TargetPlan(PlanModel):
    environment: str
    cluster: str
    kube_context: str | None
    kubeconfig: str | None
    namespace: str
    gitops: GitOpsPlan
    flux: FluxPlan
    promotion: PromotionPlan


class MigrationPlan(PlanModel):
    name: str
    command: tuple[str, ...]
    image: str | None
    timeout: float


class CheckPlan(PlanModel):
    name: str
    http: dict[str, object] | None
    command: tuple[str, ...] | None
    timeout: float
    retries: int


DEV_DEFAULTS: dict[str, dict[str, Any]] = {
    "rust": {"tools": ("cargo", "rustc", "clippy", "rustfmt"),
             "test": "cargo test", "lint": "cargo clippy -- -D warnings", "fmt": "cargo fmt",
             "fmt-check": "cargo fmt -- --check"},
    "python": {"tools": ("python3", "python3Packages.pytest", "ruff"),
               "test": "pytest", "lint": "ruff check .", "fmt": "ruff format .",
               "fmt-check": "ruff format --check ."},
    "go": {"tools": ("go",),
           "test": "go test ./...", "lint": "go vet ./...", "fmt": "gofmt -w .",
           "fmt-check": 'test -z "$(gofmt -l .)"'},
    "node": {"tools": ("nodejs",),
             "test": "npm test", "lint": "npm run lint", "fmt": "npx prettier --write .",
             "fmt-check": "npx prettier --check ."},
    "generic": {"tools": (), "test": None, "lint": None, "fmt": None, "fmt-check": None},
}
DEV_VERBS = ("test", "lint", "fmt", "fmt-check")


class DevPlan(PlanModel):
    """What the development apps run: deploy.yaml's ``dev``, else the service type's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    test: str | None
    lint: str | None
    fmt: str | None
    fmt_check: str | None = Field(alias="fmt-check")
    tools: tuple[str, ...] = Field(description="attribute paths in pkgs put on PATH")


class ServicePlan(PlanModel):
    name: str
    type: str
    path: str
    image: ImagePlan
    workload: WorkloadPlan
    rollout: RolloutPlan
    migrations: tuple[MigrationPlan, ...]
    verify: tuple[CheckPlan, ...]
    depends_on: tuple[str, ...]
    dev: DevPlan
    targets: tuple[TargetPlan, ...]

    def target(self, environment: str | None) -> TargetPlan:
        if environment is None:
            return self.targets[0]
        for t in self.targets:
            if t.environment == environment:
                return t
        raise UsageError(
            f"service {self.name!r} is not deployed to environment {environment!r}",
            hint=f"use one of: {', '.join(t.environment for t in self.targets)}")


class Plan(PlanModel):
    plan_version: int = PLAN_VERSION
    generator: str = GENERATOR
    project: str
    registry: RegistryPlan
    attic: AtticPlan | None
    binary_cache: str | None
    environments: tuple[str, ...]
    services: tuple[ServicePlan, ...]

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        raise UsageError(
            f"unknown service {name!r} in this plan",
            hint=f"use one of: {', '.join(s.name for s in self.services) or '(none)'}")

    def to_json(self) -> str:
        return json_document(self.model_dump(mode="json", by_alias=True))

    def fragment_json(self, name: str, base: str = PROJECT_FILE) -> str:
        """One service's plan as a fragment: its ``services`` entry, plus the file (next to it)
        holding the product-wide settings. :func:`load_plan` and ``forge.lib.apps.mergePlans``
        join the two, so the repository does not repeat those settings once per service."""
        doc = {"plan_version": self.plan_version, "generator": self.generator, "base": base,
               "services": [self.service(name).model_dump(mode="json", by_alias=True)]}
        return json_document(doc)

    def for_service(self, name: str) -> Plan:
        """The same plan narrowed to one service (what a service's apps get)."""
        return self.model_copy(update={"services": (self.service(name),)})


def json_document(document: dict[str, Any], *, depth: int = 1) -> str:
    """Deterministic JSON with one top-level entry (or, with ``depth=2``, one nested entry) per
    line: readable diffs, and fast (the C encoder writes each line)."""
    def line(value: Any) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))

    def block(obj: dict[str, Any], level: int, indent: str) -> str:
        if level >= depth or not obj:
            return line(obj)
        inner = indent + "  "
        items = [f"{inner}{line(k)}: {block(v, level + 1, inner) if isinstance(v, dict) else line(v)}"
                 for k, v in sorted(obj.items())]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"

    return block(document, 0, "") + "\n"


# ---------------------------------------------------------------------------------------------
# Building plans from a Config (pure)


def image_repository(config: schema.Config, name: str) -> str:
    svc = config.services[name]
    image_name = svc.image.name or pattern.fill(config.registry.image_name, {"project": config.project, "service": name})
    parts = [config.registry.host]
    if config.registry.organization:
        parts.append(config.registry.organization)
    parts.append(image_name)
    return "/".join(parts)


def _target(config: schema.Config, name: str, env: schema.Environment, index: int) -> TargetPlan:
    names = schema.name_values(config, name, env)
    cluster = names["cluster"]
    flux = config.flux
    over = env.flux or schema.FluxOverride()
    source = over.source or flux.source
    kustomizations = [text for _, text in schema.kustomizations_of(config, index)]
    envs = [e.name for e in config.environments]
    promotion_from = env.promotion.from_ or (envs[index - 1] if index > 0 else None)
    return TargetPlan(
        environment=env.name,
        cluster=cluster,
        kube_context=env.kube_context,
        kubeconfig=env.kubeconfig,
        namespace=pattern.fill(env.namespace, names),
        gitops=GitOpsPlan(
            repo=config.gitops.repo,
            branch=config.gitops.branch,
            path=pattern.fill(config.gitops.path, names),
            file=config.gitops.file,
            commit_message=config.gitops.commit_message,
            push_attempts=config.gitops.push_attempts,
        ),
        flux=FluxPlan(
            namespace=over.namespace or flux.namespace,
            source_kind=source.kind,
            source_name=source.name,
            kustomizations=tuple(pattern.fill(k, names) for k in kustomizations),
            timeout=over.timeout or flux.timeout,
        ),
        promotion=PromotionPlan(
            from_environment=promotion_from,
            require_approval=env.promotion.require_approval,
            require_verification=env.promotion.require_verification,
        ),
    )


def dev_plan(service: schema.Service) -> DevPlan:
    configured = service.dev.model_dump(by_alias=True)
    defaults = DEV_DEFAULTS[service.type]
    commands = {verb: configured.get(verb) or defaults[verb] for verb in DEV_VERBS}
    return DevPlan(**commands, tools=defaults["tools"])


def service_plan(config: schema.Config, name: str) -> ServicePlan:
    svc = config.services[name]
    workload_name = svc.workload.name or name
    envs = config.service_environments(name)
    all_envs = list(config.environments)
    return ServicePlan(
        name=name,
        type=svc.type,
        path=svc.path,
        image=ImagePlan(
            package=svc.image.package or f"{name}-image",
            repository=image_repository(config, name),
            architectures=svc.architectures,
        ),
        workload=WorkloadPlan(kind=svc.workload.kind, name=workload_name,
                              container=svc.workload.container or workload_name),
        rollout=RolloutPlan(**svc.rollout.model_dump()),
        migrations=tuple(MigrationPlan(**m.model_dump()) for m in svc.migrations),
        verify=tuple(CheckPlan(name=c.name, http=c.http.model_dump() if c.http else None,
                               command=c.command, timeout=c.timeout, retries=c.retries)
                     for c in svc.verify),
        depends_on=svc.depends_on,
        dev=dev_plan(svc),
        targets=tuple(_target(config, name, e, all_envs.index(e)) for e in envs),
    )


def build_plan(config: schema.Config, services: list[str] | None = None) -> Plan:
    names = list(config.services) if services is None else services
    reg = config.registry
    return Plan(
        project=config.project,
        registry=RegistryPlan(host=reg.host, insecure=reg.insecure,
                              credentials=CredentialsPlan(**reg.credentials.model_dump()),
                              push_attempts=reg.push_attempts),
        attic=AtticPlan(**config.attic.model_dump()) if config.attic else None,
        binary_cache=config.binary_cache.url if config.binary_cache else None,
        environments=tuple(e.name for e in config.environments),
        services=tuple(service_plan(config, n) for n in names),
    )


def _read_document(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"plan file {path} does not exist",
                         hint="run the flake app (nix run .#deploy:<service>), or `forgegen sync` and pass "
                              "nix/forge/plans/<service>.json") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the plan: {err}") from err
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        raise ConfigError(f"{path}: not a Forge plan (no \"generator\": \"forgegen\")")
    return data


def _services_of(path: Path, data: dict[str, Any]) -> list[Any]:
    services = data.get("services", [])
    if not isinstance(services, list):
        raise ConfigError(f"{path}: services: must be a list", hint="regenerate it with `forgegen sync`")
    return services


def _joined(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A plan document with its ``base`` (the product-wide settings) and ``parts`` (further
    fragments whose services are appended, in order) read in. Relative names are relative to
    ``path``'s directory; ``forge.lib.apps.mergePlans`` writes store paths. The files are read
    as they are, so every value arrives exactly as ``forgegen sync`` wrote it."""
    base, parts = data.pop("base", None), data.pop("parts", None)
    services = _services_of(path, data)
    if base is not None:
        base_path = path.parent / str(base)
        common = _read_document(base_path)
        common.pop("base", None)
        common.pop("parts", None)
        data = {**common, **data, "services": _services_of(base_path, common) + services}
    if parts is not None:
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise ConfigError(f"{path}: parts: must be a list of plan files", hint="regenerate it with `forgegen sync`")
        for part in parts:
            part_path = path.parent / part
            doc = _read_document(part_path)
            _check_version(part_path, doc)
            data["services"] = list(data.get("services") or []) + _services_of(part_path, doc)
    return data


def _check_version(path: Path, data: dict[str, Any]) -> None:
    version = data.get("plan_version")
    if version != PLAN_VERSION:
        raise ConfigError(f"{path}: plan version {version!r} is not supported by this forge (it reads {PLAN_VERSION})",
                          hint="run `forgegen sync` with the same Forge version as the runtime")


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by ``forgegen sync`` or ``forge.lib.apps.mergePlans`` (exit 2
    with a clear message otherwise)."""
    path = Path(path)
    data = _joined(path, _read_document(path))
    _check_version(path, data)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as err:
        lines = [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError("\n".join(lines), hint="regenerate it with `forgegen sync`") from err
    bad = [f"{path}: {where}: {problem}" for where, url in _urls(plan) if (problem := urls.credential_problem(url))]
    if bad:
        raise ConfigError("\n".join(dict.fromkeys(bad)), hint="fix deploy.yaml, then `forgegen sync`")
    return plan


def _urls(plan: Plan) -> list[tuple[str, str]]:
    """Every URL in a plan, for the one URL policy (a hand-edited or old plan is checked too)."""
    out = [("attic.endpoint", plan.attic.endpoint)] if plan.attic else []
    out += [("binary_cache", plan.binary_cache)] if plan.binary_cache else []
    for svc in plan.services:
        out += [(f"{svc.name}.gitops.repo", t.gitops.repo) for t in svc.targets]
        out += [(f"{svc.name}.verify.{c.name}.http.url", str(c.http.get("url"))) for c in svc.verify if c.http]
    return out
