"""Start-up cost: `--version` and `--help` of the three CLIs import no heavy library.

`python -X importtime` lists every module a command imports; the paths that neither validate a
deploy.yaml nor talk to a cluster or a database must not import pydantic (the schema's models),
kubernetes, psycopg, jinja2, rich or yaml. This asserts what is imported, never how long it took.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

HEAVY = ("pydantic", "pydantic_core", "kubernetes", "psycopg", "jinja2", "rich", "yaml", "urllib3",
         "forgegen.schema", "forgegen.generator", "forgegen.render", "forgegen.yamlsource")

ENTRY = {"forge": "forgegen.runtime.cli", "forgegen": "forgegen.cli", "forge-provision": "forge_provision.cli"}

PATHS = [
    ("forge", "--version"), ("forgegen", "--version"), ("forge-provision", "--version"),
    ("forge", "deploy", "--help"), ("forge", "--help"), ("forgegen", "sync", "--help"),
    ("forge-provision", "postgres", "apply", "--help"),
]


def imported_modules(argv: tuple[str, ...]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    code = (f"import sys; sys.argv = {list(argv)!r}; from {ENTRY[argv[0]]} import main; "
            "sys.exit(main())")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=120)
    names = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return names, proc


@pytest.mark.parametrize("argv", PATHS, ids=" ".join)
def test_the_command_imports_no_heavy_module(argv: tuple[str, ...]) -> None:
    names, proc = imported_modules(argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert names, "python -X importtime printed nothing"
    heavy = sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"`{' '.join(argv)}` imports {heavy}"


def test_version_is_the_installed_one() -> None:
    import forgegen

    assert forgegen.__version__ == importlib.metadata.version("forge-deploy")
    names, proc = imported_modules(("forge", "--version"))
    assert proc.stdout.strip() == f"forge, version {forgegen.__version__}"


def test_the_cli_option_defaults_are_the_generator_s() -> None:
    from forgegen import cli, generator, plan, schema

    assert cli.DEFAULT_FILE == schema.DEFAULT_FILE
    assert (cli.DEFAULT_FORGE_URL, cli.DEFAULT_NIXPKGS_URL) == (generator.DEFAULT_FORGE_URL, generator.DEFAULT_NIXPKGS_URL)
    assert plan.COMMIT_FIELDS == schema.COMMIT_FIELDS
    from forgegen.runtime import cli as runtime_cli

    assert plan.plan_relpath("SERVICE") in runtime_cli.PLAN_HELP


SCRIPTS = {"forge": "forge", "forgegen": "forgegen", "forge-provision": "forge_provision"}


@pytest.mark.parametrize("prog", SCRIPTS)
def test_the_console_script_answers_version_before_importing_the_cli(prog: str) -> None:
    """The installed scripts enter through forgegen.entry: a bare --version imports neither click nor
    any other Forge module, and prints exactly what the CLI's click version option prints."""
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
               if e.dist is not None and e.dist.name == "forge-deploy"}
    assert scripts[prog] == f"forgegen.entry:{SCRIPTS[prog]}"
    code = f"import sys; sys.argv = [{prog!r}, '--version']; from forgegen.entry import {SCRIPTS[prog]} as m; sys.exit(m())"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    loaded = sorted(n for n in names if n == "click" or n.startswith(("click.", "forgegen.", "forge_provision")))
    assert loaded == ["forgegen.entry"]
    _, via_click = imported_modules((prog, "--version"))
    assert proc.stdout == via_click.stdout and proc.stdout.startswith(f"{prog}, version ")


def test_the_console_script_passes_other_command_lines_to_the_cli() -> None:
    code = "import sys; sys.argv = ['forge', '--version', '--help']; from forgegen.entry import forge; sys.exit(forge())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("forge, version ")  # click: --version is eager
    code = code.replace("'--version', '--help'", "'--help'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Usage: forge" in proc.stdout, proc.stderr[-2000:]


def test_the_runtime_s_cluster_and_gitops_modules_import_neither_pydantic_nor_kubernetes() -> None:
    """A deploy reads its JSON plan, edits YAML with yamlsource and speaks to the cluster through
    kubeapi: the modules it loads import neither the schema's pydantic nor the kubernetes client."""
    code = ("import forgegen.runtime.cli, forgegen.runtime.deploy, forgegen.runtime.release, "
            "forgegen.runtime.migrate, forgegen.runtime.kubeapi, forgegen.runtime.k8stypes")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rpartition("|")[2].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "forgegen.runtime.gitops" in names and "forgegen.yamlsource" in names
    heavy = sorted(n for n in names if n.split(".")[0] in ("pydantic", "pydantic_core", "kubernetes"))
    assert heavy == []
