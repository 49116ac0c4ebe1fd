"""Generated code (forgegen/runtime/codegen.py) with real parts: Ariadne GraphQL servers on
loopback (plain, answering introspection; federated, answering ``_service { sdl }``), and the
example's Go (graphql-go/graphql, built with ``go``), Node (graphql-js on node's http module) and
Rust (an async-graphql subgraph, built with ``cargo``) servers started as processes, graphql-js (the pinned helper) printing introspection as SDL, and a real ``@graphql-codegen/cli`` run from
the web client's own pinned ``package.json`` (tests/codegen-example), its ``node_modules`` in
Forge's cache outside the checkout; ``forge update-cargo-nix`` for services that need none, and
for a Rust service with the real crate2nix (``.ci/build-crate2nix`` builds it once per machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import selectors
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest

from forgegen.runtime import federation, npmcache
from tests.fixtures.crate2nix import VERSION
from tests.fixtures.subgraphs import PRODUCTS, _Quiet, _Threading, subgraph_server
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "tests" / "codegen-example"
# The user's cache, as it is before the per-test HOME: .ci/setup installs the pinned packages there.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forge"
REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
# The example's GraphQL servers besides api, and their URL placeholders in deploy.yaml.
SERVERS = {name: f"http://127.0.0.1:{name.upper()}_PORT/graphql" for name in ("catalog", "books", "reviews")}

API_SDL = '''
"""A product on sale."""
type Product {
  id: ID!
  name: String!
  price: Int
}

type Query {
  product(id: ID!): Product
  topProducts(first: Int = 5): [Product!]!
}
'''


@pytest.fixture(autouse=True)
def _shared_node_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_NODE_MODULES_CACHE", str(_CACHE / "node-modules"))
    fed = _CACHE / f"federation-{federation._lock_hash()}" / "node_modules"
    if fed.is_dir():
        monkeypatch.setenv("FORGE_FEDERATION_NODE_MODULES", str(fed))


@contextmanager
def graphql_server(sdl: str) -> Iterator[str]:
    """A plain (not federated) GraphQL server: answers introspection, not ``_service``."""
    from ariadne import make_executable_schema
    from ariadne.wsgi import GraphQL

    port = free_port()
    server = make_server("127.0.0.1", port, GraphQL(make_executable_schema(sdl)), server_class=_Threading,
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/graphql"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _without_services(text: str, names: set[str]) -> str:
    """deploy.yaml's text without the entries of ``names`` under ``services:``."""
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if re.fullmatch(r"  [a-z][a-z0-9-]*:\n", line):
            skip = line.strip().rstrip(":") in names
        if not skip:
            out.append(line)
    return "".join(out)


def repo(tmp_path: Path, url: str, *, via: str | None = None, servers: dict[str, str] | None = None) -> Path:
    """The example in a fresh git repository, its api's schema URL set to ``url`` and each of
    ``servers``' (catalog, books) to the URL given; the others of SERVERS are left out of
    deploy.yaml, so that codegen-sync asks only the servers a test starts. Synced."""
    dst = tmp_path / "repo"
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("node_modules"))
    text = (dst / "deploy.yaml").read_text().replace("http://127.0.0.1:API_PORT/graphql", url)
    text = _without_services(text, set(SERVERS) - set(servers or {}))
    for name, served in (servers or {}).items():
        text = text.replace(SERVERS[name], served)
    if via:
        text = text.replace("output: services/api/schema.graphql}", f"output: services/api/schema.graphql, via: {via}}}")
    (dst / "deploy.yaml").write_text(text)
    assert forgegen(dst, "sync").returncode == 0
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "example")
    return dst


def forgegen(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True)


def forge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "forge"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts and "node_modules" not in p.parts}


