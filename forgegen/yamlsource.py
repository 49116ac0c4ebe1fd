"""The one YAML loader: plain data plus the line and column of every value, within limits.

Used for ``deploy.yaml`` and the provisioning files so that every validation problem can be
reported as ``file:LINE:COL: path.to.field: what is wrong; what to do``. Duplicate mapping keys
(which YAML loaders silently collapse) are problems too. Keys are the text the user wrote (YAML
1.1 would read ``on:`` as ``true`` and ``010:`` as ``8``).

Hostile input never ends in a traceback, a hang or a memory blow-up (:class:`Limits`): files
over a size limit are refused unread; nesting, values and aliases are counted while composing;
aliases in Forge's own files expand within a budget and may not contain themselves; GitOps
files (:func:`compose_all`) are returned as nodes, whose aliases are walked once, never
expanded. Bad tags (``!foo``, ``!!int abc``) are located problems like any other.
This module imports only ``errors``.
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


@dataclass(frozen=True)
class Limits:
    """Bounds on one YAML file: every parse stays within a second or two and bounded memory."""

    max_bytes: int  # the file's size
    max_depth: int  # nesting of mappings and sequences (also after following aliases)
    max_nodes: int  # values, counting each use of an alias as a copy (Forge's own files)
    max_aliases: int  # uses of ``*name``


#: deploy.yaml and the provisioning files: small, hand-written, no reason for deep tricks.
OWN_FILES = Limits(max_bytes=256 * 1024, max_depth=64, max_nodes=200_000, max_aliases=1_000)
#: GitOps manifests Forge reads but does not own: aliases are walked once, never expanded.
GITOPS_FILES = Limits(max_bytes=1024 * 1024, max_depth=128, max_nodes=1_000_000, max_aliases=100_000)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """PyYAML's pure-Python composer (its marks are exact), with the depth, node and alias
    counts of :class:`Limits` checked as it goes: past a limit it stops with a located error
    instead of recursing until Python gives up."""

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self.depth = 0
        self.nodes = 0
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise _limit_error(event.start_mark, f"more than {self.limits.max_aliases} aliases (*name); "
                                   "write the values out")
            return super().compose_node(parent, index)
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise _limit_error(event.start_mark, f"more than {self.limits.max_nodes} values; split the file")
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise _limit_error(event.start_mark, f"nested too deep (more than {self.limits.max_depth} "
                                   "levels of mappings and sequences); flatten it")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _LimitError(yaml.composer.ComposerError):
    """A :class:`Limits` bound was reached while composing."""


def _limit_error(mark: Any, problem: str) -> yaml.MarkedYAMLError:
    return _LimitError(None, None, problem, mark)


# libyaml refuses nesting deeper than 1,000 levels (since 0.2.5), so its composer cannot recurse
# without bound; it is ~6x faster than PyYAML's. Its marks count lines and columns, not offsets.
_FAST = bool(getattr(yaml, "__with_libyaml__", False)) and yaml._yaml.get_version() >= (0, 2, 5)


def compose_all(text: str, name: str, limits: Limits = GITOPS_FILES, *,
                offsets: bool = True) -> list[yaml.Node]:
    """The composed documents of ``text`` (nodes keep their marks; an alias is the same node
    object as its anchor: walk them once). Every problem is a located :class:`ConfigError`.
    ``offsets=False`` allows the faster libyaml composer (marks then have exact lines and
    columns but no character offsets); depth and node counts are then left to the caller."""
    if len(text) > limits.max_bytes:
        raise ConfigError([_too_big(name, limits)])
    loader: Any = None
    # libyaml refuses a ``\\uD800``-style escape outright; the Python reader keeps the surrogate
    # so that a JSON-escaped pair becomes its character and a lone one a located, named problem.
    fast = _FAST and not offsets and "\\u" not in text.lower()
    try:
        loader = yaml.CSafeLoader(text) if fast else _Loader(text, limits)
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = err.problem or err.context or "invalid YAML"
        message = what if isinstance(err, _LimitError) else f"not valid YAML: {what}; fix the syntax"
        raise ConfigError([Problem(name, line, col, "", message)]) from err
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (NUL, most controls)
        before = text[:err.position]
        line, col = before.count("\n") + 1, err.position - before.rfind("\n")
        raise ConfigError([Problem(name, line, col, "", f"not valid YAML: character {err.character:#06x} is not "
                                   "allowed; remove it (write it as an escape in a double-quoted string)")]) from err
    except yaml.YAMLError as err:
        raise ConfigError([Problem(name, None, None, "", f"not valid YAML: {err}")]) from err
    finally:
        if loader is not None:
            loader.dispose()


def _too_big(name: str, limits: Limits) -> Problem:
    return Problem(name, None, None, "", f"the file is larger than the {limits.max_bytes // 1024} KiB limit "
                   "for YAML Forge reads; split it or remove what it does not need")


def load_text(text: str, name: str, *, collect: bool = False, limits: Limits = OWN_FILES) -> Source:
    """Parse one YAML document within ``limits``. Syntax errors and limits always raise; value
    problems (duplicate keys, bad tags, recursive aliases) raise unless ``collect``, in which case
    they are left in ``source.problems`` to be reported with the rest."""
    nodes = compose_all(text, name, limits, offsets=False)  # _Builder checks depth and size
    if len(nodes) > 1:
        start = nodes[1].start_mark
        raise ConfigError([Problem(name, start.line + 1, start.column + 1, "",
                                   "a second YAML document (after '---'); keep one document per file")])
    source = Source(name, None)
    if not nodes:
        return source
    builder = _Builder(source, limits)
    try:
        source.data = builder.build(nodes[0], (), 1)
    except _Stop:
        raise ConfigError(builder.problems) from None
    source.problems = builder.problems
    if builder.problems and not collect:
        raise ConfigError(builder.problems)
    return source


def load_file(path: str | Path, *, display: str | None = None, collect: bool = False,
              limits: Limits = OWN_FILES) -> Source:
    path = Path(path)
    name = display or str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
        if len(raw) > limits.max_bytes:
            raise ConfigError([_too_big(name, limits)])
        text = raw.decode("utf-8")
    except FileNotFoundError as err:
        raise ConfigError([Problem(name, None, None, "", "file not found; create it (`forgegen init` writes a "
                                                          "commented one) or pass --config")]) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(name, None, None, "", f"cannot read the file: {err}")]) from err
    return load_text(text, name, collect=collect, limits=limits)


class _Stop(Exception):
    """A limit was reached while expanding aliases: the problem is recorded; stop building."""


class _Builder:
    """Plain data from composed nodes, with the position of every value. Aliases are expanded
    (each use counts against ``max_nodes`` and ``max_depth``); an alias inside its own anchor is
    a problem; ``<<`` merge keys merge, and keys written in the mapping win over merged ones."""

    def __init__(self, source: Source, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")
        self.count = 0
        self.active: set[int] = set()

    def problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.source.name, node.start_mark.line + 1, node.start_mark.column + 1,
                                     format_loc(loc), message))

    def build(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.count += 1
        if self.count > self.limits.max_nodes or depth > self.limits.max_depth:
            what = (f"more than {self.limits.max_nodes} values" if depth <= self.limits.max_depth
                    else f"nested deeper than {self.limits.max_depth} levels")
            self.problem(node, loc, f"the aliases (*name) here expand to {what}; write the values out")
            raise _Stop
        if id(node) in self.active:
            self.problem(node, loc, "an alias (*name) refers to a value that contains it; "
                         "a value cannot include itself")
            return None
        self.source.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, loc)
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.problem(node, loc, f"unsupported tag {node.tag!r}; remove it (Forge reads plain YAML "
                         "mappings, sequences and scalars)")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, loc, depth)
            return [self.build(item, loc + (i,), depth + 1) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self.problem(node, loc, f"unsupported tag {node.tag!r}; remove it (Forge reads plain YAML values)")
        except (ValueError, TypeError, ArithmeticError, LookupError) as err:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(node, loc, f"{advice.short_repr(node.value)} is not a valid {tag} ({str(err)[:80]}); "
                         "fix the value or remove the tag")
        return None

    def mapping(self, node: yaml.MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, loc, "a mapping key must be a plain scalar")
                continue
            if key_node.tag == _MERGE_TAG:
                for key, value in self.merge(value_node, loc, depth).items():
                    merged.setdefault(key, value)
                continue
            key = key_node.value  # the text the user wrote: `on`, `010`, `null` stay strings
            child = loc + (key,)
            if key in out:
                first = self.source.key_positions.get(child, (None, None))
                self.problem(key_node, child, f"duplicate key {key!r} (first defined on line {first[0]}); "
                             "keep one of them")
                continue
            self.source.key_positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, child, depth + 1)
        return {**{k: v for k, v in merged.items() if k not in out}, **out} if merged else out

    def merge(self, value_node: yaml.Node, loc: Loc, depth: int) -> dict[str, Any]:
        """``<<: *base`` or ``<<: [*a, *b]`` (earlier sources win)."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        out: dict[str, Any] = {}
        here = self.source.positions.get(loc)
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                self.problem(src, loc, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            built = self.build(src, loc, depth)
            for key, value in (built or {}).items():
                out.setdefault(key, value)
        if here is not None:
            self.source.positions[loc] = here
        return out


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
