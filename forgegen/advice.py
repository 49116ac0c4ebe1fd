"""What to write instead: pydantic's error kinds translated for people editing YAML.

:func:`message` turns one pydantic error (``ValidationError.errors()`` item) into "what is wrong
(got VALUE); what to write instead", with "did you mean 'type'?" for a misspelt key or choice.
:data:`HINTS` has an entry for every error kind the schemas of ``deploy.yaml`` and the
provisioning files can produce (a test walks them). This module imports nothing from the package.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a model is walked: the runtime reads YAML with yamlsource, never pydantic
    from pydantic import BaseModel

Err = Mapping[str, Any]


def _ctx(err: Err, key: str, default: Any = "?") -> Any:
    return (err.get("ctx") or {}).get(key, default)


def _n(count: Any, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


# kind -> (what is wrong, what to write instead); each may use the error's ctx.
HINTS: dict[str, Callable[[Err], tuple[str, str]]] = {
    "missing": lambda e: ("required but missing", "add it"),
    "string_type": lambda e: ("expected text", "write a string; quote values YAML would read as numbers, "
                                               "dates or yes/no, e.g. '1.0' or 'on'"),
    "string_too_short": lambda e: (f"shorter than {_n(_ctx(e, 'min_length'), 'character')}", "write a longer value"),
    "string_too_long": lambda e: (f"longer than {_n(_ctx(e, 'max_length'), 'character')}", "shorten it"),
    "string_pattern_mismatch": lambda e: (f"does not match {_ctx(e, 'pattern')}", "write a value of that form"),
    "int_type": lambda e: ("expected a whole number", "write digits only, e.g. 3"),
    "int_parsing": lambda e: ("expected a whole number", "write digits only, e.g. 3 (no units, no quotes)"),
    "int_parsing_size": lambda e: ("a number far too large", "write a smaller whole number"),
    "int_from_float": lambda e: ("expected a whole number, not a fraction", "drop the decimals, e.g. 3"),
    "float_type": lambda e: ("expected a number", "write a number, e.g. 1.5"),
    "float_parsing": lambda e: ("expected a number", "write a number, e.g. 1.5 (no units, no quotes)"),
    "bool_type": lambda e: ("expected true or false", "write true or false"),
    "bool_parsing": lambda e: ("expected true or false", "write true or false (without quotes)"),
    "greater_than_equal": lambda e: (f"less than {_ctx(e, 'ge')}", f"write {_ctx(e, 'ge')} or more"),
    "greater_than": lambda e: (f"not more than {_ctx(e, 'gt')}", f"write a number above {_ctx(e, 'gt')}"),
    "less_than_equal": lambda e: (f"more than {_ctx(e, 'le')}", f"write {_ctx(e, 'le')} or less"),
    "less_than": lambda e: (f"not less than {_ctx(e, 'lt')}", f"write a number below {_ctx(e, 'lt')}"),
    "literal_error": lambda e: ("not one of the choices", f"use one of: {_ctx(e, 'expected')}"),
    "enum": lambda e: ("not one of the choices", f"use one of: {_ctx(e, 'expected')}"),
    "tuple_type": lambda e: ("expected a list", "write a list: [a, b] or one '- item' per line"),
    "list_type": lambda e: ("expected a list", "write a list: [a, b] or one '- item' per line"),
    "set_type": lambda e: ("expected a list", "write a list: [a, b] or one '- item' per line"),
    "too_short": lambda e: (f"has {_n(_ctx(e, 'actual_length'), 'item')}",
                            f"list at least {_n(_ctx(e, 'min_length'), 'item')}"),
    "too_long": lambda e: (f"has {_n(_ctx(e, 'actual_length'), 'item')}",
                           f"list at most {_n(_ctx(e, 'max_length'), 'item')}"),
    "dict_type": lambda e: ("expected a mapping", "write 'key: value' lines indented under it"),
    "model_type": lambda e: ("expected a mapping", "write its keys indented under it ('key: value' lines)"),
    "model_attributes_type": lambda e: ("expected a mapping", "write its keys indented under it ('key: value' lines)"),
    "none_required": lambda e: ("must be empty", "remove the value"),
    "value_error": lambda e: ("invalid value", "see the schema (`forgegen schema`)"),
    "assertion_error": lambda e: ("invalid value", "see the schema (`forgegen schema`)"),
    "extra_forbidden": lambda e: ("unknown key", "remove it or check its spelling"),
}


def _choices(expected: str) -> list[str]:
    return re.findall(r"'((?:[^'\\]|\\.)*)'", expected)


def did_you_mean(value: Any, choices: Iterable[str]) -> str | None:
    """The closest choice to a misspelt ``value`` (difflib), if any is close."""
    if not isinstance(value, str):
        return None
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    if not close and value.lower() in {c.lower(): c for c in choices}:
        close = [{c.lower(): c for c in choices}[value.lower()]]
    return close[0] if close else None


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def message(err: Err, *, known_keys: Sequence[str] = ()) -> str:
    """One line: what is wrong (got VALUE); what to write instead."""
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid value"))
    loc = tuple(err.get("loc", ()))
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        guess = did_you_mean(key, known_keys)
        fix = f"did you mean {guess!r}?" if guess else "remove it or check its spelling"
        if known_keys and not guess:
            fix += f" (known keys: {', '.join(known_keys)})"
        return f"unknown key {key!r}; {fix}"
    if kind in ("value_error", "assertion_error"):
        text = msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, ")) else msg
        return text
    if kind == "missing":
        return "required but missing; add it"
    if kind in ("literal_error", "enum"):
        choices = _choices(str(_ctx(err, "expected", "")))
        guess = did_you_mean(err.get("input"), choices)
        fix = f"did you mean {guess!r}? " if guess else ""
        return f"{short_repr(err.get('input'))} is not one of the choices; {fix}use one of: {', '.join(choices)}"
    hint = HINTS.get(kind)
    if hint is None:  # a kind no schema here produces: keep pydantic's words
        return f"{msg[:1].lower() + msg[1:]} (got {short_repr(err.get('input'))})"
    what, fix = hint(err)
    return f"{what} (got {short_repr(err.get('input'))}); {fix}"


def known_keys(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """The keys (aliases where set) the mapping at ``loc`` accepts, following the model's types."""
    target: Any = model
    for part in loc:
        target = _step(target, part)
        if target is None:
            return []
    model_cls = _model_of(target)
    if model_cls is None:
        return []
    return [f.alias or name for name, f in model_cls.model_fields.items()]


def _unwrap(tp: Any) -> list[Any]:
    """The alternatives of an annotation: Optional/Union members, Annotated's inner type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a) if t is not type(None)]
    return [tp]


def _model_of(tp: Any) -> type[BaseModel] | None:
    from pydantic import BaseModel

    for alt in _unwrap(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            return alt
    return None


def _step(tp: Any, part: str | int) -> Any:
    from pydantic import BaseModel

    for alt in _unwrap(tp):
        if isinstance(alt, type) and issubclass(alt, BaseModel) and isinstance(part, str):
            for name, f in alt.model_fields.items():
                if part in (name, f.alias):
                    return f.annotation
            return None
        origin, args = typing.get_origin(alt), typing.get_args(alt)
        if origin in (tuple, list, set, frozenset) and isinstance(part, int) and args:
            return args[0]
        if origin in (dict, Mapping) and len(args) == 2:
            return args[1]
    return None
