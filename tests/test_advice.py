"""Every pydantic error kind the schemas can produce has a translation into what to write instead."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from forge_provision import schema as provision_schema
from forgegen import advice, schema

ROOTS: tuple[type[BaseModel], ...] = (schema.Config, provision_schema.PostgresConfig, provision_schema.AtticConfig)

# Values of every YAML shape, each wrong for most fields: scalars of each type, out-of-range
# numbers, over-long text, lists and mappings, empty and nested.
GARBAGE: list[object] = [
    None, True, False, "x", "", "a" * 300, "Not a Name!", 1.5, -1, 0, 10**9, 10**30, "12", "yes",
    [], ["x"], [1.5], [None], [[]], [{}], {}, {"x": 1}, {"Bad Key": {}}, {"x": None}, {"x": [1.5]},
]


def reachable_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo = list(ROOTS)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for f in model.model_fields.values():
            todo += [t for t in _types_in(f.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
    return seen


def _types_in(tp: object) -> list[object]:
    out = [tp]
    for arg in typing.get_args(tp):
        out += _types_in(arg)
    return out


def produced_error_kinds() -> dict[str, dict]:
    """Every error kind pydantic reports for wrong values in any field of any reachable model."""
    kinds: dict[str, dict] = {}
    for model in reachable_models():
        model.model_rebuild()
        for name, f in model.model_fields.items():
            for value in GARBAGE:
                try:
                    model.model_validate({f.alias or name: value, "unknown_key": 1})
                except ValidationError as err:
                    for e in err.errors():
                        kinds.setdefault(e["type"], e)
    return kinds


KINDS = produced_error_kinds()


def test_the_walk_reaches_the_kinds_a_user_meets() -> None:
    # A sanity check on the walk itself: these kinds are known to occur.
    for kind in ("missing", "extra_forbidden", "literal_error", "tuple_type", "int_parsing", "bool_parsing",
                 "model_type", "value_error", "greater_than_equal", "string_type", "too_short"):
        assert kind in KINDS


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_error_kind_the_schemas_produce_has_a_hint(kind: str) -> None:
    assert kind in advice.HINTS, f"no hint for pydantic error kind {kind!r}: add one to forgegen.advice.HINTS"
    text = advice.message(KINDS[kind], known_keys=("type", "path"))
    assert "Input should" not in text, text
    if kind not in ("value_error", "missing"):
        assert ";" in text, f"{kind}: {text!r} says what is wrong but not what to write"


def test_a_misspelt_key_and_choice_get_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("version: 1\nproject: shop\nregistry: {host: ghcr.io}\ngitops: {repo: x}\n"
                    "environments: [{name: staging}]\nservices:\n  api:\n    tyep: rust\n    type: rusty\n"
                    "    rollout: {rollbak_on_failure: true}\n    architectures: x86_64-linux\n")
    with pytest.raises(schema.ConfigError) as info:
        schema.load_config(path)
    text = str(info.value)
    assert "deploy.yaml:8:5: services.api.tyep: unknown key 'tyep'; did you mean 'type'?" in text
    assert "services.api.type: 'rusty' is not one of the choices; did you mean 'rust'?" in text
    assert "unknown key 'rollbak_on_failure'; did you mean 'rollback_on_failure'?" in text
    assert "services.api.architectures: expected a list (got 'x86_64-linux'); write a list" in text


def test_an_unknown_key_far_from_any_lists_the_known_ones() -> None:
    text = advice.message({"type": "extra_forbidden", "loc": ("zzz",)}, known_keys=("name", "url"))
    assert text == "unknown key 'zzz'; remove it or check its spelling (known keys: name, url)"


def test_provisioning_files_get_the_same_advice(tmp_path: Path) -> None:
    path = tmp_path / "attic.yaml"
    path.write_text("version: 1\nserverr: {}\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "forge-provision"), "attic", "plan", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key 'serverr'; did you mean 'server'?" in proc.stderr
