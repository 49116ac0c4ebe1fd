"""Byte-surgical edits of image references in kustomize files (STYLE.md point 32).

Pure functions of text, no I/O. Two kinds of places name an image:

* **kustomize ``images[]`` entries** in any document of the file: an entry matches when its
  ``name`` (or its ``newName``) is the image. The edit sets ``newTag`` (or ``digest`` when
  deploying by digest), wherever the keys sit in the entry (``newName`` before or after
  ``newTag``), in block or flow style (``images: [{name: x, newTag: y}]``). A missing key is
  inserted after the ``name`` line (block) or after the ``name`` value (flow). Deploying by tag
  alone removes a ``digest`` from a matched entry, because kustomize would render the digest
  and ignore the tag (``name:tag@digest``).
* **Flux image-automation setter comments**: a trailing ``# {"$imagepolicy": "NS:POLICY"}``
  marks a whole reference (``image: repo:tag``), which becomes ``<image>:<tag>`` (or
  ``<image>@<digest>``, or both) when its repository is the image; ``NS:POLICY:tag`` /
  ``:digest`` mark split fields, edited when the same policy's ``:name`` field, or a sibling
  value in the same mapping, is the image. ``:name`` fields are never changed; a ``:digest``
  field is changed only when a digest is deployed.

How: the file is composed with PyYAML's pure-Python composer, whose marks are character offsets
into the original text; the new scalar is spliced into exactly the old scalar's span. Every
character outside the edited spans is unchanged (comments, anchors, key order, quoting of other
values, ``---`` separators, CRLF line endings, a BOM). A replacement keeps the old quoting style
when the new value is safe in it, and is double-quoted when a plain scalar would not read back
as the same string (``123``, ``1e5``, ``on``, or a ``:`` inside a flow mapping). The edited text
is parsed again and must hold the new values, so an edit can never produce a file that means
something else. Editing the result again with the same values changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from forgegen import yamlsource
from forgegen.errors import ConfigError, GitOpsError

TAG_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
DIGEST_RE = re.compile(r"\A[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}\Z")
_SETTER_RE = re.compile(r'#\s*\{\s*"\$imagepolicy"\s*:\s*"([^"\\]*)"\s*\}[ \t]*$')
# Words some YAML 1.1 readers (sigs.k8s.io/yaml, which kustomize uses) turn into booleans or null.
_SPECIAL_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ""}
_PLAIN_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_./@:+=-]*\Z")
_PROPERTIES_RE = re.compile(r"(?:[&!][^\s]*[ \t]+)+")

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
    found_images: tuple[str, ...]  # every image the file names, sorted
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
    images it does name), when the file is not YAML, or for a tag/digest that is not valid.
    ``source`` names the file in messages.
    """
    if tag is None and digest is None:
        raise GitOpsError("cannot edit the image reference: neither a tag nor a digest was given",
                          hint="pass tag= or digest=")
    if tag is not None:
        check_tag(tag)
    if digest is not None:
        check_digest(digest)
    doc = _Document(text, source)
    sites, found = doc.locate(image)
    if not sites:
        raise no_match_error(image, found, source)
    edits: dict[int, tuple[int, str]] = {}  # start -> (end, replacement)
    matches: list[Match] = []
    for site in sites:
        for m, edit in site.plan(doc, tag, digest):
            matches.append(m)
            if edit is not None and edit[0] not in edits:
                edits[edit[0]] = (edit[1], edit[2])
    new_text = _splice(text, edits)
    final = sites
    if new_text != text:
        # The edited file must parse and hold exactly the new values.
        after = _Document(new_text, source)
        sites_after, _ = after.locate(image)
        for site in sites_after:
            for m, edit in site.plan(after, tag, digest):
                if edit is not None:
                    raise GitOpsError(
                        f"cannot edit {source}: the edited file does not read back with {image} at "
                        f"{tag or digest} (line {m.line}, {m.field})",
                        hint="this is a bug in Forge's editor: edit the file by hand and report it")
        final = sites_after
    rendered = tuple(sorted({r for s in final for r in s.rendered(image)}))
    return EditResult(new_text, new_text != text, tuple(matches), found, rendered)


