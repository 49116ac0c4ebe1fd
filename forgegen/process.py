"""The one module that runs external programs.

Argv tuples only (never a shell), a timeout on every call, output captured, a missing executable
reported by name, and a :class:`~forgegen.errors.CommandError` that shows the command, its exit
code, stdout and stderr. Domain wrappers (registry, gitops, build) turn these into errors that
say what to check. Values listed in ``secrets`` are redacted from everything an error carries.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from forgegen import urls
from forgegen.errors import CommandError, ToolMissing

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
REDACTED = "***"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every non-empty secret in ``text`` with ``***``, then apply the one URL/token
    redaction (:func:`forgegen.urls.redact`)."""
    return urls.redact(_hide(text, secrets))


def _hide(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def which(program: str, *, env: Mapping[str, str] | None = None) -> str | None:
    path = (env or os.environ).get("PATH")
    return shutil.which(program, path=path)


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    secrets: Iterable[str] = (),
    what: str | None = None,
    unset: Iterable[str] = (),
) -> Result:
    """Run ``argv`` and capture its output.

    ``env`` entries are added to the current environment (a value of ``None`` is not allowed:
    build the mapping you want); variables named in ``unset`` are removed from the child's
    environment (e.g. the ones that held a secret now passed another way).
    With ``check`` a non-zero exit raises :class:`CommandError`.
    ``what`` names the step for messages ("push the image", "fetch the GitOps repo").
    """
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("run() needs a program")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    for name in unset:
        full_env.pop(name, None)
    secrets = tuple(s for s in secrets if s)
    shown = redact(" ".join(argv), secrets)
    label = what or f"run {argv[0]}"
    if which(argv[0], env=full_env) is None and "/" not in argv[0]:
        raise ToolMissing(
            f"cannot {label}: the program {argv[0]!r} is not on PATH",
            argv=argv,
            hint=f"install {argv[0]} (see README.md, 'Set up') or put it on PATH",
        )
    log.debug("$ %s", shown)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise ToolMissing(f"cannot {label}: {argv[0]!r} was not found", argv=argv) from err
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        errout = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise CommandError(
            f"cannot {label}: `{shown}` did not finish within {timeout:g}s",
            argv=argv,
            stdout=redact(out, secrets),
            stderr=redact(errout, secrets),
            hint="check that the service it talks to answers, or raise the timeout",
        ) from err
    # What the caller reads keeps its text (only ``secrets`` go); what an error shows is redacted.
    result = Result(argv, proc.returncode, _hide(proc.stdout, secrets), _hide(proc.stderr, secrets))
    if check and proc.returncode != 0:
        out, errout = urls.redact(result.stdout), urls.redact(result.stderr)
        raise CommandError(
            f"cannot {label}: `{shown}` exited with {proc.returncode}"
            + (f"\n  stderr: {_tail(errout)}" if errout.strip() else "")
            + (f"\n  stdout: {_tail(out)}" if out.strip() and not errout.strip() else ""),
            argv=argv,
            returncode=proc.returncode,
            stdout=out,
            stderr=errout,
        )
    return result


def _tail(text: str, lines: int = 15) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n    ".join(kept)


TAIL_LINES = 20
"""How many of a failed tool's last output lines an error shows."""


def tail(text: str, lines: int = TAIL_LINES, width: int = 2000) -> str:
    """The last ``lines`` non-blank lines of ``text``, each indented for an error message (a line
    longer than ``width`` keeps its end, where tools put the reason)."""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join("    " + (ln if len(ln) <= width else "…" + ln[-width:]) for ln in kept)


def failure(tool: str, err: CommandError, lines: int = TAIL_LINES) -> str:
    """``<tool> exited with N; its last lines:`` and the tail of what it said (stderr, else
    stdout; already redacted), for the error a domain wrapper raises."""
    said = err.stderr if err.stderr.strip() else err.stdout
    code = f"exited with {err.returncode}" if err.returncode is not None else "failed"
    if not said.strip():
        return f"{tool} {code} without any output"
    return f"{tool} {code}; its last lines:\n{tail(said, lines)}"


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], str | None],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    secrets: Iterable[str] = (),
    what: str | None = None,
    unset: Iterable[str] = (),
    keep: int = 2000,
) -> Result:
    """Run ``argv`` like :func:`run` (``check`` always on), handing each line it writes to stderr,
    as it comes and with ``secrets`` hidden, to ``on_line``, which shows it as it likes and returns
    the text to keep for the result and for an error (``None``: keep nothing); the last ``keep``
    kept lines are the result's ``stderr``. stdout is captured whole. On a non-zero exit the
    :class:`CommandError` names the tool, its exit code and the last lines kept."""
    argv = tuple(str(a) for a in argv)
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in set(unset)}
    secrets = tuple(s for s in secrets if s)
    shown = redact(" ".join(argv), secrets)
    label = what or f"run {argv[0]}"
    if which(argv[0], env=full_env) is None and "/" not in argv[0]:
        raise ToolMissing(f"cannot {label}: the program {argv[0]!r} is not on PATH", argv=argv,
                          hint=f"install {argv[0]} (see README.md, 'Set up') or put it on PATH")
    log.debug("$ %s", shown)
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError as err:
        raise ToolMissing(f"cannot {label}: {argv[0]!r} was not found", argv=argv) from err
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""), daemon=True)
    reader.start()
    expired = threading.Event()
    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    kept: collections.deque[str] = collections.deque(maxlen=keep)
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            text = on_line(_hide(raw.decode(errors="replace").rstrip("\r\n"), secrets))
            if text is not None:
                kept.append(text)
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
    result = Result(argv, returncode, _hide((out[0] if out else b"").decode(errors="replace"), secrets),
                    "\n".join(kept) + ("\n" if kept else ""))
    if expired.is_set():
        raise CommandError(f"cannot {label}: `{shown}` did not finish within {timeout:g}s", argv=argv,
                           stdout=urls.redact(result.stdout), stderr=urls.redact(result.stderr),
                           hint="check that the service it talks to answers, or raise the timeout")
    if returncode != 0:
        failed = CommandError("", argv=argv, returncode=returncode, stdout=urls.redact(result.stdout),
                              stderr=urls.redact(result.stderr))
        failed.message = f"cannot {label}: `{shown}` exited with {returncode}\n  " + failure(argv[0], failed)
        failed.args = (failed.message,)
        raise failed
    return result


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-running program (a server in tests, a streaming pipe). Caller owns it.

    ``new_session``: the program leads its own session and process group (its pid is the group
    id), so :func:`kill_group` stops it with everything it started, and a Ctrl-C at the terminal
    reaches only the caller, which decides."""
    argv = tuple(str(a) for a in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    if which(argv[0], env=full_env) is None and "/" not in argv[0]:
        raise ToolMissing(f"cannot start {argv[0]!r}: it is not on PATH", argv=argv)
    return subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=stdout, stderr=stderr,
                            start_new_session=new_session)


def kill_group(pgid: int, *, grace: float = 10.0) -> None:
    """SIGTERM the process group ``pgid``, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies waiting for a parent do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def remove_stale_temp(parent: Path, prefix: str) -> None:
    """Remove the temporary entries ``<prefix><pid>-…`` in ``parent`` whose process no longer
    runs (left by a run that was killed); a running process's are left alone."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(prefix):].partition("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        log.debug("removing %s, left by a run that was interrupted", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT
