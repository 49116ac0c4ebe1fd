"""``python -m tests.controlplane [DIR]``: start the real control plane and Flux on loopback,
print the admin kubeconfig's path and the start-to-ready time, run until interrupted (Ctrl-C or
SIGTERM), then stop every process it started."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.controlplane import NotBuilt, start_control_plane


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane")
    parser.add_argument("dir", nargs="?", help="state directory (default: a new temporary one)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--git-root", default="/", help="bare repositories under here are served over http")
    args = parser.parse_args()
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="forge-controlplane-"))
    try:
        plane = start_control_plane(directory, nodes=args.nodes, git_root=Path(args.git_root))
    except NotBuilt as e:
        print(f"controlplane: {e}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(plane.describe(), file=sys.stderr)
    print(f"ready in {plane.started_in:.1f} s; KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
    if plane.git is not None:
        print(f"git server: {plane.git.base_url}/<path under {args.git_root}>", file=sys.stderr)
    print(plane.kubeconfig, flush=True)
    try:
        done.wait()
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
