"""The one description of ``deploy.yaml`` (version 1).

Pydantic models, ``extra="forbid"`` and frozen. Constraints live in reusable ``Annotated`` types.
:func:`load_config` reads a file and reports every problem at once, located by line and column.
This module imports only ``errors``, ``pattern``, ``urls`` and ``yamlsource`` from the package.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.json_schema import WithJsonSchema

from forgegen import names, nix, pattern, urls
from forgegen.errors import ConfigError, Problem
from forgegen.yamlsource import Source, load_file, load_text, problems_from_pydantic

Loc = tuple[str | int, ...]
SCHEMA_VERSION = 1
DEFAULT_FILE = "deploy.yaml"
# The schema's `$id`: where the committed copy (forgegen/deploy.schema.json) is published.
SCHEMA_ID = "https://raw.githubusercontent.com/forge-deploy/forge/main/forgegen/deploy.schema.json"

# ---------------------------------------------------------------------------------------------
# Constrained types

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NIX_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")
_HOST = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
# The OCI distribution spec's repository name: components joined by ".", "_", "__" or any run of "-".
_REPO_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)(ms|s|m|h)\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
_MAX_SECONDS = 10**9  # about 31 years: beyond it a value is a typo, and floats stop being exact
NIX_KEYWORDS = nix.KEYWORDS

SYSTEMS = ("x86_64-linux", "aarch64-linux", "armv7l-linux", "i686-linux", "riscv64-linux",
           "powerpc64le-linux", "s390x-linux")


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label; use 1-63 lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit (e.g. 'api', 'web-frontend')")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes object name; use lowercase "
                         "letters, digits, '-' and '.' (e.g. 'flux-system')")
    return value


def _nix_attr_path(value: str) -> str:
    parts = value.split(".")
    if not all(_NIX_ATTR.fullmatch(p) for p in parts):
        raise ValueError(f"{value!r} is not a flake attribute path; use names like "
                         "'api-image' or 'images.api' (letters, digits, '_', '-', \"'\", joined by '.')")
    return value


_env_var = names.env_var  # shared with forge-provision's schema (forgegen/names.py)


def _host(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError(f"{value!r} is not a registry host; use host or host:port, without "
                         "a scheme or path (e.g. 'ghcr.io', 'localhost:5000')")
    return value


def _relpath(value: str) -> str:
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\\" in value or "\0" in value:
        raise ValueError(f"{value!r} must be a relative path inside the repository, without '..'")
    return value


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string like '90s', '5m', '1h30m'")
    if isinstance(value, (int, float)):
        # exact arithmetic, so '1.1h' is 3960.0 and not 3960.0000000000005
        exact = Fraction(value) if isinstance(value, int) or math.isfinite(value) else None
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        exact = sum((Fraction(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value)), Fraction(0))
    else:
        raise ValueError(f"{value!r} is not a duration; use seconds or a string like '90s', '5m', '1h30m'")
    if exact is None or exact > _MAX_SECONDS:
        raise ValueError(f"{_short(value)} is not a usable duration; use at most {_MAX_SECONDS} seconds")
    if exact <= 0:
        raise ValueError(f"{value!r} must be a positive duration")
    return float(exact)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pattern(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        pattern.parse(value, allowed)  # ValueError with the message for deploy.yaml
        return value
    return check


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
ObjectName = Annotated[str, AfterValidator(_dns_subdomain)]
NixAttrPath = Annotated[str, AfterValidator(_nix_attr_path)]
EnvVarName = Annotated[str, AfterValidator(_env_var)]
RegistryHost = Annotated[str, AfterValidator(_host)]
RelativePath = Annotated[str, AfterValidator(_relpath)]
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": _DURATION.pattern}],
                    "description": "seconds, or a string like '90s', '5m', '1h30m'"}),
]
System = Literal["x86_64-linux", "aarch64-linux", "armv7l-linux", "i686-linux", "riscv64-linux",
                 "powerpc64le-linux", "s390x-linux"]
Argv = Annotated[tuple[str, ...], Field(min_length=1)]

NAME_FIELDS = ("project", "service", "environment", "cluster")
IMAGE_FIELDS = ("project", "service")
COMMIT_FIELDS = (*NAME_FIELDS, "tag", "image", "source_commit")
PathPattern = Annotated[str, AfterValidator(_pattern(*NAME_FIELDS)), AfterValidator(_relpath)]
NamePattern = Annotated[str, AfterValidator(_pattern(*NAME_FIELDS))]
ImagePattern = Annotated[str, AfterValidator(_pattern(*IMAGE_FIELDS))]
CommitPattern = Annotated[str, AfterValidator(_pattern(*COMMIT_FIELDS))]


class Model(BaseModel):
    # defer_build: the runtime imports this module (through plan.py) but never validates a
    # deploy.yaml, so it should not pay for building these validators at import.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


# ---------------------------------------------------------------------------------------------
# Sections


class Credentials(Model):
    """Registry credentials, by environment-variable name only (never the secret itself)."""

    token_env: EnvVarName | None = Field(
        None, description="variable holding a token used as the password (default for ghcr.io: GHCR_TOKEN, then `gh auth token`)")
    username_env: EnvVarName = Field("FORGE_REGISTRY_USER", description="variable holding the user name")
    password_env: EnvVarName = Field("FORGE_REGISTRY_PASSWORD", description="variable holding the password")


class Registry(Model):
    host: RegistryHost = Field(description="registry host[:port], e.g. ghcr.io")
    organization: Annotated[str, AfterValidator(lambda v: _repo_path(v))] | None = Field(
        None, description="path prefix under the host (organization or user), e.g. acme")
    image_name: ImagePattern = Field("{service}", description="image name pattern; {project}, {service}")
    insecure: bool = Field(False, description="plain HTTP / no TLS verification (loopback registries only)")
    insecure_non_loopback_i_understand: bool = Field(
        False, description="allow `insecure` for a host that is not loopback (traffic may be readable and "
                           "forgeable on the network; credentials are still never sent without verified TLS)")
    credentials: Credentials = Credentials()
    push_attempts: int = Field(5, ge=1, le=20, description="attempts for transient push failures")
    push_with: Literal["forge", "skopeo"] = Field(
        "forge", description="what sends the image: forge (its own client, straight from the converted layout, "
                             "every blob and the manifest checked) or skopeo (`skopeo copy`, for registries that "
                             "need skopeo's own configuration, e.g. /etc/containers/certs.d)")


def _repo_path(value: str) -> str:
    if not _REPO_PATH.fullmatch(value):
        raise ValueError(f"{value!r} is not a registry repository path; use lowercase letters, "
                         "digits, '.', '_', '-' and '/' (e.g. 'acme' or 'acme/team')")
    return value


class SecretRef(Model):
    namespace: DnsLabel
    name: ObjectName
    key: str = Field("token", description="the data key holding the token")
    kube_context: str | None = Field(None, description="kubeconfig context (default: the current one)")


class Attic(Model):
    endpoint: Url = Field(description="Attic server URL, e.g. https://attic.example.com")
    cache: DnsLabel = Field(description="cache name")
    public_key: str | None = Field(None, description="the cache's public key (name:base64)")
    token_env: EnvVarName = Field("ATTIC_TOKEN", description="variable holding a push token")
    token_secret: SecretRef | None = Field(
        None, description="Kubernetes Secret holding the push token when the variable is not set")


class BinaryCache(Model):
    url: Url = Field(description="any Nix binary cache URL for `nix copy --to` (file://, s3://, http://)")


def _no_secret_in_url(value: str) -> str:
    problem = urls.credential_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Url = Annotated[str, AfterValidator(_no_secret_in_url)]  # the one URL policy (forgegen/urls.py)
GitRepoUrl = Url


class GitOps(Model):
    repo: GitRepoUrl = Field(description="GitOps repository: a git URL, or a path (relative paths are relative to where "
                                  "forge runs, normally the repository root)")
    branch: str = "main"
    path: PathPattern = Field("clusters/{cluster}/{service}",
                              description="directory of the kustomization; {project} {service} {environment} {cluster}")
    file: RelativePath = "kustomization.yaml"
    commit_message: CommitPattern = "deploy({service}): {environment} {tag}\n\nsource: {source_commit}"
    push_attempts: int = Field(10, ge=1, le=50, description="attempts when a concurrent push wins the race")


FluxSourceKind = Literal["GitRepository", "OCIRepository", "Bucket"]


class FluxSource(Model):
    kind: FluxSourceKind = "GitRepository"
    name: ObjectName = "flux-system"


class Flux(Model):
    namespace: DnsLabel = Field("flux-system", description="namespace of the Flux objects (a DNS-1123 label)")
    source: FluxSource = FluxSource()
    kustomizations: tuple[NamePattern, ...] = Field(
        ("flux-system",), min_length=1, description="Kustomization names; {environment} {cluster} {project} {service}")
    timeout: Duration = 300.0


class FluxOverride(Model):
    """Per-environment Flux settings; unset fields inherit the top-level ``flux``."""

    namespace: DnsLabel | None = None
    source: FluxSource | None = None
    kustomizations: tuple[NamePattern, ...] | None = None
    timeout: Duration | None = None


class Promotion(Model):
    from_: DnsLabel | None = Field(None, alias="from", description="environment promoted from (default: the previous one)")
    require_approval: bool = Field(False, description="ask before promoting (or pass --yes)")
    require_verification: bool = Field(True, description="the previous environment's verification must pass")


class Environment(Model):
    name: DnsLabel
    cluster: ObjectName | None = Field(None, description="cluster name (default: the environment name)")
    kube_context: str | None = Field(None, description="kubeconfig context (default: the current one)")
    kubeconfig: str | None = Field(None, description="kubeconfig file (default: $KUBECONFIG, then in-cluster)")
    namespace: NamePattern = Field("{project}", description="namespace pattern; {project} {service} {environment} {cluster}")
    flux: FluxOverride | None = None
    promotion: Promotion = Promotion()


ServiceType = Literal["rust", "python", "go", "node", "generic"]
WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]


class Image(Model):
    package: NixAttrPath | None = Field(None, description="flake package attribute of the image (default: <service>-image)")
    name: Annotated[str, AfterValidator(lambda v: _repo_path(v))] | None = Field(
        None, description="registry image name (default: registry.image_name)")


class Workload(Model):
    kind: WorkloadKind = "Deployment"
    name: ObjectName | None = Field(None, description="default: the service name")
    container: DnsLabel | None = Field(None, description="container to check (default: the workload name)")


class Rollout(Model):
    deadline: Duration | None = Field(None, description="overall bound (default: the workload's progressDeadlineSeconds, 600)")
    restarts_tolerated: int = Field(0, ge=0, le=100)
    readiness_grace: Duration = Field(60.0, description="how long readiness may fail before the rollout fails")
    scheduling_grace: Duration = Field(30.0, description="how long a pod may be unschedulable")
    rollback_on_failure: bool = False


class Migration(Model):
    name: DnsLabel
    command: Argv = Field(description="argv run in a Kubernetes Job with the new image")
    image: str | None = Field(None, description="default: the service image being deployed")
    timeout: Duration = 600.0


class HttpCheck(Model):
    url: Url
    expect_status: int = Field(200, ge=100, le=599)
    contains: str | None = None


class Check(Model):
    name: DnsLabel
    http: HttpCheck | None = None
    command: Argv | None = None
    timeout: Duration = 60.0
    retries: int = Field(3, ge=0, le=100)


_SUBGRAPH_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _subgraph_name(value: str) -> str:
    if not _SUBGRAPH_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a subgraph name; use a letter, then letters, digits, '_' or '-'")
    return value


UrlPattern = Annotated[str, AfterValidator(_pattern(*NAME_FIELDS)), AfterValidator(_no_secret_in_url)]


class GraphQL(Model):
    """The service is a GraphQL federation subgraph; the release composes the supergraph."""

    endpoint: UrlPattern | None = Field(
        None, description="URL answering `{ _service { sdl } }` once deployed; {project} {service} {environment} {cluster}")
    schema_file: RelativePath | None = Field(None, description="the subgraph SDL in the source repository, instead of fetching it")
    routing_url: UrlPattern | None = Field(None, description="URL the router calls (default: endpoint)")
    subgraph_name: Annotated[str, AfterValidator(_subgraph_name)] | None = Field(None, description="default: the service name")
    timeout: Duration = Field(10.0, description="per request, when fetching the SDL")
    retries: int = Field(3, ge=0, le=100, description="further attempts when the endpoint does not answer")


class Federation(Model):
    """Where the composed supergraph goes in the GitOps repository (where the router reads it)."""

    router_config_path: Annotated[str, AfterValidator(_pattern("project", "environment", "cluster")),
                                  AfterValidator(_relpath)] = Field(
        description="directory in the GitOps repository, e.g. clusters/{cluster}/router (a ConfigMap generator input); "
                    "{project} {environment} {cluster}")
    file: RelativePath = Field("supergraph.graphql", description="file name in router_config_path")
    commit_message: Annotated[str, AfterValidator(_pattern("project", "environment", "cluster", "source_commit"))] = \
        "federation({project}): {environment} supergraph\n\nsource: {source_commit}"


class Provision(Model):
    """forge-provision configurations, run by the `provision:postgres` and `provision:attic` apps."""

    postgres: tuple[RelativePath, ...] = Field(
        (), description="forge-provision postgres configs, relative to deploy.yaml; `nix run .#provision:postgres` "
                        "runs `forge-provision postgres provision -c FILE` for each, in order")
    attic: tuple[RelativePath, ...] = Field(
        (), description="forge-provision attic configs, relative to deploy.yaml; `nix run .#provision:attic` "
                        "runs `forge-provision attic provision -c FILE` for each, in order")


def _health_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{_short(value)} is not an http(s) URL; use e.g. 'http://127.0.0.1:{{port}}/healthz'")
    return value


class DevPostgres(Model):
    """A throwaway PostgreSQL for integration tests, e2e and dev-up."""

    provision: RelativePath | None = Field(
        None, description="a forge-provision config (relative to deploy.yaml's directory) applied to it")


def _attic_cache(value: str) -> str:
    if len(value) > 50:
        raise ValueError(f"{_short(value)} has {len(value)} characters; an Attic cache name has at most 50")
    return value


class DevAttic(Model):
    """A throwaway Attic binary cache (the real ``atticd``) for integration tests, e2e and dev-up."""

    cache: Annotated[DnsLabel, AfterValidator(_attic_cache)] | None = Field(
        None, description="the cache created on it (ATTIC_CACHE_NAME); default: the service's name")
    public: bool = Field(False, description="whether the cache is public (pulls need no token)")


class DevInfra(Model):
    postgres: DevPostgres | None = Field(None, description="start a local PostgreSQL; `{}` for a bare one")
    attic: DevAttic | None = Field(
        None, description="start a local Attic server (atticd on PATH, or $FORGE_ATTICD) with one cache; "
                          "ATTIC_CACHE_URL, ATTIC_CACHE_NAME and ATTIC_TOKEN go to the commands' environment; "
                          "`{}` for a private cache named after the service")


class DevCommands(Model):
    """Development commands, run in the service's path. Unset: the type's default; null: none."""

    test: str | None = Field(None, description="one command that replaces the whole test pyramid")
    unit: str | None = Field(None, description="unit tests (first level of the pyramid)")
    integration: str | None = Field(None, description="integration tests, with dev.infra running")
    e2e: str | None = Field(None, description="end-to-end tests against the started service ($FORGE_BASE_URL)")
    start: str | None = Field(None, description="runs the service locally on $PORT (e2e-prepare)")
    health: Annotated[str, AfterValidator(_pattern("port")), AfterValidator(_health_url)] | None = Field(
        None, description="URL that answers 2xx once the started service is ready, e.g. http://127.0.0.1:{port}/healthz")
    health_timeout: Duration = Field(120.0, description="how long e2e-prepare waits for the health URL")
    base_url: UrlPattern | None = Field(
        None, description="where comprehensive-release's e2e level reaches the deployed service ($FORGE_BASE_URL), "
                          "e.g. https://{environment}.shop.example; {project} {service} {environment} {cluster}; "
                          "default: the origin of the first http verify check")
    infra: DevInfra = DevInfra()
    lint: str | None = None
    fmt: str | None = None
    fmt_check: str | None = Field(None, alias="fmt-check")


class SchemaExtract(Model):
    """Where `extract-schema:S` reads the GraphQL schema of the running service, and where it writes it."""

    url: Url = Field(description="the running service's GraphQL endpoint, e.g. http://127.0.0.1:8000/graphql")
    output: RelativePath = Field(description="the SDL file, relative to the repository root (e.g. services/api/schema.graphql)")
    via: Literal["auto", "introspection", "federation"] = Field(
        "auto", description="federation: `{ _service { sdl } }`; introspection: the standard introspection query "
                            "printed as SDL; auto: federation when the service answers it, else introspection")
    timeout: Duration = Field(10.0, description="per request")


class Codegen(Model):
    """GraphQL code generation: `extract-schema:S`, `codegen:S`, and both in `codegen-sync`."""

    extract: SchemaExtract | None = Field(None, description="fetch this service's schema (extract-schema:S)")
    command: str | None = Field(
        None, description="the generator, run with bash in the service's directory (e.g. `npx graphql-codegen`); "
                          "a package-lock.json there gets its node_modules from Forge's cache")
    outputs: tuple[RelativePath, ...] = Field(
        (), description="files and directories the command writes, relative to the repository root (what --check compares)")
    timeout: Duration = Field(600.0, description="for the command")


_GIT_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]*$")


def _git_ref(value: str) -> str:
    if not _GIT_REF.fullmatch(value) or ".." in value or value.endswith((".", "/", ".lock")) or "//" in value:
        raise ValueError(f"{value!r} is not a git ref; use a branch ('main'), a tag ('v1.2.0'), a full ref "
                         "('refs/heads/main') or a 40-character commit")
    return value


def _git_url(value: str) -> str:
    if not value or value.startswith("-") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a git URL; use e.g. https://github.com/acme/api.git, "
                         "git@github.com:acme/api.git or file:///abs/repo")
    return value


class GitSource(Model):
    """The service builds from another git repository; `forgegen lock` pins it in deploy.lock."""

    git: Annotated[Url, AfterValidator(_git_url)] = Field(
        description="the repository's URL (https://, ssh://, git@host:path, file://); no credentials in it")
    ref: Annotated[str, AfterValidator(_git_ref)] = Field(
        description="branch, tag, full ref (refs/heads/main) or commit that `forgegen lock` pins")


class Service(Model):
    type: ServiceType = "generic"
    path: RelativePath = Field(".", description="source directory of the service")
    image: Image = Image()
    architectures: tuple[System, ...] = Field(("x86_64-linux",), min_length=1)
    workload: Workload = Workload()
    environments: tuple[DnsLabel, ...] | None = Field(None, description="default: every environment")
    rollout: Rollout = Rollout()
    migrations: tuple[Migration, ...] = ()
    verify: tuple[Check, ...] = ()
    depends_on: tuple[DnsLabel, ...] = ()
    dev: DevCommands = DevCommands()
    graphql: GraphQL | None = Field(None, description="a GraphQL federation subgraph (needs top-level federation)")
    codegen: Codegen | None = Field(None, description="GraphQL schema extraction and code generation")
    source: GitSource | None = Field(
        None, description="build from another git repository, pinned in deploy.lock by `forgegen lock`")


class Config(Model):
    version: Literal[1] = Field(description="schema version of deploy.yaml")
    project: DnsLabel
    registry: Registry
    attic: Attic | None = None
    binary_cache: BinaryCache | None = None
    gitops: GitOps
    flux: Flux = Flux()
    environments: tuple[Environment, ...] = Field(min_length=1)
    services: dict[DnsLabel, Service] = Field(default_factory=dict)
    federation: Federation | None = Field(None, description="compose the services' GraphQL subgraphs on release")
    provision: Provision | None = Field(None, description="PostgreSQL and Attic provisioning apps")

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)

    def service_environments(self, name: str) -> tuple[Environment, ...]:
        wanted = self.services[name].environments
        if wanted is None:
            return self.environments
        return tuple(e for e in self.environments if e.name in wanted)


# ---------------------------------------------------------------------------------------------
# Loading


def reference_problems(config: Config) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field checks pydantic cannot express per field: names, references, cycles."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    reg = config.registry
    if reg.insecure and not urls.is_loopback(reg.host) and not reg.insecure_non_loopback_i_understand:
        out.append((("registry", "insecure"),
                    f"insecure (plain HTTP, no TLS verification) is only for loopback registries, and "
                    f"{reg.host!r} is not one; give the registry TLS, or set "
                    "registry.insecure_non_loopback_i_understand: true if you accept that"))
    env_names = [e.name for e in config.environments]
    seen: dict[str, int] = {}
    for i, name in enumerate(env_names):
        if name in seen:
            out.append((("environments", i, "name"),
                        f"duplicate environment {name!r} (also environments[{seen[name]}]); rename one"))
        else:
            seen[name] = i
    for i, env in enumerate(config.environments):
        src = env.promotion.from_
        if src is not None and (src not in env_names[:i]):
            out.append((("environments", i, "promotion", "from"),
                        f"{src!r} is not an environment defined before {env.name!r}; "
                        f"use one of: {', '.join(env_names[:i]) or '(none: remove it)'}"))
    defined = ", ".join(dict.fromkeys(env_names))
    for sname, svc in config.services.items():
        for j, ename in enumerate(svc.environments or ()):
            if ename not in env_names:
                out.append((("services", sname, "environments", j),
                            f"environment {ename!r} is not defined; define it under 'environments' or use one of: {defined}"))
        for j, dep in enumerate(svc.depends_on):
            if dep == sname:
                out.append((("services", sname, "depends_on", j), "a service cannot depend on itself; remove it"))
            elif dep not in config.services:
                out.append((("services", sname, "depends_on", j),
                            f"service {dep!r} is not defined; define it under 'services' or remove it"))
        names = [m.name for m in svc.migrations]
        for j, n in enumerate(names):
            if n in names[:j]:
                out.append((("services", sname, "migrations", j, "name"), f"duplicate migration {n!r}; rename one"))
        checks = [c.name for c in svc.verify]
        for j, c in enumerate(svc.verify):
            if c.name in checks[:j]:
                out.append((("services", sname, "verify", j, "name"), f"duplicate check {c.name!r}; rename one"))
            if (c.http is None) == (c.command is None):
                out.append((("services", sname, "verify", j),
                            "a check needs exactly one of 'http' or 'command'"))
        if len(set(svc.architectures)) != len(svc.architectures):
            out.append((("services", sname, "architectures"), "an architecture is listed twice; list each once"))
    out += _graphql_problems(config)
    out += _codegen_problems(config)
    out += _provision_problems(config)
    cycle = _dependency_cycle(config)
    if cycle:
        out.append((("services", cycle[0], "depends_on"),
                    f"dependency cycle {' -> '.join(cycle)}; break it by removing one depends_on entry"))
    return out


def _graphql_problems(config: Config) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    names: dict[str, str] = {}
    for sname, svc in config.services.items():
        g = svc.graphql
        if g is None:
            continue
        loc: Loc = ("services", sname, "graphql")
        if (g.endpoint is None) == (g.schema_file is None):
            out.append((loc, "a subgraph needs exactly one of 'endpoint' or 'schema_file'"))
        elif g.endpoint is None and g.routing_url is None:
            out.append((loc, "a subgraph read from 'schema_file' needs 'routing_url' (the URL the router calls)"))
        for key, url in (("endpoint", g.endpoint), ("routing_url", g.routing_url)):
            if url is not None and not url.lower().startswith(("http://", "https://")):
                out.append((loc + (key,), f"{url!r} is not an http:// or https:// URL; give the subgraph's GraphQL URL"))
        if config.federation is None:
            out.append((loc, "graphql needs a top-level 'federation' section (router_config_path: where the "
                             "supergraph is committed); add it, or remove graphql"))
        name = g.subgraph_name or sname
        if name in names:
            out.append((loc + ("subgraph_name",), f"subgraph name {name!r} is also used by service {names[name]!r}; rename one"))
        names.setdefault(name, sname)
    if config.federation is not None and not names:
        out.append((("federation",), "no service declares 'graphql', so there is nothing to compose; "
                                     "add graphql to the subgraph services, or remove federation"))
    return out


def _provision_problems(config: Config) -> list[tuple[Loc, str]]:
    p = config.provision
    if p is None:
        return []
    if not p.postgres and not p.attic:
        return [(("provision",), "lists no file; add postgres: [FILE] and/or attic: [FILE], or remove provision")]
    out: list[tuple[Loc, str]] = []
    for kind in ("postgres", "attic"):
        seen: set[str] = set()
        for i, path in enumerate(getattr(p, kind)):
            key = str(PurePosixPath(path))
            if key in seen:
                out.append((("provision", kind, i), f"{path!r} is listed twice; list each file once"))
            seen.add(key)
    return out


def _codegen_problems(config: Config) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for sname, svc in config.services.items():
        c = svc.codegen
        if c is None:
            continue
        loc: Loc = ("services", sname, "codegen")
        if c.extract is None and c.command is None:
            out.append((loc, "codegen needs 'extract' (the schema to fetch), 'command' (the generator), or both"))
        if c.command is not None and not c.outputs:
            out.append((loc + ("outputs",), "a codegen command needs 'outputs' (the files or directories it writes, "
                                            "which `forge codegen-sync --check` compares); list them"))
        if c.command is None and c.outputs:
            out.append((loc + ("outputs",), "'outputs' without a 'command' is never written; add the command or remove them"))
        if c.extract is not None and not c.extract.url.lower().startswith(("http://", "https://")):
            out.append((loc + ("extract", "url"), f"{c.extract.url!r} is not an http:// or https:// URL"))
    return out


def name_values(config: Config, service: str, env: Environment) -> dict[str, str]:
    """What the name placeholders of ``service`` in ``env`` are filled with."""
    return {"project": config.project, "service": service, "environment": env.name,
            "cluster": env.cluster or env.name}


def kustomizations_of(config: Config, index: int) -> tuple[tuple[Loc, str], ...]:
    """The Kustomization patterns that apply to ``environments[index]``, with where each is set."""
    env = config.environments[index]
    own = env.flux.kustomizations if env.flux else None
    if own:
        return tuple((("environments", index, "flux", "kustomizations", j), k) for j, k in enumerate(own))
    return tuple((("flux", "kustomizations", j), k) for j, k in enumerate(config.flux.kustomizations))


def _image_rule(value: str, config: Config) -> str:
    _repo_path(value)
    reference = "/".join(p for p in (config.registry.host, config.registry.organization, value) if p)
    if len(reference) > 255:
        raise ValueError(f"the image reference {reference[:60]!r}... is longer than 255 characters; shorten it")
    return value


def rendered_name_problems(config: Config) -> list[tuple[Loc, str]]:
    """Every filled-in pattern checked as the name it becomes (namespace: a DNS-1123 label;
    Kustomization: a Kubernetes object name; image: a registry repository path; GitOps path: a
    relative path), so `forgegen check` refuses what would break later. One problem per field."""
    out: dict[Loc, str] = {}
    kustomizations = [kustomizations_of(config, i) for i in range(len(config.environments))]

    def check(loc: Loc, text: str, values: dict[str, str], rule: Callable[[str], object],
              env: str | None = None) -> None:
        if loc in out:
            return
        name = pattern.fill(text, values)
        try:
            rule(name)
        except ValueError as err:
            what = f"service {values['service']!r}" + (f" in {env!r}" if env else "")
            out[loc] = f"renders to {name!r} for {what}: {err}"

    for sname, svc in config.services.items():
        if svc.image.name is None:
            check(("registry", "image_name"), config.registry.image_name,
                  {"project": config.project, "service": sname}, lambda v: _image_rule(v, config))
        for i, env in enumerate(config.environments):
            if svc.environments is not None and env.name not in svc.environments:
                continue
            values = name_values(config, sname, env)
            check(("environments", i, "namespace"), env.namespace, values, _dns_label, env.name)
            check(("gitops", "path"), config.gitops.path, values, _relpath, env.name)
            for loc, text in kustomizations[i]:
                check(loc, text, values, _dns_subdomain, env.name)
    return list(out.items())


def _dependency_cycle(config: Config) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in config.services[name].depends_on:
            if dep not in config.services or dep == name:
                continue
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in config.services:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(value: str, loc: Loc, problems: list[tuple[Loc, str]], what: str = "") -> str:
    """``value`` with JSON-style surrogate pairs (``"\\ud83d\\ude00"``) joined into the character
    they encode; a NUL or a lone surrogate is a problem (no file, plan or Nix string can hold it)."""
    if "\0" in value:
        problems.append((loc, what + "contains a NUL character (\\0), which a plan and a Nix string cannot carry; remove it"))
    if _SURROGATE.search(value):
        value = _SURROGATE_PAIR.sub(lambda m: m.group().encode("utf-16", "surrogatepass").decode("utf-16"), value)
        lone = _SURROGATE.search(value)
        if lone:
            problems.append((loc, what + f"contains a lone UTF-16 surrogate (\\u{ord(lone.group()):04x}), which is not text; "
                                  "write the character itself, or both halves of its \\u pair"))
    return value


def clean_text(data: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    """Every string (keys too) of parsed YAML checked with :func:`_text`."""
    if isinstance(data, str):
        return _text(data, loc, problems)
    if isinstance(data, dict):
        return {(_text(k, loc, problems, "a key ") if isinstance(k, str) else k): clean_text(v, loc + (k,), problems)
                for k, v in data.items()}
    if isinstance(data, list):
        return [clean_text(v, loc + (i,), problems) for i, v in enumerate(data)]
    return data


def validate(source: Source) -> Config:
    """Validate parsed YAML; raise :class:`ConfigError` listing every problem."""
    data = source.data
    if data is None:
        raise ConfigError([source.problem((), "the file is empty; start from `forgegen init`")])
    if not isinstance(data, Mapping):
        raise ConfigError([source.problem((), f"the top level must be a mapping, not {type(data).__name__}")])
    version = data.get("version")
    if version is not None and version != SCHEMA_VERSION:
        raise ConfigError([source.problem(("version",), f"unsupported version {version!r}; this forgegen reads version {SCHEMA_VERSION}")])
    problems = list(source.problems)
    text_problems: list[tuple[Loc, str]] = []
    data = clean_text(data, (), text_problems)
    problems += [source.problem(loc, msg) for loc, msg in text_problems]
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        problems += problems_from_pydantic(source, err.errors(), model=Config)
        config = None
    if config is not None and not text_problems:
        problems += [source.problem(loc, msg) for loc, msg in reference_problems(config)]
        problems += [source.problem(loc, msg) for loc, msg in rendered_name_problems(config)]
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.path))
        raise ConfigError(problems)
    assert config is not None
    return config


def load_config(path: str | Path = DEFAULT_FILE, *, display: str | None = None) -> Config:
    return validate(load_file(path, display=display or Path(path).name, collect=True))


def parse_config(text: str, name: str = DEFAULT_FILE) -> Config:
    return validate(load_text(text, name, collect=True))


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "Forge deploy.yaml"
    # Service names are DNS-1123 labels: editors flag a bad name as they flag a bad value.
    schema["properties"]["services"]["propertyNames"] = {"pattern": _DNS_LABEL.pattern, "maxLength": 63}
    return schema


__all__ = ["Config", "Service", "Environment", "load_config", "parse_config", "json_schema",
           "Problem", "SYSTEMS", "NIX_KEYWORDS"]
