"""The GitOps repository: write a tag, prove it renders, commit, push; and read the ledger.

**Where the repository comes from** (``gitops.repo`` in the plan):

* a git URL (``https://…``, ``ssh://…``, ``git@host:org/repo.git``, ``file://…``), or
* a local path. A *relative* path is relative to the current working directory of the
  ``forge`` process, i.e. where the user runs ``nix run .#deploy:…`` (normally the consumer
  repository's root, next to ``deploy.yaml``). A bare repository at that path is the remote
  itself; a working clone at that path is never written to: its ``origin`` remote is used.

Either way Forge works in its own clone, cached per remote URL under
``$XDG_CACHE_HOME/forge/gitops/<sha256 of the URL, 16 hex>`` (``~/.cache`` without
``XDG_CACHE_HOME``). The first deploy clones (one branch, no tags); every later one fetches only
that branch, incrementally, and resets the clone to it, so local state never leaks from one run
into the next. Credentials are git's own (credential helpers, SSH agent, ``~/.netrc``); git is
never allowed to prompt. One process at a time works in a cached clone (a lock file next to it);
deploys from other machines, or with other caches, race at the remote, and that is handled.
Threads of one process (a release's parallel deploys) queue for the clone, and whoever has it
commits every edit waiting for the same branch in one commit (each edited and checked as below;
one that fails leaves the batch and fails alone), so one Flux reconcile applies them all.

**A deploy** (:func:`apply_tag`), for one service and environment:

1. fetch the branch and reset the clone to it;
2. edit ``<gitops.path>/<gitops.file>`` byte-surgically (:mod:`forgegen.runtime.kustomize`):
   the tag (or digest) of every ``images[]`` entry and ``$imagepolicy`` setter for the image;
   nothing else in the file changes. The same tag again is not an error: no commit is made;
3. render the overlay with ``kubectl kustomize`` and check that the workload's container now
   runs the new reference (the edit is never committed otherwise);
4. commit (message from ``gitops.commit_message``) and push. A push rejected because the branch
   moved (``fetch first``, ``non-fast-forward``, ``failed to update ref``) fetches again, resets
   to the remote, re-applies the edit to the fresh tree and commits again, after a jittered
   exponential backoff, up to ``gitops.push_attempts`` attempts. Never a force-push. The overlay
   is rendered again only when something it may read changed (the overlay directory and every
   path its kustomizations name, followed into referenced directories): deploys of other
   services do not slow a retry down, so many concurrent deploys converge quickly.
   Any other failure stops at once, and the clone is reset: no half-written state remains.

**The ledger** (:func:`previous_tag`, :func:`history`, :func:`current_tag`): the GitOps history
is the record of what was deployed. ``git log --follow`` limited to the manifest's path, newest
first, in small batches (never a walk of the whole repository), and the image's tag read from
the file at each of those commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from forgegen import pattern, process, urls, yamlsource
from forgegen.errors import CommandError, ConfigError, ForgeError, GitOpsError, ToolMissing
from forgegen.plan import Plan, ServicePlan, TargetPlan
from forgegen.runtime import cache_dir
from forgegen.runtime.kustomize import (
    ImageState,
    Match,
    check_digest,
    check_tag,
    edit_images,
    join_reference,
    read_image,
)

log = logging.getLogger(__name__)

NETWORK_TIMEOUT = 300.0  # clone, fetch, push
LOCAL_TIMEOUT = 60.0  # every other git command
RENDER_TIMEOUT = 120.0  # kubectl kustomize
LOCK_TIMEOUT = 600.0
_THREAD_LOCKS: dict[str, threading.Lock] = {}  # lock file → the lock its process's threads queue on
_THREAD_LOCKS_GUARD = threading.Lock()
BACKOFF_INITIAL = 0.05  # the shortest backoff slot
BACKOFF_MAX = 10.0

# What git prints when the branch moved under us: integrate and retry (HARNESS.md, "git").
_RACE_MARKERS = ("fetch first", "non-fast-forward", "failed to update ref", "cannot lock ref",
                 "incorrect old value", "stale info")
# Variables that would point git somewhere else (set when forge runs inside a git hook).
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                      "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "", "GIT_EDITOR": "true"}
_SCP_LIKE = re.compile(r"\A[^/\\]+:")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class GitOpsResult:
    """What :func:`apply_tag` did (``commit`` is None when nothing changed or on a dry run)."""

    service: str
    environment: str
    repo: str  # the remote, as resolved (URL or absolute path)
    branch: str
    file: str  # path of the manifest inside the repository
    image: str
    tag: str | None
    digest: str | None
    previous_tag: str | None
    previous_digest: str | None
    changed: bool
    commit: str | None  # the commit we pushed
    revision: str  # the branch head that holds the new reference (our commit, or the one we found)
    attempts: int
    dry_run: bool
    rendered_image: str | None  # what kubectl kustomize renders for the workload's container
    matches: tuple[Match, ...] = ()
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    shared_with: tuple[str, ...] = ()  # the other deploys ("service:environment") in the same commit

    @property
    def reference(self) -> str:
        return join_reference(self.image, self.tag, self.digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "environment": self.environment, "repo": self.repo,
            "branch": self.branch, "file": self.file, "image": self.image, "tag": self.tag,
            "digest": self.digest, "reference": self.reference, "previous_tag": self.previous_tag,
            "previous_digest": self.previous_digest, "changed": self.changed, "commit": self.commit,
            "revision": self.revision, "attempts": self.attempts, "dry_run": self.dry_run,
            "rendered_image": self.rendered_image, "message": self.message,
            "matches": [m.to_json() for m in self.matches], "shared_with": list(self.shared_with),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class LedgerEntry:
    """The manifest at one commit of the GitOps history."""

    commit: str
    timestamp: int  # committer time, seconds since the epoch
    subject: str
    tag: str | None
    digest: str | None

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "timestamp": self.timestamp, "subject": self.subject,
                "tag": self.tag, "digest": self.digest}


# ---------------------------------------------------------------------------------------------
# The repository


def cache_root() -> Path:
    return cache_dir("gitops")


def is_url(repo: str) -> bool:
    """git's own rule: ``scheme://…``, or ``[user@]host:path`` with no ``/`` before the colon."""
    return "://" in repo or bool(_SCP_LIKE.match(repo))


