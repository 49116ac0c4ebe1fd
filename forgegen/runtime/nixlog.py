"""What ``nix build`` and ``nix copy`` say while they work, shown the way Nix users expect.

Nix runs with ``-L --log-format internal-json``: every line on its stderr is ``@nix {json}`` (an
activity starting or stopping, a result of one, or a message). :class:`NixLog` reads them:

* **On a terminal** (``live`` given): each build's log lines as they come, prefixed with the
  derivation's name (``hello> make: …``, as ``nix build -L`` prints them), a line per derivation
  built, and one replaceable progress line (derivations built/running, paths and bytes copied).
* **Off a terminal** (CI logs): quiet and line-based — a line per derivation built, nothing else;
  build log lines go to the debug log (``forge -v``) only.

Either way the text (messages and build log lines, colours removed) is kept, so a failure's error
shows its last lines and :mod:`forgegen.runtime.build` can recognise what went wrong.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# -L first: given after --log-format it would switch the format back to Nix's own (-L keeps the
# build log out of Nix's error message, which would repeat the lines already kept)
FLAGS = ("-L", "--log-format", "internal-json")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Nix's activity and result types (src/libutil/logging.hh)
_COPY_PATH, _COPY_PATHS, _BUILDS, _BUILD = 100, 103, 104, 105
_BUILD_LOG_LINE, _POST_BUILD_LOG_LINE, _PROGRESS = 101, 107, 105
_REDRAW_SECONDS = 0.1


def plain(text: str) -> str:
    """``text`` without terminal colours."""
    return _ANSI.sub("", text)


def drv_name(path: str) -> str:
    """``/nix/store/<hash>-hello-2.12.drv`` -> ``hello-2.12``."""
    base = path.rsplit("/", 1)[-1]
    base = base[:-4] if base.endswith(".drv") else base
    return base.partition("-")[2] or base


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


class NixLog:
    """Reads Nix's ``internal-json`` stderr line by line (the ``on_line`` of :func:`forgegen.process.stream`)."""

    def __init__(self, say: Progress, live: Progress | None = None) -> None:
        self.say, self.live = say, live
        self._names: dict[int, str] = {}  # build activity -> derivation name
        self._types: dict[int, int] = {}  # activity -> its type
        self._progress: dict[int, tuple[int, int, int, int]] = {}  # activity -> done, expected, running, failed
        self._copying: dict[int, str] = {}  # copy activity -> the store path's name
        self._shown = ""
        self._drawn_at = 0.0

    def __call__(self, line: str) -> str | None:
        if not line.startswith("@nix "):
            return self._text(plain(line))
        try:
            event = json.loads(line[5:])
        except ValueError:
            return self._text(plain(line))
        action = event.get("action")
        if action == "msg":
            return self._message(event)
        if action == "start":
            return self._start(event)
        if action == "stop":
            self._types.pop(event.get("id", 0), None)
            self._progress.pop(event.get("id", 0), None)
            self._copying.pop(event.get("id", 0), None)
            self._draw()
            return None
        if action == "result":
            return self._result(event)
        return None

    def _text(self, text: str) -> str | None:
        if text.strip():
            self._line(text)
        return text or None

    def _message(self, event: dict[str, Any]) -> str | None:
        text = plain(str(event.get("msg", ""))).rstrip()
        level = event.get("level", 0)
        if level == 1 or (level in (2, 3) and self.live is not None):  # warnings; notices on a terminal
            self._line(text)
        return text if level <= 3 else None  # errors are raised (with this text) by the caller

    def _start(self, event: dict[str, Any]) -> str | None:
        ident, kind, fields = event.get("id", 0), event.get("type", 0), event.get("fields") or []
        self._types[ident] = kind
        if kind == _BUILD and fields:
            name = drv_name(str(fields[0]))
            self._names[ident] = name
            machine = f" on {fields[1]}" if len(fields) > 1 and fields[1] else ""
            self._line(f"building {name}{machine}")
            return f"building {name}{machine}"
        if kind == _COPY_PATH and fields:
            self._copying[ident] = drv_name(str(fields[0]))
        self._draw()
        return None

    def _result(self, event: dict[str, Any]) -> str | None:
        ident, kind, fields = event.get("id", 0), event.get("type", 0), event.get("fields") or []
        if kind in (_BUILD_LOG_LINE, _POST_BUILD_LOG_LINE) and fields:
            text = f"{self._names.get(ident, 'nix')}> {plain(str(fields[0])).rstrip()}"
            if self.live is not None:
                self._line(text)
            else:
                log.debug("%s", text)
            return text
        if kind == _PROGRESS and len(fields) >= 4:
            self._progress[ident] = (int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]))
            self._draw()
        return None

    def _line(self, text: str) -> None:
        if self.live is not None and self._shown:
            self.live("")
            self._shown = ""
        self.say(text)

    def status(self) -> str:
        """The progress line: derivations built of expected (running), store paths and bytes copied,
        the path being copied."""
        sums: dict[int, list[int]] = {}
        for ident, values in self._progress.items():
            kind = self._types.get(ident)
            if kind in (_BUILDS, _COPY_PATHS, _COPY_PATH):
                total = sums.setdefault(kind, [0, 0, 0])
                total[0] += values[0]
                total[1] += values[1]
                total[2] += values[2]
        parts = []
        if sums.get(_BUILDS, [0, 0])[1]:
            done, expected, running = sums[_BUILDS]
            parts.append(f"built {done} of {expected}" + (f", {running} running" if running else ""))
        if sums.get(_COPY_PATHS, [0, 0])[1]:
            parts.append(f"copied {sums[_COPY_PATHS][0]} of {sums[_COPY_PATHS][1]} paths")
        if sums.get(_COPY_PATH, [0, 0])[1]:
            parts.append(f"{_mib(sums[_COPY_PATH][0])} of {_mib(sums[_COPY_PATH][1])} MiB")
        if self._copying:
            names = list(self._copying.values())
            parts.append(f"copying {names[-1]}" + (f" and {len(names) - 1} more" if len(names) > 1 else ""))
        return "nix: " + "; ".join(parts) if parts else ""

    def _draw(self) -> None:
        if self.live is None:
            return
        text = self.status()
        now = time.monotonic()
        if text == self._shown or (text and now - self._drawn_at < _REDRAW_SECONDS):
            return
        self.live(text)
        self._shown, self._drawn_at = text, now

    def done(self) -> None:
        """Clear the progress line (call when Nix has finished)."""
        if self.live is not None and self._shown:
            self.live("")
            self._shown = ""
