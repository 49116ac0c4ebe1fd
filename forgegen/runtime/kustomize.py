"""Byte-surgical edits of image references in kustomize files (STYLE.md point 32).

Pure functions of text, no I/O. Two kinds of places name an image:

* **kustomize ``images[]`` entries** in any document of the file: an entry matches when its
  ``name`` (or its ``newName``) is the image. The edit sets ``newTag`` (or ``digest`` when
  deploying by digest), wherever the keys sit in the entry, in block or flow style. A missing
  key is inserted after the ``name`` line (block) or after the ``name`` value (flow). Deploying
  by tag alone removes a ``digest`` from a matched entry, because kustomize would render the
  digest and ignore the tag (``name:tag@digest``).
* **Flux image-automation setter comments**: a trailing ``# {"$imagepolicy": "NS:POLICY"}``
  marks a whole reference (``image: repo:tag``), which becomes ``<image>:<tag>`` (or
  ``<image>@<digest>``, or both) when its repository is the image. ``NS:POLICY:name``,
  ``:tag`` and ``:digest`` mark the split fields of ONE reference (kustomize ``newName`` /
  ``newTag`` / ``digest``, or Helm values ``repository`` / ``tag`` / ``digest``), ours when the
  policy's ``:name`` field (or a sibling value in the same mapping) is the image. They are edited
  together with the ``images[]`` semantics: a tag deploy writes ``:tag`` and empties ``:digest``
  (``""``); a digest deploy writes ``:digest`` and keeps ``:tag``; a digest deploy for a policy
  with no ``:digest`` field is refused (nowhere to write it). ``:name`` fields never change.

The file is read the way the YAML loader reads it: aliases stand for their anchor's node and
merge keys (``<<: *base``) supply the keys a mapping does not set itself (the mapping's own keys
win). An edit never changes what another image (or any other value) reads:

* a value only our entries read is edited where it is written (an anchored ``newTag: &t v1``
  keeps its anchor);
* our entry reading a shared value through an alias (``newTag: *t``) gets the value written in
  place of the alias; a value it reads through a merge key gets an own key, which overrides it;
* a value written in our entry but also read elsewhere is edited there, and the first alias of
  it elsewhere becomes the anchored old value (``*t`` → ``&t v1``), so later aliases keep it; a
  mapping merging our entry gets the old value as its own key.

Refused with a located error (``file:line:col``, exit 2): duplicate keys in a matched entry or
setter mapping, an image listed twice in one ``images:`` list, a duplicate ``images`` key, a
matched entry also used through an alias. Places Forge does not edit (Flux ``Kustomization``
``spec.images``, Flux ``ImagePolicy`` objects, Argo CD ``Application`` ``kustomize.images``) are
named as not supported when nothing else names the image.

How: the file is split into its YAML documents (at ``---`` lines) and only documents that can
name the image are parsed, with libyaml's event parser, whose marks are character offsets; no
alias is ever expanded (each node is visited once), so the work is linear in the file's size.
The new scalar is spliced into exactly the old scalar's span; every character outside the edited
spans is unchanged (comments, anchors, key order, quoting of other values, ``---`` separators,
CRLF line endings, a BOM). A replacement keeps the old quoting style when the new value is safe
in it, and is double-quoted when a plain scalar would not read back as the same string (``123``,
``1e5``, ``on``, or a ``:`` inside a flow mapping). The edited documents are parsed again and
compared with the originals as the loader reads them: only the intended fields may differ, and
they must hold the new values. Editing the result again with the same values changes nothing.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from forgegen.errors import GitOpsError, GitOpsFileError

TAG_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
DIGEST_RE = re.compile(r"\A[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}\Z")
_SETTER_RE = re.compile(r'#\s*\{\s*"\$imagepolicy"\s*:\s*"([^"\\]*)"\s*\}[ \t]*$')
# Words some YAML 1.1 readers (sigs.k8s.io/yaml, which kustomize uses) turn into booleans or null.
_SPECIAL_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""}
_PLAIN_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_./@:+=-]*\Z")
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER: Any = yaml.resolver.Resolver()  # its methods are untyped in the stubs
_MAX_MERGED = 1_000_000  # keys gathered through merge keys, beyond 20 per character of the file

Field = Literal["newTag", "digest", "image", "tag", "name"]


@dataclass(frozen=True)
class Match:
    """One place in the file that names the image (and what the edit does there)."""

    kind: Literal["images", "setter"]
    field: Field  # images: newTag / digest; setter: image (whole reference) / tag / digest
    line: int  # 1-based line of the value (or of the entry's name for an inserted key)
    old: str | None  # None: the key was missing (inserted)
    new: str | None  # None: the key is removed (a digest, when deploying by tag)
    new_name: str | None = None  # the images entry's newName, which kustomize renders
    policy: str | None = None  # the setter's "NS:POLICY"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "field": self.field, "line": self.line, "old": self.old,
                "new": self.new, "new_name": self.new_name, "policy": self.policy}


@dataclass(frozen=True)
class EditResult:
    text: str
    changed: bool
    matches: tuple[Match, ...]  # every field that names our image's tag/digest (edited or not)
    found_images: tuple[str, ...]  # every image the parsed documents name, sorted
    rendered: tuple[str, ...] = ()  # what kustomize renders for the matched images[] entries, after the edit


@dataclass(frozen=True)
class ImageState:
    """What the file currently deploys for an image: the first match's tag and digest."""

    tag: str | None
    digest: str | None
    matches: int


# ---------------------------------------------------------------------------------------------
# Public functions


def check_tag(tag: str) -> str:
    if not TAG_RE.match(tag):
        raise GitOpsError(
            f"cannot write image tag {tag!r}: not a valid tag (letters, digits, '_', '.', '-'; "
            "at most 128, not starting with '.' or '-')",
            hint="pass the tag Forge pushed, such as amd64-1a2b3c4")
    return tag


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise GitOpsError(f"cannot write image digest {digest!r}: not a digest (algorithm:hex)",
                          hint="pass the digest the registry reported, such as sha256:<64 hex digits>")
    return digest


