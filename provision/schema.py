"""The provisioning YAML files: one pydantic schema each for PostgreSQL and Attic.

These models are the only description of the files. Constraints live in reusable
``Annotated`` types; references between objects (an owner must be a declared role, the CDC
role must be able to replicate, ...) are checked after parsing so that every problem is
reported at once, located as ``file:line:col: path: what is wrong; what to do``.

This module imports only ``forgegen.errors`` and ``forgegen.yamlsource`` (no psycopg).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from forgegen import urls
from forgegen.errors import ConfigError, Problem
from forgegen.names import env_var

SCHEMA_VERSION = 1
NAMEDATALEN = 63  # PostgreSQL truncates longer identifiers silently: refuse them instead

__all__ = [
    "AtticConfig", "Cache", "Cdc", "Connection", "Database", "Extension", "Grant",
    "PostgresConfig", "Role", "Schema", "TableRef", "Tls", "TokenSpec", "load_attic", "load_postgres",
    "parse_attic", "parse_postgres",
]


# -- reusable constrained types ---------------------------------------------------------------

def _identifier(value: str) -> str:
    if not value:
        raise ValueError("must not be empty; give a name")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character; remove it")
    if len(value.encode("utf-8")) > NAMEDATALEN:
        raise ValueError(f"is {len(value.encode('utf-8'))} bytes long; PostgreSQL names are at most "
                         f"{NAMEDATALEN} bytes (longer ones are truncated): shorten it")
    return value


def _role_name(value: str) -> str:
    _identifier(value)
    if value.lower() in ("public", "none"):
        raise ValueError(f"{value!r} is reserved by PostgreSQL; choose another role name")
    if value.startswith("pg_"):
        raise ValueError(f"{value!r}: names starting with 'pg_' are reserved for PostgreSQL's own roles; "
                         "choose another name")
    return value


def _member_name(value: str) -> str:
    # Membership may name PostgreSQL's predefined roles (pg_read_all_data, pg_monitor, ...).
    _identifier(value)
    if value.lower() in ("public", "none"):
        raise ValueError(f"{value!r} is reserved by PostgreSQL; name a real role")
    return value


def _schema_name(value: str) -> str:
    _identifier(value)
    if value == "information_schema":
        raise ValueError(f"{value!r} is PostgreSQL's own schema (it is recreated on upgrade and its objects "
                         "belong to the system); choose another schema name")
    if value.startswith("pg_"):
        raise ValueError(f"{value!r}: schema names starting with 'pg_' (pg_catalog, pg_toast, ...) are "
                         "reserved for PostgreSQL; choose another name")
    return value


def _slot_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,63}", value):
        raise ValueError(f"{value!r} is not a valid replication slot name; use 1-63 lower-case letters, "
                         "digits and '_'")
    return value


def _upper_list(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [v.upper().strip() if isinstance(v, str) else v for v in value]
    return value


def _privileges(allowed: tuple[str, ...], aliases: dict[str, str] | None = None):
    def check(value: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for item in value:
            item = (aliases or {}).get(item, item)
            if item in ("ALL", "ALL PRIVILEGES"):
                out.extend(allowed)
            elif item in allowed:
                out.append(item)
            else:
                raise ValueError(f"unknown privilege {item!r}; use one of {', '.join(allowed)} or ALL")
        return tuple(sorted(set(out), key=allowed.index))
    return check


def _duration(value: Any) -> int:
    """``"90d"``, ``"1y"``, ``"12h"``, ``"1y 6w"``, or seconds as an integer (humantime units)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '90d' or '1y'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        units = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400,
                 "day": 86400, "w": 604800, "week": 604800, "y": 31557600, "year": 31557600}
        parts = re.findall(r"(\d+)\s*([a-z]+)", value.strip().lower())
        rebuilt = "".join(re.findall(r"\d+\s*[a-z]+", value.strip().lower()))
        if not parts or rebuilt.replace(" ", "") != value.strip().lower().replace(" ", ""):
            raise ValueError(f"{value!r} is not a duration; write e.g. '90d', '12h', '1y' (units s m h d w y)")
        seconds = 0
        for number, unit in parts:
            unit = unit[:-1] if unit.endswith("s") and unit[:-1] in units else unit
            if unit not in units:
                raise ValueError(f"{value!r}: unknown unit {unit!r}; use s, m, h, d, w or y")
            seconds += int(number) * units[unit]
    else:
        raise ValueError("must be a duration such as '90d' or '1y'")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _valid_until(value: Any) -> Any:
    """``infinity`` or a timestamp with a time zone, kept as ISO 8601 in UTC."""
    from datetime import datetime

    if isinstance(value, str) and value.strip().lower() == "infinity":
        return "infinity"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a timestamp; write e.g. '2030-01-01T00:00:00Z' or 'infinity'") from None
    if not isinstance(value, datetime):
        raise ValueError("must be 'infinity' or a timestamp such as '2030-01-01T00:00:00Z'")
    if value.tzinfo is None:
        raise ValueError(f"{value.isoformat()!r} has no time zone; add one, e.g. 'Z' for UTC")
    return value.astimezone(UTC).isoformat()


