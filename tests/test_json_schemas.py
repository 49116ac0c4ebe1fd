"""The JSON Schemas editors use agree with the examples and are committed fresh."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from forge_provision import schema as provision_schema
from forgegen import schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = {
    "deploy": schema.json_schema(),
    "postgres": provision_schema.json_schema("postgres"),
    "attic": provision_schema.json_schema("attic"),
}
# Every YAML file under examples/, by the schema it follows (None: not a Forge configuration).
KIND_OF = {"deploy.yaml": "deploy", "postgres.yaml": "postgres", "attic.yaml": "attic"}
# Kubernetes manifests: a Job, and the RBAC for Forge; examples/gitops/ holds manifests too.
NOT_FORGE = {"examples/provision/job.yaml", "examples/rbac/forge.yaml"}


def example_files() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").rglob("*.yaml") if "gitops" not in p.relative_to(ROOT).parts)


def test_every_example_is_accounted_for() -> None:
    for path in example_files():
        rel = path.relative_to(ROOT).as_posix()
        assert path.name in KIND_OF or rel in NOT_FORGE, f"{rel}: which schema does it follow? add it to KIND_OF"


@pytest.mark.parametrize("path", [p for p in example_files() if p.name in KIND_OF],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_example_validates_against_its_schema(path: Path) -> None:
    kind = KIND_OF[path.name]
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[kind])
    data = yaml.safe_load(path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(SCHEMAS[kind]).iter_errors(data), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_deploy_schema_catches_a_bad_service_name_and_a_typo() -> None:
    data = yaml.safe_load((ROOT / "examples" / "starter" / "deploy.yaml").read_text())
    validator = jsonschema.Draft202012Validator(SCHEMAS["deploy"])
    assert SCHEMAS["deploy"]["$id"].endswith("/forgegen/deploy.schema.json")
    bad_name = {**data, "services": {"Web_1": data["services"]["api"]}}
    assert any("'Web_1' does not match" in e.message for e in validator.iter_errors(bad_name))
    typo = {**data, "services": {"api": {**data["services"]["api"], "tyep": "rust"}}}
    assert any(e.validator == "additionalProperties" for e in validator.iter_errors(typo))


def test_init_points_editors_at_the_schema(tmp_path: Path) -> None:
    from forgegen import generator

    first = generator.init_files("shop")["deploy.yaml"].splitlines()[0]
    assert first == f"# yaml-language-server: $schema={SCHEMAS['deploy']['$id']}"


@pytest.mark.parametrize("kind", ["postgres", "attic"])
def test_the_provisioning_schemas_are_committed_fresh(kind: str) -> None:
    committed = json.loads((ROOT / "provision" / "schemas" / f"{kind}.schema.json").read_text())
    assert committed == SCHEMAS[kind], (
        f"provision/schemas/{kind}.schema.json is stale; regenerate with: "
        f".venv/bin/forge-provision schema {kind} > provision/schemas/{kind}.schema.json")
    assert committed["$id"].endswith(f"/provision/schemas/{kind}.schema.json")