def edit_images(text: str, image: str, *, tag: str | None = None, digest: str | None = None,
                source: str = "kustomization.yaml") -> EditResult:
    """Point every reference to ``image`` in ``text`` at ``tag`` and/or ``digest``.

    Raises :class:`GitOpsError` when nothing in the file names the image (the message lists the
    images it does name, or the unsupported places that do), when the file is not YAML or holds
    a duplicate or shared entry (:class:`GitOpsFileError`), or for an invalid tag/digest.
    ``source`` names the file in messages.
    """
    if tag is None and digest is None:
        raise GitOpsError("cannot edit the image reference: neither a tag nor a digest was given",
                          hint="pass tag= or digest=")
    if tag is not None:
        check_tag(tag)
    if digest is not None:
        check_digest(digest)
    before = _File(text, source, image)
    sites = before.locate()
    if not sites:
        raise before.no_match()
    plan = _Plan(before, sites)
    matches = [m for site in sites for m in site.plan(plan, tag, digest)]
    new_text = _splice(text, plan.edits)
    final = sites
    if new_text != text:
        after = _File(new_text, source, image, like=before, edits=plan.edits)
        final = after.locate()
        _verify(before, after, final, tag, digest)
    rendered = tuple(sorted({r for s in final for r in s.rendered()}))
    return EditResult(new_text, new_text != text, tuple(matches), before.found_images(), rendered)


def read_image(text: str, image: str, *, source: str = "kustomization.yaml") -> ImageState:
    """The tag and digest ``text`` deploys for ``image`` (first match, as kustomize reads it)."""
    doc = _File(text, source, image)
    sites = doc.locate()
    if not sites:
        raise doc.no_match()
    tag, digest = sites[0].current()
    return ImageState(tag, digest, len(sites))


def no_match_error(image: str, found: tuple[str, ...], source: str) -> GitOpsError:
    names = ", ".join(found) if found else "none"
    return GitOpsError(
        f"cannot set the tag of {image}: {source} has no images[] entry or $imagepolicy setter "
        f"for it (images it names: {names})",
        hint=f"add `images: [{{name: {image}, newTag: <tag>}}]` to {source}, or fix "
             "services.<name>.image / gitops.path in deploy.yaml")


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``host:5000/a/b:tag@sha256:…`` → (``host:5000/a/b``, ``tag``, ``sha256:…``)."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, (digest or None)


def join_reference(name: str, tag: str | None, digest: str | None) -> str:
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# ---------------------------------------------------------------------------------------------
# Reading: documents, nodes and where each node occurs


class _Node:
    """A composed YAML node: ``s`` scalar, ``m`` mapping, ``q`` sequence (offsets into the file)."""

    __slots__ = ("kind", "start", "end", "vstart", "value", "tag", "style", "flow", "pairs", "items",
                 "uses", "merges")

    def __init__(self, kind: str, start: int) -> None:
        self.kind = kind
        self.start = self.end = self.vstart = start
        self.value = ""
        self.tag = _STR
        self.style: str | None = None
        self.flow = False
        self.pairs: list[tuple[_Slot, _Slot]] = []
        self.items: list[_Slot] = []
        self.uses: list[_Slot] = []  # every place the node occurs (its definition, then aliases)
        self.merges: list[_Node] = []  # mappings merged in by ``<<``, in precedence order


class _Slot:
    """One occurrence of a node: in a mapping (``key`` / ``value``), a sequence (``item``), merged
    into a mapping (``merge``), or a document (``root``); ``alias`` is the ``*name`` token's span."""

    __slots__ = ("node", "alias", "parent", "role", "key")

    def __init__(self, node: _Node, alias: tuple[int, int] | None, parent: _Node | None, role: str,
                 key: _Slot | None = None) -> None:
        self.node, self.alias, self.parent, self.role, self.key = node, alias, parent, role, key

    @property
    def start(self) -> int:
        return self.alias[0] if self.alias else self.node.start

    @property
    def end(self) -> int:
        return self.alias[1] if self.alias else self.node.end


def _chunks(text: str) -> list[tuple[int, int]]:
    """The file cut before every ``---`` line (with the directives that precede it)."""
    starts = [0]
    directives = text.startswith("%") or "\n%" in text
    found = text.find("\n---")
    while found >= 0:
        at = found + 1
        found = text.find("\n---", at)
        if text[at + 3:at + 4] not in ("", " ", "\t", "\r", "\n"):
            continue  # ``----`` or ``---x``: content, not a document marker
        while directives and at > 0:  # ``%YAML`` / ``%TAG`` lines belong to the document that follows
            prev = text.rfind("\n", 0, at - 1) + 1
            if not text.startswith("%", prev):
                break
            at = prev
        if at > starts[-1]:
            starts.append(at)
    return list(zip(starts, starts[1:] + [len(text)]))


def _shift(chunks: list[tuple[int, int]], edits: dict[tuple[int, int], str]) -> list[tuple[int, int]]:
    """Document boundaries after ``edits`` (none of which crosses a boundary)."""
    deltas = sorted((end, len(new) - (end - start)) for (start, end), new in edits.items())
    out, shift, n = [], 0, 0
    for start, _ in chunks:
        while n < len(deltas) and deltas[n][0] <= start:
            shift += deltas[n][1]
            n += 1
        out.append(start + shift if start else 0)
    total = sum(d for _, d in deltas)
    return list(zip(out, out[1:] + [chunks[-1][1] + total]))


