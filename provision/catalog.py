"""What the PostgreSQL catalogue says: cluster and per-database state as plain dataclasses.

Every function here only reads. Privileges are read with ``aclexplode`` over the object's ACL
(or ``acldefault`` when it was never changed), and privileges an owner holds by owning an object
are left out: they are not grants. Object privileges are read as counts per
(schema, kind, grantee, privilege) so that a schema with ten thousand tables costs one row per
privilege, not one per table.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

KINDS = ("table", "sequence", "function")
DEFAULT_ACL_KIND = {"r": "table", "S": "sequence", "f": "function"}


@dataclass(frozen=True)
class RoleState:
    name: str
    superuser: bool
    inherit: bool
    createrole: bool
    createdb: bool
    login: bool
    replication: bool
    bypassrls: bool
    connection_limit: int
    verifier: str | None  # the stored password hash; None when unset or unreadable
    verifier_readable: bool
    valid_until: float | None = None  # seconds since the epoch; None: no expiry (NULL or infinity)
    expired: bool = False  # VALID UNTIL has passed: the password no longer logs in
    search_path: tuple[str, ...] | None = None  # the role's own setting (ALTER ROLE … SET); None: unset


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    owner: str
    encoding: str
    collate: str
    ctype: str
    grants: frozenset[tuple[str, str]]  # (grantee, privilege), owner and PUBLIC left out
    connection_limit: int = -1
    allow_connections: bool = True
    # (grantee, privilege, grantor) for grants made by a role other than the owner
    foreign_grants: frozenset[tuple[str, str, str]] = frozenset()
    owner_grants: frozenset[tuple[str, str]] = frozenset()  # (grantee, privilege) granted by the owner


@dataclass(frozen=True)
class SlotInfo:
    name: str
    database: str | None
    plugin: str | None
    slot_type: str


@dataclass
class ClusterState:
    admin: str
    admin_is_superuser: bool
    roles: dict[str, RoleState] = field(default_factory=dict)
    memberships: set[tuple[str, str]] = field(default_factory=set)  # (member, group)
    databases: dict[str, DatabaseInfo] = field(default_factory=dict)
    slots: dict[str, SlotInfo] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # wal_level, max_replication_slots, ...
    queries: int = 0


@dataclass
class DatabaseState:
    name: str
    exists: bool = True
    schemas: dict[str, str] = field(default_factory=dict)  # name -> owner
    schema_grants: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    extensions: dict[str, str] = field(default_factory=dict)  # name -> schema
    # (schema, kind) -> number of objects
    object_totals: dict[tuple[str, str], int] = field(default_factory=dict)
    # (schema, kind, role) -> number of objects that role owns
    object_owned: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (schema, kind, grantee, privilege) -> number of distinct objects granted (any grantor)
    object_grants: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    # (schema, kind, grantee, privilege) -> number of objects where the owner is a grantor
    object_owner_grants: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    # (schema, kind, grantee, privilege, grantor) -> (schema, name) of the objects, for grants
    # made by a role other than the object's owner (a REVOKE must run as that grantor)
    object_grantors: dict[tuple[str, str, str, str, str], list[tuple[str, str]]] = field(default_factory=dict)
    # (schema, grantee, privilege) -> grantors other than the schema owner
    schema_grantors: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    schema_owner_grants: set[tuple[str, str, str]] = field(default_factory=set)  # granted by the owner
    # (owner role, schema, kind) -> {(grantee, privilege)}
    default_grants: dict[tuple[str, str, str], set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set))
    # PUBLIC's privileges: schema -> {privilege}; (schema, kind, privilege) -> number of objects
    public_schema_grants: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    public_object_grants: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # tables whose UPDATE/DELETE cannot be published: no primary key and no replica identity
    tables_without_identity: set[tuple[str, str]] = field(default_factory=set)
    publications: dict[str, bool] = field(default_factory=dict)  # name -> FOR ALL TABLES
    publication_tables: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    tables: set[tuple[str, str]] = field(default_factory=set)  # (schema, table) asked about
    queries: int = 0

    @classmethod
    def empty(cls, name: str) -> DatabaseState:
        """A database CREATE DATABASE … TEMPLATE template0 would make (for plans)."""
        state = cls(name, exists=False)
        state.schemas["public"] = "pg_database_owner"
        state.extensions["plpgsql"] = "pg_catalog"
        return state


def _rows(conn: Any, query: Any, params: Any = None) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def inspect_cluster(conn: Any) -> ClusterState:
    admin, is_super = conn.execute(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    state = ClusterState(admin, bool(is_super))
    from psycopg import sql

    # Only a superuser can read pg_authid, where the password verifiers are.
    source = "pg_authid" if state.admin_is_superuser else "pg_roles"
    roles = _rows(conn, sql.SQL("""
        SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
               r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolpassword,
               CASE WHEN r.rolvaliduntil IS NULL OR r.rolvaliduntil = 'infinity' THEN NULL
                    ELSE extract(epoch FROM r.rolvaliduntil)::float8 END,
               coalesce(r.rolvaliduntil < now(), false),
               (SELECT substr(c, length('search_path=') + 1)
                FROM pg_db_role_setting s, unnest(s.setconfig) c
                WHERE s.setrole = r.oid AND s.setdatabase = 0 AND c LIKE 'search\\_path=%')
        FROM {} r WHERE r.rolname NOT LIKE 'pg\\_%'""").format(sql.Identifier("pg_catalog", source)))
    for (name, sup, inh, crole, cdb, login, repl, bypass, limit, pw, until, expired, path) in roles:
        readable = state.admin_is_superuser
        state.roles[name] = RoleState(name, sup, inh, crole, cdb, login, repl, bypass, limit,
                                      pw if readable else None, readable, until, expired,
                                      None if path is None else split_search_path(path))
    state.memberships = {(m, g) for m, g in _rows(conn, """
        SELECT pg_get_userbyid(member), pg_get_userbyid(roleid) FROM pg_auth_members""")}
    for name, owner, enc, coll, ctype, limit, allow in _rows(conn, """
        SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype,
               datconnlimit, datallowconn
        FROM pg_database"""):
        state.databases[name] = DatabaseInfo(name, owner, enc, coll, ctype, frozenset(), limit, allow)
    grants: dict[str, set[tuple[str, str]]] = defaultdict(set)
    foreign: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    by_owner: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name, grantee, priv, grantor in _rows(conn, """
        SELECT d.datname, pg_get_userbyid(a.grantee), a.privilege_type,
               CASE WHEN a.grantor <> d.datdba THEN pg_get_userbyid(a.grantor) END
        FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        WHERE a.grantee <> 0 AND a.grantee <> d.datdba"""):
        grants[name].add((grantee, priv))
        if grantor is not None:
            foreign[name].add((grantee, priv, grantor))
        else:
            by_owner[name].add((grantee, priv))
    for name, info in list(state.databases.items()):
        state.databases[name] = replace(info, grants=frozenset(grants.get(name, ())),
                                        foreign_grants=frozenset(foreign.get(name, ())),
                                        owner_grants=frozenset(by_owner.get(name, ())))
    for name, db, plugin, kind in _rows(conn, """
        SELECT slot_name, database, plugin, slot_type FROM pg_replication_slots"""):
        state.slots[name] = SlotInfo(name, db, plugin, kind)
    state.settings = dict(_rows(conn, """
        SELECT name, setting FROM pg_settings
        WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')"""))
    state.queries = 7
    return state