def _cache_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-_+]{0,49}", value):
        raise ValueError(f"{value!r} is not an Attic cache name; use up to 50 letters, digits, '-', '_' "
                         "or '+', starting with a letter or digit")
    return value


def _cache_pattern(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9*][A-Za-z0-9\-_+*]{0,49}", value):
        raise ValueError(f"{value!r} is not an Attic cache name pattern; use cache-name characters "
                         "and '*' wildcards")
    return value


def _endpoint(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"{urls.redact(value)!r} is not an http(s) URL; write e.g. https://attic.example.com/")
    problem = urls.credential_problem(value)
    if problem:
        raise ValueError(problem)
    return value if value.endswith("/") else value + "/"


Identifier = Annotated[str, AfterValidator(_identifier)]
RoleName = Annotated[str, AfterValidator(_role_name)]
MemberName = Annotated[str, AfterValidator(_member_name)]
SchemaName = Annotated[str, AfterValidator(_schema_name)]
EnvVar = Annotated[str, AfterValidator(env_var)]  # the same rule as deploy.yaml's credential variables
SlotName = Annotated[str, AfterValidator(_slot_name)]
Duration = Annotated[int, BeforeValidator(_duration), WithJsonSchema({
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\s*(\d+\s*[A-Za-z]+\s*)+$"}],
    "description": "seconds, or a duration such as '90d', '12h', '1y 6w' (units s m h d w y)"})]
ValidUntil = Annotated[str, BeforeValidator(_valid_until)]
CacheName = Annotated[str, AfterValidator(_cache_name)]
CachePattern = Annotated[str, AfterValidator(_cache_pattern)]
Endpoint = Annotated[str, AfterValidator(_endpoint)]

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
FUNCTION_PRIVILEGES = ("EXECUTE",)
SCHEMA_PRIVILEGES = ("USAGE", "CREATE")
DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")

# The JSON Schema of a privilege list: one name, or a list of names (any case; ALL for every one).
_PRIVILEGES_SCHEMA = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                                     "description": "privileges, e.g. [SELECT, INSERT] or ALL"})
TablePrivileges = Annotated[tuple[str, ...], BeforeValidator(_upper_list),
                            AfterValidator(_privileges(TABLE_PRIVILEGES)), _PRIVILEGES_SCHEMA]
SequencePrivileges = Annotated[tuple[str, ...], BeforeValidator(_upper_list),
                               AfterValidator(_privileges(SEQUENCE_PRIVILEGES)), _PRIVILEGES_SCHEMA]
FunctionPrivileges = Annotated[tuple[str, ...], BeforeValidator(_upper_list),
                               AfterValidator(_privileges(FUNCTION_PRIVILEGES)), _PRIVILEGES_SCHEMA]
SchemaPrivileges = Annotated[tuple[str, ...], BeforeValidator(_upper_list),
                             AfterValidator(_privileges(SCHEMA_PRIVILEGES)), _PRIVILEGES_SCHEMA]
DatabasePrivileges = Annotated[tuple[str, ...], BeforeValidator(_upper_list),
                               AfterValidator(_privileges(DATABASE_PRIVILEGES, {"TEMP": "TEMPORARY"})), _PRIVILEGES_SCHEMA]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- PostgreSQL ---------------------------------------------------------------------------------