def _compose(text: str, base: int) -> tuple[list[_Node], list[_Slot]]:
    """The documents of ``text`` (offsets shifted by ``base``) and every scalar's occurrences.
    Aliases are linked to their anchor's node, never expanded."""
    roots: list[_Node] = []
    scalars: list[_Slot] = []
    stack: list[list[Any]] = []  # [node, pending key slot]
    anchors: dict[str, _Node] = {}
    for ev in yaml.parse(text, Loader=_PARSER):
        first, last = ev.start_mark, ev.end_mark
        assert first is not None and last is not None  # the parser marks every event
        if isinstance(ev, ScalarEvent):
            node = _Node("s", base + first.index)
            node.end, node.value, node.style = base + last.index, ev.value, ev.style
            node.tag = ev.tag if ev.tag and ev.tag != "!" else (
                _STR if ev.tag == "!" else _RESOLVER.resolve(yaml.ScalarNode, ev.value, ev.implicit))
            if ev.anchor or ev.tag:
                node.vstart = _skip_properties(text, first.index, last.index) + base
            anchors.update({ev.anchor: node} if ev.anchor else {})
            scalars.append(_attach(stack, roots, node, None))
        elif isinstance(ev, AliasEvent):
            alias = anchors.get(ev.anchor or "")
            if alias is None:
                raise _ComposeError(f"found undefined alias *{ev.anchor}", first.index)
            slot = _attach(stack, roots, alias, (base + first.index, base + last.index))
            if alias.kind == "s":
                scalars.append(slot)
        elif isinstance(ev, MappingStartEvent | SequenceStartEvent):
            node = _Node("m" if isinstance(ev, MappingStartEvent) else "q", base + first.index)
            node.flow = bool(ev.flow_style)
            anchors.update({ev.anchor: node} if ev.anchor else {})
            _attach(stack, roots, node, None)
            stack.append([node, None])
        elif isinstance(ev, MappingEndEvent | SequenceEndEvent):
            node = stack.pop()[0]
            node.end = base + last.index
            if isinstance(ev, MappingEndEvent):
                _link_merges(node)
        elif isinstance(ev, DocumentStartEvent):
            anchors = {}
    return roots, scalars


class _ComposeError(Exception):
    def __init__(self, problem: str, index: int) -> None:
        super().__init__(problem)
        self.problem, self.index = problem, index


def _skip_properties(text: str, start: int, end: int) -> int:
    m = re.compile(r"(?:[&!][^\s]*\s+)+").match(text, start, end)
    return m.end() if m else start


def _attach(stack: list[list[Any]], roots: list[_Node], node: _Node, alias: tuple[int, int] | None) -> _Slot:
    if not stack:
        slot = _Slot(node, alias, None, "root")
        roots.append(node)
    else:
        frame = stack[-1]
        parent = frame[0]
        if parent.kind == "q":
            slot = _Slot(node, alias, parent, "item")
            parent.items.append(slot)
        elif frame[1] is None:
            slot = frame[1] = _Slot(node, alias, parent, "key")
        else:
            slot = _Slot(node, alias, parent, "value", frame[1])
            parent.pairs.append((frame[1], slot))
            frame[1] = None
    node.uses.append(slot)
    return slot


def _link_merges(mapping: _Node) -> None:
    for key, value in mapping.pairs:
        if key.node.kind == "s" and key.node.tag == _MERGE:
            sources = [value] if value.node.kind == "m" else value.node.items if value.node.kind == "q" else []
            for src in sources:
                if src.node.kind == "m":  # the occurrence becomes a merge into ``mapping``
                    mapping.merges.append(src.node)
                    src.role, src.parent, src.key = "merge", mapping, key


def _key(slot: _Slot | None) -> str | None:
    if slot is None or slot.node.kind != "s":
        return None
    return slot.node.value


def _str(pair: tuple[_Slot, _Slot] | None) -> str | None:
    """The string value kustomize reads (None for a missing, null, empty or non-scalar value)."""
    if pair is None or pair[1].node.kind != "s" or pair[1].node.tag == _NULL:
        return None
    return pair[1].node.value or None


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