def split_search_path(text: str) -> tuple[str, ...]:
    """A search_path as PostgreSQL stores it (``app, "$user", "Odd Name"``) as its names."""
    names: list[str] = []
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " ,":
            i += 1
        if i >= len(text):
            break
        if text[i] == '"':
            j, name = i + 1, ""
            while j < len(text):
                if text[j] == '"' and text[j + 1:j + 2] == '"':
                    name, j = name + '"', j + 2
                elif text[j] == '"':
                    break
                else:
                    name, j = name + text[j], j + 1
            names.append(name)
            i = j + 1
        else:
            j = text.find(",", i)
            j = len(text) if j < 0 else j
            names.append(text[i:j].strip())
            i = j
    return tuple(names)


Handler = Callable[["DatabaseState", list[tuple]], None]


def inspect_database(conn: Any, name: str, *, tables: list[tuple[str, str]] = (),
                     cdc: bool = False) -> DatabaseState:
    """Read one database's schemas, extensions, privileges and publications (6-8 queries, sent
    together in one pipeline: one round trip to the server, not one per query)."""
    state = DatabaseState(name)
    queries: list[tuple[str, Any, Handler]] = [
        (_SCHEMAS, None, _schemas), (_EXTENSIONS, None, _extensions),
        (_OBJECTS + _OBJECT_TOTALS, None, _object_totals), (_OBJECTS + _OBJECT_GRANTS, None, _object_grants),
        (_DEFAULT_GRANTS, None, _default_grants), (_PUBLICATIONS, None, _publications)]
    if tables:
        queries.append((_TABLES, ([s for s, _ in tables], [t for _, t in tables]), _tables))
    if cdc:
        queries.append((_WITHOUT_IDENTITY, None, _without_identity))
    for (_, _, handle), rows in zip(queries, pipelined(conn, [(q, p) for q, p, _ in queries])):
        handle(state, rows)
    state.queries = len(queries)
    return state


