"""Read a YAML file into plain data plus the line and column of every value.

Used for ``deploy.yaml`` and the provisioning files so that every validation problem can be
reported as ``file:LINE:COL: path.to.field: what is wrong; what to do``. Duplicate mapping keys
(which YAML loaders silently collapse) are problems too. This module imports only ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forgegen import advice
from forgegen.errors import ConfigError, Problem

Loc = tuple[str | int, ...]


@dataclass
class Source:
    """Parsed YAML data and the position of each node, keyed by its path."""

    name: str
    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def where(self, loc: Sequence[str | int], *, key: bool = False) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the deepest known node on ``loc``."""
        loc = tuple(loc)
        table = self.key_positions if key else self.positions
        while loc:
            if loc in table:
                return table[loc]
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get((), (None, None))

    def problem(self, loc: Sequence[str | int], message: str, *, key: bool = False) -> Problem:
        line, col = self.where(loc, key=key)
        return Problem(self.name, line, col, format_loc(loc), message)


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_text(text: str, name: str, *, collect: bool = False) -> Source:
    """Parse YAML text. Syntax errors always raise; duplicate keys raise unless ``collect``,
    in which case they are left in ``source.problems`` to be reported with the rest."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = err.problem or err.context or "invalid YAML"
        raise ConfigError([Problem(name, line, col, "", f"not valid YAML: {what}; fix the syntax")]) from err
    except yaml.YAMLError as err:
        raise ConfigError([Problem(name, None, None, "", f"not valid YAML: {err}")]) from err
    source = Source(name, None)
    problems: list[Problem] = []
    if node is None:
        source.data = None
        return source
    constructor = yaml.SafeLoader("")
    source.data = _build(node, (), source, constructor, problems)
    source.problems = problems
    if problems and not collect:
        raise ConfigError(problems)
    return source


def load_file(path: str | Path, *, display: str | None = None, collect: bool = False) -> Source:
    path = Path(path)
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError([Problem(name, None, None, "", "file not found; create it (`forgegen init` writes a commented one) or pass --config")]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(name, None, None, "", f"cannot read the file: {err}")]) from err
    return load_text(text, name, collect=collect)


def _build(node: yaml.Node, loc: Loc, source: Source, constructor: yaml.SafeLoader,
           problems: list[Problem]) -> Any:
    source.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                problems.append(Problem(source.name, key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1, format_loc(loc),
                                        "a mapping key must be a plain scalar"))
                continue
            if not isinstance(key, str):
                key = str(key) if not isinstance(key, bool) else str(key).lower()
            child = loc + (key,)
            if key in out:
                first = source.key_positions.get(child, (None, None))
                problems.append(Problem(
                    source.name, key_node.start_mark.line + 1, key_node.start_mark.column + 1,
                    format_loc(child),
                    f"duplicate key {key!r} (first defined on line {first[0]}); "
                    "keep one of them"))
                continue
            source.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(value_node, child, source, constructor, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, loc + (i,), source, constructor, problems) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def problems_from_pydantic(source: Source, errors: Iterable[Mapping[str, Any]],
                           *, model: type | None = None) -> list[Problem]:
    """Turn pydantic ``ValidationError.errors()`` into located problems, one per line, each
    saying what to write instead (``model``, the validated class: "did you mean" for keys)."""
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in errors:
        loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-")))
        on_key = bool(loc) and loc[-1] == "[key]"
        if on_key:
            loc = loc[:-1]
        if err.get("type") == "extra_forbidden":
            msg = advice.message({**err, "loc": loc}, known_keys=advice.known_keys(model, loc[:-1]))
            problem = source.problem(loc, msg, key=True)
            problem = Problem(problem.file, problem.line, problem.column, format_loc(loc), msg)
        else:
            problem = source.problem(loc, advice.message(err), key=on_key)
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    out.sort(key=lambda p: (p.line or 0, p.column or 0, p.path))
    return out
