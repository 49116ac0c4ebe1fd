"""One URL policy (no credential in any URL) and one redaction, end to end: a planted token
never reaches argv (a git wrapper records every call; /proc/*/cmdline is sampled while forge
runs), stdout, stderr, reports, plans or files under the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen import generator, urls
from forgegen.errors import ConfigError

BIN = Path(sys.executable).parent
TOKEN = "ghp_PlantedToken0123456789abcdefXYZ"
CI_TOKEN = "glcitok-Planted-0123456789"

DEPLOY = """\
version: 1
project: shop
registry: {{host: "127.0.0.1:5000", insecure: true}}
gitops: {{repo: {repo}}}
environments:
  - name: staging
services:
  api: {{}}
"""


@pytest.mark.parametrize("url", [
    f"https://{TOKEN}@github.com/acme/gitops.git",
    f"https://gitlab-ci-token:{CI_TOKEN}@gitlab.example.com/acme/gitops.git",
    f"http://user:{CI_TOKEN}@host:8080/x",
    f"ssh://git:{CI_TOKEN}@host/x.git",
    f"s3://{TOKEN}@bucket?region=eu-west-1",
])
def test_a_url_with_user_info_is_refused_and_the_message_hides_it(url: str) -> None:
    problem = urls.credential_problem(url)
    assert problem is not None
    assert TOKEN not in problem and CI_TOKEN not in problem
    assert "credential helper" in problem and "netrc" in problem


@pytest.mark.parametrize("url", [
    "https://github.com/acme/gitops.git", "git@github.com:acme/gitops.git", "ssh://git@host/x.git",
    "../gitops", "/srv/git/gitops.git", "file:///srv/git/gitops.git", "s3://bucket?region=eu-west-1",
])
def test_a_url_without_credentials_passes(url: str) -> None:
    assert urls.credential_problem(url) is None


def test_redact_hides_user_info_and_token_shapes_everywhere() -> None:
    text = (f"fatal: unable to access 'https://gitlab-ci-token:{CI_TOKEN}@gitlab.example.com/x.git/': 403\n"
            f"hint: git ls-remote https://{TOKEN}@github.com/acme/gitops.git; token {TOKEN}; "
            "ssh://git@host/x.git stays")
    out = urls.redact(text)
    assert TOKEN not in out and CI_TOKEN not in out
    assert "https://***@gitlab.example.com/x.git/" in out and "ssh://git@host/x.git stays" in out


def test_every_url_field_of_deploy_yaml_is_checked(tmp_path: Path) -> None:
    text = DEPLOY.format(repo=f"'https://{TOKEN}@github.com/acme/gitops.git'").replace("  api: {}\n", "  api:\n") + (
        f"    verify: [{{name: health, http: {{url: 'https://u:{CI_TOKEN}@api.example.com/healthz'}}}}]\n"
        f"attic: {{endpoint: 'https://{TOKEN}@attic.example.com', cache: shop}}\n"
        f"binary_cache: {{url: 's3://k:{CI_TOKEN}@bucket'}}\n")
    (tmp_path / "deploy.yaml").write_text(text)
    res = subprocess.run([str(BIN / "forgegen"), "sync", "-c", "deploy.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    for where in ("gitops.repo", "attic.endpoint", "binary_cache.url", "services.api.verify[0].http.url"):
        assert any(where in line and "credential helper" in line for line in res.stderr.splitlines()), (where, res.stderr)
    assert TOKEN not in res.stdout + res.stderr and CI_TOKEN not in res.stdout + res.stderr
    assert not (tmp_path / "nix").exists()  # nothing written: no plan carries the token


def test_the_attic_endpoint_of_a_provisioning_file_is_checked(tmp_path: Path) -> None:
    (tmp_path / "attic.yaml").write_text(
        f"version: 1\nserver: {{endpoint: 'https://{TOKEN}@attic.example.com', token_env: ATTIC_ADMIN}}\n"
        "caches: [{name: shop}]\n")
    res = subprocess.run([str(BIN / "forge-provision"), "attic", "plan", "--config", "attic.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert "attic.yaml:2:" in res.stderr and "credential helper" in res.stderr
    assert TOKEN not in res.stdout + res.stderr


def _git_wrapper(tmp_path: Path) -> tuple[dict[str, str], Path]:
    log = tmp_path / "git-argv.log"
    wrapper = tmp_path / "wrap"
    wrapper.mkdir()
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    (wrapper / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    (wrapper / "git").chmod(0o755)
    env = dict(os.environ, PATH=f"{wrapper}:{os.environ['PATH']}", RELEASE_GIT_SHA="abcdef1")
    return env, log


def _run_sampling_proc(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``argv``; while it runs, read every process's command line (children included)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    while proc.poll() is None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    seen.add((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:
                    pass
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), seen


@pytest.mark.parametrize("command", [["deploy", "api:staging", "--json"], ["rollback", "api:staging", "--json"]])
def test_a_token_in_the_local_clones_origin_is_refused_before_it_travels(tmp_path: Path, command: list[str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    clone = project / "gitops-clone"
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    origin = f"https://gitlab-ci-token:{CI_TOKEN}@127.0.0.1:9/acme/gitops.git"
    subprocess.run(["git", "-C", str(clone), "remote", "add", "origin", origin], check=True)
    (project / "deploy.yaml").write_text(DEPLOY.format(repo="gitops-clone"))
    generator.sync(project / "deploy.yaml")
    env, log = _git_wrapper(tmp_path)
    res, cmdlines = _run_sampling_proc(
        [str(BIN / "forge"), command[0], "--plan", "nix/forge/plans/api.json", *command[1:]], project, env)
    assert res.returncode == 2, res.stderr
    assert "origin" in res.stderr and "credential helper" in res.stderr and "gitops.repo" in res.stderr
    leaks = [where for where, text in [("stdout", res.stdout), ("stderr", res.stderr),
                                       ("git argv", log.read_text() if log.exists() else ""),
                                       ("/proc cmdline", "\n".join(cmdlines))] if CI_TOKEN in text]
    cache = Path(env["XDG_CACHE_HOME"])
    leaks += [str(p) for p in cache.rglob("*") if p.is_file() and CI_TOKEN.encode() in p.read_bytes()]
    leaks += [str(p) for p in (project / "nix").rglob("*") if p.is_file() and CI_TOKEN in p.read_text()]
    assert not leaks, leaks


def test_the_deploy_yaml_token_message_is_one_located_line() -> None:
    from forgegen.schema import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config(DEPLOY.format(repo=f"'https://{TOKEN}@github.com/acme/gitops.git'"))
    text = str(info.value)
    assert text.startswith("deploy.yaml:4:") and "gitops.repo" in text and TOKEN not in text


def test_a_failing_commands_error_redacts_urls_git_printed(tmp_path: Path) -> None:
    from forgegen import process
    from forgegen.errors import CommandError

    script = tmp_path / "fails"
    script.write_text(f"#!/bin/sh\necho \"fatal: unable to access 'https://x:{CI_TOKEN}@h/r.git/'\" >&2\nexit 128\n")
    script.chmod(0o755)
    with pytest.raises(CommandError) as info:
        process.run([str(script)], what="fetch")
    assert CI_TOKEN not in str(info.value) + info.value.stderr
    assert "https://***@h/r.git/" in str(info.value)


def test_a_hand_edited_plan_with_a_credential_is_refused(tmp_path: Path) -> None:
    import json

    from forgegen.plan import load_plan

    (tmp_path / "deploy.yaml").write_text(DEPLOY.format(repo="../gitops"))
    generator.sync(tmp_path / "deploy.yaml")
    plan = tmp_path / "nix" / "forge" / "plans" / "_project.json"
    data = json.loads(plan.read_text())
    data["binary_cache"] = f"https://{TOKEN}@cache.example.com"
    plan.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_plan(tmp_path / "nix" / "forge" / "plans" / "api.json")
    assert "binary_cache" in str(info.value) and TOKEN not in str(info.value)


# -- the supported way: a credential helper (GIT_ASKPASS) against a remote that requires auth ---


DEPLOY_LIKE = """\
import json, sys
from forgegen import console
from forgegen.runtime.gitops import apply_tag
from tests.fixtures.gitops import SHOP_DEPLOY_YAML, plan_for
plan = plan_for(SHOP_DEPLOY_YAML.read_text(), sys.argv[1])
console.setup_logging(2)
result = apply_tag(plan, "api", "staging", tag="amd64-7777777", source_commit="7777777")
console.emit_json(result.to_json())
"""


def test_a_credential_from_a_helper_never_reaches_argv_output_or_the_cached_clone(tmp_path: Path) -> None:
    from tests.controlplane.gitserver import GitServer
    from tests.fixtures.gitops import GITOPS_TEMPLATE, seed_remote

    root = tmp_path / "srv"
    root.mkdir()
    seed_remote(GITOPS_TEMPLATE, root / "gitops.git")
    server = GitServer(root, basic_auth=("forge-bot", CI_TOKEN))
    try:
        askpass = tmp_path / "askpass"
        askpass.write_text('#!/bin/sh\ncase "$1" in Username*) echo forge-bot ;; *) echo "$FORGE_TEST_GIT_TOKEN" ;; esac\n')
        askpass.chmod(0o755)
        env, log = _git_wrapper(tmp_path)
        env.update(GIT_ASKPASS=str(askpass), FORGE_TEST_GIT_TOKEN=CI_TOKEN,
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        res, cmdlines = _run_sampling_proc([sys.executable, "-c", DEPLOY_LIKE, server.url(root / "gitops.git")], tmp_path, env)
    finally:
        server.stop()
    assert res.returncode == 0, res.stderr[-3000:]
    assert server.authorized > 0 and '"changed": true' in res.stdout
    leaks = [where for where, text in [("stdout", res.stdout), ("stderr", res.stderr), ("git argv", log.read_text()),
                                       ("/proc cmdline", "\n".join(cmdlines))] if CI_TOKEN in text]
    cache = Path(env["XDG_CACHE_HOME"])
    assert any(cache.rglob("config")), "the GitOps clone was not cached"
    leaks += [str(p) for p in cache.rglob("*") if p.is_file() and CI_TOKEN.encode() in p.read_bytes()]
    assert not leaks, leaks
