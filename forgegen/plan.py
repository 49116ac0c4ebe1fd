"""The JSON plan: everything the runtime needs, resolved, in one versioned document.

The generator writes one plan per service (``plans/<service>.json``) and one for the project
(``plans/_project.json``); the flake apps pass its store path with ``--plan``. The runtime reads
nothing else from the Nix side, so ``forge deploy --plan plan.json api`` works the same outside
Nix. Reading a plan imports only ``pattern`` and ``errors`` (no pydantic); building one from a
``schema.Config`` imports ``schema``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from forgegen import pattern, urls
from forgegen.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from forgegen import schema

PLAN_VERSION = 1
GENERATOR = "forgegen"
# The product-wide settings, next to the service plans. Service names are DNS labels, which never
# start with "_", so no service plan can take this name.
PROJECT_FILE = "_project.json"
# The placeholders a commit message may use (schema.COMMIT_FIELDS; a test keeps the two equal).
COMMIT_FIELDS = ("project", "service", "environment", "cluster", "tag", "image", "source_commit")


# The plan's records are frozen dataclasses checked on construction, not pydantic models: the
# runtime reads a plan on every command, and building pydantic validators cost ~170 ms of start-up.


class PlanError(ValueError):
    """A plan value of the wrong shape; ``where`` is its dotted location."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where, self.message = where, message


@dataclass(frozen=True, kw_only=True)
class PlanModel:
    """Base of the plan records: every field is checked (and ``int`` widened to ``float``, lists
    made tuples, nested mappings made records) when a record is made."""

    def __post_init__(self) -> None:
        for name, tp, exact in _fields(type(self)):
            value = getattr(self, name)
            if type(value) not in exact:  # the common case (already the right type) costs one lookup
                object.__setattr__(self, name, _coerce(tp, value, name))

    @classmethod
    def from_dict(cls, data: object, where: str = "") -> typing.Self:
        """A record from a JSON mapping (keys as :func:`dump` writes them); PlanError otherwise."""
        if not isinstance(data, dict):
            raise PlanError(where, f"must be a mapping, not {type(data).__name__}")
        aliases = {f.metadata.get("alias", f.name): f for f in dataclasses.fields(cls)}
        hints = _hints(cls)
        values: dict[str, object] = {}
        for key, value in data.items():
            f = aliases.get(key)
            if f is None:
                raise PlanError(_at(where, key), "unknown key (regenerate the plan with `forgegen sync`)")
            values[f.name] = _coerce(hints[f.name], value, _at(where, key))
        for key, f in aliases.items():
            if f.name not in values and f.default is dataclasses.MISSING:
                raise PlanError(_at(where, key), "missing")
        return cls(**values)

    def dump(self) -> dict[str, object]:
        """The JSON form (aliases as keys, tuples as lists)."""
        out = {}
        for name, key, omit_none in _keys(type(self)):
            value = getattr(self, name)
            if not (omit_none and value is None):
                out[key] = _dump(value)
        return out