def read_image(text: str, image: str, *, source: str = "kustomization.yaml") -> ImageState:
    """The tag and digest ``text`` deploys for ``image`` (first match); an error when none."""
    doc = _Document(text, source)
    sites, found = doc.locate(image)
    if not sites:
        raise no_match_error(image, found, source)
    first = sites[0]
    # Split setter fields (``:tag``, ``:digest``) of one policy describe one reference together.
    group = [s for s in sites if isinstance(s, _SetterSite) and s.policy == first.policy] \
        if isinstance(first, _SetterSite) else [first]
    states = [s.current(doc) for s in group]
    tag = next((t for t, _ in states if t), None)
    digest = next((d for _, d in states if d), None)
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
# Locating


class _Document:
    """The composed YAML documents of one file, with helpers to read spans of the original text."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        try:
            # The pure-Python loader: its marks are character offsets into ``text``. PyYAML refuses
            # tabs before a comment (``v1\t# note``), which other readers accept: it reads a copy
            # with tabs as spaces (same length, so every offset holds; names and tags have no tabs).
            self.roots = [n for n in yamlsource.compose_all(text.replace("\t", " "), source) if n is not None]
        except ConfigError as err:  # not YAML, or past the limits (depth, size, aliases)
            raise GitOpsError(f"cannot edit {err.problems[0] if err.problems else source}",
                              hint="fix the file in the GitOps repository, then deploy again") from err
        self.eol = "\r\n" if "\r\n" in text[: text.find("\n") + 1 or len(text)] else "\n"

    def span(self, node: Node) -> tuple[int, int]:
        """The scalar's own characters, without an anchor or tag in front."""
        start, end = node.start_mark.index, node.end_mark.index
        props = _PROPERTIES_RE.match(self.text, start, end) if self.text[start:start + 1] in "&!" else None
        if props:
            start = props.end()
        return start, end

    def locate(self, image: str) -> tuple[list["_Site"], tuple[str, ...]]:
        found: set[str] = set()
        sites: list[_Site] = []
        for root in self.roots:
            for entry in _images_entries(root):
                pairs = _scalar_pairs(entry)
                name, new_name = pairs.get("name"), pairs.get("newName")
                for node in (name, new_name):
                    if node is not None and node[1].value:
                        found.add(node[1].value)
                if (name and name[1].value == image) or (new_name and new_name[1].value == image):
                    sites.append(_EntrySite(entry, pairs))
        setters = self._setters()
        by_policy: dict[str, list[tuple[str, ScalarNode, MappingNode | None, bool]]] = {}
        for policy, suffix, node, parent, flow in setters:
            by_policy.setdefault(policy, []).append((suffix, node, parent, flow))
            if suffix == "" and node.value:
                found.add(split_reference(node.value)[0])
            elif suffix == "name" and node.value:
                found.add(node.value)
        taken = {s.value_start for s in sites if isinstance(s, _EntrySite)}
        for policy, fields in by_policy.items():
            names = {n.value for suffix, n, _, _ in fields if suffix == "name"}
            for suffix, node, parent, flow in fields:
                if suffix == "":
                    if split_reference(node.value)[0] == image:
                        sites.append(_SetterSite(policy, "image", node, flow))
                elif suffix in ("tag", "digest"):
                    siblings = {v.value for _, v in (parent.value if parent else ()) if isinstance(v, ScalarNode)}
                    if image in names or image in siblings:
                        if node.start_mark.index in taken:
                            continue  # the newTag of an images[] entry already matched
                        sites.append(_SetterSite(policy, suffix, node, flow))
        return sites, tuple(sorted(found))

    def _setters(self) -> list[tuple[str, str, ScalarNode, MappingNode | None, bool]]:
        """Every scalar value followed on its line by an ``$imagepolicy`` comment."""
        if "$imagepolicy" not in self.text:
            return []
        by_line_end: dict[int, tuple[ScalarNode, MappingNode | None, bool]] = {}
        for root in self.roots:
            for node, parent, flow in _scalars(root):
                line_end = _line_end(self.text, node.end_mark.index)
                if self.text[node.end_mark.index:line_end].lstrip(" \t").startswith("#"):
                    by_line_end[line_end] = (node, parent, flow)
        out = []
        for line_end, (node, parent, flow) in by_line_end.items():
            tail = self.text[node.end_mark.index:line_end].rstrip("\r")
            m = _SETTER_RE.search(tail)
            if m and tail[: m.start()].strip() == "":
                ns, _, rest = m.group(1).partition(":")
                policy, _, suffix = rest.partition(":")
                out.append((f"{ns}:{policy}", suffix, node, parent, flow))
        return out