def check_credentials(repo: str, *, cwd: str | Path | None = None) -> None:
    """Refuse (exit 2, before anything runs) a ``gitops.repo`` URL, or the ``origin`` of the
    local working clone it names, that carries a credential (:mod:`forgegen.urls`)."""
    if not is_url(repo):
        path = (Path(cwd) if cwd is not None else Path.cwd()) / Path(repo).expanduser()
        if not (path / ".git").exists():
            return
        res = _git(("remote", "get-url", "origin"), cwd=path, check=False, what="read the GitOps clone's remote")
        _refuse_credentials(res.stdout.strip(), repo, clone=True)
    else:
        _refuse_credentials(repo, repo, clone=False)


def _refuse_credentials(url: str, repo: str, *, clone: bool) -> None:
    problem = urls.credential_problem(url)
    if problem is None:
        return
    if clone:
        problem = (f"the 'origin' remote of the working clone {repo} has a URL with a credential: {problem}; "
                   f"fix it with `git -C {repo} remote set-url origin <the URL without it>`")
    raise ConfigError.single("deploy.yaml", problem, path="gitops.repo")


def resolve_remote(repo: str, *, cwd: str | Path | None = None) -> str:
    """The URL Forge clones and pushes to for ``gitops.repo`` (see the module docstring). A URL
    that carries a credential is refused (exit 2): git would put it in argv and ``.git/config``."""
    if is_url(repo):
        _refuse_credentials(repo, repo, clone=False)
        return repo
    base = Path(cwd) if cwd is not None else Path.cwd()
    path = (base / Path(repo).expanduser()).resolve()
    if not path.exists():
        raise GitOpsError(
            f"cannot open the GitOps repository: {repo} does not exist (looked for {path}; a relative "
            "gitops.repo is relative to the directory forge runs in)",
            hint="run from the directory deploy.yaml is in, create the repository (git init --bare), "
                 "or set gitops.repo to its URL")
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return str(path)  # a bare repository: the remote itself
    if (path / ".git").exists():
        res = _git(("remote", "get-url", "origin"), cwd=path, check=False, what="read the GitOps clone's remote")
        url = res.stdout.strip()
        if res.returncode != 0 or not url:
            raise GitOpsError(
                f"cannot use the GitOps repository {repo}: it is a working clone with no 'origin' remote, and "
                "Forge never commits into a checkout you work in",
                hint="set gitops.repo to the remote's URL or to a bare repository")
        _refuse_credentials(url, repo, clone=True)
        return url if is_url(url) else str((path / url).resolve())
    raise GitOpsError(f"cannot open the GitOps repository: {path} is not a git repository",
                      hint="point gitops.repo at a git URL or a (bare) repository")


def _git(args: Sequence[str], *, cwd: str | Path | None = None, check: bool = True, what: str,
         input: str | None = None, timeout: float = LOCAL_TIMEOUT) -> process.Result:
    return process.run(("git", "-c", "core.quotePath=false", *args), cwd=cwd, env=_GIT_ENV,
                       unset=_GIT_LOCATION_VARS, check=check, what=what, input=input, timeout=timeout)