def _at(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


_HINTS: dict[type, dict[str, object]] = {}


def _hints(cls: type) -> dict[str, object]:
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


_FIELDS: dict[type, list[tuple[str, object, frozenset[type]]]] = {}


def _fields(cls: type) -> list[tuple[str, object, frozenset[type]]]:
    """Each field's name, type, and the value types that need no check (``str`` for ``str``)."""
    if cls not in _FIELDS:
        _FIELDS[cls] = [(name, tp, _exact(tp)) for name, tp in _hints(cls).items()]
    return _FIELDS[cls]


def _exact(tp: object) -> frozenset[type]:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        parts = [_exact(a) for a in typing.get_args(tp)]
        return frozenset().union(*parts) if all(parts) else frozenset()
    if tp is type(None) or tp in (str, bool, int, float) or (isinstance(tp, type) and issubclass(tp, PlanModel)):
        return frozenset({tp})
    return frozenset()  # tuples (their items), dicts, literals: always checked


def _coerce(tp: object, value: object, where: str) -> object:  # noqa: PLR0911 - one case per type
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        [inner] = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if origin is tuple:
        if type(value) is tuple and args[0] is str and all(type(v) is str for v in value):
            return value
        if not isinstance(value, (list, tuple)):
            raise PlanError(where, "must be a list")
        return tuple(_coerce(args[0], v, _at(where, i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise PlanError(where, "must be a mapping")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise PlanError(where, f"must be one of {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and issubclass(tp, PlanModel):
        return value if isinstance(value, tp) else tp.from_dict(value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise PlanError(where, "must be an integer")
    if tp is not object and not isinstance(value, tp):  # type: ignore[arg-type]
        raise PlanError(where, f"must be {getattr(tp, '__name__', tp)}, not {type(value).__name__}")
    return value


_KEYS: dict[type, tuple[tuple[str, str, bool], ...]] = {}


def _keys(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """Each field's attribute name, its key in the JSON plan, and whether None leaves it out."""
    if cls not in _KEYS:
        _KEYS[cls] = tuple((f.name, f.metadata.get("alias", f.name), bool(f.metadata.get("omit_none")))
                           for f in dataclasses.fields(cls))
    return _KEYS[cls]


def _dump(value: object) -> object:
    if isinstance(value, PlanModel):
        return value.dump()
    if type(value) is tuple:
        return [v if type(v) is str else _dump(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class CredentialsPlan(PlanModel):
    token_env: str | None
    username_env: str
    password_env: str


@dataclass(frozen=True, kw_only=True)
class RegistryPlan(PlanModel):
    host: str
    insecure: bool
    credentials: CredentialsPlan
    push_attempts: int
    push_with: str = "forge"  # or "skopeo": what sends the image (forgegen.runtime.registry)
    # the path under the host every image repository starts with (FORGE_REGISTRY replaces both)
    organization: str | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class AtticPlan(PlanModel):
    endpoint: str
    cache: str
    public_key: str | None
    token_env: str
    token_secret: dict[str, object] | None = None


@dataclass(frozen=True, kw_only=True)
class ImagePlan(PlanModel):
    package: str  # flake package attribute, built as packages.<system>.<package>
    repository: str  # host/organization/name, without a tag
    architectures: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class WorkloadPlan(PlanModel):
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"]
    name: str
    container: str


@dataclass(frozen=True, kw_only=True)
class RolloutPlan(PlanModel):
    deadline: float | None
    restarts_tolerated: int
    readiness_grace: float
    scheduling_grace: float
    rollback_on_failure: bool


@dataclass(frozen=True, kw_only=True)
class GitOpsPlan(PlanModel):
    repo: str
    branch: str
    path: str
    file: str
    commit_message: str
    push_attempts: int

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            pattern.parse(self.commit_message, COMMIT_FIELDS)
        except ValueError as err:
            raise PlanError("commit_message", str(err)) from None


@dataclass(frozen=True, kw_only=True)
class FluxPlan(PlanModel):
    namespace: str
    source_kind: str
    source_name: str
    kustomizations: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, kw_only=True)
class PromotionPlan(PlanModel):
    from_environment: str | None
    require_approval: bool
    require_verification: bool


@dataclass(frozen=True, kw_only=True)
class TargetPlan(PlanModel):
    environment: str
    cluster: str
    kube_context: str | None
    kubeconfig: str | None
    namespace: str
    gitops: GitOpsPlan
    flux: FluxPlan
    promotion: PromotionPlan


@dataclass(frozen=True, kw_only=True)
class MigrationPlan(PlanModel):
    name: str
    command: tuple[str, ...]
    image: str | None
    timeout: float


@dataclass(frozen=True, kw_only=True)
class CheckPlan(PlanModel):
    name: str
    http: dict[str, object] | None
    command: tuple[str, ...] | None
    timeout: float
    retries: int


DEV_DEFAULTS: dict[str, dict[str, Any]] = {
    "rust": {"tools": ("cargo", "rustc", "clippy", "rustfmt"),
             "lint": "cargo clippy -- -D warnings", "fmt": "cargo fmt",
             "fmt-check": "cargo fmt -- --check",
             "unit": "cargo test --lib --bins", "integration": "cargo test --tests", "e2e": None},
    "python": {"tools": ("python3", "python3Packages.pytest", "ruff"),
               "lint": "ruff check .", "fmt": "ruff format .",
               "fmt-check": "ruff format --check .",
               "unit": "pytest -q tests/unit", "integration": "pytest -q tests/integration",
               "e2e": "pytest -q tests/e2e"},
    "go": {"tools": ("go",),
           "lint": "go vet ./...", "fmt": "gofmt -w .",
           "fmt-check": 'test -z "$(gofmt -l .)"',
           "unit": "go test -short ./...", "integration": "go test -tags integration ./...", "e2e": None},
    "node": {"tools": ("nodejs",),
             "lint": "npm run lint", "fmt": "npx prettier --write .",
             "fmt-check": "npx prettier --check .",
             "unit": "npm run test:unit", "integration": "npm run test:integration", "e2e": "npm run test:e2e"},
    "generic": {"tools": (), "lint": None, "fmt": None, "fmt-check": None,
                "unit": None, "integration": None, "e2e": None},
}
DEV_VERBS = ("lint", "fmt", "fmt-check")
TEST_LEVELS = ("unit", "integration", "e2e")  # the pyramid, in order


@dataclass(frozen=True, kw_only=True)
class DevPostgresPlan(PlanModel):
    provision: str | None  # forge-provision config, relative to deploy.yaml's directory


@dataclass(frozen=True, kw_only=True)
class DevAtticPlan(PlanModel):
    cache: str  # deploy.yaml's dev.infra.attic.cache, else the service's name
    public: bool


@dataclass(frozen=True, kw_only=True)
class DevPlan(PlanModel):
    """What the development apps run: deploy.yaml's ``dev``, else the service type's defaults.

    ``test`` is set only when deploy.yaml sets ``dev.test``: one command that replaces the test
    pyramid. A level that is None is not configured (deploy.yaml's ``null``, or a type without a
    default).
    """

    test: str | None
    lint: str | None
    fmt: str | None
    fmt_check: str | None = field(metadata={"alias": "fmt-check"})
    tools: tuple[str, ...]  # attribute paths in pkgs put on PATH
    unit: str | None = None
    integration: str | None = None
    e2e: str | None = None
    start: str | None = None
    health: str | None = None  # a URL pattern with {port}
    health_timeout: float = 120.0
    postgres: DevPostgresPlan | None = None
    base_url: str | None = field(default=None, metadata={"omit_none": True})  # a pattern over NAME_FIELDS
    attic: DevAtticPlan | None = field(default=None, metadata={"omit_none": True})

    def level(self, name: str) -> str | None:
        return {"unit": self.unit, "integration": self.integration, "e2e": self.e2e}[name]


@dataclass(frozen=True, kw_only=True)
class GraphQLPlan(PlanModel):
    """deploy.yaml's ``graphql``; ``endpoint`` and ``routing_url`` are patterns filled per target."""

    subgraph_name: str
    endpoint: str | None
    schema_file: str | None
    routing_url: str | None
    timeout: float
    retries: int


@dataclass(frozen=True, kw_only=True)
class CodegenPlan(PlanModel):
    """deploy.yaml's ``codegen``: the schema to extract (``extract_*``) and the generator to run."""

    extract_url: str | None
    extract_output: str | None
    extract_via: Literal["auto", "introspection", "federation"]
    extract_timeout: float
    command: str | None
    outputs: tuple[str, ...]
    timeout: float


@dataclass(frozen=True, kw_only=True)
class FederationPlan(PlanModel):
    router_config_path: str
    file: str
    commit_message: str


# Left out of the JSON plan when None: plans of configurations that do not use them stay
# byte-for-byte as before.
_OMIT_NONE = {"omit_none": True}


@dataclass(frozen=True, kw_only=True)
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
    graphql: GraphQLPlan | None = field(default=None, metadata=_OMIT_NONE)
    codegen: CodegenPlan | None = field(default=None, metadata=_OMIT_NONE)

    def target(self, environment: str | None) -> TargetPlan:
        if environment is None:
            return self.targets[0]
        for t in self.targets:
            if t.environment == environment:
                return t
        raise UsageError(
            f"service {self.name!r} is not deployed to environment {environment!r}",
            hint=f"use one of: {', '.join(t.environment for t in self.targets)}")


@dataclass(frozen=True, kw_only=True)
class Plan(PlanModel):
    plan_version: int = PLAN_VERSION
    generator: str = GENERATOR
    project: str
    registry: RegistryPlan
    attic: AtticPlan | None
    binary_cache: str | None
    environments: tuple[str, ...]
    services: tuple[ServicePlan, ...]
    federation: FederationPlan | None = field(default=None, metadata=_OMIT_NONE)

    def service(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        raise UsageError(
            f"unknown service {name!r} in this plan",
            hint=f"use one of: {', '.join(s.name for s in self.services) or '(none)'}")

    def to_json(self) -> str:
        return json_document(self.dump())

    def fragment_json(self, name: str | ServicePlan, base: str = PROJECT_FILE) -> str:
        """One service's plan as a fragment: its ``services`` entry, plus the file (next to it)
        holding the product-wide settings. :func:`load_plan` and ``forge.lib.apps.mergePlans``
        join the two, so the repository does not repeat those settings once per service."""
        service = name if isinstance(name, ServicePlan) else self.service(name)  # render passes each one
        doc = {"plan_version": self.plan_version, "generator": self.generator, "base": base,
               "services": [service.dump()]}
        return json_document(doc)

    def for_service(self, name: str) -> Plan:
        """The same plan narrowed to one service (what a service's apps get)."""
        return dataclasses.replace(self, services=(self.service(name),))


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
    from forgegen import schema

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


def dev_plan(service: schema.Service, name: str) -> DevPlan:
    configured = service.dev.model_dump(by_alias=True)
    defaults = DEV_DEFAULTS[service.type]
    commands = {verb: configured.get(verb) or defaults[verb] for verb in DEV_VERBS}
    # A level explicitly null in deploy.yaml is not configured; an unset one takes the default.
    given = service.dev.model_fields_set
    levels = {lv: configured[lv] if lv in given else defaults[lv] for lv in TEST_LEVELS}
    pg, attic = service.dev.infra.postgres, service.dev.infra.attic
    return DevPlan(test=service.dev.test, lint=commands["lint"], fmt=commands["fmt"],
                   fmt_check=commands["fmt-check"], tools=defaults["tools"],
                   **levels, start=service.dev.start,
                   health=service.dev.health, health_timeout=service.dev.health_timeout,
                   postgres=DevPostgresPlan(provision=pg.provision) if pg is not None else None,
                   base_url=service.dev.base_url,
                   attic=DevAtticPlan(cache=attic.cache or name, public=attic.public) if attic else None)


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
        dev=dev_plan(svc, name),
        targets=tuple(_target(config, name, e, all_envs.index(e)) for e in envs),
        graphql=None if svc.graphql is None else GraphQLPlan(
            subgraph_name=svc.graphql.subgraph_name or name, endpoint=svc.graphql.endpoint,
            schema_file=svc.graphql.schema_file, routing_url=svc.graphql.routing_url,
            timeout=svc.graphql.timeout, retries=svc.graphql.retries),
        codegen=_codegen_plan(svc.codegen),
    )


def _codegen_plan(c: schema.Codegen | None) -> CodegenPlan | None:
    if c is None:
        return None
    x = c.extract
    return CodegenPlan(extract_url=x.url if x else None, extract_output=x.output if x else None,
                       extract_via=x.via if x else "auto", extract_timeout=x.timeout if x else 10.0,
                       command=c.command, outputs=c.outputs, timeout=c.timeout)


def build_plan(config: schema.Config, services: list[str] | None = None) -> Plan:
    names = list(config.services) if services is None else services
    reg = config.registry
    return Plan(
        project=config.project,
        registry=RegistryPlan(host=reg.host, insecure=reg.insecure,
                              credentials=CredentialsPlan(**reg.credentials.model_dump()),
                              push_attempts=reg.push_attempts, push_with=reg.push_with,
                              organization=reg.organization),
        attic=AtticPlan(**config.attic.model_dump()) if config.attic else None,
        binary_cache=config.binary_cache.url if config.binary_cache else None,
        environments=tuple(e.name for e in config.environments),
        services=tuple(service_plan(config, n) for n in names),
        federation=FederationPlan(**config.federation.model_dump()) if config.federation else None,
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
        plan = Plan.from_dict(data)
    except PlanError as err:
        raise ConfigError(f"{path}: {err}", hint="regenerate it with `forgegen sync`") from err
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
        out += [(f"{svc.name}.dev.base_url", svc.dev.base_url)] if svc.dev.base_url else []
        g = svc.graphql
        out += [(f"{svc.name}.graphql.{k}", u) for k, u in (("endpoint", g and g.endpoint),
                                                             ("routing_url", g and g.routing_url)) if u]
        out += [(f"{svc.name}.codegen.extract.url", svc.codegen.extract_url)] if svc.codegen and svc.codegen.extract_url else []
    return out


# ---------------------------------------------------------------------------------------------
# Finding the plans from a checkout (``forge deploy api`` without ``--plan``)

PLANS_DIR = "nix/forge/plans"


def plan_relpath(service: str | None) -> str:
    """Where ``forgegen sync`` writes a plan, relative to the repository root (the one place that
    says so for the runtime; ``None``: the product-wide plan)."""
    return f"{PLANS_DIR}/{service}.json" if service else f"{PLANS_DIR}/{PROJECT_FILE}"


def find_root(start: str | Path | None = None) -> Path:
    """The nearest directory, from ``start`` up to the repository root (the first with ``.git``),
    that holds the generated plans."""
    here = Path(start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / plan_relpath(None)).is_file():
            return directory
        if (directory / ".git").exists():
            break
    raise UsageError(f"no Forge plans found: looked for {plan_relpath(None)} from {here} up to the repository root",
                     hint="run forge inside a repository where `forgegen sync` ran, or pass --plan")


def find_plan(service: str | None, start: str | Path | None = None) -> Plan:
    """The plan of ``service`` (``None``: every service, in name order) found from ``start``."""
    root = find_root(start)
    if service is not None:
        names = service_names(root)  # looked up, never joined into a path ('../x', '/etc/passwd')
        if service not in names:
            raise UsageError(f"unknown service {service!r}: {root / PLANS_DIR} has no plan for it",
                             hint=f"use one of: {', '.join(names) or '(none)'}, or run `forgegen sync`")
        return load_plan(root / plan_relpath(service))
    plans = [load_plan(root / plan_relpath(name)) for name in service_names(root)]
    whole = load_plan(root / plan_relpath(None))
    return dataclasses.replace(whole, services=tuple(s for p in plans for s in p.services))


def service_names(root: Path) -> list[str]:
    """The services with a plan under ``root`` (what shell completion offers)."""
    directory = (root / plan_relpath(None)).parent
    return sorted(p.stem for p in directory.glob("*.json") if p.name != PROJECT_FILE)