def _images_entries(root: Node) -> Iterator[MappingNode]:
    if not isinstance(root, MappingNode):
        return
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "images" and isinstance(value, SequenceNode):
            for item in value.value:
                if isinstance(item, MappingNode):
                    yield item


def _scalar_pairs(mapping: MappingNode) -> dict[str, tuple[ScalarNode, Node]]:
    out: dict[str, tuple[ScalarNode, Node]] = {}
    for key, value in mapping.value:
        if isinstance(key, ScalarNode) and key.value not in out:
            out[key.value] = (key, value)
    return out


def _scalars(root: Node) -> Iterator[tuple[ScalarNode, MappingNode | None, bool]]:
    """Every scalar under ``root`` (mapping values and sequence items) with its parent mapping
    and whether it sits in a flow collection."""
    seen: set[int] = set()
    stack: list[tuple[Node, MappingNode | None, bool]] = [(root, None, False)]
    while stack:
        node, parent, flow = stack.pop()
        if id(node) in seen:
            continue  # an alias: its anchor was visited where it is defined
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            yield node, parent, flow
        elif isinstance(node, MappingNode):
            inner = flow or bool(node.flow_style)
            for _key, value in node.value:
                stack.append((value, node, inner))
        elif isinstance(node, SequenceNode):
            inner = flow or bool(node.flow_style)
            for item in node.value:
                stack.append((item, None, inner))


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


# ---------------------------------------------------------------------------------------------
# Sites and their edits

_Edit = tuple[int, int, str] | None  # (start, end, replacement)


class _Site:
    def plan(self, doc: _Document, tag: str | None, digest: str | None) -> list[tuple[Match, _Edit]]:
        raise NotImplementedError

    def current(self, doc: _Document) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def rendered(self, image: str) -> list[str]:
        return []


class _EntrySite(_Site):
    def __init__(self, entry: MappingNode, pairs: dict[str, tuple[ScalarNode, Node]]) -> None:
        self.entry = entry
        self.pairs = pairs
        self.value_start = pairs["newTag"][1].start_mark.index if "newTag" in pairs else -1

    def _value(self, key: str) -> str | None:
        pair = self.pairs.get(key)
        if pair is None or not isinstance(pair[1], ScalarNode):
            return None
        return pair[1].value

    def current(self, doc: _Document) -> tuple[str | None, str | None]:
        return self._value("newTag") or None, self._value("digest") or None

    def rendered(self, image: str) -> list[str]:
        name = self._value("newName") or self._value("name") or image
        return [join_reference(name, self._value("newTag") or None, self._value("digest") or None)]

    def plan(self, doc: _Document, tag: str | None, digest: str | None) -> list[tuple[Match, _Edit]]:
        out: list[tuple[Match, _Edit]] = []
        new_name = self._value("newName")
        name_line = _line_of(doc.text, self.pairs["name"][0].start_mark.index) if "name" in self.pairs \
            else self.entry.start_mark.line + 1
        wanted: list[tuple[Field, str | None]] = []
        if tag is not None:
            wanted.append(("newTag", tag))
        if digest is not None:
            wanted.append(("digest", digest))
        elif "digest" in self.pairs:
            wanted.append(("digest", None))  # deploying a tag: a digest would override it
        for key, value in wanted:
            pair = self.pairs.get(key)
            if pair is None:
                if value is None:
                    continue
                out.append((Match("images", key, name_line, None, value, new_name),
                            self._insert(doc, key, value)))
                continue
            knode, vnode = pair
            if not isinstance(vnode, ScalarNode):
                raise GitOpsError(
                    f"cannot edit {doc.source}:{_line_of(doc.text, vnode.start_mark.index)}: images[].{key} "
                    "is not a plain value", hint="make it a string, then deploy again")
            old = vnode.value
            line = _line_of(doc.text, vnode.start_mark.index)
            if value is None:
                out.append((Match("images", key, line, old, None, new_name),
                            self._remove(doc, key) if old else None))
            elif old == value:
                out.append((Match("images", key, line, old, value, new_name), None))
            else:
                out.append((Match("images", key, line, old, value, new_name),
                            _replace_scalar(doc, knode, vnode, self.entry, value,
                                            flow=bool(self.entry.flow_style))))
        return out

    def _insert(self, doc: _Document, key: str, value: str) -> _Edit:
        text = doc.text
        anchor = self.pairs.get("name") or self.pairs.get("newName")
        assert anchor is not None
        knode, vnode = anchor
        if self.entry.flow_style:
            rendered = _render(value, None, flow=True)
            return (vnode.end_mark.index, vnode.end_mark.index, f", {key}: {rendered}")
        rendered = _render(value, None, flow=False)
        at = _line_end(text, vnode.end_mark.index)
        eol = doc.eol
        if at > 0 and text[at - 1:at] == "\r":
            at -= 1
            eol = "\r\n"
        elif at < len(text):
            eol = "\n"
        indent = " " * knode.start_mark.column
        return (at, at, f"{eol}{indent}{key}: {rendered}")

    def _remove(self, doc: _Document, key: str) -> _Edit:
        text = doc.text
        knode, vnode = self.pairs[key]
        keys = [k for k, _ in self.entry.value]
        i = next(n for n, (k, _) in enumerate(self.entry.value) if k is knode)
        if self.entry.flow_style:
            if i > 0:
                return (self.entry.value[i - 1][1].end_mark.index, vnode.end_mark.index, "")
            if len(keys) > 1:
                return (knode.start_mark.index, self.entry.value[1][0].start_mark.index, "")
            return (vnode.start_mark.index, vnode.end_mark.index, '""')
        line_start = text.rfind("\n", 0, knode.start_mark.index) + 1
        line_end = _line_end(text, vnode.end_mark.index)
        own_line = text[line_start:knode.start_mark.index].strip(" \t") == ""
        rest = text[vnode.end_mark.index:line_end].strip(" \t\r")
        if own_line and (rest == "" or rest.startswith("#")):
            return (line_start, min(line_end + 1, len(text)), "")
        # The key shares its line with the "- " of the entry: keep the line, empty the value.
        start, end = doc.span(vnode)
        return (start, end, '""')


