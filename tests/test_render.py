"""Rendering: golden files, determinism, the escaping guard, and generated Nix that evaluates
to exactly the configured values (real Nix)."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forgegen import render
from forgegen.errors import RenderError
from forgegen.plan import build_plan, load_plan
from forgegen.schema import load_config, parse_config
from tests.contract import expected_app_names
from tests.fixtures.nixenv import ROOT, nix_eval
from tests.strategies import dns_label, nix_text

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "deploy.yaml").is_file())
REGEN = "FORGE_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_render.py -k golden"


@pytest.mark.parametrize("case", CASES)
def test_golden_files(case: str) -> None:
    files = render.render(load_config(GOLDEN / case / "deploy.yaml"))
    expected_dir = GOLDEN / case / "expected"
    if os.environ.get("FORGE_REGEN_GOLDEN") == "1":
        import shutil
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in files.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text, encoding="utf-8")
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text(encoding="utf-8")
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(files) == sorted(expected), f"file set differs; regenerate with: {REGEN}"
    for rel, text in files.items():
        if text != expected[rel]:
            diff = "".join(difflib.unified_diff(expected[rel].splitlines(True), text.splitlines(True),
                                                f"expected/{rel}", f"rendered/{rel}"))
            pytest.fail(f"{case}/{rel} differs from the golden file:\n{diff}\nregenerate with: {REGEN}")


def test_render_is_identical_under_two_hash_seeds(tmp_path: Path) -> None:
    script = ("import json, sys; from forgegen import render, schema; "
              "print(json.dumps(render.render(schema.load_config(sys.argv[1]))))")
    outs = set()
    for seed in ("1", "4242"):
        proc = subprocess.run([sys.executable, "-c", script, str(GOLDEN / "shop" / "deploy.yaml")],
                              env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1


def test_no_absolute_paths_or_timestamps_in_output() -> None:
    files = render.render(load_config(GOLDEN / "shop" / "deploy.yaml"))
    for rel, text in files.items():
        assert str(ROOT) not in text and "/tmp/" not in text, rel
        assert "2026" not in text, rel
        first = text.splitlines()[0]
        if rel.endswith(".nix"):
            assert first.startswith(render.GENERATED_MARK)


def test_a_template_printing_an_unescaped_value_fails_at_render_time() -> None:
    env = render.environment()
    with pytest.raises(RenderError, match="without a Nix filter"):
        env.from_string("{ x = {{ value }}; }").render(value='"; builtins.abort "x')
    assert env.from_string("{ x = {{ value|nix_str }}; }").render(value='"') == '{ x = "\\""; }'


def _eval_generated(files: dict[str, str], tmp: Path, service: str) -> dict:
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text, encoding="utf-8")
    forge_dir = tmp / "nix" / "forge"
    lib = ROOT / "lib"
    pkgs = ROOT / "tests" / "nixpkgs-standin" / "pkgs.nix"
    expr = f"""
      let
        forge = {{ lib = import {lib}; }};
        pkgs = import {pkgs} {{ system = "x86_64-linux"; }};
        runtime = pkgs.hello;
        project = import {forge_dir} {{ inherit forge pkgs runtime; system = "x86_64-linux"; }};
        svc = project.services.{json.dumps(service)};
      in {{
        service = builtins.removeAttrs svc [ "plan" ];
        planIsFile = builtins.pathExists svc.plan;
        servicePlan = toString project.plans.{json.dumps(service)};
        wholePlan = toString project.plans."";
        apps = builtins.mapAttrs (n: a: a.meta.description) project.apps;
        types = builtins.mapAttrs (n: a: a.type) project.apps;
      }}"""
    return nix_eval(expr, write=True)


@pytest.mark.nix
@pytest.mark.parametrize("case", CASES)
def test_generated_nix_evaluates_to_the_configured_values(case: str, tmp_path: Path) -> None:
    config = load_config(GOLDEN / case / "deploy.yaml")
    files = render.render(config)
    names = expected_app_names(config)
    for name, svc in config.services.items():
        got = _eval_generated(files, tmp_path, name)
        assert got["service"]["name"] == name
        assert got["service"]["path"] == svc.path
        assert got["service"]["type"] == svc.type
        assert got["service"]["image"]["package"] == (svc.image.package or f"{name}-image")
        assert got["planIsFile"] is True
        # The plan an app passes to forge is complete: it loads, and it is the generator's own.
        assert load_plan(got["servicePlan"]) == build_plan(config, [name])
        assert load_plan(got["wholePlan"]) == build_plan(config)
        assert set(got["apps"]) == names
        assert all(isinstance(d, str) and d for d in got["apps"].values())
        envs = [e.name for e in config.service_environments(name)]
        assert got["apps"][f"deploy:{name}"] == (
            f"Deploy {name} to {envs[0]} (build, push, GitOps commit, Flux, rollout)")
        assert set(got["types"].values()) == {"app"}


_value = st.one_of(nix_text.filter(lambda s: s.strip() != ""), st.just("${x}"), st.just("''${y}"))
_relpath = st.lists(nix_text.filter(lambda s: s not in ("", ".", "..") and "/" not in s and "\\" not in s),
                    min_size=1, max_size=3).map("/".join)


@pytest.mark.nix
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(project=dns_label, services=st.dictionaries(dns_label, _relpath, min_size=1, max_size=3),
       branch=_value, repo=_value)
def test_any_valid_config_renders_twice_identically_and_round_trips(project: str, services: dict[str, str],
                                                                      branch: str, repo: str, tmp_path_factory) -> None:
    doc = {"version": 1, "project": project, "registry": {"host": "localhost:5000"},
           "gitops": {"repo": repo, "branch": branch},
           "environments": [{"name": "staging"}, {"name": "production"}],
           "services": {name: {"path": path} for name, path in services.items()}}
    config = parse_config(yaml.safe_dump(doc, default_style="\""))  # PyYAML folds a raw NEL in plain style
    first, second = render.render(config), render.render(config)
    assert first == second
    plan = json.loads(first[f"nix/forge/plans/{next(iter(services))}.json"])
    assert plan["services"][0]["targets"][0]["gitops"]["branch"] == branch
    assert plan["services"][0]["targets"][0]["gitops"]["repo"] == repo
    tmp = tmp_path_factory.mktemp("render")
    name = next(iter(services))
    got = _eval_generated(first, tmp, name)
    assert got["service"]["path"] == services[name]


@pytest.mark.nix
def test_a_broken_service_file_reports_every_problem_in_one_evaluation(tmp_path: Path) -> None:
    config = load_config(GOLDEN / "shop" / "deploy.yaml")
    files = render.render(config)
    files["nix/forge/plans/api.json"] = files["nix/forge/plans/api.json"].replace(
        '"type": "python"', '"type": "cobol"').replace('"tools": [', '"tools": 5, "x": [')
    with pytest.raises(AssertionError) as info:
        _eval_generated(files, tmp_path, "api")
    message = str(info.value)
    assert "forge.lib.apps.validateService" in message and "run forgegen sync" in message
    assert "2 errors" in message
    assert 'type: must be one of "rust", "python", "go", "node" or "generic", got "cobol"' in message
    assert "tools: must be a list, got an integer: 5" in message


@pytest.mark.nix
def test_a_service_named_project_keeps_its_own_plan(tmp_path: Path) -> None:
    config = parse_config("""\
