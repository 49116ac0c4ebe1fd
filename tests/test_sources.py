"""External git sources (``services.S.source``) and ``forgegen lock``, on real git repositories
(``file://`` URLs) with the real Nix: the pin (rev + narHash) is the same whether it comes from
``builtins.fetchGit`` through ``nix eval`` or from ``nix-prefetch-git``'s JSON; ``--update``
moves pins; ``sync`` refuses a source that is not locked or a stale lock; and the generated Nix
fetches the pinned revision, which a consumer flake's package builds from (``nix build``).

``nix-prefetch-git`` itself ships with nixpkgs, which these machines cannot fetch (Debian 12
has no package of it): tests/nix-prefetch-git-standin prints its JSON from a real git clone
hashed by the real ``nix-hash``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forgegen import sources, synccache
from tests.fixtures.nixenv import Flake, tool_path

pytestmark = pytest.mark.nix

ROOT = Path(__file__).resolve().parent.parent
PREFETCH_STANDIN = ROOT / "tests" / "nix-prefetch-git-standin"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """Another team's repository: main with one commit, an annotated tag v1, a branch `other`.
    Its directory name holds what the shell must not interpret: `$x` and a quote."""
    repo = tmp_path / "up$x's"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit_file(repo, "greeting.txt", "hello from v1\n", "one")
    commit_file(repo, "lib/util.sh", "echo util\n", "two")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    git(repo, "checkout", "-qb", "other")
    commit_file(repo, "other.txt", "only on other\n", "three")
    git(repo, "checkout", "-q", "main")
    return repo


def url_of(repo: Path) -> str:
    return f"file://{repo}"


DEPLOY = """\
version: 1
project: shop
registry: {{host: localhost:5000, insecure: true}}
gitops: {{repo: ./gitops.git}}
environments: [{{name: staging}}]
services:
  api: {{type: python}}
  ext:
    type: generic
    source: {{git: {url}, ref: {ref}}}
