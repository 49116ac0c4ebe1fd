"""The GitOps repository runtime (forgegen.runtime.gitops) against real git and real kubectl kustomize.

The remote is a bare repository in a temp dir; "other machines" are other cache directories (each
its own clone), racing through real pushes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from forgegen.errors import GitOpsError, UsageError, exit_code
from forgegen.plan import Plan
from forgegen.runtime import gitops
from forgegen.runtime.gitops import GitOpsRepo, GitOpsResult, apply_tag
from tests.fixtures.gitops import (
    GITOPS_TEMPLATE,
    INITIAL_TAG,
    SHOP_DEPLOY_YAML,
    clone,
    git,
    plan_for,
    seed_remote,
    services_deploy_yaml,
    write_overlay,
)

API = "clusters/staging/api/kustomization.yaml"
IMG = "localhost:5000/shop/api"
DIGEST = "sha256:" + "cd" * 32


def remote_file(remote: Path, path: str, rev: str = "main") -> str:
    return git("show", f"{rev}:{path}", cwd=remote)


def remote_head(remote: Path) -> str:
    return git("rev-parse", "main", cwd=remote).strip()


def commit_count(remote: Path) -> int:
    return int(git("rev-list", "--count", "main", cwd=remote))


def run_threads(fns: list[Callable[[], GitOpsResult]]) -> list[GitOpsResult | BaseException]:
    results: list[GitOpsResult | BaseException] = [RuntimeError("not run")] * len(fns)
    start = threading.Barrier(len(fns))

    def work(i: int) -> None:
        start.wait()
        try:
            results[i] = fns[i]()
        except BaseException as err:  # reported by the test
            results[i] = err

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# ---------------------------------------------------------------------------------------------
# One deploy


def test_deploy_commits_only_the_tag_with_the_templated_message(shop_plan: Plan, gitops_remote: Path) -> None:
    before = remote_file(gitops_remote, API)
    result = apply_tag(shop_plan, "api", "staging", tag="amd64-1a2b3c4", source_commit="1a2b3c4")
    assert result.changed and result.commit == remote_head(gitops_remote) == result.revision
    assert result.previous_tag == INITIAL_TAG and result.attempts == 1
    assert result.rendered_image == f"{IMG}:amd64-1a2b3c4"
    assert remote_file(gitops_remote, API) == before.replace(f"newTag: {INITIAL_TAG}", "newTag: amd64-1a2b3c4")
    assert git("log", "-1", "--format=%B", cwd=gitops_remote) == "deploy(api): staging → amd64-1a2b3c4\n\nsource: 1a2b3c4\n\n"
    assert git("show", "--format=", "--name-only", "main", cwd=gitops_remote).split() == [API]
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["commit"] == result.commit and doc["reference"] == f"{IMG}:amd64-1a2b3c4"


def test_deploy_every_service_and_environment_of_the_example(shop_plan: Plan, gitops_remote: Path) -> None:
    for service in ("api", "web"):
        for env in ("staging", "production"):
            r = apply_tag(shop_plan, service, env, tag=f"amd64-{service}{env[:3]}1", source_commit="abcdef0")
            assert r.rendered_image == f"localhost:5000/shop/{service}:amd64-{service}{env[:3]}1"
    assert commit_count(gitops_remote) == 5
    for service in ("api", "web"):
        for env in ("staging", "production"):
            assert gitops.current_tag(shop_plan, service, env) == f"amd64-{service}{env[:3]}1"


def test_same_tag_again_makes_no_commit_and_reports_the_head(shop_plan: Plan, gitops_remote: Path) -> None:
    first = apply_tag(shop_plan, "api", "staging", tag="amd64-1111111", source_commit="1111111")
    again = apply_tag(shop_plan, "api", "staging", tag="amd64-1111111", source_commit="1111111")
    assert not again.changed and again.commit is None
    assert again.revision == first.commit == remote_head(gitops_remote)
    assert again.previous_tag == "amd64-1111111"
    assert commit_count(gitops_remote) == 2


def test_deploy_by_digest_renders_tag_and_digest(shop_plan: Plan, gitops_remote: Path) -> None:
    r = apply_tag(shop_plan, "api", "staging", tag="amd64-2222222", digest=DIGEST, source_commit="2222222")
    assert r.rendered_image == f"{IMG}:amd64-2222222@{DIGEST}"
    state, head = gitops.current_state(shop_plan, "api", "staging")
    assert (state.tag, state.digest, head) == ("amd64-2222222", DIGEST, r.commit)
    # Back to a tag alone: the digest is removed, or it would win over the tag.
    back = apply_tag(shop_plan, "api", "staging", tag="amd64-3333333", source_commit="3333333")
    assert back.previous_digest == DIGEST and back.rendered_image == f"{IMG}:amd64-3333333"
    assert "digest" not in remote_file(gitops_remote, API)


def test_current_states_reads_every_pair_at_one_head_and_names_a_missing_manifest(
        shop_plan: Plan, gitops_remote: Path, tmp_path: Path) -> None:
    apply_tag(shop_plan, "api", "staging", tag="amd64-5555555", source_commit="5555555")
    last = apply_tag(shop_plan, "web", "production", tag="amd64-6666666", digest=DIGEST, source_commit="6666666")
    pairs = [(s, e) for s in ("api", "web") for e in ("staging", "production")]
    states = gitops.current_states(shop_plan, pairs)
    assert list(states) == pairs
    for pair in pairs:
        state, head = gitops.current_state(shop_plan, *pair)
        assert states[pair] == (state, head) and head == last.commit
    assert states[("web", "production")][0].digest == DIGEST  # type: ignore[index]
    # someone deletes web's production overlay: that pair says so, the others are still read
    work = clone(gitops_remote, tmp_path / "other")
    git("rm", "--quiet", "-r", "clusters/production/web", cwd=work)
    git("commit", "--quiet", "-m", "remove web from production", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    states = gitops.current_states(shop_plan, pairs)
    err = states[("web", "production")]
    assert isinstance(err, GitOpsError) and "no such file" in err.message
    assert "clusters/production/web/kustomization.yaml" in err.message
    assert states[("api", "staging")][0].tag == "amd64-5555555"  # type: ignore[index]
    assert states[("api", "staging")][1] == remote_head(gitops_remote)  # type: ignore[index]


def test_dry_run_checks_the_edit_and_leaves_everything_as_it_was(shop_plan: Plan, gitops_remote: Path,
                                                                  tmp_path: Path) -> None:
    head = remote_head(gitops_remote)
    r = apply_tag(shop_plan, "api", "staging", tag="amd64-4444444", source_commit="4444444", dry_run=True,
                  cache=tmp_path / "cache")
    assert r.changed and r.commit is None and r.dry_run and r.rendered_image == f"{IMG}:amd64-4444444"
    assert remote_head(gitops_remote) == head
    (workdir,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert git("status", "--porcelain", cwd=workdir) == ""


def test_redeploy_fetches_into_the_cached_clone(shop_plan: Plan, gitops_remote: Path, tmp_path: Path) -> None:
    apply_tag(shop_plan, "api", "staging", tag="amd64-5555555", source_commit="5555555")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "forge" / "gitops"
    (workdir,) = [p for p in cache.iterdir() if p.is_dir()]
    marker = workdir / ".git" / "forge-test-marker"
    marker.write_text("still the same clone")
    # Another machine moves the branch in between.
    other = clone(gitops_remote, tmp_path / "other")
    write_overlay(other, "staging", "extra")
    git("add", "--all", cwd=other)
    git("commit", "-qm", "add extra", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    r = apply_tag(shop_plan, "api", "staging", tag="amd64-6666666", source_commit="6666666")
    assert marker.exists(), "the cached clone was cloned again instead of fetched"
    assert [p.name for p in cache.iterdir() if p.is_dir()] == [workdir.name]
    assert git("rev-parse", "HEAD~1", cwd=workdir).strip() == git("rev-parse", "main~1", cwd=gitops_remote).strip()
    assert r.commit == remote_head(gitops_remote)
    assert (workdir / "clusters/staging/extra/kustomization.yaml").is_file()


def test_zero_matches_names_the_file_and_its_images(gitops_remote: Path, tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text().replace("image: {package: api-image}",
                                                         "image: {package: api-image, name: shop/backend}"),
                    gitops_remote)
    head = remote_head(gitops_remote)
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="amd64-7777777", source_commit="7777777")
    assert str(err.value).startswith(
        f"cannot set the tag of localhost:5000/shop/shop/backend: {API} has no images[] entry or $imagepolicy "
        f"setter for it (images it names: {IMG})")
    assert remote_head(gitops_remote) == head


def test_missing_manifest_is_an_error_naming_path_and_repo(shop_plan: Plan, gitops_remote: Path, tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), gitops_remote, path="apps/{service}")
    with pytest.raises(GitOpsError, match=r"cannot edit apps/api/kustomization.yaml: no such file in .*gitops.git \(branch main\)"):
        apply_tag(plan, "api", "staging", tag="amd64-7777777", source_commit="7777777")


def test_kustomize_check_refuses_an_edit_the_overlay_overrides(tmp_path: Path) -> None:
    template = tmp_path / "template"
    d = write_overlay(template, "staging", "api")
    # A patch pins the container image: the newTag edit would never reach the cluster.
    (d / "kustomization.yaml").write_text((d / "kustomization.yaml").read_text() + (
        "patches:\n  - target: {kind: Deployment, name: api}\n    patch: |-\n"
        "      - op: replace\n        path: /spec/template/spec/containers/0/image\n"
        "        value: localhost:5000/shop/api-legacy:v9\n"))
    remote = seed_remote(template, tmp_path / "gitops.git")
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), remote)
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="amd64-8888888", source_commit="8888888", cache=tmp_path / "c")
    assert "renders Deployment/api container api with image localhost:5000/shop/api-legacy:v9, not " \
           f"{IMG}:amd64-8888888" in str(err.value)
    assert "the edit was not committed" in str(err.value)
    assert commit_count(remote) == 1
    (workdir,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert git("status", "--porcelain", cwd=workdir) == ""


def test_push_refused_by_the_remote_fails_at_once_and_resets(shop_plan: Plan, gitops_remote: Path,
                                                              tmp_path: Path) -> None:
    hook = gitops_remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: open a merge request' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    head = remote_head(gitops_remote)
    with pytest.raises(GitOpsError) as err:
        apply_tag(shop_plan, "api", "staging", tag="amd64-9999999", source_commit="9999999", cache=tmp_path / "c")
    text = str(err.value)
    assert f"cannot push the commit for {API} to the GitOps repository" in text and "main is protected" in text
    assert "nothing was pushed" in text
    assert remote_head(gitops_remote) == head
    (workdir,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert git("rev-parse", "HEAD", cwd=workdir).strip() == head
    assert git("status", "--porcelain", cwd=workdir) == ""


def test_invalid_tag_is_refused_before_any_git_work(shop_plan: Plan, tmp_path: Path) -> None:
    with pytest.raises(GitOpsError, match="not a valid tag"):
        apply_tag(shop_plan, "api", "staging", tag="v1\nimages: []", source_commit="0000000", cache=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_unknown_service_or_environment_is_a_usage_error(shop_plan: Plan) -> None:
    with pytest.raises(UsageError):
        apply_tag(shop_plan, "api", "qa", tag="v1", source_commit="0000000")


# ---------------------------------------------------------------------------------------------
# Where the repository is


def test_relative_path_is_relative_to_the_working_directory(gitops_remote: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), "./gitops.git")
    r = apply_tag(plan, "api", "staging", tag="amd64-abcdef1", source_commit="abcdef1", cwd=gitops_remote.parent)
    assert r.repo == str(gitops_remote) and r.commit == remote_head(gitops_remote)


def test_local_working_clone_means_its_origin(gitops_remote: Path, tmp_path: Path) -> None:
    work = clone(gitops_remote, tmp_path / "checkout")
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), work)
    r = apply_tag(plan, "api", "staging", tag="amd64-abcdef2", source_commit="abcdef2")
    assert r.repo == str(gitops_remote) and r.commit == remote_head(gitops_remote)
    assert git("status", "--porcelain", cwd=work) == "" and INITIAL_TAG in (work / API).read_text()


def test_file_url_and_cache_key(gitops_remote: Path, tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), f"file://{gitops_remote}")
    r = apply_tag(plan, "api", "staging", tag="amd64-abcdef3", source_commit="abcdef3", cache=tmp_path / "c")
    assert r.commit == remote_head(gitops_remote)
    repo = GitOpsRepo.open(f"file://{gitops_remote}", "main", cache=tmp_path / "c")
    assert (repo.workdir / ".git").is_dir() and repo.lock_path.exists()
    assert gitops.is_url("git@github.com:acme/gitops.git") and not gitops.is_url("./gitops.git")


# ---------------------------------------------------------------------------------------------
# Remote unreachable


def test_missing_local_remote_is_a_clear_error(tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), "./nowhere.git")
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="v1", source_commit="0000000", cwd=tmp_path)
    assert str(err.value).startswith("cannot open the GitOps repository: ./nowhere.git does not exist")
    assert "relative to the directory forge runs in" in str(err.value)


def test_unreachable_url_leaves_no_half_written_clone(tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), f"file://{tmp_path}/gone.git")
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="v1", source_commit="0000000", cache=tmp_path / "c")
    text = str(err.value)
    assert text.startswith(f"cannot clone the GitOps repository file://{tmp_path}/gone.git (branch main)")
    assert "git ls-remote" in text and "nothing was changed" in text
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".lock"]  # no clone, no temp dir


def test_unreachable_network_remote_fails_fast_without_prompting(tmp_path: Path) -> None:
    import socket
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), f"http://127.0.0.1:{port}/gitops.git")
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="v1", source_commit="0000000", cache=tmp_path / "c")
    assert f"cannot clone the GitOps repository http://127.0.0.1:{port}/gitops.git" in str(err.value)
    assert "Failed to connect" in str(err.value) or "Connection refused" in str(err.value)
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".lock"]


def test_remote_gone_after_caching_keeps_the_clone_clean(gitops_remote: Path, tmp_path: Path) -> None:
    shop_plan = plan_for(SHOP_DEPLOY_YAML.read_text(), f"file://{gitops_remote}")
    first = apply_tag(shop_plan, "api", "staging", tag="amd64-1010101", source_commit="1010101", cache=tmp_path / "c")
    moved = gitops_remote.with_name("moved.git")
    gitops_remote.rename(moved)
    try:
        with pytest.raises(GitOpsError, match=r"cannot fetch the GitOps repository .*gitops.git \(branch main\)"):
            apply_tag(shop_plan, "api", "staging", tag="amd64-2020202", source_commit="2020202", cache=tmp_path / "c")
    finally:
        moved.rename(gitops_remote)
    (workdir,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert git("status", "--porcelain", cwd=workdir) == ""
    assert git("rev-parse", "HEAD", cwd=workdir).strip() == first.commit == remote_head(gitops_remote)
    again = apply_tag(shop_plan, "api", "staging", tag="amd64-2020202", source_commit="2020202", cache=tmp_path / "c")
    assert again.previous_tag == "amd64-1010101"


def test_missing_branch_says_so(gitops_remote: Path, tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), gitops_remote, branch="release")
    with pytest.raises(GitOpsError, match="it has no branch 'release'"):
        apply_tag(plan, "api", "staging", tag="v1", source_commit="0000000", cache=tmp_path / "c")


# ---------------------------------------------------------------------------------------------
# Races


def _racing_kubectl(tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch, *, always: bool,
                    edit: str) -> Path:
    """A ``kubectl`` first on PATH that, before rendering, lands another machine's commit on the
    remote (``edit`` runs in that machine's clone): the push that follows is rejected for real."""
    real = shutil.which("kubectl")
    assert real
    other = clone(remote, tmp_path / "other-machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl"
    script.write_text(
        "#!/bin/sh\nset -e\n"
        f'if [ {"1" if always else "0"} = 1 ] || [ ! -e "{tmp_path}/raced" ]; then\n'
        f'  touch "{tmp_path}/raced"\n'
        f'  ( cd "{other}" && git pull -q --rebase && {edit} && git commit -qam "other machine" && '
        f'git push -q origin main ) >/dev/null 2>&1\n'
        "fi\n"
        f'echo render >> "{tmp_path}/renders"\n'
        f'exec "{real}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return other


def test_rejected_push_refetches_reapplies_and_lands(shop_plan: Plan, gitops_remote: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _racing_kubectl(tmp_path, gitops_remote, monkeypatch, always=False,
                    edit="sed -i s/amd64-0000000/amd64-web0001/ clusters/staging/web/kustomization.yaml")
    r = apply_tag(shop_plan, "api", "staging", tag="amd64-abc0001", source_commit="abc0001")
    assert r.attempts == 2 and r.commit == remote_head(gitops_remote)
    # The other machine changed nothing the overlay reads: the retry did not render it again.
    assert (tmp_path / "renders").read_text().count("render") == 1
    assert git("log", "--format=%s", cwd=gitops_remote).splitlines() == [
        "deploy(api): staging → amd64-abc0001", "other machine", "initial"]
    assert "amd64-web0001" in remote_file(gitops_remote, "clusters/staging/web/kustomization.yaml")
    assert "amd64-abc0001" in remote_file(gitops_remote, API)


def test_same_service_raced_reports_what_it_replaced(shop_plan: Plan, gitops_remote: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _racing_kubectl(tmp_path, gitops_remote, monkeypatch, always=False,
                    edit=f"sed -i s/amd64-0000000/amd64-other01/ {API}")
    r = apply_tag(shop_plan, "api", "staging", tag="amd64-mine001", source_commit="abc0002")
    assert r.attempts == 2 and r.previous_tag == "amd64-other01"
    assert (tmp_path / "renders").read_text().count("render") == 2  # the file changed: rendered again
    assert remote_file(gitops_remote, API, f"{r.commit}~1").count("amd64-other01") == 1


def test_retry_renders_again_when_a_base_the_overlay_reads_changed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    template = tmp_path / "template"
    base = write_overlay(template, "base", "api")
    (base / "kustomization.yaml").write_text("resources: [deployment.yaml]\n")
    overlay = template / "clusters" / "staging" / "api"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        f"resources:\n  - ../../base/api\nimages:\n  - name: {IMG}\n    newTag: {INITIAL_TAG}\n")
    remote = seed_remote(template, tmp_path / "gitops.git")
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), remote)
    # Meanwhile another machine renames the image in the shared base: our tag would not apply.
    _racing_kubectl(tmp_path, remote, monkeypatch, always=False,
                    edit=f"sed -i 's|image: {IMG}$|image: {IMG}-v2|' clusters/base/api/deployment.yaml")
    with pytest.raises(GitOpsError, match=f"with image {IMG}-v2, not {IMG}:amd64-abc0004"):
        apply_tag(plan, "api", "staging", tag="amd64-abc0004", source_commit="abc0004", cache=tmp_path / "c")
    assert (tmp_path / "renders").read_text().count("render") == 2
    assert git("log", "--format=%s", cwd=remote).splitlines() == ["other machine", "initial"]


def test_push_attempts_are_bounded_and_never_forced(gitops_remote: Path, tmp_path: Path) -> None:
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), gitops_remote, push_attempts=2)
    # Every push of ours loses a tie: a pre-push hook (git's global core.hooksPath, in the test's
    # HOME) lands another machine's commit after our push has read the remote's refs, so the
    # remote refuses ours with "failed to update ref" / "cannot lock ref".
    other = clone(gitops_remote, tmp_path / "other-machine")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-push").write_text(
        '#!/bin/sh\n[ -n "$IN_OTHER_MACHINE" ] && exit 0\n'
        f'cd "{other}" && date +%s%N >> note && git add note && git commit -qm "other machine" && '
        'IN_OTHER_MACHINE=1 git push -q origin main >/dev/null 2>&1\nexit 0\n')
    (hooks / "pre-push").chmod(0o755)
    git("config", "--global", "core.hooksPath", str(hooks))
    with pytest.raises(GitOpsError) as err:
        apply_tag(plan, "api", "staging", tag="amd64-lost001", source_commit="abc0003", cache=tmp_path / "c")
    assert "the branch moved under every one of 2 attempts" in str(err.value)
    assert "gitops.push_attempts" in str(err.value)
    subjects = git("log", "--format=%s", cwd=gitops_remote).splitlines()
    assert subjects == ["other machine", "other machine", "initial"]  # theirs intact, ours not forced
    (workdir,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert git("status", "--porcelain", cwd=workdir) == ""


def _ten_services(tmp_path: Path) -> tuple[Plan, Path]:
    template = tmp_path / "template"
    for i in range(10):
        write_overlay(template, "staging", f"svc{i}")
    remote = seed_remote(template, tmp_path / "gitops.git")
    return plan_for(services_deploy_yaml(10), remote, push_attempts=10), remote


@pytest.mark.parametrize("machines", ["ten-machines", "one-machine"])
def test_ten_concurrent_deploys_all_land(machines: str, tmp_path: Path) -> None:
    plan, remote = _ten_services(tmp_path)
    caches = [tmp_path / f"cache{i if machines == 'ten-machines' else 0}" for i in range(10)]
    results = run_threads([
        (lambda i=i: apply_tag(plan, f"svc{i}", "staging", tag=f"amd64-a{i:06d}", source_commit=f"{i:07d}",
                               cache=caches[i]))
        for i in range(10)])
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    history = set(git("rev-list", "main", cwd=remote).split())
    files: dict[str, list[str]] = {}
    for i, r in enumerate(results):
        assert isinstance(r, GitOpsResult) and r.changed and r.commit in history
        assert f"newTag: amd64-a{i:06d}" in remote_file(remote, f"clusters/staging/svc{i}/kustomization.yaml")
        files[r.commit] = git("show", "--format=", "--name-only", r.commit, cwd=remote).split()
        assert f"clusters/staging/svc{i}/kustomization.yaml" in files[r.commit]
    # on ten machines, a commit each; in one process, deploys waiting for the clone share commits
    assert commit_count(remote) == 1 + len(files) == (11 if machines == "ten-machines" else commit_count(remote))
    assert sorted(f for fs in files.values() for f in fs) == sorted(
        f"clusters/staging/svc{i}/kustomization.yaml" for i in range(10))  # each file in exactly one commit


@pytest.mark.parametrize("same_tag", [False, True])
def test_two_concurrent_deploys_of_one_service_report_truthfully(same_tag: bool, shop_plan: Plan,
                                                                 gitops_remote: Path, tmp_path: Path) -> None:
    tags = ["amd64-aaaaaaa", "amd64-aaaaaaa" if same_tag else "amd64-bbbbbbb"]
    results = run_threads([
        (lambda i=i: apply_tag(shop_plan, "api", "staging", tag=tags[i], source_commit=f"{i:07d}",
                               cache=tmp_path / f"machine{i}"))
        for i in range(2)])
    assert all(isinstance(r, GitOpsResult) for r in results), results
    rs: list[GitOpsResult] = results  # type: ignore[assignment]
    if same_tag:
        winner, other = sorted(rs, key=lambda r: not r.changed)
        assert winner.changed and not other.changed and other.commit is None
        assert other.revision == winner.commit == remote_head(gitops_remote)
        assert commit_count(gitops_remote) == 2
        return
    assert all(r.changed and r.commit for r in rs)
    assert commit_count(gitops_remote) == 3
    for r in rs:  # each says what it replaced, and git agrees
        assert f"newTag: {r.tag}" in remote_file(gitops_remote, API, r.commit)
        assert f"newTag: {r.previous_tag}" in remote_file(gitops_remote, API, f"{r.commit}~1")
    first, second = sorted(rs, key=lambda r: r.previous_tag != INITIAL_TAG)
    assert second.previous_tag == first.tag and gitops.current_tag(shop_plan, "api", "staging") == second.tag


# ---------------------------------------------------------------------------------------------
# The ledger


def test_previous_tag_is_the_last_distinct_tag_in_the_manifest_history(shop_plan: Plan, gitops_remote: Path,
                                                                       tmp_path: Path) -> None:
    for tag in ("amd64-0000001", "amd64-0000002", "amd64-0000002", "amd64-0000003"):
        apply_tag(shop_plan, "api", "staging", tag=tag, source_commit="0000000")
        apply_tag(shop_plan, "web", "staging", tag=tag, source_commit="0000000")  # other files: not ours
    assert gitops.previous_tag(shop_plan, "api", "staging", current="amd64-0000003") == "amd64-0000002"
    # After a rollback to 0000002, the one to go back to is 0000003.
    apply_tag(shop_plan, "api", "staging", tag="amd64-0000002", source_commit="0000000")
    assert gitops.previous_tag(shop_plan, "api", "staging", current="amd64-0000002") == "amd64-0000003"
    entries = gitops.history(shop_plan, "api", "staging", limit=10)
    assert [e.tag for e in entries] == ["amd64-0000002", "amd64-0000003", "amd64-0000002", "amd64-0000001",
                                        INITIAL_TAG]
    assert entries[-1].subject == "initial" and all(e.to_json()["commit"] for e in entries)


def test_previous_tag_looks_past_commits_that_kept_the_tag_and_follows_renames(shop_plan: Plan,
                                                                              gitops_remote: Path,
                                                                              tmp_path: Path) -> None:
    apply_tag(shop_plan, "api", "staging", tag="amd64-0000001", source_commit="0000000")
    other = clone(gitops_remote, tmp_path / "other")
    legacy = tmp_path / "other" / "clusters" / "staging" / "api"
    # Many commits that touch the manifest without changing the tag (more than one log batch).
    for i in range(40):
        with open(legacy / "kustomization.yaml", "a") as f:
            f.write(f"# note {i}\n")
        git("commit", "-qam", f"note {i}", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    assert gitops.previous_tag(shop_plan, "api", "staging", current="amd64-0000001") == INITIAL_TAG
    # The overlay was moved: history continues through the rename (git log --follow).
    git("mv", "clusters/staging/api", "clusters/staging/api-v2", cwd=other)
    git("commit", "-qm", "move overlay", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    moved = plan_for(SHOP_DEPLOY_YAML.read_text(), gitops_remote, path="clusters/{cluster}/{service}-v2")
    apply_tag(moved, "api", "staging", tag="amd64-0000002", source_commit="0000000")
    assert gitops.previous_tag(moved, "api", "staging", current="amd64-0000002") == "amd64-0000001"
    assert gitops.previous_tag(moved, "api", "staging", current="amd64-0000001") == "amd64-0000002"


def test_previous_tag_is_none_without_history(shop_plan: Plan) -> None:
    assert gitops.previous_tag(shop_plan, "api", "staging", current=INITIAL_TAG) is None
    assert gitops.current_tag(shop_plan, "api", "staging") == INITIAL_TAG


def test_example_template_renders_every_overlay() -> None:
    import subprocess

    import yaml
    for cluster in ("staging", "production"):
        for service in ("api", "web"):
            out = subprocess.run(["kubectl", "kustomize", str(GITOPS_TEMPLATE / "clusters" / cluster / service)],
                                 capture_output=True, text=True, check=True, timeout=60).stdout
            (deployment,) = list(yaml.safe_load_all(out))
            assert deployment["metadata"] == {**deployment["metadata"], "name": service, "namespace": "shop"}
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            assert container["name"] == service
            assert container["image"] == f"localhost:5000/shop/{service}:{INITIAL_TAG}"


# ---------------------------------------------------------------------------------------------
# Hostile but valid overlays (issue 11): the deploy changes only our image, or refuses (exit 2)


def test_deploy_with_a_tag_shared_by_anchor_keeps_the_other_image(tmp_path: Path) -> None:
    template = tmp_path / "template"
    d = write_overlay(template, "staging", "api")
    (d / "kustomization.yaml").write_text((d / "kustomization.yaml").read_text().replace(
        f"newTag: {INITIAL_TAG}\n", f"newTag: &t {INITIAL_TAG}\n  - name: localhost:5000/shop/worker\n    newTag: *t\n"))
    remote = seed_remote(template, tmp_path / "gitops.git")
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), remote)
    result = apply_tag(plan, "api", "staging", tag="amd64-8888888", source_commit="8888888", cache=tmp_path / "c")
    assert result.commit and result.rendered_image == f"{IMG}:amd64-8888888"
    text = remote_file(remote, API)
    assert "newTag: amd64-8888888\n  - name: localhost:5000/shop/worker\n    newTag: &t amd64-0000000\n" in text
    assert gitops.current_tag(plan, "api", "staging", cache=tmp_path / "c") == "amd64-8888888"


def test_deploy_refuses_a_duplicate_key_with_its_location_and_exit_2(tmp_path: Path) -> None:
    template = tmp_path / "template"
    d = write_overlay(template, "staging", "api")
    (d / "kustomization.yaml").write_text((d / "kustomization.yaml").read_text() + "    newTag: amd64-1111111\n")
    remote = seed_remote(template, tmp_path / "gitops.git")
    plan = plan_for(SHOP_DEPLOY_YAML.read_text(), remote)
    for call in (lambda: apply_tag(plan, "api", "staging", tag="amd64-8888888", source_commit="8888888",
                                   cache=tmp_path / "c"),
                 lambda: gitops.current_tag(plan, "api", "staging", cache=tmp_path / "c")):
        with pytest.raises(GitOpsError) as err:
            call()
        assert f"cannot edit {API}:10:5: the images entry for {IMG} sets newTag twice" in str(err.value)
        assert exit_code(err.value) == 2
    assert commit_count(remote) == 1
    # The ledger never reports a tag kustomize would not use: the unreadable commit has none.
    assert [e.tag for e in gitops.history(plan, "api", "staging", cache=tmp_path / "c")] == [None]


def test_the_clone_lock_queues_threads_and_times_out_naming_the_lock_file(gitops_remote: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = GitOpsRepo.open(str(gitops_remote), "main", cache=tmp_path / "cache")
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        with repo.locked():
            held.set()
            release.wait(60)
            order.append("first")

    first = threading.Thread(target=hold)
    first.start()
    assert held.wait(60)
    with pytest.raises(GitOpsError, match=r"held .*\.lock.* for more than 0\.2s"):  # another thread holds it
        with repo.locked(timeout=0.2):
            pass
    release.set()
    with repo.locked(timeout=60):  # waits for the first thread, then has it
        order.append("second")
    first.join(60)
    assert order == ["first", "second"]
    # another process holding the lock file
    repo.lock_path.parent.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(repo.lock_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        with pytest.raises(GitOpsError, match=r"another forge process held .* for more than 0\.2s"):
            with repo.locked(timeout=0.2):
                pass
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(60)
    with repo.locked(timeout=60):
        pass


def _queued_deploys(plan: Plan, remote: Path, cache: Path, pairs: list[tuple[str, str]],
                    tag: str | list[str]) -> tuple[GitOpsRepo, list[GitOpsResult | BaseException]]:
    """Deploy ``pairs`` (with ``tag``, or a tag each) from threads of this process while the clone
    is held, so that all of them queue for it; then let go. The clone, and each deploy's result."""
    repo = GitOpsRepo.open(str(remote), "main", cache=cache)
    results: list[GitOpsResult | BaseException] = []
    tags = tag if isinstance(tag, list) else [tag] * len(pairs)
    with repo.locked():
        calls = [(lambda s=s, e=e, t=t: apply_tag(plan, s, e, tag=t, source_commit=t[-7:], cache=cache))
                 for (s, e), t in zip(pairs, tags)]
        runner = threading.Thread(target=lambda: results.extend(run_threads(calls)))
        runner.start()
        deadline = time.monotonic() + 60
        while len(gitops._QUEUES.get(str(repo.lock_path), [])) < len(pairs):
            assert time.monotonic() < deadline, "the deploys never queued for the clone"
            time.sleep(0.01)
    runner.join(120)
    return repo, results


def test_deploys_waiting_for_the_clone_in_one_process_share_one_commit(shop_plan: Plan, gitops_remote: Path,
                                                                        tmp_path: Path) -> None:
    pairs = [("api", "staging"), ("web", "staging"), ("api", "production")]
    head = remote_head(gitops_remote)
    _repo, results = _queued_deploys(shop_plan, gitops_remote, tmp_path / "cache", pairs, "amd64-7777777")
    assert all(isinstance(r, GitOpsResult) for r in results), results
    done = [r for r in results if isinstance(r, GitOpsResult)]
    assert commit_count(gitops_remote) == 2 and remote_head(gitops_remote) == done[0].commit  # one commit
    assert all(r.changed and r.commit == done[0].commit == r.revision for r in done)
    for r in done:  # each says which deploys it shared its commit with
        assert sorted(r.shared_with) == sorted(f"{s}:{e}" for s, e in pairs if (s, e) != (r.service, r.environment))
        assert r.to_json()["shared_with"] == list(r.shared_with)
    files = git("show", "--format=", "--name-only", "main", cwd=gitops_remote).split()
    assert sorted(files) == sorted(f"clusters/{e}/{s}/kustomization.yaml" for s, e in pairs)
    message = git("log", "-1", "--format=%B", cwd=gitops_remote)
    for s, e in pairs:  # every deploy's own message is in it, and the subject names them all
        assert f"deploy({s}): {e} → amd64-7777777" in message.splitlines()[0]
        assert any(r.message.strip() in message for r in done if (r.service, r.environment) == (s, e))
        assert "newTag: amd64-7777777" in remote_file(gitops_remote, f"clusters/{e}/{s}/kustomization.yaml")
    assert git("rev-list", "--count", f"{head}..main", cwd=gitops_remote).strip() == "1"


def test_a_failing_deploy_leaves_the_shared_commit_and_fails_alone(shop_plan: Plan, gitops_remote: Path,
                                                                   tmp_path: Path) -> None:
    work = clone(gitops_remote, tmp_path / "other")
    git("rm", "--quiet", "-r", "clusters/production/web", cwd=work)
    git("commit", "--quiet", "-m", "remove web from production", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    pairs = [("api", "staging"), ("web", "production"), ("web", "staging"), ("api", "production")]
    repo, results = _queued_deploys(shop_plan, gitops_remote, tmp_path / "cache", pairs, "amd64-8888888")
    failed = results[1]
    assert isinstance(failed, GitOpsError) and "clusters/production/web/kustomization.yaml" in failed.message
    done = [r for r in results if isinstance(r, GitOpsResult)]
    assert len(done) == 3 and len({r.commit for r in done}) == 1 and done[0].commit == remote_head(gitops_remote)
    assert all(r.attempts == 1 for r in done)  # one push; the member's failure spent no push attempt
    files = git("show", "--format=", "--name-only", "main", cwd=gitops_remote).split()
    assert sorted(files) == sorted(f"clusters/{e}/{s}/kustomization.yaml" for s, e in pairs if s != "web" or e != "production")
    assert git("status", "--porcelain", cwd=repo.workdir) == ""


def test_two_queued_deploys_of_one_service_never_share_a_commit(shop_plan: Plan, gitops_remote: Path,
                                                                tmp_path: Path) -> None:
    pairs = [("api", "staging"), ("web", "staging"), ("api", "staging")]
    tags = ["amd64-1000001", "amd64-2000002", "amd64-3000003"]
    _repo, results = _queued_deploys(shop_plan, gitops_remote, tmp_path / "cache", pairs, tags)
    assert all(isinstance(r, GitOpsResult) and r.changed for r in results), results
    first, web, second = results  # type: ignore[misc]
    assert first.commit != second.commit and commit_count(gitops_remote) == 3
    for r in (first, web, second):  # each commit deploys what its deploy says
        assert f"newTag: {r.tag}" in remote_file(gitops_remote, r.file, r.commit)
    earlier, later = sorted((first, second), key=lambda r: r.previous_tag != INITIAL_TAG)
    assert later.previous_tag == earlier.tag and gitops.current_tag(shop_plan, "api", "staging") == later.tag
    assert web.commit in (first.commit, second.commit)
