"""Name patterns (``"clusters/{cluster}/{service}"``): parsed and filled in one place.

A pattern is literal text with ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces.
Only plain names from a fixed set are placeholders: no format specs (``{service:>99}``),
conversions (``{service!r}``), indexing or attribute access (``{project.__class__}``), which
``str.format`` would evaluate. This module imports nothing from the package.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

_NAME = re.compile(r"[a-z][a-z_]*")
_SHOWN = 40  # characters of an offending placeholder shown in a message


@dataclass(frozen=True)
class Placeholder:
    name: str


Segment = str | Placeholder


def _show(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def _choices(allowed: Iterable[str]) -> str:
    return ", ".join("{" + a + "}" for a in allowed)


def parse(text: str, allowed: Iterable[str]) -> tuple[Segment, ...]:
    """The segments of ``text``; :class:`ValueError` (a message for deploy.yaml) if it is not a
    pattern over ``allowed``."""
    return _parse(text, tuple(allowed))


@lru_cache(maxsize=4096)  # a 500-service project fills the same few patterns thousands of times
def _parse(text: str, allowed: tuple[str, ...]) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text.startswith(char * 2, i):
            literal.append(char)
            i += 2
        elif char == "}":
            raise ValueError(f"a lone '}}' at character {i + 1}; write a literal brace as '}}}}'")
        elif char == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise ValueError(f"a '{{' at character {i + 1} has no closing brace; write a literal brace as '{{{{'")
            name = text[i + 1:end]
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"{_show('{' + name + '}')} is not a placeholder: write a plain name, one of {_choices(allowed)} "
                    "(format specs, conversions, indexing and attributes are not supported)")
            if name not in allowed:
                raise ValueError(f"unknown placeholder {{{name}}} in {_show(text)!r}; available: {_choices(allowed)}")
            if literal:
                segments.append("".join(literal))
                literal = []
            segments.append(Placeholder(name))
            i = end + 1
        else:
            literal.append(char)
            i += 1
    if literal:
        segments.append("".join(literal))
    return tuple(segments)


def fill(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each placeholder replaced by its value (every name in ``values`` allowed)."""
    return "".join(s if isinstance(s, str) else values[s.name] for s in parse(text, values))


def placeholders(text: str, allowed: Iterable[str]) -> tuple[str, ...]:
    """The placeholder names ``text`` uses, in order."""
    return tuple(s.name for s in parse(text, allowed) if isinstance(s, Placeholder))