def pipelined(conn: Any, queries: Sequence[tuple[str, Any]]) -> list[list[tuple]]:
    """The rows of each query, every query sent before any result is awaited (libpq pipeline
    mode; a connection that cannot pipeline sends them one by one)."""
    if not getattr(conn, "pipeline", None) or not _can_pipeline():
        return [_rows(conn, q, p) for q, p in queries]
    with conn.pipeline():
        cursors = [conn.execute(q, p) for q, p in queries]
    return [c.fetchall() for c in cursors]


def _can_pipeline() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


_EXTENSIONS = """
        SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"""


def _extensions(state: DatabaseState, rows: list[tuple]) -> None:
    state.extensions = dict(rows)


_SCHEMAS = """
        SELECT n.nspname, pg_get_userbyid(n.nspowner), pg_get_userbyid(a.grantee), a.privilege_type,
               CASE WHEN a.grantor <> n.nspowner THEN pg_get_userbyid(a.grantor) END, a.grantee = 0
        FROM pg_namespace n
        LEFT JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
               ON a.grantee <> n.nspowner
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"""


def _schemas(state: DatabaseState, rows: list[tuple]) -> None:
    for nsp, owner, grantee, priv, grantor, public in rows:
        state.schemas[nsp] = owner
        if public:
            state.public_schema_grants[nsp].add(priv)
        elif grantee is not None:
            state.schema_grants[nsp].add((grantee, priv))
            if grantor is not None:
                state.schema_grantors[(nsp, grantee, priv)].add(grantor)
            else:
                state.schema_owner_grants.add((nsp, grantee, priv))


_OBJECTS = """
        WITH objs AS (
          SELECT c.oid, c.relname::text AS name, c.relnamespace AS nsp, c.relowner AS owner,
                 CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END AS kind,
                 coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                               c.relowner)) AS acl
          FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          UNION ALL
          SELECT p.oid, p.proname::text, p.pronamespace, p.proowner, 'function',
                 coalesce(p.proacl, acldefault('f', p.proowner))
          FROM pg_proc p WHERE p.prokind IN ('f', 'a', 'w')
        ), mine AS (
          SELECT o.*, n.nspname FROM objs o JOIN pg_namespace n ON n.oid = o.nsp
          WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        )"""
_OBJECT_TOTALS = """
        SELECT nspname, kind, pg_get_userbyid(owner), count(*) FROM mine GROUP BY 1, 2, 3"""


def _object_totals(state: DatabaseState, rows: list[tuple]) -> None:
    for nsp, kind, owner, count in rows:
        state.object_totals[(nsp, kind)] = state.object_totals.get((nsp, kind), 0) + count
        state.object_owned[(nsp, kind, owner)] = count