class _File:
    """One file's documents, parsed on demand (only documents that can name the image)."""

    def __init__(self, text: str, source: str, image: str, *, like: _File | None = None,
                 edits: dict[tuple[int, int], str] | None = None) -> None:
        """``like``/``edits``: the file ``text`` was made from by ``edits`` (its documents are
        the same, shifted; the same ones can name the image)."""
        self.text, self.source, self.image = text, source, image
        self.chunks: list[tuple[int, int]] = _chunks(text) if like is None or edits is None else _shift(like.chunks, edits)
        self.parsed: dict[int, tuple[list[_Node], list[_Slot]]] = {}
        self.whole: tuple[list[_Node], list[_Slot]] | None = None
        self.effs: dict[int, dict[str, tuple[_Slot, _Slot]]] = {}
        self.work = 0  # keys gathered through merge keys so far (a merge bomb stops here)
        self.found: set[str] = set()
        self._relevant: list[int] | None = like._relevant if like is not None else None
        first = text[: text.find("\n") + 1 or len(text)]
        self.eol = "\r\n" if first.endswith("\r\n") else "\n"

    # -- parsing -------------------------------------------------------------------------

    def where(self, index: int) -> str:
        return f"{self.source}:{_line_of(self.text, index)}:{index - self.text.rfind(chr(10), 0, index)}"

    def error(self, index: int, what: str, hint: str) -> GitOpsFileError:
        return GitOpsFileError(f"cannot edit {self.where(index)}: {what}", hint=hint)

    def _parse(self, start: int, end: int) -> tuple[list[_Node], list[_Slot]]:
        sub = self.text[start:end]
        base = start
        if sub.startswith("\ufeff"):  # libyaml's marks do not count a byte-order mark
            sub, base = sub[1:], base + 1
        # PyYAML refuses tabs before a comment (``v1\t# note``), which other readers accept: read a
        # copy with tabs as spaces (same length, so every offset holds; names and tags have no tabs).
        try:
            return _compose(sub.replace("\t", " "), base)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            problem = getattr(err, "problem", None) or str(err)
            raise self.error(base + (mark.index if mark else 0), f"not valid YAML ({problem})",
                             "fix the file in the GitOps repository, then deploy again") from err
        except _ComposeError as err:
            raise self.error(base + err.index, f"not valid YAML ({err.problem})",
                             "fix the file in the GitOps repository, then deploy again") from err

    def chunk(self, i: int) -> tuple[list[_Node], list[_Slot]]:
        if self.whole is not None:
            return self.whole if i == 0 else ([], [])
        if i not in self.parsed:
            try:
                self.parsed[i] = self._parse(*self.chunks[i])
            except GitOpsFileError:
                # A cut in the wrong place (a ``%`` line inside a top-level block scalar): the
                # whole file decides whether it is valid, read in one piece.
                self.whole = self._parse(0, len(self.text))
                return self.chunk(i)
        return self.parsed[i]

    def relevant(self, everything: bool = False) -> list[int]:
        """Documents that can name the image (its text, or an escape that could spell it)."""
        if everything or self.whole is not None:
            return list(range(len(self.chunks)))
        if self._relevant is None:
            # The image's name, not a longer name it begins (``…/svc7`` in ``…/svc70``).
            name = re.compile(re.escape(self.image) + r"(?![A-Za-z0-9_./-])")
            self._relevant = sorted({i for needle in (name, "\\") for i in self._chunks_with(needle)})
        return self._relevant

    def _chunks_with(self, needle: str | re.Pattern[str]) -> Iterator[int]:
        """The documents ``needle`` occurs in (one search per hit, skipping to the next document)."""
        starts = [s for s, _ in self.chunks]
        pos = 0
        while True:
            if isinstance(needle, str):
                pos = self.text.find(needle, pos)
            else:
                m = needle.search(self.text, pos)
                pos = m.start() if m else -1
            if pos < 0:
                return
            i = bisect.bisect_right(starts, pos) - 1
            yield i
            pos = self.chunks[i][1]

    def eff(self, mapping: _Node) -> dict[str, tuple[_Slot, _Slot]]:
        """The mapping's keys as the loader reads them: merged keys, overridden by its own (last
        wins). Iterative, each mapping once; a merge cycle reads as nothing; bounded work."""
        if id(mapping) in self.effs:
            return self.effs[id(mapping)]
        stack, pending = [(mapping, False)], set()
        while stack:
            node, ready = stack.pop()
            if id(node) in self.effs:
                continue
            if not ready:
                pending.add(id(node))
                stack.append((node, True))
                stack.extend((m, False) for m in node.merges if id(m) not in self.effs and id(m) not in pending)
                continue
            out: dict[str, tuple[_Slot, _Slot]] = {}
            for merged in reversed(node.merges):
                out.update(self.effs.get(id(merged), {}))
            for k, v in node.pairs:
                name = _key(k)
                if name is not None and k.node.tag != _MERGE:
                    out[name] = (k, v)
            self.work += len(out)
            if self.work > _MAX_MERGED + 20 * len(self.text):
                raise self.error(node.start, "merge keys (<<) here expand to too many keys to read safely",
                                 "write the mappings out, then deploy again")
            self.effs[id(node)] = out
        return self.effs[id(mapping)]

    def duplicate(self, mapping: _Node, only: str | None = None) -> _Slot | None:
        """The second occurrence of a key in the mapping's own keys (of ``only``, when given)."""
        seen: set[str] = set()
        for k, _ in mapping.pairs:
            name = _key(k)
            if name is None or k.node.tag == _MERGE or (only is not None and name != only):
                continue
            if name in seen:
                return k
            seen.add(name)
        return None

    def mergers(self, mapping: _Node) -> list[_Node]:
        """Every mapping that merges ``mapping`` in, directly or through other merges."""
        out: list[_Node] = []
        stack, seen = [mapping], {id(mapping)}
        while stack:
            for use in stack.pop().uses:
                if use.role == "merge" and use.parent is not None and id(use.parent) not in seen:
                    seen.add(id(use.parent))
                    out.append(use.parent)
                    stack.append(use.parent)
        return out

    # -- locating ------------------------------------------------------------------------

    def locate(self, everything: bool = False) -> list[_Site]:
        sites: list[_Site] = []
        chunks = self.relevant(everything)
        for i in chunks:
            for root in self.chunk(i)[0]:
                sites.extend(self._entries(root))
        taken = {id(slot) for s in sites if isinstance(s, _EntrySite) for _, slot in s.entry.pairs}
        marked = [i for i in chunks if self.text.find("$imagepolicy", *self.chunks[i]) >= 0]
        if self.whole is not None:  # read in one piece: its nodes are all in the first "document"
            marked = [0] if marked else []
        sites.extend(self._setters([slot for i in marked for slot in self.chunk(i)[1]], taken))
        return sites

    def _entries(self, root: _Node) -> Iterator[_EntrySite]:
        if root.kind != "m" or "images" not in self.eff(root):
            return
        seq = self.eff(root)["images"][1]
        if seq.node.kind != "q":
            return
        names: dict[str, _Slot] = {}
        ours = []
        for item in seq.node.items:
            if item.node.kind != "m":
                continue
            fields = self.eff(item.node)
            name, new_name = _str(fields.get("name")), _str(fields.get("newName"))
            self.found.update(n for n in (name, new_name) if n)
            if self.image in (name, new_name):
                ours.append(self._entry(root, seq, item, fields, names))
            if name is not None:
                names.setdefault(name, item)
        if ours:
            dup = self.duplicate(root, "images")
            if dup is not None:
                raise self.error(dup.start, "the key images is there twice in one document (kustomize "
                                 "reads only the last)", "keep one images: list, then deploy again")
        yield from ours

    def _entry(self, root: _Node, seq: _Slot, item: _Slot, fields: dict[str, tuple[_Slot, _Slot]],
               names: dict[str, _Slot]) -> _EntrySite:
        name_pair = fields.get("name")
        at = name_pair[0].start if name_pair else item.start
        if _str(name_pair) == self.image and self.image in names:
            first = names[self.image]
            raise self.error(at, f"{self.image} is listed twice in images: (also at line "
                             f"{_line_of(self.text, first.start)}; kustomize applies the last)",
                             "keep one entry for the image, then deploy again")
        dup = self.duplicate(item.node)
        if dup is not None:
            raise self.error(dup.start, f"the images entry for {self.image} sets {dup.node.value} twice "
                             "(kustomize reads only the last)", f"keep one {dup.node.value}:, then deploy again")
        for node in (item.node, seq.node):
            shared = [u for u in node.uses if u.alias and u.role != "merge"]
            if shared or len([u for u in node.uses if u.role != "merge"]) != 1:
                use = shared[0] if shared else node.uses[-1]
                raise self.error(use.start, f"the images entry for {self.image} (line "
                                 f"{_line_of(self.text, item.start)}) is also used through this alias",
                                 "write the entry out in full where it is used, then deploy again")
        return _EntrySite(self, item.node, fields)

    def _setters(self, scalars: list[_Slot], taken: set[int]) -> list[_Site]:
        """Sites marked by ``$imagepolicy`` comments: the last value on a line, then the comment."""
        text = self.text
        last: dict[int, _Slot] = {}
        for slot in scalars:
            if slot.role in ("value", "item"):
                end = slot.end
                line_end = _line_end(text, end)
                if text.find("#", end, line_end) >= 0 and (line_end not in last or last[line_end].end < end):
                    last[line_end] = slot
        sites: list[_Site] = []
        groups: dict[str, dict[str, list[_Slot]]] = {}
        for line_end, slot in last.items():
            tail = text[slot.end:line_end].rstrip("\r")
            m = _SETTER_RE.search(tail)
            if not m or tail[: m.start()].strip():
                continue
            ns, _, rest = m.group(1).partition(":")
            name, _, suffix = rest.partition(":")
            policy, value = f"{ns}:{name}", slot.node.value if slot.node.kind == "s" else ""
            if suffix == "":
                repository = split_reference(value)[0]
                self.found.update([repository] if repository else [])
                if repository == self.image:
                    sites.append(_RefSite(self, policy, {"image": [self._setter_slot(slot)]}))
            elif suffix in ("name", "tag", "digest"):
                groups.setdefault(policy, {}).setdefault(suffix, []).append(slot)
                self.found.update([value] if suffix == "name" and value else [])
        for policy, fields in groups.items():
            names = {s.node.value for s in fields.get("name", [])}
            edited = fields.get("tag", []) + fields.get("digest", [])
            siblings = {v.node.value for s in edited if s.parent is not None and s.parent.kind == "m"
                        for _, v in s.parent.pairs if v.node.kind == "s"}
            if self.image in names or self.image in siblings:
                rest = {k: [self._setter_slot(s) for s in fields.get(k, []) if id(s) not in taken]
                        for k in ("tag", "digest")}
                if rest["tag"] or rest["digest"]:
                    sites.append(_SplitSite(self, policy, rest))
        return sites

    def _setter_slot(self, slot: _Slot) -> _Slot:
        if slot.role == "value" and slot.parent is not None:
            dup = self.duplicate(slot.parent, _key(slot.key))
            if dup is not None:
                raise self.error(dup.start, f"the key {dup.node.value} is there twice in the mapping of an "
                                 "$imagepolicy field (readers take the last)", "keep one, then deploy again")
        return slot

    def found_images(self) -> tuple[str, ...]:
        return tuple(sorted(self.found))

    def no_match(self) -> GitOpsError:
        self.locate(everything=True)  # every document: the names and places it does have
        places = [f"{what} ({self.where(at)})" for what, at in self._unsupported()]
        if not places:
            return no_match_error(self.image, self.found_images(), self.source)
        return GitOpsError(
            f"cannot set the tag of {self.image}: {self.source} has no images[] entry or $imagepolicy setter "
            f"for it; it has {', '.join(places)}, which Forge does not edit (not supported)",
            hint="Forge edits kustomize images[] entries (in a kustomization.yaml) and fields marked with a Flux "
                 "setter comment (`# {\"$imagepolicy\": \"NS:POLICY\"}`): point gitops.path / gitops.file at "
                 "such a file, or mark the field")

    def _unsupported(self) -> Iterator[tuple[str, int]]:
        for i in range(len(self.chunks)):
            for root in self.chunk(i)[0]:
                if root.kind != "m":
                    continue
                fields = self.eff(root)
                kind, api = _str(fields.get("kind")) or "", _str(fields.get("apiVersion")) or ""
                if api.startswith("image.toolkit.fluxcd.io/"):
                    yield f"Flux {kind} object", fields["kind"][1].start
                elif kind == "Kustomization" and api.startswith("kustomize.toolkit.fluxcd.io/"):
                    found = self._path(root, "spec", "images")
                    if found is not None:
                        yield "Flux Kustomization spec.images", found[0].start
                elif kind in ("Application", "ApplicationSet") and api.startswith("argoproj.io/"):
                    spec = self._path(root, "spec", "template", "spec") if kind == "ApplicationSet" else \
                        self._path(root, "spec")
                    sources = [self._path(spec[1].node, "source")] if spec is not None else []
                    multi = self._path(spec[1].node, "sources") if spec is not None else None
                    sources += [(s, s) for s in multi[1].node.items] if multi and multi[1].node.kind == "q" else []
                    for src in sources:
                        found = self._path(src[1].node, "kustomize", "images") if src is not None else None
                        if found is not None:
                            yield f"Argo CD {kind} spec.source.kustomize.images", found[0].start

    def _path(self, node: _Node, *keys: str) -> tuple[_Slot, _Slot] | None:
        """The (key, value) of a path of keys under ``node``."""
        pair = None
        for key in keys:
            if node.kind != "m" or key not in self.eff(node):
                return None
            pair = self.eff(node)[key]
            node = pair[1].node
        return pair


