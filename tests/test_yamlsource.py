"""The one hardened YAML loader: hostile input is a located exit-2 error, never a traceback,
a hang or a memory blow-up; keys are the text the user wrote.

The CLIs run as real processes under a memory limit (RLIMIT_AS) and a timeout: those are the
bounds, not an assertion on wall time.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen.errors import ConfigError
from forgegen.schema import parse_config

BIN = Path(sys.executable).parent
MEMORY_LIMIT = 1 << 30  # 1 GiB of address space for the CLI under test
TIMEOUT = 120.0  # a generous bound; the bug this guards against never finished

MINIMAL = """\
version: 1
project: shop
registry: {host: ghcr.io, organization: acme}
gitops: {repo: ../gitops}
environments:
  - name: staging
services:
  api: {}
"""

LAUGHS = "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(1, 9))
BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + LAUGHS.replace("*b", "*a", 9)
MERGE_BOMB = "a0: &a0 {x: 1, y: 2}\n" + "".join(
    f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}], k{i}: 1}}\n" for i in range(1, 12))

HOSTILE = {
    "recursive-alias": "a: &a [*a]\n",
    "recursive-merge": "a: &a {<<: *a}\n",
    "deep-flow": "x: " + "[" * 500 + "]" * 500 + "\n",
    "deep-block": "".join("  " * i + f"k{i}:\n" for i in range(500)) + "  " * 500 + "v\n",
    "unknown-tag": "x: !foo bar\n",
    "bad-int": "x: !!int abc\n",
    "bad-timestamp": "x: !!timestamp 2001-13-45\n",
    "tagged-mapping": "x: !foo {a: 1}\n",
    "python-tag": "x: !!python/object:os.system [ls]\n",
    "huge-int": "x: !!int " + "9" * 10000 + "\n",
    "billion-laughs": BILLION_LAUGHS,
    "merge-bomb": MERGE_BOMB,
    "nul": "x: a\x00b\n",
}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_bounded(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                          preexec_fn=_limit, check=False)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value).splitlines()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_a_located_error_in_forgegen_check(case: str, tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(HOSTILE[case], encoding="utf-8")
    res = run_bounded([str(BIN / "forgegen"), "check", "-c", "deploy.yaml"], tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "deploy.yaml:1" in res.stderr or "deploy.yaml:" in res.stderr.splitlines()[0], res.stderr[-2000:]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_a_located_error_in_forge_provision_plan(case: str, tmp_path: Path) -> None:
    (tmp_path / "db.yaml").write_text(HOSTILE[case], encoding="utf-8")
    res = run_bounded([str(BIN / "forge-provision"), "postgres", "plan", "--config", "db.yaml"], tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "db.yaml" in res.stderr


def test_hostile_yaml_error_names_line_and_what_to_do() -> None:
    lines = problems(MINIMAL + "  web: {path: !!int abc}\n")
    assert any(line.startswith("deploy.yaml:9:") and "!!int" in line for line in lines), lines
    lines = problems(MINIMAL + "  web: &w {depends_on: *w}\n")
    assert any(line.startswith("deploy.yaml:9:") and "alias" in line for line in lines), lines
    lines = problems("x: " + "[" * 500 + "]" * 500 + "\n")
    assert len(lines) == 1 and lines[0].startswith("deploy.yaml:1:") and "deep" in lines[0], lines


def test_aliases_within_bounds_still_work() -> None:
    config = parse_config(MINIMAL.replace("  api: {}\n", "  api: &base {type: rust, path: services/api}\n"
                                          "  web: {<<: *base, path: services/web}\n"))
    assert config.services["web"].type == "rust"
    assert config.services["web"].path == "services/web"  # an explicit key overrides the merged one


def test_a_file_over_the_size_limit_is_one_error(tmp_path: Path) -> None:
    bad = "  svc{i}: {{type: nope}}\n"
    (tmp_path / "deploy.yaml").write_text(MINIMAL + "".join(bad.format(i=i) for i in range(200_000)))
    res = run_bounded([str(BIN / "forgegen"), "check", "-c", "deploy.yaml"], tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) <= 3, res.stderr[:2000]
    assert "deploy.yaml" in res.stderr and "limit" in res.stderr


def test_many_problems_are_capped(tmp_path: Path) -> None:
    bad = "  s{i}: {{type: nope}}\n"
    (tmp_path / "deploy.yaml").write_text(MINIMAL + "".join(bad.format(i=i) for i in range(5000)))
    res = run_bounded([str(BIN / "forgegen"), "check", "-c", "deploy.yaml"], tmp_path)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert 100 <= len(lines) <= 110, len(lines)
    assert "more problem" in res.stderr


def test_yaml_11_words_as_keys_stay_the_text_written() -> None:
    config = parse_config(MINIMAL.replace("  api: {}\n", "  on: {}\n  off: {}\n  yes: {}\n"))
    assert sorted(config.services) == ["off", "on", "yes"]
    lines = problems(MINIMAL.replace("  api: {}\n", "  010: {}\n"))
    assert any("'010'" in line for line in lines), lines
    assert not any("'8'" in line for line in lines), lines


OVERLAY_READER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from forgegen.runtime.gitops import GitOpsRepo, render_inputs\n"
    "print(render_inputs(GitOpsRepo('unused', 'main', Path(sys.argv[1])), 'overlay'))\n")


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_kustomization_does_not_stall_the_overlay_reader(case: str, tmp_path: Path) -> None:
    overlay = tmp_path / "repo" / "overlay"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text("resources: [deployment.yaml]\n" + HOSTILE[case])
    (overlay / "deployment.yaml").write_text("kind: Deployment\n")
    res = run_bounded([sys.executable, "-c", OVERLAY_READER, str(tmp_path / "repo")], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() in ("('',)", "('overlay', 'overlay/deployment.yaml')"), res.stdout


@pytest.mark.parametrize("case", ["recursive-alias", "deep-flow", "deep-block", "billion-laughs"])
def test_hostile_manifest_is_a_gitops_error_for_the_editor(case: str) -> None:
    from forgegen.errors import GitOpsError
    from forgegen.runtime.kustomize import read_image

    text = "images:\n- name: ghcr.io/acme/api\n  newTag: v1\n" + HOSTILE[case]
    try:
        state = read_image(text, "ghcr.io/acme/api", source="kustomization.yaml")
    except GitOpsError as err:
        assert "kustomization.yaml" in str(err)
    else:
        assert state.tag == "v1"