# Distinct objects, not ACL entries: one privilege granted by two grantors is one object.
# Grants made by a role other than the owner are listed by object (a REVOKE must run as them).
_OBJECT_GRANTS = """
        SELECT m.nspname, m.kind, pg_get_userbyid(a.grantee), a.privilege_type, count(DISTINCT m.oid),
               count(DISTINCT m.oid) FILTER (WHERE a.grantor = m.owner),
               array_agg(ARRAY[pg_get_userbyid(a.grantor), m.name] ORDER BY m.name)
                 FILTER (WHERE a.grantor <> m.owner), a.grantee = 0
        FROM mine m, aclexplode(m.acl) a
        WHERE a.grantee <> m.owner GROUP BY 1, 2, 3, 4, 8"""


def _object_grants(state: DatabaseState, rows: list[tuple]) -> None:
    for nsp, kind, grantee, priv, count, by_owner, foreign, public in rows:
        if public:
            state.public_object_grants[(nsp, kind, priv)] = count
            continue
        state.object_grants[(nsp, kind, grantee, priv)] = count
        state.object_owner_grants[(nsp, kind, grantee, priv)] = by_owner
        for grantor, obj in foreign or ():
            state.object_grantors.setdefault((nsp, kind, grantee, priv, grantor), []).append((nsp, obj))


_DEFAULT_GRANTS = """
        SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype,
               pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
             aclexplode(d.defaclacl) a
        WHERE d.defaclobjtype IN ('r', 'S', 'f') AND a.grantee <> 0 AND a.grantee <> d.defaclrole"""


def _default_grants(state: DatabaseState, rows: list[tuple]) -> None:
    for owner, nsp, objtype, grantee, priv in rows:
        state.default_grants[(owner, nsp, DEFAULT_ACL_KIND[objtype])].add((grantee, priv))


_PUBLICATIONS = """
        SELECT p.pubname, p.puballtables, n.nspname, c.relname
        FROM pg_publication p
        LEFT JOIN pg_publication_rel pr ON pr.prpubid = p.oid
        LEFT JOIN pg_class c ON c.oid = pr.prrelid
        LEFT JOIN pg_namespace n ON n.oid = c.relnamespace"""


def _publications(state: DatabaseState, rows: list[tuple]) -> None:
    for pub, alltables, nsp, rel in rows:
        state.publications[pub] = alltables
        if rel is not None:
            state.publication_tables[pub].add((nsp, rel))


_TABLES = """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN unnest(%s::text[], %s::text[]) AS want(s, t) ON want.s = n.nspname AND want.t = c.relname
            WHERE c.relkind IN ('r', 'p')"""


def _tables(state: DatabaseState, rows: list[tuple]) -> None:
    state.tables = {(s, t) for s, t in rows}


_WITHOUT_IDENTITY = """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
              AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (
                     SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))"""


def _without_identity(state: DatabaseState, rows: list[tuple]) -> None:
    state.tables_without_identity = {(s, t) for s, t in rows}


def available_extensions(conn: Any, names: list[str]) -> set[str]:
    return {n for (n,) in _rows(conn, "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                (names,))}


def database_info(conn: Any, name: str) -> DatabaseInfo | None:
    """One pg_database row with its grants (owner and PUBLIC left out)."""
    rows = _rows(conn, """
        SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
               d.datconnlimit, d.datallowconn,
               CASE WHEN a.grantor <> d.datdba THEN pg_get_userbyid(a.grantor) END,
               pg_get_userbyid(a.grantee), a.privilege_type
        FROM pg_database d
        LEFT JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
               ON a.grantee <> 0 AND a.grantee <> d.datdba
        WHERE d.datname = %s""", (name,))
    if not rows:
        return None
    owner, enc, coll, ctype, limit, allow = rows[0][:6]
    grants = frozenset((g, p) for *_, g, p in rows if g is not None)
    foreign = frozenset((g, p, grantor) for *_, grantor, g, p in rows if g is not None and grantor is not None)
    by_owner = frozenset((g, p) for *_, grantor, g, p in rows if g is not None and grantor is None)
    return DatabaseInfo(name, owner, enc, coll, ctype, grants, limit, allow, foreign, by_owner)
