"""All Nix escaping lives here (STYLE.md points 10-12).

Modelled on nixpkgs ``lib.strings.escapeNixString``, ``escapeNixIdentifier`` and
``generators.toPretty``. Every function returns :class:`NixText`, the marker the template
environment's ``finalize`` hook accepts: a value that did not pass through here cannot reach a
generated file. Never ``json.dumps`` a Nix string: Python writes ``\\u00e9`` and Nix reads ``\\u``
as ``u`` (NixOS/nix#10082). This module imports only ``errors``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from forgegen.errors import RenderError

# Nix keywords: never bare attribute names (schema.py refuses them as names, render quotes them).
KEYWORDS = frozenset({"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"})
# A bare Nix identifier (attribute names that need no quoting).
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")


class NixText(str):
    """Text that is already valid, escaped Nix source."""

    __slots__ = ()


def _reject_nul(value: str) -> None:
    if "\0" in value:
        raise RenderError(f"cannot render {value!r} into Nix: Nix strings cannot contain NUL bytes; remove it")


def nix_str(value: str) -> NixText:
    """A double-quoted Nix string that evaluates to exactly ``value``.

    Escapes ``\\``, ``"``, ``$`` (so neither ``${`` nor ``$${`` can interpolate), newline, CR and
    tab; every other character, unicode included, passes through as UTF-8. Rejects NUL.
    """
    if not isinstance(value, str):
        raise RenderError(f"nix_str expects a string, got {type(value).__name__}: {value!r}")
    _reject_nul(value)
    out = (value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
           .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return NixText(f'"{out}"')


def nix_repo_path(relative: str, up: int) -> NixText:
    """The file ``relative`` (to the repository root) as a Nix path expression written in a file
    ``up`` directories below that root: ``(../.. + "/provision/db.yaml")``. The name goes through
    :func:`nix_str`, so any character a file name may hold is exact; absolute paths, ``..`` and
    empty names are refused (schema.py refuses them first)."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or ".." in parts or up < 1:
        raise RenderError(f"cannot write {relative!r} as a path inside the repository")
    root = "/".join([".."] * up)
    return NixText(f"({root} + {nix_str('/' + relative)})")


def nix_indented_str(value: str, indent: str = "  ") -> NixText:
    """A ``''…''`` indented string that evaluates to exactly ``value``, for readable multi-line text.

    Only ``${`` needs escaping inside (as ``''${``); values whose exact form would depend on the
    subtler rules (quotes, CR, tab, blank or space-led lines, no newline at all) fall back to the
    plain :func:`nix_str` form, which is always exact.
    """
    if not isinstance(value, str):
        raise RenderError(f"nix_indented_str expects a string, got {type(value).__name__}")
    _reject_nul(value)
    lines = value.split("\n")
    plain = (
        "\n" not in value
        or any(c in value for c in "'\r\t")
        or value.endswith("$")
        or any(not line.strip() or line[0].isspace() for line in lines[:-1])
        or (lines[-1] != "" and lines[-1][0].isspace())
    )
    if plain:
        return nix_str(value)
    body = "\n".join(indent + line.replace("${", "''${") if line else "" for line in lines)
    return NixText("''\n" + body + "''")


def nix_ident(name: str) -> NixText:
    """An attribute name: bare when it is a plain identifier, quoted otherwise (keywords too)."""
    if not isinstance(name, str):
        raise RenderError(f"nix_ident expects a string, got {type(name).__name__}: {name!r}")
    if IDENT.fullmatch(name) and name not in KEYWORDS:
        return NixText(name)
    return nix_str(name)


def nix_attrpath(parts: Sequence[str] | str) -> NixText:
    """A dotted attribute path; each component escaped with :func:`nix_ident`."""
    if isinstance(parts, str):
        parts = parts.split(".")
    if not parts:
        raise RenderError("an attribute path needs at least one component")
    return NixText(".".join(nix_ident(p) for p in parts))


def to_nix(value: Any, indent: str = "", *, width: int = 100) -> NixText:
    """Any JSON-like value as a Nix expression (attrsets sorted by key).

    Lists and attrsets of scalars that fit in ``width`` columns stay on one line.
    """
    if isinstance(value, NixText):
        return value
    if value is None:
        return NixText("null")
    if value is True:
        return NixText("true")
    if value is False:
        return NixText("false")
    if isinstance(value, int):
        return NixText(str(value) if value >= 0 else f"({value})")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError(f"cannot render {value!r} into Nix: not a finite number")
        text = repr(value)
        return NixText(text if value >= 0 else f"({text})")
    if isinstance(value, str):
        return nix_str(value)
    inner = indent + "  "
    if isinstance(value, Mapping):
        if not value:
            return NixText("{ }")
        for key in value:
            if not isinstance(key, str):
                raise RenderError(f"attribute names must be strings, got {key!r}")
        keys = sorted(value)
        if all(_scalar(value[k]) for k in keys):
            flat = "{ " + " ".join(f"{nix_ident(k)} = {to_nix(value[k])};" for k in keys) + " }"
            if len(flat) + len(indent) <= width and "\n" not in flat:
                return NixText(flat)
        items = [f"{inner}{nix_ident(k)} = {to_nix(value[k], inner, width=width)};" for k in keys]
        return NixText("{\n" + "\n".join(items) + f"\n{indent}}}")
    if isinstance(value, (list, tuple)):
        if not value:
            return NixText("[ ]")
        if all(_scalar(v) for v in value):
            flat = "[ " + " ".join(to_nix(v) for v in value) + " ]"
            if len(flat) + len(indent) <= width:
                return NixText(flat)
        items = [f"{inner}{to_nix(v, inner, width=width)}" for v in value]
        return NixText("[\n" + "\n".join(items) + f"\n{indent}]")
    raise RenderError(f"cannot render a {type(value).__name__} into Nix: {value!r}")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