version: 1
project: shop
registry: {host: ghcr.io}
gitops: {repo: ../gitops}
environments: [{name: prod}]
services: {project: {type: go}, api: {}}
""")
    files = render.render(config)
    plans = sorted(p for p in files if "/plans/" in p)
    assert len(plans) == 3, plans  # one per service and the product-wide settings
    got = _eval_generated(files, tmp_path, "project")
    assert got["service"]["name"] == "project" and got["service"]["type"] == "go"
    assert {"deploy:project", "deploy:api", "release"} <= set(got["apps"])
    assert load_plan(got["servicePlan"]) == build_plan(config, ["project"])
    assert load_plan(got["wholePlan"]) == build_plan(config)
    assert load_plan(tmp_path / "nix/forge/plans/project.json") == build_plan(config, ["project"])


_seconds = st.floats(min_value=0.001, max_value=1e9, allow_nan=False, allow_infinity=False)


@pytest.mark.nix
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(grace=_seconds, deadline=_seconds, timeout=_seconds, restarts=st.integers(0, 100),
       attempts=st.integers(1, 20), status=st.integers(100, 599))
@example(grace=1234567.891, deadline=86400.123456789, timeout=0.1 + 0.2, restarts=100, attempts=20, status=599)
def test_numbers_arrive_exactly_through_nix(grace: float, deadline: float, timeout: float, restarts: int,
                                            attempts: int, status: int, tmp_path_factory) -> None:
    doc = {"version": 1, "project": "shop", "registry": {"host": "ghcr.io", "push_attempts": attempts},
           "gitops": {"repo": "../gitops"}, "flux": {"timeout": timeout},
           "environments": [{"name": "prod"}],
           "services": {"api": {"rollout": {"readiness_grace": grace, "deadline": deadline,
                                            "restarts_tolerated": restarts},
                                "migrations": [{"name": "m", "command": ["x"], "timeout": grace}],
                                "verify": [{"name": "v", "http": {"url": "http://x", "expect_status": status}}]}}}
    config = parse_config(yaml.safe_dump(doc))
    assert config.services["api"].rollout.readiness_grace == grace
    got = _eval_generated(render.render(config), tmp_path_factory.mktemp("numbers"), "api")
    assert load_plan(got["servicePlan"]) == build_plan(config, ["api"])
    assert load_plan(got["wholePlan"]) == build_plan(config)
    assert load_plan(got["servicePlan"]).services[0].rollout.readiness_grace == grace