class _SetterSite(_Site):
    def __init__(self, policy: str, field_: Literal["image", "tag", "digest"], node: ScalarNode,
                 flow: bool) -> None:
        self.policy = policy
        self.field = field_
        self.node = node
        self.flow = flow

    def current(self, doc: _Document) -> tuple[str | None, str | None]:
        if self.field == "image":
            _, tag, digest = split_reference(self.node.value)
            return tag, digest
        if self.field == "tag":
            return self.node.value or None, None
        return None, self.node.value or None

    def rendered(self, image: str) -> list[str]:
        if self.field == "image":
            return [self.node.value]
        return []

    def plan(self, doc: _Document, tag: str | None, digest: str | None) -> list[tuple[Match, _Edit]]:
        old = self.node.value
        if self.field == "image":
            name, _, _ = split_reference(old)
            new = join_reference(name, tag, digest)
        elif self.field == "tag":
            if tag is None:
                return []
            new = tag
        else:
            if digest is None:
                return []
            new = digest
        line = _line_of(doc.text, self.node.start_mark.index)
        m = Match("setter", self.field, line, old, new, policy=self.policy)
        if old == new:
            return [(m, None)]
        return [(m, _replace_scalar(doc, None, self.node, None, new, flow=self.flow))]


def _replace_scalar(doc: _Document, key: ScalarNode | None, node: ScalarNode, entry: MappingNode | None,
                    value: str, *, flow: bool) -> _Edit:
    text = doc.text
    if entry is not None and key is not None and not (entry.start_mark.index <= node.start_mark.index
                                                      < entry.end_mark.index):
        # The value is an alias (``newTag: *tag``): replace the alias with the value itself, so
        # other users of the anchor keep theirs.
        m = re.compile(r"[ \t]*:[ \t]*(\*[^\s,\[\]{}]+)").match(text, key.end_mark.index)
        if not m:
            raise GitOpsError(
                f"cannot edit {doc.source}:{_line_of(text, key.start_mark.index)}: the value of "
                f"{key.value} is an alias Forge cannot locate", hint="write the value in place, then deploy again")
        return (m.start(1), m.end(1), _render(value, None, flow=bool(entry.flow_style)))
    if node.style in ("|", ">"):
        raise GitOpsError(
            f"cannot edit {doc.source}:{_line_of(text, node.start_mark.index)}: a block scalar "
            f"({node.style}) holds the image reference", hint="write it as a plain or quoted value")
    start, end = doc.span(node)
    return (start, end, _render(value, node.style, flow=flow))


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
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def _splice(text: str, edits: dict[int, tuple[int, str]]) -> str:
    out: list[str] = []
    pos = 0
    for start in sorted(edits):
        end, replacement = edits[start]
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return "".join(out)
