"""forgegen check and sync agree: whatever sync would fail on, check reports first (exit 2,
located), and a refused sync leaves nix/forge exactly as it was."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen import generator
from forgegen.schema import parse_config

BASE = """\
version: 1
project: shop
registry: {host: ghcr.io, organization: acme}
gitops: {repo: ../gitops}
environments:
  - name: prod
services:
  api: {}
"""

# (what to replace in BASE, by what, the YAML path the error must name, a word it must say)
BAD = {
    "nul": ("gitops: {repo: ../gitops}", 'gitops: {repo: ../gitops, branch: "before\\0after"}', "gitops.branch", "NUL"),
    "lone-surrogate": ("gitops: {repo: ../gitops}", 'gitops: {repo: ../gitops, branch: "x\\ud800"}', "gitops.branch", "surrogate"),
    "surrogate-key": ("  api: {}", '  api: {dev: {"t\\udc00": x}}', "services.api.dev", "surrogate"),
    "unknown-placeholder-kustomization": ("services:", 'flux: {kustomizations: ["apps-{env}"]}\nservices:',
                                          "flux.kustomizations[0]", "{env}"),
    "unfilled-placeholder-image": ("organization: acme}", 'organization: acme, image_name: "{project}-{environment}"}',
                                   "registry.image_name", "{environment}"),
    "env-flux-kustomization": ("  - name: prod", '  - name: prod\n    flux: {kustomizations: ["apps-{env}"]}',
                               "environments[0].flux.kustomizations[0]", "{env}"),
    "format-spec": ("organization: acme}", 'organization: acme, image_name: "{service:>2000000000}"}',
                    "registry.image_name", "format"),
    "bogus": ("  - name: prod", '  - name: prod\n    namespace: "{bogus}"', "environments[0].namespace", "{bogus}"),
    "positional": ("  - name: prod", '  - name: prod\n    namespace: "{0}"', "environments[0].namespace", "placeholder"),
    "attribute": ("  - name: prod", '  - name: prod\n    namespace: "{project.__class__.__mro__}"',
                  "environments[0].namespace", "placeholder"),
    "indexing": ("  - name: prod", '  - name: prod\n    namespace: "{project[0]}"', "environments[0].namespace", "placeholder"),
    "conversion": ("  - name: prod", '  - name: prod\n    namespace: "{project!r}"', "environments[0].namespace", "placeholder"),
    "lone-brace": ("  - name: prod", '  - name: prod\n    namespace: "{project"', "environments[0].namespace", "brace"),
    "commit-format-spec": ("gitops: {repo: ../gitops}", 'gitops: {repo: ../gitops, commit_message: "{tag:>99999999}"}',
                           "gitops.commit_message", "format"),
    "image-escapes-organization": ("organization: acme}", 'organization: acme, image_name: "{service}/../../../other-org/x"}',
                                   "registry.image_name", "other-org"),
    "image-name-literal": ("  api: {}", '  api: {image: {name: "../other-org/x"}}', "services.api.image.name", "repository"),
    "namespace-newline": ("  - name: prod", '  - name: prod\n    namespace: "{project}\\nx"', "environments[0].namespace", "label"),
    "namespace-too-long": ("  - name: prod", '  - name: prod\n    namespace: "{project}-' + "x" * 60 + '"',
                           "environments[0].namespace", "label"),
    "field-selector-injection": ("services:", 'flux: {kustomizations: ["apps,metadata.name=x"]}\nservices:',
                                 "flux.kustomizations[0]", "Kubernetes object name"),
    "flux-namespace-not-a-label": ("services:", 'flux: {namespace: "flux.system"}\nservices:', "flux.namespace", "label"),
    "env-flux-namespace-not-a-label": ("  - name: prod", '  - name: prod\n    flux: {namespace: "a.b"}',
                                       "environments[0].flux.namespace", "label"),
    "provision-empty": ("services:", "provision: {postgres: []}\nservices:", "provision", "lists no file"),
    "provision-twice": ("services:", "provision: {attic: [a.yaml, ./a.yaml]}\nservices:", "provision.attic[1]", "twice"),
    "provision-outside": ("services:", "provision: {postgres: [../db.yaml]}\nservices:", "provision.postgres[0]", ".."),
    "kustomization-newline": ("services:", 'flux: {kustomizations: ["apps-{environment}\\n"]}\nservices:',
                              "flux.kustomizations[0]", "Kubernetes object name"),
}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True,
                          encoding="utf-8", errors="backslashreplace")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_refuses_what_sync_would_fail_on_and_sync_writes_nothing(case: str, tmp_path: Path) -> None:
    old, new, where, word = BAD[case]
    assert old in BASE
    (tmp_path / "deploy.yaml").write_text(BASE, encoding="utf-8")
    generator.sync(tmp_path / "deploy.yaml")
    before = _snapshot(tmp_path / "nix")
    (tmp_path / "deploy.yaml").write_text(BASE.replace(old, new, 1), encoding="utf-8")
    for command in ("check", "sync"):
        proc = _run(tmp_path, command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if f": {where}: " in line]
        assert lines and any(word in line for line in lines), (command, proc.stderr)
        assert re.search(r"deploy\.yaml:\d+:\d+: ", lines[0]), proc.stderr  # located: file, line, column
    assert _snapshot(tmp_path / "nix") == before


def test_a_json_escaped_surrogate_pair_is_the_character_it_encodes(tmp_path: Path) -> None:
    config = parse_config(BASE.replace("gitops: {repo: ../gitops}", 'gitops: {repo: ../gitops, branch: "x\\ud83d\\ude00"}'))
    assert config.gitops.branch == "x\U0001F600"
    (tmp_path / "deploy.yaml").write_text(BASE.replace("gitops: {repo: ../gitops}",
                                                       'gitops: {repo: ../gitops, branch: "x\\ud83d\\ude00"}'))
    proc = _run(tmp_path, "sync")
    assert proc.returncode == 0, proc.stderr
    assert "x\U0001F600" in (tmp_path / "nix/forge/plans/api.json").read_text(encoding="utf-8")

