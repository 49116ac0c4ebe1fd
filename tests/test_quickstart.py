"""The README's quick start, run as written: the README cannot drift from what works.

The block after ``<!-- quickstart -->`` runs in bash (``set -e``) in a new temporary directory,
with what the ``<!-- install -->`` block sets up: the virtualenv's ``bin`` first on PATH and
``FORGE`` naming a checkout of Forge (here a fresh git clone of this tree's files, as a newcomer's
clone would be). ``NIX_CONFIG`` is unset: Nix runs with the configuration ``.ci/setup`` wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.nixenv import checkout_files, copy_tree, tool_path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_block(marker: str) -> str:
    """The fenced code block right after ``<!-- marker -->`` in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert match, f"README.md has no fenced block after <!-- {marker} -->"
    return match.group(1)


@pytest.fixture
def forge_checkout(tmp_path: Path) -> Path:
    """This tree's files as a freshly committed git repository (a newcomer's clone)."""
    repo = copy_tree(checkout_files(), ROOT, tmp_path / "forge")
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "forge"]):
        subprocess.run(argv, cwd=repo, check=True, capture_output=True)
    return repo


def test_install_block_sets_what_the_quickstart_uses() -> None:
    install = readme_block("install").splitlines()
    assert any(line.startswith("bash .ci/setup") for line in install)
    assert any(line.startswith("source .venv/bin/activate") for line in install)
    assert any(line.startswith("export FORGE=$PWD") for line in install)


@pytest.mark.nix
def test_readme_quickstart_works_as_written(tmp_path: Path, forge_checkout: Path) -> None:
    script = readme_block("quickstart")
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NIX_CONFIG"}
    env.update(PATH=tool_path(), FORGE=str(forge_checkout))
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the README quick start failed:\n{script}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    project = workdir / "shop"
    assert (project / "flake.lock").is_file()
    assert "3 identical" in proc.stderr  # forgegen sync right after init changes nothing
    assert "forge deploy api:staging --dry-run" in proc.stdout and "nothing will change" in proc.stdout
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"the quick start left the project uncommitted:\n{status.stdout}"
