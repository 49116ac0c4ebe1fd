"""A long-lived process for the YAML fuzz test (``tests/test_yaml_fuzz.py``): reads one JSON
request per line on stdin, ``{"kind": "check" | "provision" | "overlay", "text": ...}``, runs
the real entry point on that text, and answers ``{"rc": N, "stderr": "..."}`` on one line.

The test starts it under a memory limit and waits for each answer with a timeout, so a hang or a
blow-up fails the test instead of stalling it. ``forgegen check`` and ``forge-provision
postgres plan`` run through their CLI entry points (exit codes as users see them); the overlay
reader is :func:`forgegen.runtime.gitops.render_inputs` (it never raises: 0, or 3 on a crash).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import traceback
from pathlib import Path

from forge_provision.cli import cli as provision_cli
from forgegen.cli import cli as forgegen_cli
from forgegen.console import run_cli
from forgegen.runtime.gitops import GitOpsRepo, render_inputs


def handle(kind: str, text: str, work: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        if kind == "check":
            (work / "deploy.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
            rc = run_cli(forgegen_cli, "forgegen", ["check", "-c", str(work / "deploy.yaml")])
        elif kind == "provision":
            (work / "db.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
            rc = run_cli(provision_cli, "forge-provision", ["postgres", "plan", "--config", str(work / "db.yaml")])
        else:
            overlay = work / "repo" / "overlay"
            overlay.mkdir(parents=True, exist_ok=True)
            (overlay / "kustomization.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
            try:
                render_inputs(GitOpsRepo("unused", "main", work / "repo"), "overlay")
                rc = 0
            except Exception:  # noqa: BLE001 - a crash is what the test looks for
                traceback.print_exc()
                rc = 3
    return rc, err.getvalue()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="forge-yaml-fuzz-") as tmp:
        for line in sys.stdin:
            request = json.loads(line)
            rc, stderr = handle(request["kind"], request["text"], Path(tmp))
            sys.stdout.write(json.dumps({"rc": rc, "stderr": stderr[-4000:]}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
