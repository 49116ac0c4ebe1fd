"""forgegen.pattern: the one parser for name patterns (no str.format)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from forgegen import pattern

NAMES = ("project", "service", "environment", "cluster")
VALUES = {"project": "shop", "service": "api", "environment": "prod", "cluster": "eu-1"}

_literal = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=8)
_segment = st.one_of(
    _literal.map(lambda t: (t, t)),
    st.sampled_from(NAMES).map(lambda n: ("{" + n + "}", VALUES[n])),
    st.sampled_from([("{{", "{"), ("}}", "}")]),
)


@given(st.lists(_segment, max_size=12))
def test_a_pattern_made_of_literals_placeholders_and_escapes_fills_as_written(segments: list[tuple[str, str]]) -> None:
    text = "".join(t for t, _ in segments)
    assert pattern.fill(text, VALUES) == "".join(v for _, v in segments)


@given(st.text(max_size=40))
@example("{service:>2000000000}")
@example("{project.__class__.__mro__}")
@example("{0}")
@example("{}")
@example("{project!r}")
@example("{project[0]}")
@example("}{")
def test_any_text_either_fills_or_is_refused_with_a_message(text: str) -> None:
    try:
        filled = pattern.fill(text, VALUES)
    except ValueError as err:
        assert str(err)
        return
    assert len(filled) <= len(text) * 4 + 16  # no format spec can blow it up


@pytest.mark.parametrize("text, words", [
    ("{service:>2000000000}", "format specs"), ("{bogus}", "unknown placeholder {bogus}"),
    ("{0}", "not a placeholder"), ("{project.__class__}", "not a placeholder"), ("a}b", "lone '}'"),
    ("{service", "no closing brace"),
])
def test_refusals_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("}", r"\}")):
        pattern.parse(text, NAMES)


def test_placeholders_lists_the_names_used() -> None:
    assert pattern.placeholders("c/{cluster}/{{x}}/{service}", NAMES) == ("cluster", "service")
