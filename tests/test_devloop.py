"""The development loop: deploy.yaml's ``dev`` (test pyramid, infra), ``forge test``, ``forge e2e``,
``forge dev``, with real pytest, go, PostgreSQL and forge-provision."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from forgegen.errors import ConfigError
from forgegen.plan import build_plan
from forgegen.schema import parse_config
from tests.fixtures.shop import without_dev

BASE = """version: 1
project: p
registry: {host: ghcr.io, organization: acme}
gitops: {repo: ../gitops}
environments: [{name: prod}]
services:
"""


def _dev(services: str):
    config = parse_config(BASE + services)
    return {s.name: s.dev for s in build_plan(config, list(config.services)).services}


def test_levels_default_per_type_and_null_means_not_configured() -> None:
    dev = _dev("  api: {type: python}\n  core: {type: rust, dev: {unit: null, e2e: 'make e2e'}}\n"
               "  gen: {type: generic}\n  legacy: {type: go, dev: {test: 'go test ./...'}}\n")
    assert (dev["api"].unit, dev["api"].integration, dev["api"].e2e) == (
        "pytest -q tests/unit", "pytest -q tests/integration", "pytest -q tests/e2e")
    assert dev["api"].test is None and dev["api"].postgres is None
    assert (dev["core"].unit, dev["core"].integration, dev["core"].e2e) == (None, "cargo test --tests", "make e2e")
    assert (dev["gen"].unit, dev["gen"].integration, dev["gen"].e2e) == (None, None, None)
    assert dev["legacy"].test == "go test ./..." and dev["legacy"].unit == "go test -short ./..."


def test_infra_and_start_settings_reach_the_plan() -> None:
    dev = _dev("  api:\n    type: python\n    dev:\n      start: python -m api\n"
               "      health: 'http://127.0.0.1:{port}/healthz'\n      health_timeout: 2m\n"
               "      infra: {postgres: {provision: provision/api.yaml}}\n  db: {dev: {infra: {postgres: {}}}}\n")
    assert dev["api"].start == "python -m api" and dev["api"].health == "http://127.0.0.1:{port}/healthz"
    assert dev["api"].health_timeout == 120.0
    assert dev["api"].postgres is not None and dev["api"].postgres.provision == "provision/api.yaml"
    assert dev["db"].postgres is not None and dev["db"].postgres.provision is None


def test_bad_dev_settings_are_located_and_explained() -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(BASE + "  api:\n    dev:\n      health: '127.0.0.1:{port}'\n"
                            "      infra: {postgres: {provision: ../x.yaml}, redis: {}}\n")
    text = str(bad.value)
    assert "services.api.dev.health" in text and "http(s) URL" in text
    assert "services.api.dev.infra.postgres.provision" in text and "'..'" in text
    assert "services.api.dev.infra.redis" in text


# ---------------------------------------------------------------------------------------------
# Real runs: a repository in a temp dir, services run by real pytest / go, a real PostgreSQL

VENV_BIN = Path(sys.executable).parent
DEADLINE = 300.0  # generous: the machine is shared

PY_SERVICE = {
    "app.py": """\
import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
""",
    "tests/unit/test_unit.py": "def test_adds():\n    assert 1 + 1 == 2\n",
    "tests/integration/test_db.py": """\
import os, psycopg
def test_the_provisioned_database():
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("select current_database()").fetchone()[0] == "apidb"
        owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = 'apidb'").fetchone()
        assert owner[0] == "api_owner"
""",
    "tests/e2e/test_health.py": """\
import os, pathlib, urllib.request
def test_health():
    pathlib.Path(os.environ["FORGE_TEST_RESULTS"], "trace.txt").write_text("kept")
    assert urllib.request.urlopen(os.environ["FORGE_BASE_URL"] + "/healthz").status == 200
""",
}
PROVISION = """\
version: 1
connection: {host: db.example, password_env: PGADMIN_PASSWORD}
roles:
  - {name: api_owner, login: true, password_env: API_OWNER_PASSWORD}
databases:
  - {name: apidb, owner: api_owner}
"""
API = """\
  api:
    type: python
    path: svc/api
    dev:
      start: python "$PWD/app.py"
      health: "http://127.0.0.1:{port}/healthz"
      infra: {postgres: {provision: prov/api.yaml}}
