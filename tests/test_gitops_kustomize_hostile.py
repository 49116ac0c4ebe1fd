"""The image editor on valid but hostile files: shared anchors, merge keys, split Flux setters,
duplicate keys, null and empty values, unsupported places, and large files.

Every test here names the class of issue 11 it pins; each failed before the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forgegen.errors import EXIT_USAGE, GitOpsError, exit_code
from forgegen.runtime.kustomize import edit_images, read_image
from tests.test_gitops_kustomize import DIGEST, IMG, NEW, render

WORKER = "localhost:5000/shop/worker"
DIGEST2 = "sha256:" + "cd" * 32
TWO_CONTAINERS = f"""apiVersion: apps/v1
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
        - name: worker
          image: {WORKER}
"""


def images(text: str) -> dict[str, dict]:
    """What the YAML loader (aliases and merge keys resolved) says each images[] entry is."""
    doc = yaml.safe_load(text)
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in doc["images"]}


def assert_idempotent(text: str, **kw: str | None) -> None:
    again = edit_images(text, IMG, **kw)
    assert again.text == text and not again.changed


# ---------------------------------------------------------------------------------------------
# A shared anchor or a merge key must not move another image


def test_shared_anchor_on_our_tag_does_not_move_another_image(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: &t v1\n  - name: {WORKER}\n    newTag: *t\n"
    result = edit_images(before, IMG, tag=NEW)
    assert images(result.text) == {IMG: {"newTag": NEW}, WORKER: {"newTag": "v1"}}
    assert result.text == before.replace("newTag: &t v1", f"newTag: {NEW}").replace("newTag: *t", "newTag: &t v1")
    assert_idempotent(result.text, tag=NEW)
    assert read_image(result.text, IMG).tag == NEW


def test_anchor_used_by_other_places_too_keeps_their_value() -> None:
    before = f"images:\n  - name: {IMG}\n    newTag: &t v1\ncommonAnnotations:\n  version: *t\n  also: *t\n"
    result = edit_images(before, IMG, tag=NEW)
    doc = yaml.safe_load(result.text)
    assert doc["commonAnnotations"] == {"version": "v1", "also": "v1"}
    assert doc["images"][0]["newTag"] == NEW


def test_unshared_anchor_is_edited_in_place_and_kept() -> None:
    before = f"images:\n  - name: {IMG}\n    newTag: &t v1\n"
    result = edit_images(before, IMG, tag=NEW)
    assert result.text == before.replace("&t v1", f"&t {NEW}")


def test_merge_key_from_our_entry_does_not_move_the_other_image(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages:\n  - &base {{name: {IMG}, newTag: v1}}\n  - <<: *base\n    name: {WORKER}\n"
    assert read_image(before, IMG).tag == "v1"
    result = edit_images(before, IMG, tag=NEW)
    assert images(result.text) == {IMG: {"newTag": NEW}, WORKER: {"newTag": "v1"}}
    assert_idempotent(result.text, tag=NEW)
    rendered = render(tmp_path, result.text, TWO_CONTAINERS)
    assert rendered == f"{IMG}:{NEW}"


def test_merge_key_into_our_entry_overrides_with_an_own_key() -> None:
    before = f"images:\n  - &o {{name: {WORKER}, newTag: v1}}\n  - <<: *o\n    name: {IMG}\n"
    assert read_image(before, IMG).tag == "v1"
    result = edit_images(before, IMG, tag=NEW)
    assert images(result.text) == {IMG: {"newTag": NEW}, WORKER: {"newTag": "v1"}}
    assert_idempotent(result.text, tag=NEW)


def test_alias_as_name_inserts_the_key_in_that_entry() -> None:
    before = f"x: &n {IMG}\nimages:\n  - name: other\n    newTag: a\n  - name: *n\n  - name: last\n    newTag: b\n"
    result = edit_images(before, IMG, tag=NEW)
    assert images(result.text)[IMG] == {"newTag": NEW}
    assert result.text == before.replace("  - name: *n\n", f"  - name: *n\n    newTag: {NEW}\n")


# ---------------------------------------------------------------------------------------------
# Split Flux setters are one image reference

HELM = ("spec:\n  values:\n    image:\n"
        f'      repository: {IMG} # {{"$imagepolicy": "flux-system:api:name"}}\n'
        '      tag: v1 # {"$imagepolicy": "flux-system:api:tag"}\n')
HELM_DIGEST = HELM + f'      digest: "{DIGEST2}" # {{"$imagepolicy": "flux-system:api:digest"}}\n'


def test_split_setters_digest_only_deploy_writes_the_digest() -> None:
    result = edit_images(HELM_DIGEST, IMG, digest=DIGEST)
    assert result.changed
    assert result.text == HELM_DIGEST.replace(DIGEST2, DIGEST)
    state = read_image(result.text, IMG)
    assert (state.tag, state.digest) == ("v1", DIGEST)


def test_split_setters_without_a_digest_field_refuse_a_digest_deploy() -> None:
    for kw in ({"digest": DIGEST}, {"tag": NEW, "digest": DIGEST}):
        with pytest.raises(GitOpsError) as err:
            edit_images(HELM, IMG, source="values.yaml", **kw)
        assert "values.yaml:5:" in str(err.value) and ":digest" in str(err.value)


def test_split_setters_tag_deploy_clears_a_stale_digest() -> None:
    result = edit_images(HELM_DIGEST, IMG, tag=NEW)
    assert result.text == HELM_DIGEST.replace("tag: v1", f"tag: {NEW}").replace(f'"{DIGEST2}"', '""')
    state = read_image(result.text, IMG)
    assert (state.tag, state.digest) == (NEW, None)
    assert_idempotent(result.text, tag=NEW)


def test_split_setters_tag_and_digest_write_both() -> None:
    result = edit_images(HELM_DIGEST, IMG, tag=NEW, digest=DIGEST)
    assert result.text == HELM_DIGEST.replace("tag: v1", f"tag: {NEW}").replace(DIGEST2, DIGEST)


def test_split_setters_in_an_images_entry_agree_with_the_plain_path(tmp_path: Path) -> None:
    before = ("resources: [deployment.yaml]\nimages:\n  - name: api-image\n"
              f'    newName: {IMG} # {{"$imagepolicy": "flux-system:api:name"}}\n'
              '    newTag: v1 # {"$imagepolicy": "flux-system:api:tag"}\n'
              f'    digest: {DIGEST2} # {{"$imagepolicy": "flux-system:api:digest"}}\n')
    by_tag = edit_images(before, IMG, tag=NEW)
    state = read_image(by_tag.text, IMG)
    assert (state.tag, state.digest) == (NEW, None)
    by_digest = edit_images(before, IMG, digest=DIGEST)
    state = read_image(by_digest.text, IMG)
    assert (state.tag, state.digest) == ("v1", DIGEST)


# ---------------------------------------------------------------------------------------------
# Duplicate keys are refused with a located error (exit 2)


@pytest.mark.parametrize("text, where", [
    (f"images:\n  - name: {IMG}\n    newTag: v1\n    newTag: v2\n", "k.yaml:4:5"),
    (f"images:\n  - name: {IMG}\n    newTag: v1\n  - name: {IMG}\n    newTag: v2\n", "k.yaml:4:5"),
    (f"images: [{{name: {IMG}, newTag: v1}}]\nimages: [{{name: {IMG}, newTag: v2}}]\n", "k.yaml:2:1"),
])
def test_duplicate_keys_and_entries_are_refused_with_their_location(text: str, where: str) -> None:
    for call in (lambda: edit_images(text, IMG, tag=NEW, source="k.yaml"),
                 lambda: read_image(text, IMG, source="k.yaml")):
        with pytest.raises(GitOpsError) as err:
            call()
        assert where in str(err.value) and "twice" in str(err.value)
        assert "hint:" in str(err.value)
        assert exit_code(err.value) == EXIT_USAGE


def test_invalid_yaml_exits_2() -> None:
    with pytest.raises(GitOpsError) as err:
        edit_images(f"images:\n  - name: {IMG}\n   newTag: [\n", IMG, tag=NEW, source="k.yaml")
    assert exit_code(err.value) == EXIT_USAGE


# ---------------------------------------------------------------------------------------------
# null, empty, digest-only entries


@pytest.mark.parametrize("token", ["null", "~", "Null", ""])
def test_null_tag_reads_as_no_tag_and_is_replaced(token: str) -> None:
    before = f"images:\n  - name: {IMG}\n    newTag: {token}\n    newName: {IMG}\n".replace("newTag: \n", "newTag:\n")
    assert read_image(before, IMG).tag is None
    result = edit_images(before, IMG, tag=NEW)
    expected = f"images:\n  - name: {IMG}\n    newTag: {NEW}\n    newName: {IMG}\n"
    assert result.text == expected


def test_empty_tag_at_end_of_file_gets_a_space() -> None:
    result = edit_images(f"images:\n- name: {IMG}\n  newTag:", IMG, tag=NEW)
    assert result.text == f"images:\n- name: {IMG}\n  newTag: {NEW}"


def test_digest_only_entry_is_deployed_by_tag(tmp_path: Path) -> None:
    before = f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    digest: {DIGEST}\n"
    result = edit_images(before, IMG, tag=NEW)
    assert result.text == f"resources: [deployment.yaml]\nimages:\n  - name: {IMG}\n    newTag: {NEW}\n"
    assert render(tmp_path, result.text) == f"{IMG}:{NEW}"
    flow = edit_images(f"images: [{{name: {IMG}, digest: '{DIGEST}'}}]\n", IMG, tag=NEW)
    assert yaml.safe_load(flow.text)["images"] == [{"name": IMG, "newTag": NEW}]


# ---------------------------------------------------------------------------------------------
# Places Forge does not edit say so


@pytest.mark.parametrize("text, place", [
    ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nspec:\n  images:\n"
     f"    - name: {IMG}\n      newTag: v1\n", "Flux Kustomization spec.images"),
    ("apiVersion: argoproj.io/v1alpha1\nkind: Application\nspec:\n  source:\n    kustomize:\n      images:\n"
     f"        - {IMG}:v1\n", "Argo CD Application spec.source.kustomize.images"),
    ("apiVersion: image.toolkit.fluxcd.io/v1beta2\nkind: ImagePolicy\nspec:\n  imageRepositoryRef: {name: api}\n"
     "  policy: {semver: {range: 1.x}}\n", "Flux ImagePolicy"),
])
def test_unsupported_places_are_named(text: str, place: str) -> None:
    with pytest.raises(GitOpsError) as err:
        edit_images(text, IMG, tag=NEW, source="app.yaml")
    message = str(err.value)
    assert place in message and "not supported" in message and "app.yaml:" in message
    assert "images[]" in message and "$imagepolicy" in message  # what is supported


# ---------------------------------------------------------------------------------------------
# Bounded: aliases are never expanded


def test_an_alias_bomb_beside_the_entry_is_read_without_expanding_it() -> None:
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 12))
    merges = "m0: &m0 {k0: v}\n" + "".join(f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}], k{n}: v}}\n" for n in range(1, 40))
    before = f"{bomb}{merges}images:\n  - name: {IMG}\n    newTag: v1\n"
    result = edit_images(before, IMG, tag=NEW)  # 9**12 paths if expanded: this would never return
    assert result.text == before.replace("newTag: v1", f"newTag: {NEW}")
    assert read_image(result.text, IMG).tag == NEW


# ---------------------------------------------------------------------------------------------
# Property: random images lists sharing values through anchors, aliases and merge keys


@st.composite
def shared_images_lists(draw: st.DrawFn) -> str:
    """Three entries (ours among them) whose newTag/digest are plain, anchored, aliases of
    earlier anchors, merged from earlier entries, or missing; block or flow; plus another user."""
    names = draw(st.permutations([IMG, WORKER, "localhost:5000/shop/side"]))
    lines, scalars, maps = ["images:"], [], []
    for i, name in enumerate(names):
        pairs = [f"name: {name}"]
        if maps and draw(st.booleans()):
            pairs.insert(draw(st.integers(0, 1)), f"<<: *{draw(st.sampled_from(maps))}")
        kind = draw(st.sampled_from(["plain", "anchor", "alias", "missing"]))
        if kind == "plain":
            pairs.append(f"newTag: v{i}")
        elif kind == "anchor":
            scalars.append(f"t{i}")
            pairs.append(f"newTag: &t{i} v{i}")
        elif kind == "alias" and scalars:
            pairs.append(f"newTag: *{draw(st.sampled_from(scalars))}")
        if draw(st.booleans()):
            pairs.insert(draw(st.integers(0, len(pairs))), f"digest: {DIGEST2 if i % 2 else DIGEST}")
        anchor = f"&e{i} " if draw(st.booleans()) else ""
        if anchor:
            maps.append(f"e{i}")
        if draw(st.booleans()):
            lines.append(f"  - {anchor}{{{', '.join(pairs)}}}")
        else:
            lines.append(f"  - {anchor}\n    " + "\n    ".join(pairs) if anchor else "  - " + "\n    ".join(pairs))
    if scalars and draw(st.booleans()):
        lines.append(f"commonAnnotations: {{pinned: *{draw(st.sampled_from(scalars))}}}")
    return "\n".join(lines) + "\n"


def loaded(text: str) -> tuple[dict, object]:
    """Each entry as the loader reads it, an empty or null newTag/digest read as unset (as kustomize does)."""
    doc = yaml.safe_load(text)
    entries = {e["name"]: {k: v for k, v in e.items() if k != "name" and v not in ("", None)} for e in doc["images"]}
    return entries, doc.get("commonAnnotations")


@settings(max_examples=300, deadline=None)
@given(text=shared_images_lists(), tag=st.sampled_from([None, NEW]), digest=st.sampled_from([None, DIGEST2]))
def test_property_shared_values_move_only_our_image(text: str, tag: str | None, digest: str | None) -> None:
    if tag is None and digest is None:
        tag = NEW
    result = edit_images(text, IMG, tag=tag, digest=digest)
    (before, labels), (after, labels_after) = loaded(text), loaded(result.text)
    assert labels_after == labels
    assert {n: e for n, e in after.items() if n != IMG} == {n: e for n, e in before.items() if n != IMG}
    expected = dict(before[IMG], **({"newTag": tag} if tag else {}))
    expected.pop("digest", None)
    expected.update({"digest": digest} if digest else {})
    assert after[IMG] == expected
    state = read_image(result.text, IMG)
    assert (state.tag, state.digest) == (expected.get("newTag"), expected.get("digest"))
    assert_idempotent(result.text, **({"tag": tag} if tag else {}), **({"digest": digest} if digest else {}))


def test_a_merge_chain_deeper_than_python_recursion_is_read() -> None:
    chain = "m0: &m0 {k: v}\n" + "".join(f"m{n}: &m{n} {{<<: *m{n - 1}}}\n" for n in range(1, 3000))
    before = f"{chain}images:\n  - <<: *m2999\n    name: {IMG}\n    newTag: v1\n"
    assert read_image(before, IMG).tag == "v1"
    assert edit_images(before, IMG, tag=NEW).text == before.replace("newTag: v1", f"newTag: {NEW}")


def test_a_merge_bomb_is_refused_with_its_location() -> None:
    bomb = "m0: &m0 {k0: v}\n" + "".join(
        f"m{n}: &m{n} {{<<: [*m{n - 1}], k{n}: v}}\n" for n in range(1, 3000))
    before = f"{bomb}images:\n  - name: {IMG}\n    newTag: v1\n"
    with pytest.raises(GitOpsError, match=r"k.yaml:\d+:\d+: merge keys .* too many keys") as err:
        edit_images(before, IMG, tag=NEW, source="k.yaml")
    assert exit_code(err.value) == EXIT_USAGE


def test_nesting_beyond_the_parser_limit_is_refused_with_its_location() -> None:
    before = "deep: " + "[" * 5000 + "]" * 5000 + f"\nimages:\n- name: {IMG}\n  newTag: v1\n"
    with pytest.raises(GitOpsError, match=r"cannot edit k.yaml:1:\d+: not valid YAML \(exceeded maximum nesting depth\)") as err:
        edit_images(before, IMG, tag=NEW, source="k.yaml")
    assert exit_code(err.value) == EXIT_USAGE