class GitOpsRepo:
    """A cached clone of one GitOps remote, working on one branch.

    ``GitOpsRepo.open(plan.gitops.repo, branch)`` does no I/O beyond resolving a local path; the
    clone happens in :meth:`sync`. Hold :meth:`locked` around anything that touches the clone.
    """

    def __init__(self, url: str, branch: str, workdir: Path, *, display: str | None = None) -> None:
        self.url = url
        self.branch = branch
        self.workdir = workdir
        self.display = display or url
        self.lock_path = workdir.with_name(workdir.name + ".lock")

    @classmethod
    def open(cls, repo: str, branch: str, *, cache: str | Path | None = None,
             cwd: str | Path | None = None) -> GitOpsRepo:
        url = resolve_remote(repo, cwd=cwd)
        root = Path(cache) if cache is not None else cache_root()
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(url, branch, root / key, display=repo)

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def git(self, *args: str, check: bool = True, what: str, input: str | None = None,
            timeout: float = LOCAL_TIMEOUT) -> process.Result:
        return _git(args, cwd=self.workdir, check=check, what=what, input=input, timeout=timeout)

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[GitOpsRepo]:
        """Exclusive use of the cached clone by this process/thread (``flock`` on a lock file).

        The threads of one process (a release's parallel deploys) queue on a lock of the process
        first, so the next one starts as soon as the last is done instead of polling the file."""
        deadline = time.monotonic() + timeout
        with _THREAD_LOCKS_GUARD:
            in_process = _THREAD_LOCKS.setdefault(str(self.lock_path), threading.Lock())
        if not in_process.acquire(timeout=timeout):
            raise self._lock_timeout(timeout)
        try:
            with self._file_locked(deadline, timeout):
                yield self
        finally:
            in_process.release()

    def _lock_timeout(self, timeout: float) -> GitOpsError:
        return GitOpsError(f"cannot use the cached clone of {self.display}: another forge process held "
                           f"{self.lock_path} for more than {timeout:g}s",
                           hint="wait for the other deploy to finish; if none runs, delete the lock file")

    @contextlib.contextmanager
    def _file_locked(self, deadline: float, timeout: float) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            waited = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise self._lock_timeout(timeout) from None
                    if not waited:
                        log.info("waiting for another forge process using %s", self.workdir)
                        waited = True
                    time.sleep(0.02 + random.random() * 0.03)
            yield
        finally:
            os.close(fd)  # releases the lock

    # -- fetching --------------------------------------------------------------------------

    def fetch(self) -> str:
        """Clone (first time) or fetch the branch; return the remote branch head. Needs the lock."""
        process.remove_stale_temp(self.workdir.parent, f"{self.workdir.name}.tmp-")  # a killed clone's
        if not (self.workdir / ".git").is_dir():
            self._clone()
        else:
            try:
                res = self.git("fetch", "--quiet", "--no-tags", "origin",
                               f"+refs/heads/{self.branch}:{self.remote_ref}",
                               check=False, what="fetch the GitOps repository", timeout=NETWORK_TIMEOUT)
            except CommandError as err:  # a timeout
                raise self._remote_error("fetch", process.Result(err.argv, -1, err.stdout, err.message)) from err
            if res.returncode != 0:
                raise self._remote_error("fetch", res)
        return self.git("rev-parse", "--verify", "--quiet", self.remote_ref,
                        what="read the GitOps branch head").stdout.strip()

    def sync(self) -> str:
        """Fetch, then make the clone's working tree exactly the remote branch. Needs the lock."""
        head = self.fetch()
        self.reset()
        return head

    def reset(self) -> None:
        self.git("checkout", "--quiet", "--force", "-B", self.branch, self.remote_ref,
                 what="reset the GitOps clone to the remote branch")

    def _clone(self) -> None:
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        if self.workdir.exists():  # a broken leftover (no .git): start again
            shutil.rmtree(self.workdir)
        tmp = self.workdir.with_name(f"{self.workdir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        log.info("cloning GitOps repository %s (branch %s)", self.display, self.branch)
        try:
            try:
                res = _git(("clone", "--quiet", "--no-tags", "--single-branch", "--branch", self.branch,
                            "--", self.url, str(tmp)), check=False, what="clone the GitOps repository",
                           timeout=NETWORK_TIMEOUT)
            except CommandError as err:  # a timeout
                raise self._remote_error("clone", process.Result(err.argv, -1, err.stdout, err.message)) from err
            if res.returncode != 0:
                raise self._remote_error("clone", res)
            os.rename(tmp, self.workdir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _remote_error(self, verb: str, res: process.Result) -> GitOpsError:
        stderr = res.stderr.strip()
        if "Remote branch" in stderr and "not found" in stderr or "couldn't find remote ref" in stderr:
            return GitOpsError(
                f"cannot {verb} the GitOps repository {self.display}: it has no branch {self.branch!r}",
                hint="set gitops.branch in deploy.yaml to an existing branch, or push that branch first")
        how = f"git exited with {res.returncode}" if res.returncode >= 0 else "git did not finish in time"
        return GitOpsError(
            f"cannot {verb} the GitOps repository {self.display} (branch {self.branch}): {how}\n  {_indent(stderr)}",
            hint="check that the remote is reachable and that git's credentials work "
                 f"(`git ls-remote {self.url}`); nothing was changed")

    # -- reading ---------------------------------------------------------------------------

    def path_of(self, relpath: str) -> Path:
        path = (self.workdir / relpath).resolve()
        if not path.is_relative_to(self.workdir.resolve()):
            raise GitOpsError(f"cannot use GitOps file {relpath!r}: it is outside the repository",
                              hint="gitops.path and gitops.file must stay inside the GitOps repository")
        return path

    def read_text(self, relpath: str) -> str:
        path = self.path_of(relpath)
        try:
            return path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise GitOpsError(
                f"cannot edit {relpath}: no such file in {self.display} (branch {self.branch})",
                hint="create the overlay there, or fix gitops.path / gitops.file in deploy.yaml") from None
        except UnicodeDecodeError as err:
            raise GitOpsError(f"cannot edit {relpath} in {self.display}: not UTF-8 text ({err})",
                              hint="save the file as UTF-8") from err
        except OSError as err:
            raise GitOpsError(f"cannot edit {relpath} in {self.display}: {err.strerror or err}",
                              hint="gitops.path / gitops.file must name a file in the repository") from err

    def show(self, rev: str, relpath: str) -> str:
        res = self.git("cat-file", "blob", f"{rev}:{relpath}", check=False, what="read a GitOps file")
        if res.returncode != 0:
            raise self.no_such_file(relpath)
        return res.stdout

    def no_such_file(self, relpath: str) -> GitOpsError:
        return GitOpsError(f"cannot read {relpath}: no such file in {self.display} (branch {self.branch})",
                           hint="create the overlay there, or fix gitops.path / gitops.file in deploy.yaml")

    def log_path(self, rev: str, relpath: str, *, skip: int, count: int,
                 follow: bool = False) -> list[tuple[str, str, int, str, str]]:
        """(commit, parents, time, subject, path at that commit) for commits touching ``relpath``,
        newest first. Without ``follow`` the walk uses the commit-graph's changed-path filters."""
        res = self.git("log", *(("--follow",) if follow else ()), f"--skip={skip}", f"--max-count={count}",
                       "--format=%x1e%H%x1f%P%x1f%ct%x1f%s", "--name-only", rev, "--", relpath,
                       what="read the manifest's history")
        out = []
        for record in res.stdout.split("\x1e")[1:]:
            head, _, names = record.partition("\n")
            sha, parents, ct, subject = head.split("\x1f", 3)
            path = next((n for n in names.splitlines() if n.strip()), relpath)
            out.append((sha, parents, int(ct), subject, path))
        return out

    def index_history(self) -> None:
        """Keep a commit-graph with changed-path Bloom filters: a path-limited ``git log`` then
        skips the commits that cannot touch the path (~30x faster on a 10,000-commit history).
        Incremental (``--split``): after the first time, only fetched commits are added."""
        marker = self.workdir / ".git" / "forge-changed-paths"
        if marker.exists():
            self.git("commit-graph", "write", "--reachable", "--changed-paths", "--split",
                     check=False, what="index the GitOps history")
        else:  # the first time: one graph with filters for every commit (a graph without them may exist)
            res = self.git("commit-graph", "write", "--reachable", "--changed-paths",
                           check=False, what="index the GitOps history")
            if res.returncode == 0:
                marker.write_text("commit-graph has changed-path filters\n")

    def blobs(self, specs: Sequence[str]) -> list[str | None]:
        """Contents of ``rev:path`` objects in one ``git cat-file --batch`` (None when missing)."""
        if not specs:
            return []
        marker = f"forge-{secrets.token_hex(8)}"
        res = self.git("cat-file", f"--batch={marker} %(objecttype)", input="".join(s + "\n" for s in specs),
                       what="read the manifest's history")
        out: list[str | None] = []
        chunks = res.stdout.split(marker + " ")
        for chunk in chunks[1:len(specs) + 1]:
            kind, _, body = chunk.partition("\n")
            out.append(body[:-1] if kind.strip() == "blob" and body.endswith("\n") else None)
        return out + [None] * (len(specs) - len(out))


def _indent(text: str) -> str:
    return "\n  ".join(text.splitlines()[-15:]) or "(no output)"


# ---------------------------------------------------------------------------------------------
# Deploying a tag


def manifest_path(target: TargetPlan) -> str:
    g = target.gitops
    return str(PurePosixPath(g.path) / g.file) if g.path not in ("", ".") else g.file


def commit_message(plan: Plan, service: ServicePlan, target: TargetPlan, *, tag: str | None,
                   digest: str | None, source_commit: str) -> str:
    ref = join_reference(service.image.repository, tag, digest)
    return pattern.fill(target.gitops.commit_message, {
        "project": plan.project, "service": service.name, "environment": target.environment,
        "cluster": target.cluster, "tag": tag or digest or "", "image": ref, "source_commit": source_commit})


@dataclass(eq=False)  # compared by identity: two calls can ask for the same thing
class _Edit:
    """One :func:`apply_tag` call: what to write where, and (once a lock holder ran it) its outcome."""

    service: ServicePlan
    target: TargetPlan
    relpath: str
    tag: str | None
    digest: str | None
    message: str
    dry_run: bool
    result: GitOpsResult | None = None
    error: BaseException | None = None
    checked: tuple[str, str] | None = None  # (base commit, edited text) that kubectl kustomize accepted
    inputs: tuple[str, ...] | None = None
    rendered: str | None = None
    before: ImageState | None = None  # what the manifest deployed before the edit
    matches: tuple[Match, ...] = ()

    @property
    def image(self) -> str:
        return self.service.image.repository

    @property
    def branch(self) -> str:
        return self.target.gitops.branch


_QUEUES: dict[str, list[_Edit]] = {}  # lock file → the edits this process's threads wait to commit
_QUEUES_GUARD = threading.Lock()


def apply_tag(plan: Plan, service: str, environment: str, *, tag: str | None, digest: str | None = None,
              source_commit: str, dry_run: bool = False, cache: str | Path | None = None,
              cwd: str | Path | None = None) -> GitOpsResult:
    """Point ``service`` in ``environment`` at ``tag`` (and/or ``digest``) in the GitOps repo.

    Edit, ``kubectl kustomize`` check, commit, push with fetch-reset-reapply retry (see the module
    docstring). With ``dry_run`` the edit is made and checked in the cached clone, then undone:
    nothing is committed or pushed. ``cache`` overrides the cache directory (one per machine in
    real use; tests give each simulated machine its own).

    Threads of one process deploying to the same repository and branch at once (a release)
    share a commit: whoever holds the clone commits every edit waiting for it, each checked on
    its own, so one Flux reconcile applies them all. An edit that fails is taken out of the
    batch and fails alone.
    """
    _check_reference(service, environment, tag, digest)
    svc = plan.service(service)
    target = svc.target(environment)
    edit = _Edit(svc, target, manifest_path(target), tag, digest,
                 commit_message(plan, svc, target, tag=tag, digest=digest, source_commit=source_commit), dry_run)
    repo = GitOpsRepo.open(target.gitops.repo, target.gitops.branch, cache=cache, cwd=cwd)
    queue_key = str(repo.lock_path)
    if not dry_run:
        with _QUEUES_GUARD:
            _QUEUES.setdefault(queue_key, []).append(edit)
    try:
        with repo.locked():
            if edit.result is None and edit.error is None:
                batch = [edit] if dry_run else _take_batch(queue_key, edit)
                _run_batch(repo, batch)
    finally:  # an edit whose thread never got the clone (a lock timeout) is nobody's to commit
        with _QUEUES_GUARD:
            if edit in _QUEUES.get(queue_key, []):
                _QUEUES[queue_key].remove(edit)
    if edit.error is not None:
        raise edit.error
    assert edit.result is not None  # _run_batch gives every edit of its batch a result or an error
    return edit.result


def _take_batch(queue_key: str, own: _Edit) -> list[_Edit]:
    """``own`` and the edits waiting for the same branch, at most one per manifest and image (a
    second deploy of the same service waits for the next commit: one commit cannot hold both
    tags); taken off the queue."""
    with _QUEUES_GUARD:
        batch = [own]
        keys = {(own.relpath, own.image)}
        left: list[_Edit] = []
        for e in _QUEUES.get(queue_key, []):
            if e is own:
                continue
            if e.branch == own.branch and (e.relpath, e.image) not in keys:
                batch.append(e)
                keys.add((e.relpath, e.image))
            else:
                left.append(e)
        _QUEUES[queue_key] = left
    return batch


def _run_batch(repo: GitOpsRepo, batch: list[_Edit]) -> None:
    """Apply, check, commit and push ``batch`` (one commit), retrying when the branch moved; every
    edit ends with a result or an error. Needs the lock."""
    timings: dict[str, float] = {}
    attempt = 0
    pending = list(batch)
    try:
        while pending:
            attempt += 1
            t0 = cycle_start = time.perf_counter()
            head = repo.sync()
            _timed(timings, "fetch", t0)
            edited = _edit_all(repo, pending, head, attempt, timings)
            if edited is None:  # an edit failed and left the batch: the others again, on a clean tree
                attempt -= 1  # no push was tried: gitops.push_attempts counts pushes
                continue
            pending = edited
            if not pending:
                return
            if pending[0].dry_run:
                repo.reset()  # undo the edit: a dry run leaves the clone as it found it
                _finish(repo, pending, head, attempt, timings, changed=True, commit=None)
                return
            try:
                commit, push = _commit_and_push(repo, [e.relpath for e in pending], _batch_message(pending),
                                                pending[0].branch, timings)
            except BaseException:
                _reset_quietly(repo)
                raise
            if push.returncode == 0:
                # Keep the remote-tracking ref in step, so the next run's fetch has nothing to do.
                repo.git("update-ref", repo.remote_ref, commit, what="record the pushed commit")
                log.info("pushed %s to %s %s: %s", commit[:12], repo.display, pending[0].branch,
                         _batch_message(pending).splitlines()[0])
                _finish(repo, pending, commit, attempt, timings, changed=True, commit=commit)
                return
            _reset_quietly(repo)
            _raise_unless_raced(repo, push, ", ".join(e.relpath for e in pending), pending[0].branch)
            g = pending[0].target.gitops
            if attempt >= g.push_attempts:
                raise GitOpsError(
                    f"cannot push {', '.join(e.relpath for e in pending)} to {repo.display} (branch "
                    f"{g.branch}): the branch moved under every one of {attempt} attempts",
                    hint="deploy again, or raise gitops.push_attempts in deploy.yaml if many deploys run at once")
            delay = backoff(attempt, time.perf_counter() - cycle_start)
            log.info("the GitOps branch moved (attempt %d of %d); fetching and re-applying in %.2fs",
                     attempt, g.push_attempts, delay)
            time.sleep(delay)
    except BaseException as err:  # noqa: BLE001 - handed to every thread whose edit it stopped
        for e in pending:
            if e.result is None and e.error is None:
                e.error = err
        if len(batch) == 1:
            raise


def _edit_all(repo: GitOpsRepo, pending: list[_Edit], head: str, attempt: int,
              timings: dict[str, float]) -> list[_Edit] | None:
    """Write and check each edit on the fresh tree; the edits that change something (the others
    get their "nothing to commit" result). None when one failed: it has its error, the tree is
    reset, and ``pending`` lost it."""
    changed: list[_Edit] = []
    for e in list(pending):
        try:
            t0 = time.perf_counter()
            text = repo.read_text(e.relpath)
            before = read_image(text, e.image, source=e.relpath)
            result = edit_images(text, e.image, tag=e.tag, digest=e.digest, source=e.relpath)
            _timed(timings, "edit", t0)
            if not result.changed:
                log.info("%s already deploys %s in %s: nothing to commit", e.relpath,
                         join_reference(e.image, e.tag, e.digest), repo.display)
                e.before, e.matches = before, result.matches
                e.result = _result(repo, e, head, attempt, timings, changed=False, commit=None)
                continue
            repo.path_of(e.relpath).write_bytes(result.text.encode("utf-8"))
            t0 = time.perf_counter()
            if e.inputs is None:
                e.inputs = render_inputs(repo, e.target.gitops.path)
            if e.checked is None or e.checked[1] != result.text or _inputs_changed(repo, e.checked[0], head, e.inputs):
                e.rendered = check_render(repo, e.service, e.target,
                                          expected=_expected(result.rendered, e.image, e.tag, e.digest))
                e.checked = (head, result.text)
            _timed(timings, "check", t0)
            e.before, e.matches = before, result.matches
            changed.append(e)
        except BaseException as err:
            _reset_quietly(repo)
            if len(pending) == 1 or not isinstance(err, ForgeError):
                raise
            e.error = err
            pending.remove(e)
            return None
    return changed


def _result(repo: GitOpsRepo, e: _Edit, revision: str, attempts: int, timings: dict[str, float], *,
            changed: bool, commit: str | None, shared_with: tuple[str, ...] = ()) -> GitOpsResult:
    before = e.before or ImageState(None, None, 0)
    return GitOpsResult(service=e.service.name, environment=e.target.environment, repo=repo.url, branch=e.branch,
                        file=e.relpath, image=e.image, tag=e.tag, digest=e.digest, previous_tag=before.tag,
                        previous_digest=before.digest, matches=e.matches, message=e.message, dry_run=e.dry_run,
                        timings=dict(timings), changed=changed, commit=commit, revision=revision, attempts=attempts,
                        rendered_image=e.rendered if changed else None, shared_with=shared_with)


def _finish(repo: GitOpsRepo, edits: list[_Edit], revision: str, attempts: int, timings: dict[str, float], *,
            changed: bool, commit: str | None) -> None:
    for e in edits:
        others = tuple(f"{o.service.name}:{o.target.environment}" for o in edits if o is not e and commit)
        e.result = _result(repo, e, revision, attempts, timings, changed=changed, commit=commit, shared_with=others)


def _batch_message(edits: list[_Edit]) -> str:
    """One edit: its message. Several: their subjects in the subject line (or the first and a
    count, when that is long), and every message in the body."""
    if len(edits) == 1:
        return edits[0].message
    subjects = [e.message.splitlines()[0] if e.message else "" for e in edits]
    subject = "; ".join(subjects)
    if len(subject) > 200:
        subject = f"{subjects[0]} (and {len(edits) - 1} more)"
    return subject + "\n\n" + "\n\n".join(e.message.strip() for e in edits) + "\n"


def _check_reference(service: str, environment: str, tag: str | None, digest: str | None) -> None:
    if tag is None and digest is None:
        raise GitOpsError(f"cannot deploy {service} to {environment}: neither a tag nor a digest was given",
                          hint="pass the tag (and digest) the push produced")
    if tag is not None:
        check_tag(tag)
    if digest is not None:
        check_digest(digest)


def _timed(timings: dict[str, float], name: str, t0: float) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _commit_and_push(repo: GitOpsRepo, relpaths: list[str], message: str, branch: str,
                     timings: dict[str, float]) -> tuple[str, process.Result]:
    """Commit the edited manifests and push once: (the commit, git push's completed process)."""
    relpath = ", ".join(relpaths)
    t0 = time.perf_counter()
    repo.git("commit", "--quiet", "--no-verify", "-F", "-", "--", *dict.fromkeys(relpaths), input=message,
             what="commit the GitOps change")
    commit = repo.git("rev-parse", "HEAD", what="read the new commit").stdout.strip()
    _timed(timings, "commit", t0)
    t0 = time.perf_counter()
    try:
        push = repo.git("push", "--quiet", "--porcelain", "origin", f"HEAD:refs/heads/{branch}",
                        check=False, what="push the GitOps commit", timeout=NETWORK_TIMEOUT)
    except CommandError as err:  # a timeout: the remote may or may not have taken it
        raise GitOpsError(
            f"cannot tell whether the GitOps commit {commit[:12]} for {relpath} reached "
            f"{repo.display} (branch {branch}): {err.message}",
            hint=f"look at the branch (`git ls-remote {repo.url} {branch}`), then deploy again: "
                 "a deploy of the same tag makes no second commit") from err
    _timed(timings, "push", t0)
    return commit, push


def _raise_unless_raced(repo: GitOpsRepo, push: process.Result, relpath: str, branch: str) -> None:
    """A rejected push is retried only when the branch moved (a race); anything else fails here."""
    output = f"{push.stdout}\n{push.stderr}"
    if not any(m in output for m in _RACE_MARKERS):
        raise GitOpsError(
            f"cannot push the commit for {relpath} to the GitOps repository {repo.display} (branch "
            f"{branch}): git push exited with {push.returncode}\n  "
            f"{_indent(push.stderr.strip() or push.stdout.strip())}",
            hint="check that the remote is reachable, your push rights, and any branch protection or hook "
                 "on the remote; nothing was pushed and the cached clone was reset")


def backoff(attempt: int, cycle: float) -> float:
    """Seconds to wait after the ``attempt``-th rejected push: binary exponential backoff in slots
    of one fetch-to-push cycle (as long as the last one took, so it adapts to the remote's
    latency), with full jitter, so racing deploys spread out and land one after another."""
    slot = min(max(cycle, BACKOFF_INITIAL), BACKOFF_MAX)
    return min(BACKOFF_MAX, random.uniform(0, slot * 2 ** min(attempt, 8)))


def render_inputs(repo: GitOpsRepo, overlay: str) -> tuple[str, ...]:
    """Repository paths ``kubectl kustomize <overlay>`` may read, over-approximated: the overlay
    directory, and every string in a kustomization that names an existing path in the repository
    (resources, components, patches, generator files …), followed into referenced directories.
    ``("",)`` (everything) when a reference leaves the repository."""
    root = repo.workdir.resolve()
    start = (root / overlay).resolve()
    found: set[str] = set()
    stack = [start]
    seen: set[Path] = set()
    while stack:
        directory = stack.pop()
        if directory in seen:
            continue
        seen.add(directory)
        if not directory.is_relative_to(root):
            return ("",)
        found.add(directory.relative_to(root).as_posix())
        for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
            path = directory / name
            if path.is_file():
                break
        else:
            continue
        try:
            documents = yamlsource.compose_all(path.read_text(encoding="utf-8"), str(path))
        except (ConfigError, UnicodeDecodeError, OSError):
            return ("",)
        for value in _strings(documents):
            if "://" in value or "\n" in value or "\0" in value or len(value) > 1024:
                continue
            try:
                candidate = (directory / value).resolve()
                if not candidate.exists():
                    continue
            except (OSError, ValueError):  # not a path this system can name (a lone surrogate, ...)
                continue
            if not candidate.is_relative_to(root):
                return ("",)
            if candidate.is_dir():
                stack.append(candidate)
            else:
                found.add(candidate.relative_to(root).as_posix())
    return tuple(sorted(found))


def _strings(roots: list[yaml.Node]) -> Iterator[str]:
    """Every scalar value in the documents, each node once (an alias is its anchor's node, so an
    alias bomb costs no more than its text)."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            yield node.value
        elif isinstance(node, yaml.MappingNode):
            stack.extend(value for _key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _inputs_changed(repo: GitOpsRepo, old: str, new: str, inputs: tuple[str, ...]) -> bool:
    """Whether a file under ``inputs`` differs between two commits (then the overlay is rendered again)."""
    if old == new:
        return False
    if "" in inputs or "." in inputs:
        return True
    res = repo.git("diff", "--quiet", "--no-renames", old, new, "--", *inputs, check=False,
                   what="compare the overlay's inputs")
    return res.returncode != 0


def _expected(rendered: tuple[str, ...], image: str, tag: str | None, digest: str | None) -> set[str]:
    return set(rendered) or {join_reference(image, tag, digest)}


def _reset_quietly(repo: GitOpsRepo) -> None:
    with contextlib.suppress(CommandError):
        repo.reset()


def check_render(repo: GitOpsRepo, service: ServicePlan, target: TargetPlan, *, expected: set[str]) -> str:
    """Render the overlay; the workload's container must run one of ``expected``. Returns its image."""
    g = target.gitops
    overlay = repo.path_of(g.path if g.path else ".")
    w = service.workload
    try:
        res = process.run(("kubectl", "kustomize", str(overlay)), cwd=repo.workdir, check=False,
                          timeout=RENDER_TIMEOUT, what="render the GitOps overlay")
    except ToolMissing as err:
        raise GitOpsError("cannot check the GitOps edit: kubectl is not on PATH (Forge renders the overlay "
                          "with `kubectl kustomize` before it commits)",
                          hint="install kubectl 1.27 or later") from err
    if res.returncode != 0:
        raise GitOpsError(
            f"cannot check the GitOps edit: `kubectl kustomize {g.path}` failed in {repo.display}\n  "
            f"{_indent(res.stderr.strip())}",
            hint="the edit was not committed; fix the overlay in the GitOps repository, then deploy again")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    objects = [d for d in yaml.load_all(res.stdout, Loader=loader) if isinstance(d, dict)]
    candidates = [d for d in objects if d.get("kind") == w.kind and (d.get("metadata") or {}).get("name") == w.name]
    if len(candidates) > 1:
        candidates = [d for d in candidates if (d.get("metadata") or {}).get("namespace") in (None, target.namespace)]
    if not candidates:
        seen = ", ".join(f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}" for d in objects) or "nothing"
        raise GitOpsError(
            f"cannot check the GitOps edit: `kubectl kustomize {g.path}` renders no {w.kind}/{w.name} "
            f"(it renders {seen})",
            hint="set services.<name>.workload in deploy.yaml, or gitops.path to the overlay that holds it")
    spec = (((candidates[0].get("spec") or {}).get("template") or {}).get("spec") or {})
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    container = next((c for c in containers if isinstance(c, dict) and c.get("name") == w.container), None)
    if container is None:
        names = ", ".join(str(c.get("name")) for c in containers if isinstance(c, dict)) or "none"
        raise GitOpsError(
            f"cannot check the GitOps edit: {w.kind}/{w.name} has no container {w.container!r} "
            f"(containers: {names}) in `kubectl kustomize {g.path}`",
            hint="set services.<name>.workload.container in deploy.yaml")
    got = str(container.get("image"))
    if got not in expected:
        raise GitOpsError(
            f"cannot commit the GitOps edit: after it, `kubectl kustomize {g.path}` renders {w.kind}/{w.name} "
            f"container {w.container} with image {got}, not {' or '.join(sorted(expected))}",
            hint="another images[] entry, a patch or a different image name in the Deployment overrides the "
                 "edit; the edit was not committed")
    return got


# ---------------------------------------------------------------------------------------------
# The ledger


def _ledger_repo(plan: Plan, service: str, environment: str, cache: str | Path | None,
                 cwd: str | Path | None) -> tuple[GitOpsRepo, str, str]:
    svc = plan.service(service)
    target = svc.target(environment)
    repo = GitOpsRepo.open(target.gitops.repo, target.gitops.branch, cache=cache, cwd=cwd)
    return (repo, *_where(svc, environment))


def _where(svc: ServicePlan, environment: str) -> tuple[str, str]:
    """The service's manifest in the GitOps repository for ``environment``, and its image."""
    return manifest_path(svc.target(environment)), svc.image.repository


def _walk(repo: GitOpsRepo, relpath: str, image: str) -> Iterator[LedgerEntry]:
    """The manifest's history newest first, in growing batches, stopping when the caller stops.

    A plain path-limited walk first (fast: changed-path filters); if it ends at a commit that
    created the file and has parents, the file may have been renamed there: the older history
    comes from ``git log --follow`` from that commit, batch by batch (``--skip`` is unreliable
    with ``--follow``, so each batch starts again from the oldest commit seen)."""
    repo.index_history()

    def entries(commits: list[tuple[str, str, int, str, str]]) -> Iterator[LedgerEntry]:
        texts = repo.blobs([f"{sha}:{p}" for sha, _, _, _, p in commits])
        for (sha, _parents, ct, subject, p), text in zip(commits, texts):
            state = _state(text, image, p)
            yield LedgerEntry(sha, ct, subject, state.tag if state else None, state.digest if state else None)

    skip, count = 0, 8
    while True:
        commits = repo.log_path(repo.remote_ref, relpath, skip=skip, count=count)
        yield from entries(commits)
        if len(commits) < count:
            break
        skip += count
        count = min(count * 4, 512)
    if not commits or not commits[-1][1]:
        return  # the whole history, or the file was born in a root commit
    oldest, path = commits[-1][0], commits[-1][4]
    while True:
        older = [c for c in repo.log_path(oldest, path, skip=0, count=64, follow=True) if c[0] != oldest]
        if not older:
            return
        yield from entries(older)
        oldest, path = older[-1][0], older[-1][4]
        if not older[-1][1]:
            return


def _state(text: str | None, image: str, path: str) -> ImageState | None:
    if text is None:
        return None
    try:
        return read_image(text, image, source=path)
    except GitOpsError:
        return None  # the manifest did not name the image (yet) or did not parse at that commit


def history(plan: Plan, service: str, environment: str, *, limit: int = 20, cache: str | Path | None = None,
            cwd: str | Path | None = None) -> list[LedgerEntry]:
    """The last ``limit`` commits touching the manifest, newest first, with the tag at each."""
    repo, relpath, image = _ledger_repo(plan, service, environment, cache, cwd)
    with repo.locked():
        repo.fetch()
        out: list[LedgerEntry] = []
        for entry in _walk(repo, relpath, image):
            out.append(entry)
            if len(out) >= limit:
                break
        return out


def previous_tag(plan: Plan, service: str, environment: str, *, current: str,
                 cache: str | Path | None = None, cwd: str | Path | None = None) -> str | None:
    """The most recent tag in the manifest's history that differs from ``current`` (None: none)."""
    repo, relpath, image = _ledger_repo(plan, service, environment, cache, cwd)
    with repo.locked():
        repo.fetch()
        for entry in _walk(repo, relpath, image):
            if entry.tag and entry.tag != current:
                return entry.tag
    return None


def current_state(plan: Plan, service: str, environment: str, *, cache: str | Path | None = None,
                  cwd: str | Path | None = None) -> tuple[ImageState, str]:
    """What the branch head deploys for the service (tag, digest) and that head's commit."""
    repo, relpath, image = _ledger_repo(plan, service, environment, cache, cwd)
    with repo.locked():
        head = repo.fetch()
        return read_image(repo.show(head, relpath), image, source=relpath), head


def current_states(plan: Plan, pairs: Sequence[tuple[str, str]], *, cache: str | Path | None = None,
                   cwd: str | Path | None = None) -> dict[tuple[str, str], tuple[ImageState, str] | ForgeError]:
    """:func:`current_state` of many (service, environment) pairs: one fetch per GitOps repository
    and branch, and every manifest read at that head in one ``git cat-file``. A pair's problem
    (its repository cannot be fetched, its manifest is missing or does not name the image) is
    its entry, not raised."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for service, environment in pairs:
        g = plan.service(service).target(environment).gitops
        groups.setdefault((g.repo, g.branch), []).append((service, environment))
    out: dict[tuple[str, str], tuple[ImageState, str] | ForgeError] = {}
    for members in groups.values():
        try:
            repo = _ledger_repo(plan, *members[0], cache, cwd)[0]
            with repo.locked():
                head = repo.fetch()
                where = [_where(plan.service(s), e) for s, e in members]
                texts = repo.blobs([f"{head}:{relpath}" for relpath, _ in where])
        except ForgeError as err:
            out.update((pair, err) for pair in members)
            continue
        for pair, (relpath, image), text in zip(members, where, texts):
            if text is None:
                out[pair] = repo.no_such_file(relpath)
                continue
            try:
                out[pair] = (read_image(text, image, source=relpath), head)
            except ForgeError as err:
                out[pair] = err
    return out


def current_tag(plan: Plan, service: str, environment: str, *, cache: str | Path | None = None,
                cwd: str | Path | None = None) -> str | None:
    """The tag the GitOps branch deploys for the service in the environment (for ``forge status``)."""
    return current_state(plan, service, environment, cache=cache, cwd=cwd)[0].tag