"""


def make_repo(root: Path, services: str, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.yaml").write_text(BASE + services)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    sync = subprocess.run([VENV_BIN / "forgegen", "sync"], cwd=root, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    return root


def python_repo(root: Path, services: str = API, extra: dict[str, str] | None = None) -> Path:
    files = {f"svc/api/{k}": v for k, v in PY_SERVICE.items()} | {"prov/api.yaml": PROVISION} | (extra or {})
    return make_repo(root, services, files)


def forge_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}


@dataclass
class Ran:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def forge(root: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    return finish(start_forge(root, *args, env=env))


def start_forge(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``forge ARGS`` in ``root``; its output goes to files (processes it leaves behind after a
    SIGKILL would hold a pipe open)."""
    out = tempfile.TemporaryFile("w+")
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([VENV_BIN / "forge", *args], cwd=root, env={**forge_env(), **(env or {})}, text=True,
                            stdout=out, stderr=err)
    proc.outputs = (out, err)  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen[str]) -> Ran:
    proc.wait(timeout=DEADLINE)
    texts = []
    for f in proc.outputs:  # type: ignore[attr-defined]
        f.seek(0)
        texts.append(f.read())
        f.close()
    return Ran(proc.pid, proc.returncode, *texts)


def processes_matching(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_pyramid_runs_every_level_with_postgres_and_the_started_service(tmp_path: Path) -> None:
    root = python_repo(tmp_path)
    proc = forge(root, "test", "api", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["outcome"] == "passed"
    levels = doc["services"][0]["levels"]
    assert [(lv["level"], lv["outcome"]) for lv in levels] == [("unit", "passed"), ("integration", "passed"),
                                                              ("e2e", "passed")]
    assert (root / ".forge/test-results/api/e2e/trace.txt").read_text() == "kept"
    assert list((root / ".forge/dev/runs").glob("*.json")) == []
    assert processes_matching(str(root / "svc/api/app.py")) == []  # the started service is stopped
    assert processes_matching(f"forge-dev-pg-{proc.pid}-") == []  # nor its PostgreSQL servers


def test_a_failing_level_stops_the_pyramid_and_is_named(tmp_path: Path) -> None:
    root = python_repo(tmp_path, extra={"svc/api/tests/integration/test_db.py": "def test_broken():\n    assert 0\n"})
    proc = forge(root, "test", "api", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    report = doc["services"][0]
    assert (doc["outcome"], report["failed_level"]) == ("failed", "integration")
    assert [lv["outcome"] for lv in report["levels"]] == ["passed", "failed", "not-run"]
    assert "api: the integration level failed" in proc.stderr
    assert not (root / ".forge/test-results/api/e2e").exists()  # e2e never started
    assert processes_matching(f"forge-dev-pg-{proc.pid}-") == []


def _interrupt_integration(tmp_path: Path, sig: signal.Signals) -> tuple[Path, Ran, list[int], list[int]]:
    """Start `forge test api:integration` whose tests block, and send ``sig`` to the runner once the
    tests run; returns what ran, and the PostgreSQL and test processes alive right after the signal."""
    marker = tmp_path / "tests-running"
    blocker = f"forge-test-blocker-{os.getpid()}-{tmp_path.name}"  # the tests' process name, to find it
    services = API.replace('      start:', f"      integration: touch {marker} && exec -a {blocker} sleep 3600\n      start:")
    root = python_repo(tmp_path / "repo", services)
    proc = start_forge(root, "test", "api:integration")
    wait_for(marker.exists, "the integration tests to start")
    postgres = processes_matching(f"forge-dev-pg-{proc.pid}-")
    assert postgres, "the level's PostgreSQL runs while its tests do"
    proc.send_signal(sig)
    return root, finish(proc), processes_matching(f"forge-dev-pg-{proc.pid}-"), \
        processes_matching(blocker)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_tears_its_postgres_down(tmp_path: Path, sig: signal.Signals) -> None:
    root, ran, postgres, tests = _interrupt_integration(tmp_path, sig)
    assert ran.returncode == 130, ran.stderr
    assert (postgres, tests) == ([], [])
    assert list((root / ".forge/dev/runs").glob("*.json")) == []


def test_a_killed_run_is_cleaned_up_by_the_next_forge_command(tmp_path: Path) -> None:
    root, ran, postgres, tests = _interrupt_integration(tmp_path, signal.SIGKILL)
    assert ran.returncode == -signal.SIGKILL
    assert postgres and tests, "SIGKILL leaves the server and the tests running: the next command must stop them"
    status = json.loads(forge(root, "dev", "status", "--json").stdout)
    [session] = status["sessions"]
    assert (session["service"], session["kind"], session["owner"], session["owner_running"]) == (
        "api", "run", ran.pid, False)
    assert session["postgres"]["running"]
    down = forge(root, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert "stopped what an interrupted run left: api" in down.stderr
    assert processes_matching(f"forge-dev-pg-{ran.pid}-") == []
    assert processes_matching(f"forge-test-blocker-{os.getpid()}-{tmp_path.name}") == []
    assert json.loads(forge(root, "dev", "status", "--json").stdout)["sessions"] == []


GO_SERVICE = {
    "go.mod": "module example.com/core\n\ngo 1.21\n",
    "core.go": "package core\n\nfunc Add(a, b int) int { return a + b }\n",
    "core_test.go": """\
package core

import "testing"

func TestAdd(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("Add(1, 2) != 3")
	}
}
""",
    "db_integration_test.go": """\
//go:build integration

package core

import (
	"net"
	"os"
	"strings"
	"testing"
)

func TestDatabaseAnswers(t *testing.T) {
	url := os.Getenv("DATABASE_URL")
	if !strings.HasPrefix(url, "postgresql://") {
		t.Fatalf("DATABASE_URL not set: %q", url)
	}
	conn, err := net.Dial("tcp", net.JoinHostPort(os.Getenv("PGHOST"), os.Getenv("PGPORT")))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if os.Getenv("BREAK") != "" {
		t.Fatal("broken on purpose")
	}
}
""",
}


def test_a_go_service_runs_its_levels_and_product_wide_test_runs_every_service(tmp_path: Path) -> None:
    services = ("  api: {type: python, path: svc/api, dev: {integration: null, e2e: null}}\n"
                "  core:\n    type: go\n    path: svc/core\n    dev: {infra: {postgres: {}}}\n")
    files = {f"svc/core/{k}": v for k, v in GO_SERVICE.items()}
    root = python_repo(tmp_path, services, files)
    # The machine's Go build cache (concurrency-safe): HOME is per test, and a cold cache compiles
    # the standard library again.
    gocache = {"GOCACHE": os.environ.get("GOCACHE") or str(Path(pwd.getpwuid(os.getuid()).pw_dir, ".cache/go-build"))}
    core = forge(root, "test", "core", "--json", env=gocache)
    assert core.returncode == 0, core.stderr
    levels = json.loads(core.stdout)["services"][0]["levels"]
    assert [(lv["level"], lv["outcome"]) for lv in levels] == [
        ("unit", "passed"), ("integration", "passed"), ("e2e", "not-configured")]
    assert "core:e2e: not configured (services.core.dev.e2e)" in core.stderr
    whole = forge(root, "test", "--json", env={"BREAK": "1", **gocache})
    assert whole.returncode == 1
    doc = json.loads(whole.stdout)
    assert [(s["service"], s["outcome"], s["failed_level"]) for s in doc["services"]] == [
        ("api", "passed", None), ("core", "failed", "integration")]
    assert "core: the integration level failed" in whole.stderr


def test_dev_up_is_idempotent_writes_the_env_file_and_dev_down_stops_it(tmp_path: Path) -> None:
    root = python_repo(tmp_path)
    first = forge(root, "dev", "up", "api", "--json")
    assert first.returncode == 0, first.stderr
    [up] = json.loads(first.stdout)["services"]
    assert (up["state"], up["changed"]) == ("up", True)
    env_file = root / ".forge/dev/api.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env["PGDATABASE"] == "'apidb'" and env["PGPORT"] == f"'{up['postgres']['port']}'"
    check = subprocess.run(["bash", "-c", f"set -a; . {env_file}; psql \"$DATABASE_URL\" -Atc 'select current_user'"],
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "postgres", check.stderr
    again = json.loads(forge(root, "dev", "up", "api", "--json").stdout)["services"][0]
    assert (again["changed"], again["postgres"]) == (False, up["postgres"])
    status = forge(root, "dev", "status")
    assert f"api [dev]  postgres :{up['postgres']['port']} running" in status.stdout
    down = forge(root, "dev", "down", "--json")
    assert [s["changed"] for s in json.loads(down.stdout)["services"]] == [True]
    assert not env_file.exists() and forge(root, "dev", "status").stdout.startswith("nothing runs")
    assert json.loads(forge(root, "dev", "down", "--json").stdout)["services"][0]["changed"] is False
    assert processes_matching(f"forge-dev-pg-{first.pid}-") == []


def test_e2e_prepare_starts_the_service_and_e2e_run_drives_it(tmp_path: Path) -> None:
    root = python_repo(tmp_path)
    assert forge(root, "e2e", "run", "api").returncode == 2  # nothing prepared
    prepared = forge(root, "e2e", "prepare", "api", "--json")
    assert prepared.returncode == 0, prepared.stderr
    base = json.loads(prepared.stdout)["base_url"]
    assert urllib.request.urlopen(base + "/healthz").status == 200
    assert json.loads(forge(root, "e2e", "prepare", "api", "--json").stdout)["changed"] is False
    ran = forge(root, "e2e", "run", "api", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outcome"] == "passed"
    assert (root / ".forge/test-results/api/e2e/trace.txt").read_text() == "kept"
    assert forge(root, "dev", "down", "api").returncode == 0
    assert processes_matching(str(root / "svc/api/app.py")) == []
    assert processes_matching(f"forge-dev-pg-{prepared.pid}-") == []


def test_a_service_that_never_gets_healthy_fails_e2e_with_its_log(tmp_path: Path) -> None:
    services = API.replace("/healthz", "/missing").replace("start:", "health_timeout: 5s\n      start:")
    root = python_repo(tmp_path, services)
    proc = forge(root, "test", "api:e2e")
    assert proc.returncode == 1
    assert "api: not ready within 5s (http://127.0.0.1:" in proc.stderr and "HTTP 404" in proc.stderr
    assert processes_matching(str(root / "svc/api/app.py")) == []
    crash = python_repo(tmp_path / "crash", API.replace('"$PWD/app.py"', "-c 'raise SystemExit(\"boom\")'"))
    proc = forge(crash, "e2e", "prepare", "api")
    assert proc.returncode == 1 and "exited with 1 before it was ready" in proc.stderr and "boom" in proc.stderr
    assert json.loads(forge(crash, "dev", "status", "--json").stdout)["sessions"] == []


def test_dry_run_usage_errors_and_the_single_test_command(tmp_path: Path) -> None:
    services = API + "  gen: {path: svc/gen}\n  old: {type: generic, path: svc/gen, dev: {test: \"printf '<%s>' $ARGS\"}}\n"
    root = python_repo(tmp_path, services, {"svc/gen/.keep": ""})
    dry = json.loads(forge(root, "test", "api", "--dry-run", "--json").stdout)
    assert [s["step"] for s in dry["steps"]] == ["run", "postgres", "run", "teardown", "postgres", "start", "run",
                                                 "teardown"]
    assert not (root / ".forge").exists()
    assert [json.loads(forge(root, "dev", "up", "gen", "--json").stdout)["services"][0]["changed"]
            for _ in range(2)] == [True, False]  # nothing declared: up, and idempotent
    gen = forge(root, "test", "gen")
    assert gen.returncode == 2 and "services.gen.dev.unit" in gen.stderr
    level = forge(root, "test", "old:unit")
    assert level.returncode == 2 and "dev.test replaces the test pyramid" in level.stderr
    proc = forge(root, "test", "old", "c d", env={"ARGS": "a b"})
    assert (proc.returncode, proc.stdout) == (0, "<a><b><c d>"), proc.stderr


def test_a_compound_test_command_runs_when_no_arguments_are_given(tmp_path: Path) -> None:
    """A loop is a command too: `"$@"` is appended only when ARGS are given (a release passes none)."""
    services = "  gen: {type: generic, path: svc/gen, dev: {test: 'for x in a b; do printf \\<%s\\> $x; done'}}\n"
    root = make_repo(tmp_path, services, {"svc/gen/.keep": ""})
    proc = forge(root, "test", "gen")
    assert (proc.returncode, proc.stdout) == (0, "<a><b>"), proc.stderr


@pytest.mark.nix
def test_the_flake_apps_run_the_levels_and_the_dev_commands(shop) -> None:  # noqa: ANN001 - the Flake fixture
    """The rendered apps through `nix run`: the levels with the type's tools on PATH, arguments
    passed on, a level not configured refused, dev-up/dev-status/dev-down from the repository root."""
    deploy = shop.dir / "deploy.yaml"
    deploy.write_text(without_dev(deploy.read_text()).replace("    type: node\n", (
        "    type: generic\n    dev:\n      unit: \"echo unit-ran; test -d \\\"$FORGE_TEST_RESULTS\\\"\"\n"
        "      integration: \"echo integration-ran\"\n")).replace(
        "    type: python\n", "    type: python\n    dev: {unit: \"command -v ruff >/dev/null && echo ruff-on-path\", "
                             "integration: null, e2e: null}\n", 1))
    sync = subprocess.run([VENV_BIN / "forgegen", "sync"], cwd=shop.dir, capture_output=True, text=True)
    assert sync.returncode == 0, sync.stderr
    shop.commit("dev levels")
    assert shop.run_app("test:web").stdout.splitlines() == ["unit-ran", "integration-ran"]
    assert shop.run_app("test:web:integration", "--json").stdout.startswith("{")
    assert shop.run_app("test:api:unit").stdout == "ruff-on-path\n"
    refused = shop.run_app("test:web:e2e", check=False)
    assert refused.returncode == 2 and "services.web.dev.e2e" in refused.stderr
    up = json.loads(shop.run_app("dev-up:web", "--json").stdout)
    assert up["services"][0]["state"] == "nothing to start" and (shop.dir / ".forge/dev/web.env").is_file()
    assert shop.run_app("dev-status").stdout == "web [dev]\n"  # up, with nothing declared to run
    shop.run_app("dev-down")
    assert not (shop.dir / ".forge/dev/web.env").exists()
    whole = json.loads(shop.run_app("test", "--dry-run", "--json").stdout)
    assert {s["details"]["service"] for s in whole["steps"]} == {"api", "web", "inventory", "mailer"}