# ---------------------------------------------------------------------------------------------
# Sites and their edits


class _Site:
    doc: _File

    def plan(self, p: _Plan, tag: str | None, digest: str | None) -> list[Match]:
        raise NotImplementedError

    def current(self) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def rendered(self) -> list[str]:
        return []

    def slots(self) -> list[_Slot]:
        return []


class _EntrySite(_Site):
    """A kustomize ``images[]`` entry for the image (its keys as the loader reads them)."""

    def __init__(self, doc: _File, entry: _Node, fields: dict[str, tuple[_Slot, _Slot]]) -> None:
        self.doc, self.entry, self.fields = doc, entry, fields

    def current(self) -> tuple[str | None, str | None]:
        return _str(self.fields.get("newTag")), _str(self.fields.get("digest"))

    def rendered(self) -> list[str]:
        name = _str(self.fields.get("newName")) or _str(self.fields.get("name")) or self.doc.image
        return [join_reference(name, *self.current())]

    def plan(self, p: _Plan, tag: str | None, digest: str | None) -> list[Match]:
        out: list[Match] = []
        new_name = _str(self.fields.get("newName"))
        wanted: list[tuple[Literal["newTag", "digest"], str | None]] = []
        if tag is not None:
            wanted.append(("newTag", tag))
        if digest is not None:
            wanted.append(("digest", digest))
        elif _str(self.fields.get("digest")):
            wanted.append(("digest", None))  # deploying a tag: a digest would override it
        for key, value in wanted:
            pair = self.fields.get(key)
            old = _str(pair)
            named = pair or self.fields.get("name") or self.fields.get("newName")
            assert named is not None  # the entry was matched by its name
            at = named[1].start
            out.append(Match("images", key, _line_of(self.doc.text, at), old, value, new_name))
            if pair is not None and pair[1].node.kind != "s":
                raise self.doc.error(pair[1].start, f"images[].{key} is not a plain value",
                                     "make it a string, then deploy again")
            if value is None:
                self._unset(p, key, pair)
            elif pair is None or pair[1].node.tag != _STR or pair[1].node.value != value:
                self._set(p, key, pair, value)
        return out

    def _set(self, p: _Plan, key: str, pair: tuple[_Slot, _Slot] | None, value: str) -> None:
        flow = self.entry.flow
        if pair is None or pair[1].parent is not self.entry:  # missing, or read through a merge key
            p.insert(self.entry, key, _render(value, None, flow=flow))
        elif p.exclusive(pair[1].node, key):  # only our entries read it: edit it where it is written
            p.set_node(pair[1].node, value)
            return
        elif pair[1].alias:  # a shared value: ours is written in place of the alias
            p.add(*pair[1].alias, _render(value, None, flow=flow))
        else:  # written here, read elsewhere too: they keep the old value (the anchor moves to them)
            p.set_node(pair[1].node, value, keep_anchor=not p.reanchor(pair[1].node, pair[1]))
        p.pin(self.entry, key, pair)

    def _unset(self, p: _Plan, key: str, pair: tuple[_Slot, _Slot] | None) -> None:
        if pair is None or not _str(pair):
            return
        if pair[1].parent is not self.entry:  # read through a merge key: override it
            p.insert(self.entry, key, '""')
        elif any(key in self.doc.eff(m) for m in self.entry.merges):  # removing it would uncover a merged one
            self._set(p, key, pair, "")
            return
        else:
            if not pair[1].alias:
                p.reanchor(pair[1].node, pair[1])
            p.remove(self.entry, *pair)
        p.pin(self.entry, key, pair)


