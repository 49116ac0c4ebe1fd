"""forgegen.nix: every string renders to Nix that evaluates back to itself (real Nix)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from forgegen.errors import RenderError
from forgegen.nix import NixText, nix_attrpath, nix_ident, nix_indented_str, nix_str, to_nix
from tests.fixtures.nixenv import nix_eval
from tests.strategies import any_nix_string, nix_text

pytestmark = pytest.mark.nix
NIX_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@NIX_SETTINGS
@given(st.lists(any_nix_string, min_size=1, max_size=8))
def test_nix_str_round_trips_through_real_nix(values: list[str]) -> None:
    expr = "[ " + " ".join(nix_str(v) for v in values) + " ]"
    assert nix_eval(expr) == values


@NIX_SETTINGS
@given(st.lists(any_nix_string, min_size=1, max_size=8))
def test_nix_indented_str_round_trips_through_real_nix(values: list[str]) -> None:
    expr = "[\n" + "\n".join(f"  ({nix_indented_str(v)})" for v in values) + "\n]"
    assert nix_eval(expr) == values


@NIX_SETTINGS
@given(st.lists(st.tuples(any_nix_string, any_nix_string), min_size=1, max_size=6, unique_by=lambda t: t[0]))
@example([("A\n", "x")])  # found by this test on a random draw: `$` matched before the newline
def test_nix_ident_round_trips_as_attribute_names(pairs: list[tuple[str, str]]) -> None:
    expr = "{ " + " ".join(f"{nix_ident(k)} = {nix_str(v)};" for k, v in pairs) + " }"
    assert nix_eval(expr) == dict(pairs)


@NIX_SETTINGS
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | nix_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nix_text, children, max_size=4),
    max_leaves=12,
))
def test_to_nix_round_trips_json_values(value: object) -> None:
    assert nix_eval(to_nix(value)) == value


def test_nix_ident_quotes_keywords_and_odd_names() -> None:
    assert nix_ident("api") == "api"
    assert nix_ident("deploy:api") == '"deploy:api"'
    for keyword in ("if", "then", "else", "let", "in", "rec", "with", "inherit", "assert", "or"):
        assert nix_ident(keyword) == f'"{keyword}"'
    assert nix_eval("{ " + " ".join(f"{nix_ident(k)} = 1;" for k in ("or", "in", "x-y", "1a")) + " }") == {
        "or": 1, "in": 1, "x-y": 1, "1a": 1}


def test_nix_ident_quotes_a_name_with_a_trailing_newline() -> None:
    assert nix_ident("A\n") == '"A\\n"'
    assert nix_eval("{ " + nix_ident("A\n") + " = 1; }") == {"A\n": 1}


def test_nix_attrpath_escapes_each_component() -> None:
    assert nix_attrpath("packages.x86_64-linux.api-image") == "packages.x86_64-linux.api-image"
    assert nix_attrpath(["a", "b.c", "${x}"]) == 'a."b.c"."\\${x}"'


def test_nix_str_rejects_nul_with_a_clear_message() -> None:
    with pytest.raises(RenderError, match="NUL"):
        nix_str("a\0b")


def test_dollar_brace_never_interpolates() -> None:
    assert nix_eval(f"let x = \"BAD\"; in {nix_str('${x}')}") == "${x}"
    multi = nix_indented_str("a\n${x}\nb")
    assert nix_eval(f"let x = \"BAD\"; in {multi}") == "a\n${x}\nb"


def test_every_function_returns_the_template_marker() -> None:
    for text in (nix_str("a"), nix_ident("a"), nix_attrpath("a.b"), to_nix([1]), nix_indented_str("a\nb")):
        assert isinstance(text, NixText)


def test_to_nix_rejects_unsupported_values() -> None:
    with pytest.raises(RenderError):
        to_nix(float("nan"))
    with pytest.raises(RenderError):
        to_nix({1: "x"})
    with pytest.raises(RenderError):
        to_nix(object())
