"""The byte-surgical image editor (forgegen.runtime.kustomize) on real-world kustomization layouts.

Every byte outside the edited span is unchanged; editing twice equals editing once; the result
renders with the real ``kubectl kustomize``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from forgegen.errors import GitOpsError
from forgegen.runtime.kustomize import TAG_RE, edit_images, read_image, split_reference

IMG = "localhost:5000/shop/api"
DIGEST = "sha256:" + "ab" * 32
DEPLOYMENT = f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: api}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
        - name: api
          image: {IMG}
"""


def render(tmp: Path, kustomization: str, deployment: str = DEPLOYMENT) -> str:
    """The container image ``kubectl kustomize`` renders for the api Deployment."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "kustomization.yaml").write_bytes(kustomization.encode())
    (tmp / "deployment.yaml").write_text(deployment)
    out = subprocess.run(["kubectl", "kustomize", str(tmp)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d and d.get("kind") == "Deployment"]
    return docs[0]["spec"]["template"]["spec"]["containers"][0]["image"]


# ---------------------------------------------------------------------------------------------
# Layouts seen in real GitOps repositories: (before, after) with tag "amd64-1a2b3c4"

NEW = "amd64-1a2b3c4"
LAYOUTS = {
    "block": (
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: amd64-0000000\n",
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n"),
    "comments-everywhere": (
        f"# top\nresources:\n  - deployment.yaml  # the app\nimages:  # pinned by forge\n"
        f"  # api image\n  - name: {IMG} # name\n    newTag: amd64-0000000   # tag: old\n  # end\n",
        f"# top\nresources:\n  - deployment.yaml  # the app\nimages:  # pinned by forge\n"
        f"  # api image\n  - name: {IMG} # name\n    newTag: {NEW}   # tag: old\n  # end\n"),
    "flow": (
        f"resources: [deployment.yaml]\nimages: [{{name: {IMG}, newTag: amd64-0000000}}]\n",
        f"resources: [deployment.yaml]\nimages: [{{name: {IMG}, newTag: {NEW}}}]\n"),
    "flow-multiline": (
        f"resources: [deployment.yaml]\nimages: [\n  {{name: other, newTag: x}},\n  {{ newTag: 'v1', name: \"{IMG}\" }},\n]\n",
        f"resources: [deployment.yaml]\nimages: [\n  {{name: other, newTag: x}},\n  {{ newTag: '{NEW}', name: \"{IMG}\" }},\n]\n"),
    "newName-between": (
        f"resources: [deployment.yaml]\nimages:\n- name: {IMG}\n  newName: {IMG}\n  newTag: v1\n",
        f"resources: [deployment.yaml]\nimages:\n- name: {IMG}\n  newName: {IMG}\n  newTag: {NEW}\n"),
    "newTag-first-newName-after": (
        f"resources: [deployment.yaml]\nimages:\n  - newTag: \"v1\"\n    name: {IMG}\n    newName: {IMG}\n",
        f"resources: [deployment.yaml]\nimages:\n  - newTag: \"{NEW}\"\n    name: {IMG}\n    newName: {IMG}\n"),
    "single-quoted": (
        f"resources: [deployment.yaml]\nimages:\n  - name: '{IMG}'\n    newTag: 'amd64-0000000'\n",
        f"resources: [deployment.yaml]\nimages:\n  - name: '{IMG}'\n    newTag: '{NEW}'\n"),
    "crlf": (
        f"resources: [deployment.yaml]\r\nimages:\r\n  - name: {IMG}\r\n    newTag: amd64-0000000\r\n",
        f"resources: [deployment.yaml]\r\nimages:\r\n  - name: {IMG}\r\n    newTag: {NEW}\r\n"),
    "document-markers": (
        f"%YAML 1.1\n---\n# generated\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: v1\n...\n",
        f"%YAML 1.1\n---\n# generated\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n...\n"),
    "multi-document": (
        f"---\n# generated\nkind: Note\n---\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n"
        f"    newTag: v1\n...\n",
        f"---\n# generated\nkind: Note\n---\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n"
        f"    newTag: {NEW}\n...\n"),
    "anchor-on-value": (
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: &t v1\n  - name: sidecar\n    newTag: *t\n",
        # the sidecar keeps v1: the anchor moves to its alias (issue 11: a shared anchor moved another image)
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n  - name: sidecar\n    newTag: &t v1\n"),
    "alias-value": (
        f"commonAnnotations: {{example/tag: &t v1}}\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: *t\n  - name: sidecar\n    newTag: *t\n",
        f"commonAnnotations: {{example/tag: &t v1}}\nresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n  - name: sidecar\n    newTag: *t\n"),
    "missing-newTag": (
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}  # no tag yet\n    newName: {IMG}\n",
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}  # no tag yet\n    newTag: {NEW}\n    newName: {IMG}\n"),
    "missing-newTag-flow": (
        f"resources: [deployment.yaml]\nimages: [{{name: {IMG}}}]\n",
        f"resources: [deployment.yaml]\nimages: [{{name: {IMG}, newTag: {NEW}}}]\n"),
    "digest-removed": (
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    digest: {DIGEST}  # pinned\n    newTag: v1\n",
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n"),
    "no-final-newline-bom": (
        f"\ufeffresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: v1",
        f"\ufeffresources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}"),
    "setter-on-newTag": (
        f'resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: v1 # {{"$imagepolicy": "flux-system:api:tag"}}\n',
        f'resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW} # {{"$imagepolicy": "flux-system:api:tag"}}\n'),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_edit_changes_only_the_tag_in_layout(layout: str, tmp_path: Path) -> None:
    before, expected = LAYOUTS[layout]
    result = edit_images(before, IMG, tag=NEW)
    assert result.text == expected
    assert result.changed
    again = edit_images(result.text, IMG, tag=NEW)
    assert again.text == result.text and not again.changed
    assert read_image(result.text, IMG).tag == NEW
    if layout != "multi-document":  # kustomize reads one document; bundles are resources
        assert render(tmp_path, result.text) == f"{IMG}:{NEW}"


def test_edit_quotes_a_tag_that_would_read_as_a_number(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: v1\n"
    result = edit_images(before, IMG, tag="1234567")
    assert result.text == before.replace("newTag: v1", 'newTag: "1234567"')
    assert render(tmp_path, result.text) == f"{IMG}:1234567"


def test_edit_by_digest_sets_digest_and_keeps_the_tag(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: v1\n"
    result = edit_images(before, IMG, digest=DIGEST)
    assert result.text == (
        f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    digest: {DIGEST}\n    newTag: v1\n")
    assert render(tmp_path, result.text) == f"{IMG}:v1@{DIGEST}"
    assert result.rendered == (f"{IMG}:v1@{DIGEST}",)
    both = edit_images(before, IMG, tag=NEW, digest=DIGEST)
    assert render(tmp_path / "both", both.text) == f"{IMG}:{NEW}@{DIGEST}"
    assert read_image(both.text, IMG).digest == DIGEST


def test_edit_by_digest_in_flow_style_quotes_the_colon(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages: [{{name: {IMG}, newTag: v1}}]\n"
    result = edit_images(before, IMG, tag=NEW, digest=DIGEST)
    assert result.text == f'resources: [deployment.yaml]\nimages: [{{name: {IMG}, digest: "{DIGEST}", newTag: {NEW}}}]\n'
    assert render(tmp_path, result.text) == f"{IMG}:{NEW}@{DIGEST}"


def test_edit_matches_an_entry_by_newName() -> None:
    before = f"images:\n  - name: api\n    newName: {IMG}\n    newTag: v1\n  - name: {IMG}-worker\n    newTag: v1\n"
    result = edit_images(before, IMG, tag=NEW)
    assert result.text == before.replace("newTag: v1", f"newTag: {NEW}", 1)
    assert result.rendered == (f"{IMG}:{NEW}",)


def test_edit_updates_every_entry_and_setter_for_the_image() -> None:
    before = (f"images:\n  - name: {IMG}\n    newTag: v1\n---\nimages: [{{name: {IMG}, newTag: v1}}]\n---\n"
              f'spec:\n  image: {IMG}:v1 # {{"$imagepolicy": "flux-system:api"}}\n'
              f'  other: {IMG}-x:v1 # {{"$imagepolicy": "flux-system:x"}}\n')
    result = edit_images(before, IMG, tag=NEW)
    assert [m.line for m in result.matches] == [3, 5, 8]
    assert result.text == before.replace("newTag: v1", f"newTag: {NEW}").replace(f"{IMG}:v1", f"{IMG}:{NEW}")


def test_setter_whole_reference_with_registry_port_and_digest(tmp_path: Path) -> None:
    deployment = DEPLOYMENT.replace(f"image: {IMG}\n",
                                    f'image: "{IMG}:v1" # {{"$imagepolicy": "flux-system:api"}}\r\n')
    result = edit_images(deployment, IMG, tag=NEW, digest=DIGEST)
    assert result.text == deployment.replace(f'"{IMG}:v1"', f'"{IMG}:{NEW}@{DIGEST}"')
    assert render(tmp_path, "resources: [deployment.yaml]\n", result.text) == f"{IMG}:{NEW}@{DIGEST}"


def test_setter_split_fields_of_a_helm_release() -> None:
    before = ("spec:\n  values:\n    image:\n"
              f'      repository: {IMG} # {{"$imagepolicy": "flux-system:api:name"}}\n'
              '      tag: "v1" # {"$imagepolicy": "flux-system:api:tag"}\n'
              '      digest: "" # {"$imagepolicy": "flux-system:api:digest"}\n'
              '    sidecar: {tag: v1} # {"$imagepolicy": "flux-system:other:tag"}\n')
    by_tag = edit_images(before, IMG, tag=NEW)
    assert by_tag.text == before.replace('tag: "v1"', f'tag: "{NEW}"')
    both = edit_images(before, IMG, tag=NEW, digest=DIGEST)
    assert both.text == by_tag.text.replace('digest: ""', f'digest: "{DIGEST}"')
    assert read_image(both.text, IMG).tag == NEW


def test_edit_same_tag_is_a_no_op() -> None:
    before = f"images:\n  - name: {IMG}\n    newTag: '{NEW}'   # already\n"
    result = edit_images(before, IMG, tag=NEW)
    assert not result.changed and result.text == before
    assert [(m.old, m.new) for m in result.matches] == [(NEW, NEW)]


def test_zero_matches_names_the_file_and_its_images() -> None:
    before = (f"images:\n  - name: {IMG}-worker\n    newTag: v1\n  - name: nginx\n"
              f'---\nimage: ghcr.io/x/y:1 # {{"$imagepolicy": "flux-system:y"}}\n')
    with pytest.raises(GitOpsError) as err:
        edit_images(before, IMG, tag=NEW, source="clusters/staging/api/kustomization.yaml")
    text = str(err.value)
    assert f"cannot set the tag of {IMG}: clusters/staging/api/kustomization.yaml has no images[] entry" in text
    assert f"images it names: ghcr.io/x/y, {IMG}-worker, nginx" in text
    assert "hint: add `images:" in text


def test_invalid_yaml_is_reported_with_its_location() -> None:
    with pytest.raises(GitOpsError, match=r"cannot edit k.yaml:3:\d+: not valid YAML"):
        edit_images(f"images:\n  - name: {IMG}\n   newTag: [\n", IMG, tag=NEW, source="k.yaml")


@pytest.mark.parametrize("bad", ["", "-x", ".x", "a b", "a\nimages: []", "x" * 129, "a:b"])
def test_an_invalid_tag_is_refused(bad: str) -> None:
    with pytest.raises(GitOpsError, match="not a valid tag"):
        edit_images(f"images: [{{name: {IMG}, newTag: v1}}]\n", IMG, tag=bad)


def test_split_reference_handles_registry_ports() -> None:
    assert split_reference(f"{IMG}:v1@{DIGEST}") == (IMG, "v1", DIGEST)
    assert split_reference(IMG) == (IMG, None, None)
    assert split_reference(f"{IMG}@{DIGEST}") == (IMG, None, DIGEST)


# ---------------------------------------------------------------------------------------------
# Properties: random layouts, random tags


tags = st.from_regex(TAG_RE.pattern.replace(r"\A", "^").replace(r"\Z", "$"), fullmatch=True) | st.sampled_from(
    ["1234567", "1e5", "0x1F", "0o17", "yes", "on", "null", "true", "1.10", "_", "amd64-latest", "v1.2.3"])
old_tags = st.sampled_from(["amd64-0000000", "v1", "latest", "1.0", "123"])
quotes = st.sampled_from(["", "'", '"'])
comments = st.sampled_from(["", "  # note", " # {\"x\": 1}", "\t# tab"])


@dataclass
class Layout:
    before: str  # text up to the old tag's token
    token: str  # the old tag as written (with quotes)
    after: str  # text after it
    flow: bool

    @property
    def text(self) -> str:
        return self.before + self.token + self.after


def _q(value: str, quote: str) -> str:
    if not quote and yaml.safe_load(value) != value:
        quote = '"'
    return f"{quote}{value}{quote}"


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    flow = draw(st.booleans())
    old = draw(old_tags)
    keys = ["name", "newTag"] + (["newName"] if draw(st.booleans()) else [])
    keys = draw(st.permutations(keys))
    values = {"name": _q(IMG, draw(quotes)), "newName": _q(IMG, draw(quotes))}
    token = _q(old, draw(quotes))
    anchor = draw(st.sampled_from(["", "&tag "]))
    others_before = draw(st.integers(0, 2))
    others_after = draw(st.integers(0, 2))
    head = draw(st.sampled_from(["", f"# header{eol}", f"---{eol}kind: Note{eol}---{eol}", f"%YAML 1.1{eol}---{eol}"]))
    tail = draw(st.sampled_from(["", f"# footer{eol}", f"---{eol}kind: Other{eol}", f"...{eol}"]))
    resources = draw(st.sampled_from([f"resources: [deployment.yaml]{eol}", f"resources:{eol}  - deployment.yaml{eol}"]))
    if flow:
        other = "{name: other/img, newTag: x}"
        items_before = "".join(other + ", " for _ in range(others_before))
        items_after = "".join(", " + other for _ in range(others_after))
        parts_before, parts_after, seen = [], [], False
        for k in keys:
            if k == "newTag":
                parts_before.append("newTag: " + anchor)
                seen = True
            elif seen:
                parts_after.append(f"{k}: {values[k]}")
            else:
                parts_before.append(f"{k}: {values[k]}")
        before = head + resources + "images: [" + items_before + "{" + ", ".join(parts_before)
        after = "".join(", " + p for p in parts_after) + "}" + items_after + "]" + draw(comments) + eol + tail
        return Layout(before, token, after, True)
    lines_before = [f"  - name: other/img{eol}    newTag: x{eol}" for _ in range(others_before)]
    lines_after = [f"  - name: other/img{eol}    newTag: x{draw(comments)}{eol}" for _ in range(others_after)]
    before = head + resources + "images:" + draw(comments) + eol + "".join(lines_before)
    after = ""
    seen = False
    for i, k in enumerate(keys):
        lead = "  - " if i == 0 else "    "
        if k == "newTag":
            before += f"{lead}newTag: {anchor}"
            after += draw(comments) + eol
            seen = True
        elif seen:
            after += f"{lead}{k}: {values[k]}{draw(comments)}{eol}"
        else:
            before += f"{lead}{k}: {values[k]}{draw(comments)}{eol}"
    after += "".join(lines_after) + tail
    return Layout(before, token, after, False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), tag=tags)
def test_property_edit_touches_only_the_tag_span_and_is_idempotent(layout: Layout, tag: str) -> None:
    result = edit_images(layout.text, IMG, tag=tag)
    assert result.text.startswith(layout.before)
    assert result.text.endswith(layout.after)
    middle = result.text[len(layout.before): len(result.text) - len(layout.after)]
    parsed = yaml.safe_load(f"[{middle}]" if layout.flow else f"x: {middle}")
    assert (parsed[0] if layout.flow else parsed["x"]) == tag
    assert result.changed == (yaml.safe_load(f"x: {layout.token}")["x"] != tag)
    twice = edit_images(result.text, IMG, tag=tag)
    assert twice.text == result.text and not twice.changed
    assert read_image(result.text, IMG).tag == tag


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(layout=layouts(), tag=tags)
def test_property_edited_layouts_render_with_kubectl_kustomize(layout: Layout, tag: str, tmp_path_factory) -> None:
    assume(len([d for d in yaml.safe_load_all(layout.text.replace("\t", " ")) if d is not None]) == 1)
    result = edit_images(layout.text, IMG, tag=tag)
    assert render(tmp_path_factory.mktemp("k"), result.text) == f"{IMG}:{tag}"


setter_lines = st.builds(
    lambda eol, quote, old, ws: (f"spec:{eol}  containers:{eol}  - name: api{eol}    image: ",
                                 _q(f"{IMG}:{old}", quote),
                                 f'{ws}# {{"$imagepolicy": "flux-system:api"}}{eol}  - name: side{eol}    image: busybox:1{eol}'),
    st.sampled_from(["\n", "\r\n"]), quotes, old_tags, st.sampled_from([" ", "  ", "\t"]))


@settings(max_examples=60, deadline=None)
@given(parts=setter_lines, tag=tags)
def test_property_setter_edit_touches_only_the_reference(parts: tuple[str, str, str], tag: str) -> None:
    before, token, after = parts
    result = edit_images(before + token + after, IMG, tag=tag)
    assert result.text.startswith(before) and result.text.endswith(after)
    middle = result.text[len(before): len(result.text) - len(after)]
    assert yaml.safe_load(f"x: {middle}")["x"] == f"{IMG}:{tag}"
    assert edit_images(result.text, IMG, tag=tag).text == result.text