class _SplitSite(_Site):
    """The ``:tag`` / ``:digest`` setter fields of one policy whose ``:name`` is the image."""

    def __init__(self, doc: _File, policy: str, fields: dict[str, list[_Slot]]) -> None:
        self.doc, self.policy, self.fields = doc, policy, fields

    def slots(self) -> list[_Slot]:
        return [s for v in self.fields.values() for s in v]

    def current(self) -> tuple[str | None, str | None]:
        tags = [_setter_value(s) for s in self.fields.get("tag", [])]
        digests = [_setter_value(s) for s in self.fields.get("digest", [])]
        return next((t for t in tags if t), None), next((d for d in digests if d), None)

    def plan(self, p: _Plan, tag: str | None, digest: str | None) -> list[Match]:
        tags, digests = self.fields.get("tag", []), self.fields.get("digest", [])
        first = (tags + digests)[0]
        if tag is not None and not tags:
            raise self.doc.error(first.start, f"the $imagepolicy fields of {self.policy} ({self.doc.image}) have no "
                                 f":tag field to write {tag} to", "mark the tag field, or deploy by digest")
        if digest is not None and not digests:
            raise self.doc.error(
                first.start, f"the $imagepolicy fields of {self.policy} ({self.doc.image}) have no :digest field "
                f"to write {digest} to", f'add `digest: "" # {{"$imagepolicy": "{self.policy}:digest"}}` beside '
                "the :tag field (and render it in the chart), or deploy by tag")
        out = [p.set_setter(s, "tag", tag, self.policy) for s in tags] if tag is not None else []
        for s in digests:  # a tag deploy empties the digest: with it, the old image would run
            if digest is not None or _setter_value(s):
                out.append(p.set_setter(s, "digest", digest or "", self.policy))
        return out


