"""deploy.yaml: the one schema, and located errors for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forgegen.errors import ConfigError
from forgegen.schema import json_schema, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """\
version: 1
project: shop
registry: {host: ghcr.io, organization: acme}
gitops: {repo: ../gitops}
environments:
  - name: staging
  - name: production
services:
  api: {}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value).splitlines()


def test_minimal_config_gets_defaults_for_everything_else() -> None:
    config = parse_config(MINIMAL)
    api = config.services["api"]
    assert api.type == "generic"
    assert api.architectures == ("x86_64-linux",)
    assert api.workload.kind == "Deployment"
    assert api.rollout.restarts_tolerated == 0
    assert config.gitops.branch == "main"
    assert config.flux.kustomizations == ("flux-system",)
    assert [e.name for e in config.service_environments("api")] == ["staging", "production"]


def test_durations_accept_seconds_and_units() -> None:
    config = parse_config(MINIMAL.replace("api: {}", "api: {rollout: {deadline: 1h30m, readiness_grace: 90, scheduling_grace: 500ms}}"))
    r = config.services["api"].rollout
    assert (r.deadline, r.readiness_grace, r.scheduling_grace) == (5400.0, 90.0, 0.5)


def test_durations_with_units_are_exact_and_finite() -> None:
    config = parse_config(MINIMAL.replace("api: {}", "api: {rollout: {deadline: 0.1m, readiness_grace: 1.1h, scheduling_grace: 0.3s}}"))
    r = config.services["api"].rollout
    assert (r.deadline, r.readiness_grace, r.scheduling_grace) == (6.0, 3960.0, 0.3)
    for bad in (".inf", "1e400", "1" + "0" * 400, "100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000h"):
        lines = problems(MINIMAL.replace("api: {}", f"api: {{rollout: {{deadline: {bad}}}}}"))
        assert any("services.api.rollout.deadline" in line and "duration" in line for line in lines), (bad, lines)


def test_models_are_frozen() -> None:
    config = parse_config(MINIMAL)
    with pytest.raises(Exception):
        config.project = "other"  # type: ignore[misc]


def test_unknown_key_is_located_and_named() -> None:
    lines = problems(MINIMAL.replace("registry: {host: ghcr.io, organization: acme}",
                                     "registry: {host: ghcr.io, organisation: acme}"))
    assert lines == ["deploy.yaml:3:27: registry.organisation: unknown key 'organisation'; did you mean 'organization'?"]


def test_wrong_type_is_located() -> None:
    lines = problems(MINIMAL.replace("api: {}", "api: {rollout: {restarts_tolerated: many}}"))
    assert len(lines) == 1
    assert lines[0].startswith("deploy.yaml:9:39: services.api.rollout.restarts_tolerated: ")
    assert "expected a whole number (got 'many'); write digits only" in lines[0]


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
version: 1
project: Shop
registry: {host: "https://ghcr.io"}
gitops: {repo: x, path: "/abs/{service}"}
environments:
  - name: staging
  - name: staging
services:
  api:
    environments: [prod]
    depends_on: [db]
  Web_1: {}