"""


def project(tmp_path: Path, url: str, ref: str = "main", name: str = "proj") -> Path:
    root = tmp_path / name
    root.mkdir(exist_ok=True)
    (root / "deploy.yaml").write_text(DEPLOY.format(url=json.dumps(url), ref=json.dumps(ref)))
    return root


def forgegen(cwd: Path, *args: str, prefetch: bool = False) -> subprocess.CompletedProcess[str]:
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "nix-prefetch-git").exists()]
    if prefetch:
        path.insert(0, str(PREFETCH_STANDIN))
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, "-m", "forgegen", *args], cwd=cwd, capture_output=True, text=True, env=env)


def lock_doc(root: Path) -> dict:
    return json.loads((root / "deploy.lock").read_text())


def test_nix_eval_and_nix_prefetch_git_write_the_same_lock_entry(tmp_path: Path, upstream: Path) -> None:
    a, b = project(tmp_path, url_of(upstream), name="a"), project(tmp_path, url_of(upstream), name="b")
    via_nix = forgegen(a, "lock", "--json")
    assert via_nix.returncode == 0, via_nix.stderr
    via_prefetch = forgegen(b, "lock", "--json", prefetch=True)
    assert via_prefetch.returncode == 0, via_prefetch.stderr
    assert json.loads(via_nix.stdout)["via"] == "nix"
    assert json.loads(via_prefetch.stdout)["via"] == "nix-prefetch-git"
    assert (a / "deploy.lock").read_bytes() == (b / "deploy.lock").read_bytes()
    entry = lock_doc(a)["sources"]["ext"]
    assert entry == {"url": url_of(upstream), "ref": "main", "resolvedRef": "refs/heads/main",
                     "rev": git(upstream, "rev-parse", "main"), "narHash": entry["narHash"]}
    # The hash is the tree's without .git, as Nix computes it.
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(upstream), str(checkout))
    shutil.rmtree(checkout / ".git")
    assert entry["narHash"] == subprocess.run(["nix", "hash", "path", str(checkout)], capture_output=True,
                                              text=True, check=True).stdout.strip()
    # Sorted, stable JSON; a second lock changes nothing.
    text = (a / "deploy.lock").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    again = forgegen(a, "lock", "--json")
    assert json.loads(again.stdout)["sources"] == [{"service": "ext", "verb": "identical", "rev": entry["rev"], "previous": entry["rev"]}]
    assert (a / "deploy.lock").read_text() == text


def test_tags_and_commits_pin_the_commit_with_both_fetchers(upstream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{PREFETCH_STANDIN}{os.pathsep}{os.environ['PATH']}")
    tagged = git(upstream, "rev-parse", "v1^{commit}")
    other = git(upstream, "rev-parse", "other")
    for ref, resolved, rev in (("v1", "refs/tags/v1", tagged), (other, None, other),
                               ("refs/heads/other", "refs/heads/other", other)):
        pins = [sources.pin(url_of(upstream), ref, via=via) for via in ("nix", "nix-prefetch-git")]
        assert [p.resolved_ref for p in pins] == [resolved, resolved]
        assert [p.rev for p in pins] == [rev, rev]
        assert pins[0] == pins[1], pins
    with pytest.raises(sources.SourceError, match="has no branch or tag 'nope'"):
        sources.pin(url_of(upstream), "nope", via="nix")


def test_nix_base32_converts_to_the_sri_nix_prints(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    b32 = subprocess.run(["nix-hash", "--type", "sha256", "--base32", str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.strip()
    sri = subprocess.run(["nix", "hash", "to-sri", "--type", "sha256", b32], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert sources.sri_of_nix_base32(b32) == sri
    with pytest.raises(sources.SourceError):
        sources.sri_of_nix_base32("e" + b32[1:])  # 'e' is not in Nix's base-32 alphabet


def test_lock_update_moves_pins_and_plain_lock_keeps_them(tmp_path: Path, upstream: Path) -> None:
    root = project(tmp_path, url_of(upstream))
    assert forgegen(root, "lock").returncode == 0
    first = lock_doc(root)["sources"]["ext"]
    newer = commit_file(upstream, "greeting.txt", "hello from v2\n", "four")
    kept = forgegen(root, "lock", "--json")
    assert kept.returncode == 0, kept.stderr
    assert lock_doc(root)["sources"]["ext"] == first  # pins hold until asked to move
    dry = forgegen(root, "lock", "--update", "--dry-run", "--json")
    assert json.loads(dry.stdout)["sources"][0] == {"service": "ext", "verb": "update", "rev": newer, "previous": first["rev"]}
    assert lock_doc(root)["sources"]["ext"] == first  # --dry-run writes nothing
    moved = forgegen(root, "lock", "--update", "ext")
    assert moved.returncode == 0, moved.stderr
    assert f"update  ext {first['rev'][:12]} -> {newer[:12]}" in moved.stderr
    entry = lock_doc(root)["sources"]["ext"]
    assert entry["rev"] == newer and entry["narHash"] != first["narHash"]
    # The default.nix sync wrote pins the new commit.
    assert newer in (root / "nix/forge/default.nix").read_text()
    unknown = forgegen(root, "lock", "--update", "api")
    assert unknown.returncode == 2
    assert "not a service with a source" in unknown.stderr and "ext" in unknown.stderr


def test_sync_refuses_a_source_not_locked_and_a_stale_lock(tmp_path: Path, upstream: Path) -> None:
    root = project(tmp_path, url_of(upstream))
    unlocked = forgegen(root, "sync")
    assert unlocked.returncode == 2
    assert "deploy.lock: services.ext.source:" in unlocked.stderr and "is not locked; run `forgegen lock`" in unlocked.stderr
    assert not (root / "nix").exists()  # nothing written
    assert forgegen(root, "lock").returncode == 0
    assert forgegen(root, "sync", "--check").returncode == 0
    # deploy.yaml now asks for another ref: the lock is stale.
    (root / "deploy.yaml").write_text(DEPLOY.format(url=json.dumps(url_of(upstream)), ref='"v1"'))
    stale = forgegen(root, "sync")
    assert stale.returncode == 2
    assert "the lock pins" in stale.stderr and "(main) but deploy.yaml says" in stale.stderr and "(v1)" in stale.stderr
    assert forgegen(root, "check").returncode == 2  # check fails where sync would
    # A source removed from deploy.yaml but still pinned.
    (root / "deploy.yaml").write_text(DEPLOY.split("  ext:")[0].format())
    leftover = forgegen(root, "sync")
    assert leftover.returncode == 2 and "no source for service 'ext' any more" in leftover.stderr
    assert forgegen(root, "lock").returncode == 0
    assert lock_doc(root)["sources"] == {}


def test_a_hand_edited_lock_is_not_hidden_by_the_sync_stamp(tmp_path: Path, upstream: Path) -> None:
    assert synccache.LOCK_FILE == sources.LOCK_FILE
    root = project(tmp_path, url_of(upstream))
    assert forgegen(root, "lock").returncode == 0
    assert forgegen(root, "sync").returncode == 0  # leaves the stamp of a no-op
    doc = lock_doc(root)
    doc["sources"]["ext"]["rev"] = "0" * 40
    (root / "deploy.lock").write_text(json.dumps(doc))
    check = forgegen(root, "sync", "--check")
    assert check.returncode == 1 and "overwrite  nix/forge/default.nix" in check.stderr
    doc["sources"]["ext"]["narHash"] = "md5-x"
    (root / "deploy.lock").write_text(json.dumps(doc))
    bad = forgegen(root, "sync")
    assert bad.returncode == 2 and "deploy.lock: sources.ext: narHash 'md5-x' is not an SRI sha256 hash" in bad.stderr


@pytest.mark.parametrize(("source", "problem"), [
    ('{git: "-uupload-pack=touch /tmp/x", ref: main}', "services.ext.source.git"),
    ('{git: "https://user:secret@example.com/a.git", ref: main}', "services.ext.source.git"),
    ('{git: "https://example.com/a.git", ref: "--upload-pack=x"}', "services.ext.source.ref"),
    ('{git: "https://example.com/a.git", ref: "a..b"}', "services.ext.source.ref"),
    ('{git: "https://example.com/a.git"}', "services.ext.source.ref"),
])
def test_bad_sources_are_refused_with_where(tmp_path: Path, source: str, problem: str) -> None:
    root = tmp_path / "p"
    root.mkdir()
    text = DEPLOY.replace("    source: {{git: {url}, ref: {ref}}}\n", f"    source: {source}\n")
    (root / "deploy.yaml").write_text(text.replace("{{", "{").replace("}}", "}"))
    out = forgegen(root, "lock")
    assert out.returncode == 2, out.stderr
    assert problem in out.stderr
    assert "secret" not in out.stderr
    assert not (root / "deploy.lock").exists()


CONSUMER = """\
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    forge.url = "github:forge-deploy/forge";
    forge.inputs.nixpkgs.follows = "nixpkgs";
  };
  outputs = { self, nixpkgs, forge }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      project = import ./nix/forge { inherit forge pkgs system; };
    in {
      # The service's package, built from the pinned external source.
      packages.${system}.ext = pkgs.runCommand "ext" { src = project.sources.ext; } ''
        mkdir -p $out
        cp $src/greeting.txt $src/lib/util.sh $out/
      '';
      apps.${system} = project.apps;
    };
}
"""


def test_the_generated_nix_builds_the_package_from_the_pinned_revision(
        tmp_path: Path, upstream: Path, forge_src: Path, nixpkgs_standin: Path) -> None:
    root = project(tmp_path, url_of(upstream), name="consumer")
    (root / "flake.nix").write_text(CONSUMER)
    assert forgegen(root, "lock").returncode == 0
    pinned = lock_doc(root)["sources"]["ext"]["rev"]
    commit_file(upstream, "greeting.txt", "hello from v2\n", "moved on")  # upstream moves; the pin holds
    git(root, "init", "-q", "-b", "main")
    flake = Flake(root, forge_src, nixpkgs_standin)
    git(root, "add", "-A")
    flake.nix("flake", "lock")
    flake.commit("consumer")

    def build() -> str:
        out = flake.nix("build", "--json", "--no-link", ".#ext", env={"PATH": tool_path()})
        return Path(json.loads(out.stdout)[0]["outputs"]["out"], "greeting.txt").read_text()

    assert build() == "hello from v1\n"
    default_nix = (root / "nix/forge/default.nix").read_text()
    assert pinned in default_nix and "forge.lib.sources.fetchAll" in default_nix
    assert forgegen(root, "lock", "--update").returncode == 0
    flake.commit("update ext")
    assert build() == "hello from v2\n"
    # A pin whose hash is not the tree's is refused by Nix itself.
    current = (root / "nix/forge/default.nix").read_text()
    (root / "nix/forge/default.nix").write_text(current.replace(lock_doc(root)["sources"]["ext"]["narHash"],
                                                                "sha256-" + "A" * 43 + "="))
    flake.commit("tampered")
    tampered = flake.nix("build", "--json", "--no-link", ".#ext", check=False)
    assert tampered.returncode != 0 and "hash mismatch" in tampered.stderr.lower()


@pytest.mark.parametrize("url", ['https://example.com/a"b\\c$d${e}.git', "file:///tmp/x'y\nz", "https://é.example/→.git"])
def test_pins_reach_nix_exactly_through_the_nix_escaping(tmp_path: Path, url: str) -> None:
    from forgegen import render
    from forgegen.schema import parse_config
    from tests.fixtures.nixenv import nix_eval

    config = parse_config(DEPLOY.format(url=json.dumps("https://example.com/a.git"), ref='"main"'))
    pin = {"url": url, "ref": "refs/heads/main", "rev": "0" * 40, "narHash": "sha256-" + "A" * 43 + "="}
    text = render.render(config, {"ext": pin})["nix/forge/default.nix"]
    (tmp_path / "default.nix").write_text(text)
    # The real forge.lib, with sources.fetchAll as the identity: what would reach builtins.fetchGit.
    lib = f"(import {ROOT / 'lib'})"
    got = nix_eval(f"(import {tmp_path / 'default.nix'} {{ forge = {{ lib = {lib} // {{ sources.fetchAll = x: x; }}; }}; "
                   f"pkgs = {{ }}; system = \"x86_64-linux\"; runtime = null; }}).sources")
    assert got == {"ext": pin}