class Tls(Model):
    """TLS to the server. ``verify-full`` (the default) checks the certificate and the host name.

    ``prefer``/``allow`` are not offered: they fall back to plain text when the server (or anyone
    in between) declines TLS. ``disable`` is for a server on loopback or a Unix socket.
    """

    mode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-full"
    root_cert: str | None = None  # CA file; "system" for the system's CAs; unset: ~/.postgresql/root.crt


class Connection(Model):
    """How forge-provision reaches the server, as an administrator (and checks role passwords)."""

    host: str = "localhost"
    port: int = Field(5432, ge=1, le=65535)
    user: Identifier = "postgres"
    password_env: EnvVar | None = None
    tls: Tls = Tls()
    # false (the default): only SCRAM-SHA-256 authentication (the password never crosses the wire);
    # true: also md5, a cleartext password and trust, for a local server only.
    allow_insecure_auth: bool = False
    dbname: Identifier = "postgres"
    connect_timeout: int = Field(5, ge=1, le=600)

    @model_validator(mode="before")
    @classmethod
    def _no_sslmode(cls, data: Any) -> Any:
        if isinstance(data, dict) and "sslmode" in data:
            raise ValueError(f"'sslmode: {data['sslmode']}' is now written 'tls: {{mode: ...}}' (disable, require, "
                             "verify-ca or verify-full, the default); prefer and allow are gone because they "
                             "fall back to plain text")
        return data


class Role(Model):
    """A cluster role. Attributes left unset (``None``) are not managed, only reported by drift."""

    name: RoleName
    login: bool = False
    password_env: EnvVar | None = None
    connection_limit: int = Field(-1, ge=-1)
    member_of: tuple[MemberName, ...] = ()
    createdb: bool | None = None
    createrole: bool | None = None
    replication: bool | None = None
    bypassrls: bool | None = None
    inherit: bool | None = None
    valid_until: ValidUntil = "infinity"  # when the password stops working (Terraform's default too)
    search_path: tuple[Identifier, ...] = ()  # the role's own search_path; () = none (the server's)
    prune: bool = False


class Extension(Model):
    name: Identifier
    schema_: SchemaName | None = Field(None, alias="schema")


class Schema(Model):
    name: SchemaName
    owner: RoleName | None = None


class Grant(Model):
    """What one role may do in the database and, optionally, in one schema of it."""

    role: RoleName
    database_privileges: DatabasePrivileges = ()
    schema_: SchemaName | None = Field(None, alias="schema")
    schema_privileges: SchemaPrivileges = ()
    tables: TablePrivileges = ()
    sequences: SequencePrivileges = ()
    functions: FunctionPrivileges = ()
    future: bool = True
    future_owners: tuple[RoleName, ...] | None = None
    prune: bool = False


class TableRef(Model):
    schema_: SchemaName = Field("public", alias="schema")
    name: Identifier

    def __str__(self) -> str:
        return f"{self.schema_}.{self.name}"


_TABLE_REF_SCHEMA = WithJsonSchema({"anyOf": [
    {"type": "string", "description": "schema.table, or a table in public"},
    {"type": "object", "properties": {"schema": {"type": "string"}, "name": {"type": "string"}},
     "required": ["name"], "additionalProperties": False}]})


def _table_ref(value: Any) -> Any:
    if isinstance(value, str):
        schema, dot, name = value.partition(".")
        return {"schema": schema, "name": name} if dot else {"schema": "public", "name": value}
    return value


class Cdc(Model):
    """Change data capture: a publication (all tables or a list) and an optional slot."""

    role: RoleName
    publication: Identifier
    tables: Literal["all"] | tuple[Annotated[TableRef, BeforeValidator(_table_ref), _TABLE_REF_SCHEMA], ...] = "all"
    slot: SlotName | None = None
    prune: bool = False


class Database(Model):
    name: Identifier
    owner: RoleName | None = None
    encoding: str = "UTF8"
    locale: str | None = None
    extensions: tuple[Extension, ...] = ()
    schemas: tuple[Schema, ...] = ()
    grants: tuple[Grant, ...] = ()
    cdc: Cdc | None = None
    connection_limit: int = Field(-1, ge=-1)  # -1: no limit
    allow_connections: bool = True  # false: nothing inside the database is managed
    prune: bool = False