def test_extract_schema_by_introspection_writes_the_sdl_graphql_js_prints(tmp_path: Path) -> None:
    with graphql_server(API_SDL) as url:
        root = repo(tmp_path, url)
        out = forge(root, "extract-schema", "api", "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["extracted"][0]["via"] == "introspection"
        assert doc["files"] == [{"path": "services/api/schema.graphql", "verb": "identical"}]  # committed = served
        again = forge(root, "extract-schema", "api", "--check")
        assert again.returncode == 0, again.stderr
    sdl = (root / "services/api/schema.graphql").read_text()
    assert '"""A product on sale."""\ntype Product {' in sdl  # descriptions survive
    assert "topProducts(first: Int = 5): [Product!]!" in sdl  # and default values
    assert sdl == (EXAMPLE / "services/api/schema.graphql").read_text()


def test_extract_schema_takes_the_federation_sdl_when_the_service_serves_it(tmp_path: Path) -> None:
    with subgraph_server("products", PRODUCTS) as sub:
        root = repo(tmp_path, sub.url)
        out = forge(root, "extract-schema", "api", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["extracted"][0]["via"] == "federation"
        assert (root / "services/api/schema.graphql").read_text() == PRODUCTS.rstrip("\n") + "\n"
        (root / "deploy.yaml").write_text((root / "deploy.yaml").read_text().replace(
            "output: services/api/schema.graphql}", "output: services/api/schema.graphql, via: introspection}"))
        assert forgegen(root, "sync").returncode == 0
        plain = forge(root, "extract-schema", "api", "--json")
        assert plain.returncode == 0, plain.stderr
    sdl = (root / "services/api/schema.graphql").read_text()
    # Introspection carries directive definitions but not their uses, and shows the federation fields.
    assert "type Product {" in sdl and 'type Product @key(fields: "id")' not in sdl and "_service: _Service!" in sdl


@contextmanager
def started(name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """``argv`` run in ``cwd`` with PORT set, until it prints ``<name>: listening on
    127.0.0.1:<port>``: its GraphQL URL and that line. Stopped (SIGTERM) afterwards."""
    port = free_port()
    proc = subprocess.Popen(argv, cwd=cwd, env={**env, "PORT": str(port)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=120)  # a line, or end of file when it exits
        line = proc.stdout.readline() if ready else ""
        if not line.startswith(f"{name}: listening on 127.0.0.1:{port}"):
            proc.kill()
            pytest.fail(f"{name} did not start (exit {proc.wait(timeout=30)}): {line!r} {proc.communicate()[1]}")
        yield f"http://127.0.0.1:{port}/graphql", line
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def go_env() -> dict[str, str]:
    """The machine user's Go caches (.ci/setup downloads the catalog's module into them), the
    module proxy off: the test builds from them or fails, it never downloads."""
    gopath = Path(os.environ.get("GOPATH") or REAL_HOME / "go")
    return {**os.environ, "GOCACHE": os.environ.get("GOCACHE") or str(REAL_HOME / ".cache" / "go-build"),
            "GOMODCACHE": os.environ.get("GOMODCACHE") or str(gopath / "pkg" / "mod"), "GOPROXY": "off",
            "GOFLAGS": "-buildvcs=false -p=1 -mod=readonly", "GOTOOLCHAIN": "local"}


def test_extract_schema_from_a_go_graphql_server_by_introspection(tmp_path: Path) -> None:
    binary = tmp_path / "catalog-server"
    build = subprocess.run(["nice", "-n", "19", "go", "build", "-o", str(binary), "."], cwd=EXAMPLE / "services/catalog",
                           env=go_env(), capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, f"go build (the module comes from .ci/setup's `go mod download`): {build.stderr}"
    with started("catalog", [str(binary)], tmp_path, dict(os.environ)) as (url, _line):
        root = repo(tmp_path, "http://127.0.0.1:1/graphql", servers={"catalog": url})
        committed = (root / "services/catalog/schema.graphql").read_text()
        out = forge(root, "extract-schema", "catalog", "--json")
        assert out.returncode == 0, out.stderr
        # graphql-go lists the types in Go's map order, another on every answer; Forge writes the
        # schema sorted, so asking again (and again) finds it up to date.
        for _ in range(3):
            check = forge(root, "extract-schema", "catalog", "--check")
            assert check.returncode == 0, check.stderr
    doc = json.loads(out.stdout)
    # Not a subgraph: `_service` fails validation (HTTP 400 with a JSON body), so introspection.
    assert [(e["service"], e["via"], e["file"]) for e in doc["extracted"]] == [
        ("catalog", "introspection", "services/catalog/schema.graphql")]
    sdl = (root / "services/catalog/schema.graphql").read_text()
    # Sorted by name (types, fields, arguments); graphql-go answers a missing description with "",
    # which graphql-js prints as """""".
    assert sdl == committed and sdl.endswith("}\n")
    assert doc["files"] == [{"path": "services/catalog/schema.graphql", "verb": "identical"}]
    assert '  """What the shelf label says."""\n  title: String!\n' in sdl
    assert '  """"""\n  items(first: Int = 10): [Item!]!\n' in sdl
    assert '  GAMES @deprecated(reason: "sold out for good")\n' in sdl
    assert "_service" not in sdl and "_Service" not in sdl


def graphql_js_modules() -> Path:
    """The graphql-js the web client pins, in Forge's npm cache (.ci/setup installs it)."""
    modules = _CACHE / "node-modules" / npmcache.lock_key(EXAMPLE / "services/web") / "node_modules"
    if not (modules / "graphql/package.json").is_file():
        pytest.fail(f"the codegen example's npm packages are not installed in {modules}; run bash .ci/setup",
                    pytrace=False)
    return modules


def test_extract_schema_from_a_node_graphql_js_server_by_introspection(tmp_path: Path) -> None:
    service = EXAMPLE / "services/books"
    modules = graphql_js_modules()
    pinned = json.loads((service / "package.json").read_text())["dependencies"]["graphql"]
    assert json.loads((modules / "graphql/package.json").read_text())["version"] == pinned
    env = {**os.environ, "NODE_PATH": str(modules)}
    printed = subprocess.run(["node", "server.js", "--print-schema"], cwd=service, env=env, capture_output=True,
                             text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    with started("books", ["node", "server.js"], service, env) as (url, line):
        assert line.rstrip().endswith(f"(graphql {pinned})")
        root = repo(tmp_path, "http://127.0.0.1:1/graphql", servers={"books": url})
        (root / "services/books/schema.graphql").write_text("type Query { stale: Int }\n")
        out = forge(root, "extract-schema", "books", "--json")
        assert out.returncode == 0, out.stderr
        check = forge(root, "extract-schema", "books", "--check")
        assert check.returncode == 0, check.stderr
    doc = json.loads(out.stdout)
    assert [(e["service"], e["via"]) for e in doc["extracted"]] == [("books", "introspection")]
    assert doc["files"] == [{"path": "services/books/schema.graphql", "verb": "overwrite"}]
    sdl = (root / "services/books/schema.graphql").read_text()
    # Exactly what graphql-js prints for the server's own schema, sorted: descriptions, default values
    # (an enum's too), the input type, the mutation and the deprecation survive introspection.
    assert sdl == printed.stdout == (EXAMPLE / "services/books/schema.graphql").read_text()
    assert "books(after: ID, first: Int = 20): [Book!]!" in sdl  # sorted by name and "format: Format = PAPERBACK" in sdl
    assert git(root, "status", "--porcelain") == ""  # the committed schema is the served one


def rust_target(lock: Path) -> Path:
    """Where the reviews server's build lives, outside the checkout: keyed on its Cargo.lock."""
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    return REAL_HOME / ".cache" / "forge" / "codegen-reviews" / key


def cargo_env() -> dict[str, str]:
    """rustup's toolchain and the machine user's crates (.ci/setup fetches the server's); one job."""
    return {**os.environ, "RUSTUP_HOME": os.environ.get("RUSTUP_HOME") or str(REAL_HOME / ".rustup"),
            "CARGO_HOME": os.environ.get("CARGO_HOME") or str(REAL_HOME / ".cargo"), "CARGO_BUILD_JOBS": "1"}


def test_extract_schema_from_a_rust_async_graphql_subgraph_by_federation_and_introspection(tmp_path: Path) -> None:
    service = EXAMPLE / "services/reviews"
    target = rust_target(service / "Cargo.lock")
    build = subprocess.run(["nice", "-n", "19", "cargo", "build", "--locked", "--offline", "--target-dir", str(target)],
                           cwd=service, env=cargo_env(), capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, f"cargo build (the crates come from .ci/setup's `cargo fetch`): {build.stderr}"
    binary = target / "debug" / "reviews"
    printed = subprocess.run([str(binary), "--print-schema"], capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    with started("reviews", [str(binary)], tmp_path, dict(os.environ)) as (url, _line):
        root = repo(tmp_path, "http://127.0.0.1:1/graphql", servers={"reviews": url})
        out = forge(root, "extract-schema", "reviews", "--json")
        assert out.returncode == 0, out.stderr
        check = forge(root, "extract-schema", "reviews", "--check")
        assert check.returncode == 0, check.stderr
        sdl = (root / "services/reviews/schema.graphql").read_text()
        (root / "deploy.yaml").write_text((root / "deploy.yaml").read_text().replace(
            "output: services/reviews/schema.graphql}", "output: services/reviews/schema.graphql, via: introspection}"))
        assert forgegen(root, "sync").returncode == 0
        plain = forge(root, "extract-schema", "reviews", "--json")
        assert plain.returncode == 0, plain.stderr
    doc = json.loads(out.stdout)
    assert [(e["service"], e["via"]) for e in doc["extracted"]] == [("reviews", "federation")]
    assert doc["files"] == [{"path": "services/reviews/schema.graphql", "verb": "identical"}]
    # The subgraph SDL exactly as async-graphql prints it: the entity's @key and the @link of
    # Federation 2 included.
    assert sdl == printed.stdout == (EXAMPLE / "services/reviews/schema.graphql").read_text()
    assert 'type Review @key(fields: "id") {' in sdl and "specs.apollo.dev/federation/v2" in sdl
    assert [(e["service"], e["via"]) for e in json.loads(plain.stdout)["extracted"]] == [("reviews", "introspection")]
    introspected = (root / "services/reviews/schema.graphql").read_text()
    # Introspection, printed by graphql-js: no directive uses, and the federation fields show.
    # (sorted by name, as Forge writes every introspected schema).
    assert ("type Review {\n  body: String!\n  id: ID!\n\n  \"\"\"The reviewed product's id.\"\"\"\n  productId: ID!\n"
            "  rating: Rating!\n}\n") in introspected
    assert "  _service: _Service!\n" in introspected
    assert "reviews(first: Int! = 10, productId: ID!): [Review!]!\n}\n" in introspected
    assert "union _Entity = Review\n" in introspected and "@key" not in introspected


def test_a_service_that_does_not_answer_fails_naming_it_and_writes_nothing(tmp_path: Path) -> None:
    root = repo(tmp_path, f"http://127.0.0.1:{free_port()}/graphql")
    before = snapshot(root)
    out = forge(root, "codegen-sync")
    assert out.returncode == 1
    assert "cannot reach api at http://127.0.0.1:" in out.stderr and "dev-up:api" in out.stderr
    assert snapshot(root) == before


def test_codegen_runs_the_pinned_graphql_codegen_for_types_and_hooks(tmp_path: Path) -> None:
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    generated = root / "services/web/src/generated/graphql.ts"
    committed = generated.read_text()
    shutil.rmtree(generated.parent)
    (root / "services/web/src/generated").mkdir()
    (root / "services/web/src/generated/old-name.ts").write_text("// what an earlier configuration generated\n")
    out = forge(root, "codegen", "web", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["files"] == [{"path": "services/web/src/generated/graphql.ts", "verb": "create"},
                            {"path": "services/web/src/generated/old-name.ts", "verb": "remove"}]
    assert not (root / "services/web/src/generated/old-name.ts").exists()
    text = generated.read_text()
    assert text == committed
    assert "export type Product = {" in text and "export function useTopProductsQuery(" in text
    # The packages live in Forge's cache, keyed on the lockfile, never in the checkout.
    assert not (root / "services/web/node_modules").exists()
    cache = Path(os.environ["FORGE_NODE_MODULES_CACHE"])
    assert any((d / "node_modules/@graphql-codegen/cli/package.json").is_file() for d in cache.iterdir())


def test_codegen_sync_check_names_what_is_out_of_date_then_sync_writes_it(tmp_path: Path) -> None:
    changed = API_SDL.replace("  price: Int\n", "  price: Int\n  inStock: Boolean!\n")
    with graphql_server(changed) as url:
        root = repo(tmp_path, url)
        before = snapshot(root)
        dry = forge(root, "codegen-sync", "--dry-run", "--json")
        assert [s["step"] for s in json.loads(dry.stdout)["steps"]] == ["extract-schema", "codegen"]
        check = forge(root, "codegen-sync", "--check", "--json")
        assert check.returncode == 1, check.stderr
        assert ("2 generated file(s) out of date: services/api/schema.graphql, "
                "services/web/src/generated/graphql.ts") in check.stderr
        assert snapshot(root) == before  # --check writes nothing
        synced = forge(root, "codegen-sync", "--json")
        assert synced.returncode == 0, synced.stderr
        assert {f["path"]: f["verb"] for f in json.loads(synced.stdout)["files"]} == {
            "services/api/schema.graphql": "overwrite", "services/web/src/generated/graphql.ts": "overwrite"}
        assert "inStock: Scalars['Boolean']['output'];" in (root / "services/web/src/generated/graphql.ts").read_text()
        assert forge(root, "codegen-sync", "--check").returncode == 0
        changes = git(root, "status", "--porcelain", "--untracked-files=all").split("\n")
        assert sorted(c for c in changes if c) == [" M services/api/schema.graphql",
                                                    " M services/web/src/generated/graphql.ts"]


def test_a_failing_generator_fails_with_its_output_and_writes_nothing(tmp_path: Path) -> None:
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    (root / "services/web/src/queries.graphql").write_text("query Broken { nope }\n")
    before = snapshot(root)
    out = forge(root, "codegen")
    assert out.returncode == 1
    assert "cannot run the code generator of web" in out.stderr and "nope" in out.stderr
    assert snapshot(root) == before


def test_services_without_codegen_are_refused_with_the_setting(tmp_path: Path) -> None:
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    out = forge(root, "extract-schema", "web")
    assert out.returncode == 2
    assert "web declares no codegen extract" in out.stderr and "services.web.codegen.extract" in out.stderr


@pytest.mark.parametrize(("codegen", "problem"), [
    ("{}", "codegen needs 'extract'"),
    ("{command: npx graphql-codegen}", "services.web.codegen.outputs: a codegen command needs 'outputs'"),
    ("{extract: {url: 'ftp://x/graphql', output: s.graphql}}", "is not an http:// or https:// URL"),
    ("{extract: {url: 'https://u:secret@x/graphql', output: s.graphql}}", "services.web.codegen.extract.url"),
    ("{extract: {url: 'http://x/graphql', output: ../s.graphql}}", "services.web.codegen.extract.output"),
])
def test_bad_codegen_settings_are_refused_with_where(tmp_path: Path, codegen: str, problem: str) -> None:
    (tmp_path / "deploy.yaml").write_text(
        (EXAMPLE / "deploy.yaml").read_text().split("  web:")[0].replace("API_PORT", "1")
        + f"  web:\n    codegen: {codegen}\n")
    out = forgegen(tmp_path, "check")
    assert out.returncode == 2, out.stderr
    assert problem in out.stderr and "secret" not in out.stderr


def test_update_cargo_nix_says_when_a_build_needs_no_cargo_nix(tmp_path: Path) -> None:
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    out = forge(root, "update-cargo-nix", "api", "--json")
    assert out.returncode == 0, out.stderr
    assert "api is a python service: its build needs no Cargo.nix; nothing to do" in out.stderr
    assert json.loads(out.stdout)["needed"] is False
    (root / "deploy.yaml").write_text((root / "deploy.yaml").read_text().replace("type: python", "type: rust"))
    assert forgegen(root, "sync").returncode == 0
    rust = forge(root, "update-cargo-nix", "api")
    assert rust.returncode == 0 and "builds without a generated Cargo.nix" in rust.stderr
    (root / "services/api/Cargo.nix").write_text("# crate2nix output\n")
    dry = forge(root, "update-cargo-nix", "api", "--dry-run", "--json")
    assert json.loads(dry.stdout)["command"] == ["crate2nix", "generate", "-f", "Cargo.toml", "-o", "Cargo.nix"]


def test_the_flake_apps_run_the_commands(shop) -> None:  # type: ignore[no-untyped-def]
    cargo = shop.run_app("update-cargo-nix:api", "--json", check=False)
    assert cargo.returncode == 0, cargo.stderr
    assert "api is a python service: its build needs no Cargo.nix" in cargo.stderr
    assert json.loads(cargo.stdout)["needed"] is False
    web = shop.run_app("codegen:web", check=False)
    assert web.returncode == 2 and "services.web.codegen.command" in web.stderr
    everything = shop.run_app("codegen-sync", "--dry-run", "--json", check=False)
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout)["steps"] == []  # the example declares no codegen
    show = json.loads(shop.nix("flake", "show", "--json").stdout)["apps"]["x86_64-linux"]
    assert {"codegen", "codegen-sync", "extract-schema:api", "codegen:web", "update-cargo-nix:web"} <= set(show)


def test_update_cargo_nix_without_crate2nix_says_how_to_get_it(tmp_path: Path) -> None:
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    (root / "deploy.yaml").write_text((root / "deploy.yaml").read_text().replace("type: python", "type: rust"))
    assert forgegen(root, "sync").returncode == 0
    (root / "services/api/Cargo.nix").write_text("# crate2nix output\n")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "crate2nix").exists())
    out = subprocess.run([str(Path(sys.executable).parent / "forge"), "update-cargo-nix", "api"], cwd=root,
                         capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert out.returncode == 1, out.stderr
    assert "'crate2nix' is not on PATH" in out.stderr and "cargo install crate2nix" in out.stderr
    assert (root / "services/api/Cargo.nix").read_text() == "# crate2nix output\n"


def rust_api(tmp_path: Path) -> Path:
    """The example with its api a Rust service: the shop's inventory crate (no dependencies, so
    ``cargo metadata`` needs no registry), a stand-in Cargo.nix committed beside it."""
    root = repo(tmp_path, "http://127.0.0.1:1/graphql")
    (root / "deploy.yaml").write_text((root / "deploy.yaml").read_text().replace("type: python", "type: rust"))
    assert forgegen(root, "sync").returncode == 0
    crate = ROOT / "examples" / "shop" / "services" / "inventory"
    for name in ("Cargo.toml", "Cargo.lock"):
        shutil.copy2(crate / name, root / "services/api" / name)
    shutil.copytree(crate / "src", root / "services/api/src")
    (root / "services/api/Cargo.nix").write_text("# crate2nix output\n")
    return root


def test_update_cargo_nix_regenerates_cargo_nix_with_the_real_crate2nix(tmp_path: Path, crate2nix: Path) -> None:
    root = rust_api(tmp_path)
    cargo_nix = root / "services/api/Cargo.nix"
    first = forge(root, "update-cargo-nix", "api", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["needed"], doc["changed"], doc["file"]) == (True, True, "services/api/Cargo.nix")
    generated = cargo_nix.read_text()
    assert f"@generated by crate2nix {VERSION}" in generated and 'crateName = "inventory";' in generated and 'version = "0.1.0";' in generated
    parse = subprocess.run(["nix-instantiate", "--parse", str(cargo_nix)], capture_output=True, text=True, timeout=60)
    assert parse.returncode == 0, parse.stderr
    again = forge(root, "update-cargo-nix", "api", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False and cargo_nix.read_text() == generated
    for name in ("Cargo.toml", "Cargo.lock"):
        manifest = root / "services/api" / name
        manifest.write_text(manifest.read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1))
    bumped = forge(root, "update-cargo-nix", "api", "--json")
    assert bumped.returncode == 0, bumped.stderr
    assert json.loads(bumped.stdout)["changed"] is True and "Cargo.nix updated" in bumped.stderr
    assert 'version = "0.2.0";' in cargo_nix.read_text() and 'version = "0.1.0";' not in cargo_nix.read_text()


def test_a_second_crate2nix_build_builds_nothing(crate2nix: Path) -> None:
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "build-crate2nix")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(crate2nix.parent)
    assert proc.stderr == ""  # no "building" line: it came from the cache
    version = subprocess.run([str(crate2nix), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and VERSION in version.stdout, version.stdout + version.stderr


FAKE_CARGO = """#!/bin/sh
# cargo install ... --root ROOT: writes ROOT/bin/crate2nix, then exits with $FAKE_CARGO_STATUS
[ "$1" = --version ] && { echo "cargo 0.0.0 (stand-in)"; exit 0; }
while [ "$1" != --root ]; do shift; done
mkdir -p "$2/bin" && printf '#!/bin/sh\\necho crate2nix stand-in\\n' >"$2/bin/crate2nix" && chmod +x "$2/bin/crate2nix"
echo "cargo stand-in output"
exit "$FAKE_CARGO_STATUS"
"""


def test_build_crate2nix_leaves_no_half_cache_when_cargo_install_fails(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "cargo").write_text(FAKE_CARGO)
    (tools / "cargo").chmod(0o755)
    cache = tmp_path / "cache"
    env = {**os.environ, "PATH": os.pathsep.join([str(tools), os.environ["PATH"]]), "FORGE_CRATE2NIX_CACHE": str(cache)}
    build = ["bash", str(ROOT / ".ci" / "build-crate2nix")]
    failed = subprocess.run(build, capture_output=True, text=True, timeout=60, env={**env, "FAKE_CARGO_STATUS": "101"})
    assert failed.returncode == 1 and failed.stdout == ""
    assert "cargo install exited 101" in failed.stderr and "cargo stand-in output" in failed.stderr
    assert not (cache / VERSION).exists()  # the half-built root was never renamed into place
    built = subprocess.run(build, capture_output=True, text=True, timeout=60, env={**env, "FAKE_CARGO_STATUS": "0"})
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == str(cache / VERSION / "bin") and f"crate2nix {VERSION} built in" in built.stderr
    assert sorted(p.name for p in cache.iterdir()) == [".build-" + VERSION + ".log", ".lock", VERSION]
