"""The image editor on real files from public repositories (tests/fixtures/gitops_corpus, see
its SOURCES.md): any image a file names, any new tag and/or digest — only the intended scalars
change, the edit is idempotent, and kustomize renders exactly the deployed image changed."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from forgegen.errors import GitOpsError
from forgegen.runtime.kustomize import edit_images, join_reference, read_image
from tests.test_gitops_kustomize import DIGEST, tags

CORPUS = Path(__file__).parent / "fixtures" / "gitops_corpus"
PODINFO = "ghcr.io/stefanprodan/podinfo"
# file -> the images it names; split setters without a :digest field cannot take a digest.
CASES = {
    "flux-iac-setters-kustomization.yaml": ["replaced", "container"],
    "flux-iac-setters-Kustomization.yaml": ["replaced", "container"],
    "flux-iac-marked-cronjob.yaml": ["image"],
    "flux-iac-otherns-deployment.yaml": ["user"],
    "flux-guide-helmrelease.yaml": [PODINFO],
    "flux-guide-tekton-task.yaml": ["docker.io/golang"],
    "flux-guide-flux-kustomization.yaml": [PODINFO],
    "flux-guide-kustomization.yaml": [PODINFO],
    "flux-guide-deployment-marker.yaml": [PODINFO],
    "kustomize-transformerconfigs-images/kustomization.yaml": [
        "crd-image", "my-app", "my-mysql", "docker", "new-crd-image", "new-app-1", "prod-mysql", "my-docker2"],
}
NO_DIGEST_FIELD = {"flux-guide-helmrelease.yaml", "flux-guide-flux-kustomization.yaml"}
PAIRS = [(f, i) for f, images in sorted(CASES.items()) for i in images]


def test_corpus_files_all_have_a_source() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    files = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.yaml"))
    assert files and all(f"`{name}`" in sources for name in files)
    assert set(CASES) <= set(files)


def flatten(text: str) -> dict[tuple, object]:
    out: dict[tuple, object] = {}

    def walk(value: object, path: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for n, v in enumerate(value):
                walk(v, (*path, n))
        else:
            out[path] = value
    for n, doc in enumerate(yaml.safe_load_all(text)):
        walk(doc, (n,))
    return out


def assert_only_image_fields_changed(before: str, after: str, image: str, tag: str | None,
                                     digest: str | None, lines: set[int]) -> None:
    """Line by line: only matched lines change, each keeping its key and its comment; inserted
    or removed lines are newTag/digest keys. As the loader reads it: only image fields differ."""
    a, b = before.splitlines(True), after.splitlines(True)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            assert set(range(i1 + 1, i2 + 1)) <= lines
            for old, new in zip(a[i1:i2], b[j1:j2]):
                assert old.split(":", 1)[0] == new.split(":", 1)[0]
                assert old.partition(" #")[2] == new.partition(" #")[2]
        else:
            assert op in ("insert", "delete"), (op, a[i1:i2], b[j1:j2])
            for line in a[i1:i2] + b[j1:j2]:
                assert line.strip().split(":")[0] in ("newTag", "digest"), line
    x, y = flatten(before), flatten(after)
    allowed = {tag, digest, "", join_reference(image, tag, digest)}
    for path in x.keys() | y.keys():
        if x.get(path) != y.get(path):
            assert path[-1] in ("newTag", "digest", "tag", "image"), path
            assert y.get(path) in allowed | {None}, (path, y.get(path))


@settings(max_examples=80, deadline=None)
@given(pair=st.sampled_from(PAIRS), tag=st.none() | tags, digest=st.sampled_from([None, DIGEST]))
def test_property_corpus_edit_changes_only_the_image(pair: tuple[str, str], tag: str | None,
                                                     digest: str | None) -> None:
    name, image = pair
    if tag is None and digest is None:
        tag = "amd64-1a2b3c4"
    before = (CORPUS / name).read_text()
    if digest is not None and name in NO_DIGEST_FIELD:
        with pytest.raises(GitOpsError, match=r":\d+:\d+: .*no :digest field"):
            edit_images(before, image, tag=tag, digest=digest, source=name)
        return
    result = edit_images(before, image, tag=tag, digest=digest, source=name)
    assert result.changed
    assert_only_image_fields_changed(before, result.text, image, tag, digest,
                                     {m.line for m in result.matches})
    again = edit_images(result.text, image, tag=tag, digest=digest, source=name)
    assert again.text == result.text and not again.changed
    state = read_image(result.text, image, source=name)
    assert state.digest == digest
    if tag is not None:
        assert state.tag == tag


def test_a_file_that_names_no_editable_place_says_so() -> None:
    with pytest.raises(GitOpsError, match=r"no images\[\] entry or \$imagepolicy setter for it \(images it names: none\)"):
        edit_images((CORPUS / "podinfo-deployment.yaml").read_text(), PODINFO, tag="v2")


def kustomize(directory: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return list(yaml.safe_load_all(out.stdout))


@pytest.mark.parametrize("kustomization, resource, image, tag, digest, rendered", [
    ("flux-guide-kustomization.yaml", "podinfo-deployment.yaml", PODINFO, "6.5.0", None, f"{PODINFO}:6.5.0"),
    ("flux-guide-kustomization.yaml", "podinfo-deployment.yaml", PODINFO, "6.5.0", DIGEST, f"{PODINFO}:6.5.0@{DIGEST}"),
    ("flux-iac-setters-kustomization.yaml", None, "replaced", None, DIGEST, f"replaced:v1@{DIGEST}"),
])
def test_corpus_render_changes_exactly_the_deployed_image(tmp_path: Path, kustomization: str, resource: str | None,
                                                          image: str, tag: str | None, digest: str | None,
                                                          rendered: str) -> None:
    text = (CORPUS / kustomization).read_text()
    if resource is not None:
        deployment = (CORPUS / resource).read_text()
    else:  # the Flux test kustomization names "unimportant.yaml": a workload running its image "container"
        deployment = (CORPUS / "podinfo-deployment.yaml").read_text().replace(
            f"image: {PODINFO}:6.1.1", "image: container:v0")
    target = "deployment.yaml" if resource is not None else "unimportant.yaml"
    for d, k in ((tmp_path / "before", text), (tmp_path / "after", edit_images(text, image, tag=tag, digest=digest).text)):
        d.mkdir()
        (d / "kustomization.yaml").write_text(k)
        (d / target).write_text(deployment)
    before, after = kustomize(tmp_path / "before"), kustomize(tmp_path / "after")
    containers = after[0]["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == rendered
    containers[0]["image"] = before[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert after == before  # nothing else changed


def rendered_images(directory: Path) -> dict[tuple, str]:
    out: dict[tuple, str] = {}

    def walk(value: object, path: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for n, v in enumerate(value):
                walk(v, (*path, n))
        elif path and path[-1] == "image":
            out[path] = str(value)
    for n, doc in enumerate(kustomize(directory)):
        walk(doc, (n,))
    return out


def test_corpus_render_of_a_multi_image_kustomization_changes_only_the_deployed_one(tmp_path: Path) -> None:
    source = CORPUS / "kustomize-transformerconfigs-images"
    shutil.copytree(source, tmp_path / "before")
    before = rendered_images(tmp_path / "before")
    for n, (image, expected_old, expected_new) in enumerate([
            ("docker", "my-docker2@sha256:25a0d4", "my-docker2:v9"),  # a digest-only entry deployed by tag
            ("my-app", "new-app-1:MYNEWTAG-1", f"new-app-1:MYNEWTAG-1@{DIGEST}")]):
        work = tmp_path / f"after{n}"
        shutil.copytree(source, work)
        text = (source / "kustomization.yaml").read_text()
        edited = edit_images(text, image, **({"tag": "v9"} if image == "docker" else {"digest": DIGEST}))
        (work / "kustomization.yaml").write_text(edited.text)
        after = rendered_images(work)
        changed = {p for p in before if before[p] != after.get(p)}
        assert changed and after.keys() == before.keys()
        assert {before[p] for p in changed} == {expected_old} and {after[p] for p in changed} == {expected_new}
        assert all(before[p] != expected_old for p in before.keys() - changed)  # every use of it moved