class _RefSite(_SplitSite):
    """A whole reference marked ``NS:POLICY`` (``image: repo:tag``)."""

    def current(self) -> tuple[str | None, str | None]:
        _, tag, digest = split_reference(self.fields["image"][0].node.value)
        return tag, digest

    def rendered(self) -> list[str]:
        return [self.fields["image"][0].node.value]

    def plan(self, p: _Plan, tag: str | None, digest: str | None) -> list[Match]:
        slot = self.fields["image"][0]
        name, _, _ = split_reference(slot.node.value)
        return [p.set_setter(slot, "image", join_reference(name, tag, digest), self.policy)]


def _setter_value(slot: _Slot) -> str | None:
    node = slot.node
    return node.value or None if node.kind == "s" and node.tag != _NULL else None


class _Plan:
    """The text edits of one change: ``(start, end) -> replacement`` (an insertion when start == end)."""

    def __init__(self, doc: _File, sites: list[_Site]) -> None:
        self.doc = doc
        self.edits: dict[tuple[int, int], str] = {}
        self.allowed = {id(s.entry) for s in sites if isinstance(s, _EntrySite)}

    def add(self, start: int, end: int, replacement: str) -> None:
        old = self.edits.get((start, end))
        if old is not None and start == end:
            self.edits[(start, end)] = old + replacement
        elif old is not None and old != replacement:
            raise self.doc.error(start, "two references to the image want different values here",
                                 "write the value out at each place, then deploy again")
        else:
            self.edits[(start, end)] = replacement

    def exclusive(self, node: _Node, key: str) -> bool:
        """Whether every reader of ``node`` is one of our entries, under ``key``."""
        for use in node.uses:
            if use.role != "value" or _key(use.key) != key or id(use.parent) not in self.allowed:
                return False
            for other in self.doc.mergers(use.parent):  # type: ignore[arg-type]
                pair = self.doc.eff(other).get(key)
                if pair is not None and pair[1].node is node and id(other) not in self.allowed:
                    return False
        return True

    def set_node(self, node: _Node, value: str, keep_anchor: bool = True) -> None:
        """Write ``value`` where the scalar is written (its anchor and tag stay, unless not ``keep_anchor``)."""
        text = self.doc.text
        if node.style in ("|", ">"):
            raise self.doc.error(node.start, f"a block scalar ({node.style}) holds the image reference",
                                 "write it as a plain or quoted value, then deploy again")
        defining = next((u for u in node.uses if not u.alias), None)
        flow = bool(defining and defining.parent and defining.parent.flow)
        new = _render(value, node.style, flow=flow)
        start = node.vstart if keep_anchor else node.start
        if start == node.end and text[start - 1:start] == ":":
            new = " " + new  # an empty value right after the colon (``newTag:``)
        self.add(start, node.end, new)

    def set_setter(self, slot: _Slot, field_: Field, value: str, policy: str) -> Match:
        node = slot.node
        old = node.value if node.kind == "s" else None
        m = Match("setter", field_, _line_of(self.doc.text, slot.start), old, value, policy=policy)
        if node.kind != "s":
            raise self.doc.error(slot.start, f"the $imagepolicy field of {policy} is not a plain value",
                                 "make it a string, then deploy again")
        if (node.tag == _STR and old == value) or (value == "" and not _setter_value(slot)):
            return m
        if slot.alias or len(node.uses) != 1:
            raise self.doc.error(slot.start, f"the $imagepolicy field of {policy} is an alias or an anchored value "
                                 "used elsewhere", "write the value out in place, then deploy again")
        self.set_node(node, value)
        return m

    def insert(self, entry: _Node, key: str, rendered: str) -> None:
        """Add ``key: rendered`` to the mapping, after its ``name`` (or first one-line) pair."""
        text = self.doc.text
        pairs = sorted(entry.pairs, key=lambda p: _key(p[0]) != "name")
        pairs = [p for p in pairs if "\n" not in text[p[0].start:p[1].end]]
        if not pairs:
            raise self.doc.error(entry.start, f"cannot add {key} to this mapping (no one-line key in it)",
                                 f"add {key}: by hand, then deploy again")
        k, v = pairs[0]
        if entry.flow:
            self.add(v.end, v.end, f", {key}: {rendered}")
            return
        at = _line_end(text, v.end)
        eol = self.doc.eol
        if at > 0 and text[at - 1:at] == "\r":
            at, eol = at - 1, "\r\n"
        elif at < len(text):
            eol = "\n"
        indent = " " * (k.start - text.rfind("\n", 0, k.start) - 1)
        self.add(at, at, f"{eol}{indent}{key}: {rendered}")

    def remove(self, entry: _Node, k: _Slot, v: _Slot) -> None:
        text = self.doc.text
        i = next(n for n, (key, _) in enumerate(entry.pairs) if key is k)
        if entry.flow:
            if i > 0:
                self.add(entry.pairs[i - 1][1].end, v.end, "")
            elif len(entry.pairs) > 1:
                self.add(k.start, entry.pairs[1][0].start, "")
            else:
                self.add(v.alias[0] if v.alias else v.node.vstart, v.end, '""')
            return
        line_start = text.rfind("\n", 0, k.start) + 1
        line_end = _line_end(text, v.end)
        rest = text[v.end:line_end].strip(" \t\r")
        if text[line_start:k.start].strip(" \t") == "" and (rest == "" or rest.startswith("#")):
            self.add(line_start, min(line_end + 1, len(text)), "")
        else:  # the key shares its line with the "- " of the entry: keep the line, empty the value
            self.add(v.alias[0] if v.alias else v.node.vstart, v.end, '""')

    def reanchor(self, node: _Node, keep: _Slot) -> bool:
        """The first alias of ``node`` (other than ``keep``) becomes the anchored node itself, so
        every alias keeps the old value when ``node`` is edited or removed."""
        aliases = sorted((u for u in node.uses if u.alias and u is not keep), key=lambda u: u.start)
        if not aliases:
            return False
        own = self.doc.text[node.start:node.end]
        if node.kind != "s" or "\n" in own or node.style in ("|", ">"):
            raise self.doc.error(aliases[0].start, "this alias shares the value Forge must change for "
                                 f"{self.doc.image}, and the value cannot be copied here",
                                 "write the value out at each place, then deploy again")
        self.add(aliases[0].alias[0], aliases[0].alias[1], own)  # type: ignore[index]
        return True

    def pin(self, entry: _Node, key: str, pair: tuple[_Slot, _Slot] | None) -> None:
        """Mappings merging ``entry`` that read ``key`` from it get the old value as their own key
        (``""`` when there was none: kustomize reads an empty ``newTag``/``digest`` as unset)."""
        if pair is None:
            for other in self.doc.mergers(entry):
                if id(other) not in self.allowed and key not in self.doc.eff(other):
                    self.insert(other, key, '""')
            return
        node = pair[1].node
        own = self.doc.text[node.vstart:node.end]
        for other in self.doc.mergers(entry):
            read = self.doc.eff(other).get(key)
            if id(other) in self.allowed or read is None or read[1] is not pair[1]:
                continue
            if node.kind != "s" or "\n" in own or node.style in ("|", ">"):
                raise self.doc.error(other.start, f"this mapping merges in the {key} Forge must change for "
                                     f"{self.doc.image}", f"give it its own {key}:, then deploy again")
            self.insert(other, key, _render(node.value, None, flow=other.flow) if node.tag == _STR else own)