class PostgresConfig(Model):
    version: Literal[1]
    connection: Connection = Connection()
    roles: tuple[Role, ...] = ()
    databases: tuple[Database, ...] = ()

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.name == name), None)


# -- Attic --------------------------------------------------------------------------------------

class AtticServer(Model):
    endpoint: Endpoint
    token_env: EnvVar | None = None
    token_secret_env: EnvVar | None = None
    timeout: int = Field(30, ge=1, le=600)


class Cache(Model):
    name: CacheName
    public: bool = False
    store_dir: str = "/nix/store"
    priority: int = 41
    upstream_cache_key_names: tuple[str, ...] = ("cache.nixos.org-1",)


class ClientConfigOut(Model):
    """Attic's client config (``attic`` reads ``$XDG_CONFIG_HOME/attic/config.toml``)."""

    path: str | None = None
    server_name: str = "forge"
    default: bool = True


class TokenSpec(Model):
    sub: str = Field(min_length=1)
    validity: Duration
    renew_before: Duration | None = None
    pull: tuple[CachePattern, ...] = ()
    push: tuple[CachePattern, ...] = ()
    delete: tuple[CachePattern, ...] = ()
    create_cache: tuple[CachePattern, ...] = ()
    configure_cache: tuple[CachePattern, ...] = ()
    configure_cache_retention: tuple[CachePattern, ...] = ()
    destroy_cache: tuple[CachePattern, ...] = ()
    client_config: ClientConfigOut | None = None
    token_file: str | None = None


class AtticConfig(Model):
    version: Literal[1]
    server: AtticServer
    caches: tuple[Cache, ...] = ()
    tokens: tuple[TokenSpec, ...] = ()


# -- loading and cross-checks -------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _duplicates(items: Sequence[Any], key, loc: Loc, what: str) -> Iterable[tuple[Loc, str]]:
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        k = key(item)
        if k in seen:
            yield loc + (i,), f"duplicate {what} {k!r} (also at index {seen[k]}); merge the two entries"
        else:
            seen[k] = i


def postgres_references(cfg: PostgresConfig) -> list[tuple[Loc, str]]:
    """Problems no single field can see: duplicates and references to undeclared roles."""
    out: list[tuple[Loc, str]] = []
    declared = {r.name for r in cfg.roles} | {cfg.connection.user}
    hint = "; declare it under 'roles' (or use the connection user)"

    def need(role: str, loc: Loc) -> None:
        if role not in declared:
            out.append((loc, f"role {role!r} is not declared{hint}"))

    out += _duplicates(cfg.roles, lambda r: r.name, ("roles",), "role")
    out += _duplicates(cfg.databases, lambda d: d.name, ("databases",), "database")
    for i, role in enumerate(cfg.roles):
        for j, member in enumerate(role.member_of):
            if not member.startswith("pg_"):
                need(member, ("roles", i, "member_of", j))
            if member == role.name:
                out.append((("roles", i, "member_of", j), "a role cannot be a member of itself; remove it"))
    for i, db in enumerate(cfg.databases):
        base: Loc = ("databases", i)
        if db.owner:
            need(db.owner, base + ("owner",))
        out += _duplicates(db.extensions, lambda e: e.name, base + ("extensions",), "extension")
        out += _duplicates(db.schemas, lambda s: s.name, base + ("schemas",), "schema")
        out += _duplicates(db.grants, lambda g: (g.role, g.schema_), base + ("grants",), "grant for (role, schema)")
        for j, schema in enumerate(db.schemas):
            if schema.owner:
                need(schema.owner, base + ("schemas", j, "owner"))
        for j, grant in enumerate(db.grants):
            gl = base + ("grants", j)
            need(grant.role, gl + ("role",))
            for k, owner in enumerate(grant.future_owners or ()):
                need(owner, gl + ("future_owners", k))
            if grant.schema_ is None and (grant.schema_privileges or grant.tables or grant.sequences
                                          or grant.functions):
                out.append((gl, "schema_privileges, tables, sequences and functions need a 'schema'; "
                                "add schema: <name>"))
        if db.cdc:
            cl = base + ("cdc",)
            role = cfg.role(db.cdc.role)
            if role is None:
                need(db.cdc.role, cl + ("role",))
            elif not (role.login and role.replication):
                out.append((cl + ("role",), f"the CDC role {role.name!r} must have login: true and "
                                            "replication: true; set both under 'roles'"))
    return out


