"""``dev.infra.attic``: a local Attic server for the development loop, started by ``forge dev up``
and the test levels like PostgreSQL. An Attic server cannot run here: ``atticd`` on PATH is the
stand-in of :mod:`tests.attic_standin.atticd` (the real configuration file, the real HTTP API and
HS256 tokens); PostgreSQL and forge-provision are real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from forgegen.errors import ConfigError
from forgegen.schema import parse_config
from tests.test_devloop import BASE, VENV_BIN, _dev, finish, forge, make_repo, processes_matching, start_forge, wait_for

REPO = Path(__file__).resolve().parent.parent

CHECK = """\
import json, os, pathlib, urllib.request
url = os.environ["ATTIC_CACHE_URL"] + "_api/v1/cache-config/" + os.environ["ATTIC_CACHE_NAME"]
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + os.environ["ATTIC_TOKEN"]})
config = json.load(urllib.request.urlopen(request))
pathlib.Path(os.environ["FORGE_TEST_RESULTS"], "attic.txt").write_text(
    f"{os.environ['ATTIC_CACHE_NAME']} public={config['is_public']}")
"""
SERVICE = """\
  api:
    type: generic
    path: svc/api
    dev:
      integration: python3 check.py
      infra: {attic: %s}
"""


def test_attic_settings_reach_the_plan_with_the_service_name_as_default_cache() -> None:
    dev = _dev("  api: {dev: {infra: {attic: {}}}}\n  web: {dev: {infra: {attic: {cache: builds, public: true}}}}\n"
               "  db: {dev: {infra: {postgres: {}}}}\n")
    assert dev["api"].attic is not None and (dev["api"].attic.cache, dev["api"].attic.public) == ("api", False)
    assert dev["web"].attic is not None and (dev["web"].attic.cache, dev["web"].attic.public) == ("builds", True)
    assert dev["db"].attic is None
    assert "attic" not in dev["db"].dump()  # plans without it stay as they were
    with pytest.raises(ConfigError) as bad:
        parse_config(BASE + "  api: {dev: {infra: {attic: {cache: Not_A_Label, push: true}}}}\n")
    assert "services.api.dev.infra.attic.cache" in str(bad.value)
    assert "services.api.dev.infra.attic.push" in str(bad.value)
    with pytest.raises(ConfigError) as long:
        parse_config(BASE + f"  api: {{dev: {{infra: {{attic: {{cache: {'c' * 51}}}}}}}}}\n")
    assert "services.api.dev.infra.attic.cache" in str(long.value) and "at most 50" in str(long.value)


@pytest.fixture
def atticd(tmp_path: Path) -> Path:
    """A directory holding the stand-in ``atticd`` executable."""
    bindir = tmp_path / "attic-bin"
    bindir.mkdir()
    exe = bindir / "atticd"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                   "from tests.attic_standin.atticd import main\nsys.exit(main(sys.argv[1:]))\n")
    exe.chmod(0o755)
    return bindir


def _path_with(bindir: Path | None) -> dict[str, str]:
    """PATH with ``bindir`` first, and without any other atticd (this test decides which one runs)."""
    dirs = [d for d in os.environ["PATH"].split(":") if d and not Path(d, "atticd").exists()]
    return {"PATH": ":".join([*([str(bindir)] if bindir else []), str(VENV_BIN), *dirs]), "FORGE_ATTICD": ""}


def _repo(tmp_path: Path, attic: str, services: str = SERVICE) -> Path:
    return make_repo(tmp_path / "repo", services % attic, {"svc/api/check.py": CHECK})


def _cache_config(env: dict[str, str], token: str | None) -> tuple[int, dict[str, object] | None]:
    url = env["ATTIC_CACHE_URL"] + "_api/v1/cache-config/" + env["ATTIC_CACHE_NAME"]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _env_file(path: Path) -> dict[str, str]:
    return {k: v.strip("'") for k, v in (line.split("=", 1) for line in path.read_text().splitlines())}


def test_dev_up_starts_attic_with_its_cache_and_a_token_it_accepts_and_dev_down_stops_it(
        tmp_path: Path, atticd: Path) -> None:
    root = _repo(tmp_path, "{cache: builds}")
    path = _path_with(atticd)
    dry = json.loads(forge(root, "test", "api:integration", "--dry-run", "--json", env=path).stdout)
    assert [s["step"] for s in dry["steps"]] == ["attic", "run", "teardown"]
    first = forge(root, "dev", "up", "api", "--json", env=path)
    assert first.returncode == 0, first.stderr
    [up] = json.loads(first.stdout)["services"]
    port = up["attic"]["port"]
    assert (up["state"], up["changed"], up["attic"]["cache"]) == ("up", True, "builds")
    env = _env_file(root / ".forge/dev/api.env")
    assert (env["ATTIC_CACHE_URL"], env["ATTIC_CACHE_NAME"]) == (f"http://127.0.0.1:{port}/", "builds")
    status, config = _cache_config(env, env["ATTIC_TOKEN"])
    assert status == 200 and config is not None and config["is_public"] is False  # the cache exists
    assert _cache_config(env, None)[0] == 401  # private: the token is what lets the GET in
    token = env["ATTIC_TOKEN"]
    record = (root / ".forge/dev/api.json").read_text()
    assert token not in first.stdout + first.stderr + record
    again = forge(root, "dev", "up", "api", "--json", env=path)
    assert json.loads(again.stdout)["services"][0]["changed"] is False
    shown = forge(root, "dev", "status", env=path)
    assert f"api [dev]  attic :{port} (builds) running" in shown.stdout
    config_path = json.loads(record)["attic"]["config"]
    assert processes_matching(config_path), "atticd runs with the session's configuration"
    down = forge(root, "dev", "down", "--json", env=path)
    assert [s["changed"] for s in json.loads(down.stdout)["services"]] == [True]
    assert token not in down.stdout + down.stderr + again.stdout + again.stderr + shown.stdout
    assert not _port_open(port) and processes_matching(config_path) == []
    assert not Path(config_path).parent.exists()


def test_the_integration_level_gets_attic_in_its_environment_and_stops_it_after(tmp_path: Path, atticd: Path) -> None:
    root = _repo(tmp_path, "{public: true}")
    ran = forge(root, "test", "api:integration", "--json", env=_path_with(atticd))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outcome"] == "passed"
    assert (root / ".forge/test-results/api/integration/attic.txt").read_text() == "api public=True"
    assert processes_matching(f"forge-dev-attic-{ran.pid}-") == []
    assert list((root / ".forge/dev/runs").glob("*.json")) == []
    assert "ATTIC_TOKEN" not in ran.stdout and "eyJ" not in ran.stdout + ran.stderr  # no JWT is ever shown


def test_a_killed_run_leaves_atticd_that_the_next_command_stops(tmp_path: Path, atticd: Path) -> None:
    marker = tmp_path / "tests-running"
    services = SERVICE.replace("python3 check.py", f"touch {marker} && exec sleep 3600")
    root = _repo(tmp_path, "{}", services)
    path = _path_with(atticd)
    proc = start_forge(root, "test", "api:integration", env=path)
    wait_for(marker.exists, "the integration tests to start")
    proc.send_signal(signal.SIGKILL)
    ran = finish(proc)
    assert ran.returncode == -signal.SIGKILL
    left = processes_matching(f"forge-dev-attic-{ran.pid}-")
    assert left, "SIGKILL leaves atticd running: the next command must stop it"
    [session] = json.loads(forge(root, "dev", "status", "--json", env=path).stdout)["sessions"]
    assert (session["kind"], session["owner_running"], session["attic"]["running"]) == ("run", False, True)
    port = session["attic"]["port"]
    assert _port_open(port)
    down = forge(root, "dev", "down", env=path)
    assert down.returncode == 0, down.stderr
    assert "stopped what an interrupted run left: api" in down.stderr
    assert processes_matching(f"forge-dev-attic-{ran.pid}-") == [] and not _port_open(port)
    assert json.loads(forge(root, "dev", "status", "--json", env=path).stdout)["sessions"] == []


def test_without_atticd_the_command_exits_2_naming_the_setting_and_starts_nothing(tmp_path: Path) -> None:
    root = _repo(tmp_path, "{}", SERVICE.replace("{attic: %s}", "{postgres: {}, attic: %s}"))
    up = forge(root, "dev", "up", "api", env=_path_with(None))
    assert up.returncode == 2, up.stderr
    assert "services.api.dev.infra.attic: cannot start the Attic server: atticd is not on PATH" in up.stderr
    assert "install attic-server" in up.stderr and "FORGE_ATTICD" in up.stderr
    assert processes_matching(f"forge-dev-pg-{up.pid}-") == [] and not (root / ".forge/dev/api.env").exists()
    assert json.loads(forge(root, "dev", "status", "--json").stdout)["sessions"] == []
    level = forge(root, "test", "api:integration", env={**_path_with(None), "FORGE_ATTICD": str(tmp_path / "nope")})
    assert level.returncode == 2 and f"FORGE_ATTICD={tmp_path / 'nope'} is not an executable file" in level.stderr
    assert processes_matching(f"forge-dev-pg-{level.pid}-") == []
    assert json.loads(forge(root, "dev", "status", "--json").stdout)["sessions"] == []


def test_an_atticd_that_exits_fails_with_its_log_and_stops_the_postgres_started_before(tmp_path: Path) -> None:
    root = _repo(tmp_path, "{}", SERVICE.replace("{attic: %s}", "{postgres: {}, attic: %s}"))
    broken = tmp_path / "broken-atticd"
    broken.write_text("#!/bin/sh\necho 'Error: no such thing' >&2\nexit 1\n")
    broken.chmod(0o755)
    up = forge(root, "dev", "up", "api", env={**_path_with(None), "FORGE_ATTICD": str(broken)})
    assert up.returncode == 1, up.stderr
    assert "atticd exited with 1" in up.stderr and "Error: no such thing" in up.stderr
    assert "starting PostgreSQL" in up.stderr  # it ran, and is stopped again
    assert processes_matching(f"forge-dev-pg-{up.pid}-") == [] and processes_matching(str(broken)) == []
    assert json.loads(forge(root, "dev", "status", "--json").stdout)["sessions"] == []


def test_dev_up_after_attic_is_removed_from_deploy_yaml_stops_it(tmp_path: Path, atticd: Path) -> None:
    root = _repo(tmp_path, "{}")
    path = _path_with(atticd)
    first = forge(root, "dev", "up", "api", "--json", env=path)
    assert first.returncode == 0, first.stderr
    config_path = json.loads((root / ".forge/dev/api.json").read_text())["attic"]["config"]
    deploy = root / "deploy.yaml"
    deploy.write_text(deploy.read_text().replace("      infra: {attic: {}}\n", ""))
    sync = subprocess.run([VENV_BIN / "forgegen", "sync"], cwd=root, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    again = forge(root, "dev", "up", "api", "--json", env=path)
    [up] = json.loads(again.stdout)["services"]
    assert (up["changed"], up["state"], up["attic"]) == (True, "nothing to start", None)
    assert processes_matching(config_path) == []
    assert "ATTIC_" not in (root / ".forge/dev/api.env").read_text()