"""
    lines = problems(text)
    assert lines == [
        "deploy.yaml:2:10: project: 'Shop' is not a DNS-1123 label; use 1-63 lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit (e.g. 'api', 'web-frontend')",
        "deploy.yaml:3:18: registry.host: 'https://ghcr.io' is not a registry host; use host or host:port, "
        "without a scheme or path (e.g. 'ghcr.io', 'localhost:5000')",
        "deploy.yaml:4:25: gitops.path: '/abs/{service}' must be a relative path inside the repository, without '..'",
        "deploy.yaml:12:3: services.Web_1: 'Web_1' is not a DNS-1123 label; use 1-63 lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit (e.g. 'api', 'web-frontend')",
    ]


def test_reference_errors_are_located() -> None:
    text = MINIMAL.replace("  - name: production\n", "  - name: staging\n").replace(
        "api: {}", "api:\n    environments: [prod]\n    depends_on: [api, db]")
    lines = problems(text)
    assert lines == [
        "deploy.yaml:7:11: environments[1].name: duplicate environment 'staging' (also environments[0]); rename one",
        "deploy.yaml:10:20: services.api.environments[0]: environment 'prod' is not defined; define it under "
        "'environments' or use one of: staging",
        "deploy.yaml:11:18: services.api.depends_on[0]: a service cannot depend on itself; remove it",
        "deploy.yaml:11:23: services.api.depends_on[1]: service 'db' is not defined; define it under 'services' or remove it",
    ]


def test_dependency_cycle_is_named() -> None:
    text = MINIMAL.replace("api: {}", "api: {depends_on: [web]}\n  web: {depends_on: [api]}")
    assert any("dependency cycle api -> web -> api" in line for line in problems(text))


def test_duplicate_service_key_is_an_error_not_a_silent_overwrite() -> None:
    lines = problems(MINIMAL + "  api: {type: rust}\n")
    assert lines == ["deploy.yaml:10:3: services.api: duplicate key 'api' (first defined on line 9); keep one of them"]


def test_unknown_placeholder_in_a_pattern() -> None:
    lines = problems(MINIMAL.replace("gitops: {repo: ../gitops}", "gitops: {repo: ../gitops, path: 'c/{team}/{service}'}"))
    assert lines == ["deploy.yaml:4:33: gitops.path: unknown placeholder {team} in 'c/{team}/{service}'; "
                     "available: {project}, {service}, {environment}, {cluster}"]


def test_not_yaml_and_not_a_mapping_and_empty() -> None:
    assert problems("version: [1\n")[0].startswith("deploy.yaml:2:1: not valid YAML")
    assert problems("- a\n- b\n") == ["deploy.yaml:1:1: the top level must be a mapping, not list"]
    assert problems("") == ["deploy.yaml: the file is empty; start from `forgegen init`"]
    assert problems(MINIMAL.replace("version: 1", "version: 2")) == [
        "deploy.yaml:1:10: version: unsupported version 2; this forgegen reads version 1"]


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found; create it"):
        load_config(tmp_path / "deploy.yaml")


@pytest.mark.parametrize("name", ["if", "in", "rec", "or"])
def test_nix_keywords_are_valid_service_names(name: str) -> None:
    config = parse_config(MINIMAL.replace("api: {}", f"{name}: {{}}"))
    assert list(config.services) == [name]


def test_cli_exits_2_with_located_errors_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(MINIMAL.replace("api: {}", "api: {tyep: rust}"))
    proc = subprocess.run([sys.executable, "-m", "forgegen", "sync"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "deploy.yaml:9:9: services.api.tyep: unknown key 'tyep'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "nix").exists()


def test_json_schema_committed_copy_is_fresh() -> None:
    committed = json.loads((ROOT / "forgegen" / "deploy.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "forgegen/deploy.schema.json is stale; regenerate with: "
        ".venv/bin/forgegen schema > forgegen/deploy.schema.json")


def test_schema_command_prints_the_schema() -> None:
    proc = subprocess.run([sys.executable, "-m", "forgegen", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(proc.stdout)
    assert schema["title"] == "Forge deploy.yaml"
    assert "services" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_a_gitops_url_with_a_token_is_refused() -> None:
    lines = problems(MINIMAL.replace("gitops: {repo: ../gitops}",
                                     "gitops: {repo: 'https://bot:ghp_secret@github.com/acme/gitops.git'}"))
    assert len(lines) == 1
    assert lines[0].startswith("deploy.yaml:4:16: gitops.repo: the URL https://***@github.com/acme/gitops.git carries")
    assert "ghp_secret" not in lines[0]
    assert parse_config(MINIMAL.replace("gitops: {repo: ../gitops}",
                                        "gitops: {repo: 'https://github.com/acme/gitops.git'}")).gitops.repo


@pytest.mark.parametrize("field, value", [
    ("project", "shop\n"), ("registry.host", "ghcr.io\n"), ("registry.organization", "acme\n"),
    ("registry.credentials.username_env", "USER\n"), ("services.api.image.package", "api-image\n"),
    ("flux.namespace", "flux-system\n"), ("environments.0.name", "staging\n"),
])
def test_a_trailing_newline_does_not_pass_a_name_rule(field: str, value: str) -> None:
    doc = yaml.safe_load(MINIMAL)
    node = doc
    *parents, last = (int(p) if p.isdigit() else p for p in field.split("."))
    for part in parents:
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value
    shown = field.replace(".0.", "[0].")
    assert any(shown in line for line in problems(yaml.safe_dump(doc, default_style='"'))), field


@pytest.mark.parametrize("name", ["m--3", "a-b--c", "web---1"])
def test_a_service_name_with_a_run_of_dashes_is_a_valid_image_repository(name: str) -> None:
    # Found by the render property test: the OCI distribution spec joins path components with
    # any run of "-", so a DNS label with "--" must pass the rendered-image-name check too.
    doc = yaml.safe_load(MINIMAL)
    doc["services"] = {name: next(iter(doc["services"].values()))}
    config = parse_config(yaml.safe_dump(doc))
    assert name in config.services