def attic_references(cfg: AtticConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    out += _duplicates(cfg.caches, lambda c: c.name, ("caches",), "cache")
    if not cfg.server.token_env and not cfg.server.token_secret_env:
        out.append((("server",), "give token_env (an admin token) or token_secret_env (the server's "
                                 "base64 HS256 secret) so forge-provision can authenticate"))
    for i, tok in enumerate(cfg.tokens):
        if not cfg.server.token_secret_env:
            out.append((("tokens", i), "minting tokens needs server.token_secret_env (the server's "
                                       "token-hs256-secret-base64); add it"))
        if not (tok.client_config or tok.token_file):
            out.append((("tokens", i), "the token would be written nowhere; add client_config or token_file"))
        if tok.renew_before is not None and tok.renew_before >= tok.validity:
            out.append((("tokens", i, "renew_before"), "must be shorter than validity"))
    return out


def _parse(model: type[Model], data: Any, source: Any, name: str, references) -> Any:
    from forgegen.yamlsource import problems_from_pydantic

    def locate(loc: Loc, message: str) -> Problem:
        if source is not None:
            return source.problem(loc, message)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        return Problem(name, None, None, path, message)

    if not isinstance(data, dict):
        raise ConfigError([locate((), f"the file must be a YAML mapping with 'version: {SCHEMA_VERSION}'")])
    if "version" not in data:
        raise ConfigError([locate((), f"'version' is missing; add 'version: {SCHEMA_VERSION}' at the top")])
    if data.get("version") != SCHEMA_VERSION:
        raise ConfigError([locate(("version",), f"unsupported version {data.get('version')!r}; this "
                                                f"forge-provision reads version {SCHEMA_VERSION}")])
    try:
        cfg = model.model_validate(data)
    except ValidationError as err:
        if source is None:
            raise ConfigError([locate(tuple(e["loc"]), e["msg"]) for e in err.errors()]) from err
        raise ConfigError(problems_from_pydantic(source, _union_errors(err.errors()), model=model)) from err
    problems = [locate(loc, msg) for loc, msg in references(cfg)]
    if problems:
        raise ConfigError(problems)
    return cfg


def _union_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors of a ``"all" | [tables]`` field, located at the field: the branch names dropped, and
    the "should be 'all'" branch dropped when the list branch says what is wrong."""
    def branch(part: Any) -> bool:
        return isinstance(part, str) and (part.startswith("literal[") or part.startswith("tuple["))

    cleaned = [{**e, "loc": tuple(p for p in e["loc"] if not branch(p)), "branched": any(map(branch, e["loc"]))}
               for e in errors]
    detailed = [e["loc"] for e in cleaned if e["branched"] and e["type"] != "literal_error"]
    return [e for e in cleaned if not (e["branched"] and e["type"] == "literal_error"
                                       and any(d[:len(e["loc"])] == e["loc"] for d in detailed))]


def _source(path: str | Path):
    from forgegen.yamlsource import load_file

    p = Path(path)
    if not p.exists():
        raise ConfigError.single(str(path), "file not found; pass the provisioning YAML with --config "
                                            "(examples/provision/ has samples)")
    return load_file(p)


def parse_postgres(data: Any, *, source: Any = None, name: str = "<config>") -> PostgresConfig:
    return _parse(PostgresConfig, data, source, name, postgres_references)


def load_postgres(path: str | Path) -> PostgresConfig:
    src = _source(path)
    return parse_postgres(src.data, source=src, name=src.name)


def parse_attic(data: Any, *, source: Any = None, name: str = "<config>") -> AtticConfig:
    return _parse(AtticConfig, data, source, name, attic_references)


def load_attic(path: str | Path) -> AtticConfig:
    src = _source(path)
    return parse_attic(src.data, source=src, name=src.name)


SCHEMA_BASE = "https://raw.githubusercontent.com/forge-deploy/forge/main/provision/schemas/"
KINDS = {"postgres": PostgresConfig, "attic": AtticConfig}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a provisioning file (``postgres`` or ``attic``), for editors."""
    schema = KINDS[kind].model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{SCHEMA_BASE}{kind}.schema.json"
    schema["title"] = f"forge-provision {kind} configuration"
    return schema