# ---------------------------------------------------------------------------------------------
# Checking an edit


def _verify(before: _File, after: _File, sites: list[_Site], tag: str | None, digest: str | None) -> None:
    """The edited file must read back with the new values, and differ from the original (as the
    loader reads both) only in the fields of our sites."""
    check = _Plan(after, sites)
    for site in sites:
        site.plan(check, tag, digest)
    if check.edits or len(before.chunks) != len(after.chunks):
        raise GitOpsError(
            f"cannot edit {before.source}: the edited file does not read back with {before.image} at "
            f"{join_reference('', tag, digest)[1:]}",
            hint="this is a bug in Forge's editor: edit the file by hand and report it")
    fields = {(id(s.entry), f) for s in sites if isinstance(s, _EntrySite) for f in ("newTag", "digest")}
    scalars = {id(slot.node) for s in sites for slot in s.slots()}
    if before.whole is not None or after.whole is not None:
        pairs = [(before._parse(0, len(before.text))[0], after._parse(0, len(after.text))[0])]
    else:
        changed = [i for i in before.relevant()  # an edit is only ever made in a document read
                   if before.text[slice(*before.chunks[i])] != after.text[slice(*after.chunks[i])]]
        pairs = [(before.chunk(i)[0], after.chunk(i)[0]) for i in changed]
    for roots_before, roots_after in pairs:
        if len(roots_before) != len(roots_after):
            raise GitOpsError(f"cannot edit {before.source}: the edit changes its documents",
                              hint="this is a bug in Forge's editor: edit the file by hand and report it")
        for a, b in zip(roots_before, roots_after):
            _compare(before, after, a, b, fields, scalars)


def _compare(before: _File, after: _File, a: _Node, b: _Node, fields: set[tuple[int, str]], scalars: set[int]) -> None:
    """Walk two documents together (each pair of nodes once; aliases never expanded)."""
    stack: list[tuple[_Node, _Node, _Node | None, str | None]] = [(a, b, None, None)]
    seen: set[tuple[int, int]] = set()
    while stack:
        x, y, parent, key = stack.pop()
        same = x.kind == y.kind and (x.kind != "s" or (x.tag, x.value) == (y.tag, y.value))
        if same and x.kind == "q" and len(x.items) != len(y.items):
            same = False
        if not same:
            if (parent is not None and (id(parent), key) in fields) or (y.kind == "s" and id(y) in scalars):
                continue
            raise after.error(y.start, f"the edit for {after.image} would also change this value (it shares "
                              "text with the image's reference through an anchor or merge key)",
                              "write the shared value out at each place, then deploy again")
        if x.kind == "s" or (id(x), id(y)) in seen:
            continue
        seen.add((id(x), id(y)))
        if x.kind == "q":
            stack.extend((i.node, j.node, None, None) for i, j in zip(x.items, y.items))
            continue
        ex, ey = before.eff(x), after.eff(y)
        for k in ex.keys() | ey.keys():
            if k not in ex or k not in ey:
                present = (ex.get(k) or ey.get(k))[1].node  # type: ignore[index]
                if k in ("newTag", "digest") and present.kind == "s" and present.tag in (_NULL, _STR) \
                        and not (present.value and present.tag == _STR):
                    continue  # an empty or null newTag/digest is no newTag/digest to kustomize
                if (id(y), k) not in fields:
                    raise after.error(y.start, f"the edit for {after.image} would also change the key {k} of "
                                      "this mapping", "write the shared value out at each place, then deploy again")
                continue
            stack.append((ex[k][1].node, ey[k][1].node, y, k))


def _render(value: str, style: str | None, *, flow: bool) -> str:
    if style == "'":
        return f"'{value}'"
    if style == '"' or not _plain_safe(value, flow=flow):
        return json.dumps(value)
    return value


def _plain_safe(value: str, *, flow: bool) -> bool:
    if value.lower() in _SPECIAL_WORDS or not _PLAIN_RE.match(value):
        return False
    if flow and ":" in value:
        return False
    try:
        return bool(yaml.safe_load(value) == value)
    except yaml.YAMLError:
        return False


def _splice(text: str, edits: dict[tuple[int, int], str]) -> str:
    out: list[str] = []
    pos = 0
    for start, end in sorted(edits):
        if start < pos:
            raise GitOpsError("cannot edit the file: two edits overlap",
                              hint="this is a bug in Forge's editor: edit the file by hand and report it")
        out.append(text[pos:start])
        out.append(edits[(start, end)])
        pos = end
    out.append(text[pos:])
    return "".join(out)
