"""The three console scripts' entry points: ``--version`` answers before anything is imported.

A bare ``forge --version`` (``forgegen``, ``forge-provision``) prints what click's
``version_option`` prints, without importing click or the CLI module (~40 ms of imports on a
2-core machine); every other command line goes to the CLI's own ``main``.
tests/test_startup.py checks that both paths print the same line.
"""

from __future__ import annotations

import sys

from forgegen import __version__


def _version(prog: str) -> bool:
    if sys.argv[1:] != ["--version"]:
        return False
    sys.stdout.write(f"{prog}, version {__version__}\n")
    return True


def forge() -> int | None:
    if _version("forge"):
        return 0
    from forgegen.runtime.cli import main

    return main()


def forgegen() -> int | None:
    if _version("forgegen"):
        return 0
    from forgegen.cli import main

    return main()


def forge_provision() -> int | None:
    if _version("forge-provision"):
        return 0
    import importlib

    main = importlib.import_module("forge_provision.cli").main  # the other package of this distribution
    return main()  # type: ignore[no-any-return]
