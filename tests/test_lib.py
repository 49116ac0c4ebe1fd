"""forge.lib (lib/*.nix) through the real Nix evaluator and builder.

* The `{ expr; expected; }` case suite (lib/tests/) passes, and its flake-check derivation
  (lib/tests/check.nix) builds, and fails with a readable report when a case fails.
* Every example in a nixdoc `# Examples` block evaluates to its documented result (`=> value`),
  or fails with the documented message (`=> error: …`).
* Every exported attribute of the sub-libraries has a doc comment with `# Type` and `# Examples`
  (and `# Inputs` for functions).
* The library is pure: no getEnv/currentTime/currentSystem, no absolute host paths.
* The check builders (performance.closureSizeCheck, flakeInputs.check) really build, and fail
  with their messages.
* A consumer flake (tests/lib-consumer) imports forge.lib and uses each sub-library in pure
  evaluation.

Nix calls are batched (one evaluation per sub-library for its examples) to keep this fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import NIX_CONFIG
from tests.strategies import nix_text, tricky_text

pytestmark = pytest.mark.nix

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
CONSUMER = ROOT / "tests" / "lib-consumer"
SHIM = LIB / "tests" / "pkgs-shim.nix"
LOCK_FIXTURE = LIB / "tests" / "fixtures" / "duplicate-nixpkgs.lock.json"

# The sub-libraries whose documented examples and doc completeness are checked here (all of
# them: apps.nix's examples pass a tiny inline `pkgs`, so they are self-contained too).
SUBLIBS = ["apps", "attic", "errorReporter", "errors", "flakeInputs", "performance", "platform", "sources"]


# Module-scoped fixtures run before conftest's per-test isolation, so they get their own HOME.
_module_home: dict[str, str] = {}


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed; run `bash .ci/setup`")
    env = {**os.environ, **_module_home, "NIX_CONFIG": NIX_CONFIG}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def _module_isolated_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("module-home")
    _module_home.update({"HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
                         "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
                         "XDG_STATE_HOME": str(home / "state")})
    yield
    _module_home.clear()


def nix_eval_json(expr: str, *, cwd: Path | None = None) -> object:
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], cwd=cwd)
    assert proc.returncode == 0, f"nix-instantiate failed on:\n{expr}\n{proc.stderr}"
    return json.loads(proc.stdout)


def squash(text: str) -> str:
    """Whitespace-insensitive form: Nix indents continuation lines of an error message."""
    return " ".join(text.split())


def nix_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'


@pytest.fixture(scope="module")
def system() -> str:
    # Test code may ask the host; the library never does.
    return nix_eval_json("builtins.currentSystem")  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The case suite


def test_cases_all_pass_and_are_counted() -> None:
    result = nix_eval_json(f"import {LIB}/tests/run.nix {{ }}")
    assert result["failures"] == [], json.dumps(result["failures"], indent=2)
    assert result["total"] >= 150


def test_cases_default_nix_returns_empty_list() -> None:
    # The documented entry point: `nix-instantiate --eval --strict --json lib/tests/default.nix`.
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", str(LIB / "tests" / "default.nix")])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_cases_check_derivation_builds_when_all_pass(system: str) -> None:
    total = nix_eval_json(f"(import {LIB}/tests/run.nix {{ }}).total")
    proc = run(["nix-build", "--no-out-link", str(LIB / "tests" / "check.nix"), "--argstr", "system", system])
    assert proc.returncode == 0, proc.stderr
    report = Path(proc.stdout.strip()).read_text()
    assert f"forge.lib: all {total} cases pass" in report
    assert "budget 1048576 bytes (1.0 MiB)" in report
    assert "forge.lib.flakeInputs.check: no input pulls a second copy" in report


def test_cases_check_derivation_fails_listing_failed_cases(system: str) -> None:
    proc = run([
        "nix-build", "--no-out-link", str(LIB / "tests" / "check.nix"), "--argstr", "system", system,
        "--arg", "extraCases", '{ deliberate-failure = { expr = { "if" = 1; }; expected = [ "\\${x}" ]; }; }',
    ])
    assert proc.returncode != 0
    err = squash(proc.stderr)
    assert "forge.lib: 1 of" in err and "cases fail:" in err
    assert squash('deliberate-failure: expected [ "\\${x}" ], got { "if" = 1; }') in err


# ---------------------------------------------------------------------------------------------
# Documented examples


@dataclass
class Example:
    sublib: str
    line: int
    expr: str
    result: str

    @property
    def is_error(self) -> bool:
        return self.result.startswith("error:")


DOC_COMMENT = re.compile(r"/\*\*(.*?)\*/", re.S)
NIX_BLOCK = re.compile(r"```nix\n(.*?)```", re.S)


def parse_examples(sublib: str) -> list[Example]:
    source = (LIB / f"{sublib}.nix").read_text()
    examples: list[Example] = []
    for doc in DOC_COMMENT.finditer(source):
        text = doc.group(1)
        at = text.find("# Examples")
        if at < 0:
            continue
        section_start = doc.start(1) + at
        for block in NIX_BLOCK.finditer(text, at):
            first_line = source.count("\n", 0, doc.start(1) + block.start(1)) + 1
            lines = textwrap.dedent(block.group(1)).splitlines()
            expr: list[str] = []
            result: list[str] | None = None
            start = first_line

            def flush() -> None:
                nonlocal expr, result
                if expr and result is not None:
                    examples.append(Example(sublib, start, "\n".join(expr), "\n".join(result)))
                expr, result = [], None

            for i, line in enumerate(lines):
                if line.startswith("=> "):
                    result = [line[3:]]
                elif result is not None:
                    if line.strip():
                        result.append(line)
                    else:
                        flush()
                elif line.strip():
                    if not expr:
                        start = first_line + i
                    expr.append(line)
            flush()
        assert section_start >= 0
    return examples


def example_scope(sublib: str, body: str, system: str) -> str:
    # Examples are written either fully qualified (`forge.lib.platform.toOci …`) or, as in
    # nixpkgs, with the sub-library's names in scope; `pkgs` is the offline test package set.
    return (
        f"let forge = {{ lib = import {LIB}; }}; pkgs = import {SHIM} {{ system = {nix_str(system)}; }}; "
        f"in with forge.lib.{sublib}; ({body})"
    )


@pytest.mark.parametrize("sublib", SUBLIBS)
def test_examples_evaluate_to_documented_results(sublib: str, system: str, tmp_path: Path) -> None:
    examples = parse_examples(sublib)
    assert examples, f"lib/{sublib}.nix documents no examples"
    # `readLock ./flake.lock` and similar examples read files next to the evaluated expression.
    shutil.copy(LOCK_FIXTURE, tmp_path / "flake.lock")

    values = [e for e in examples if not e.is_error]
    entries = "\n".join(
        f"  (check ({example_scope(sublib, e.expr, system)}) ({e.result}))" for e in values
    )
    batch = tmp_path / "examples.nix"
    batch.write_text(
        f"let\n  show = (import {LIB}).errors.show;\n"
        "  check = actual: expected:\n"
        "    let r = builtins.tryEval (builtins.deepSeq actual actual);\n"
        "    in if r.success then { ok = r.value == expected; actual = show r.value; }\n"
        "       else { ok = false; actual = \"«throws»\"; };\n"
        f"in [\n{entries}\n]\n"
    )
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", "--read-write-mode", str(batch)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outcomes = json.loads(proc.stdout)
    wrong = [
        f"lib/{e.sublib}.nix:{e.line}: {e.expr}\n  documented: {e.result}\n  actual:     {o['actual']}"
        for e, o in zip(values, outcomes) if not o["ok"]
    ]

    def error_outcome(e: Example) -> str | None:
        p = run(["nix-instantiate", "--eval", "--strict", "--read-write-mode", "-E", example_scope(sublib, e.expr, system)], cwd=tmp_path)
        expected = squash(e.result[len("error:"):])
        if p.returncode == 0:
            return f"lib/{e.sublib}.nix:{e.line}: {e.expr}\n  documented: {e.result}\n  actual: {p.stdout.strip()}"
        if expected not in squash(p.stderr):
            return f"lib/{e.sublib}.nix:{e.line}: {e.expr}\n  documented: {e.result}\n  actual: {p.stderr.strip()}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        wrong += [w for w in pool.map(error_outcome, [e for e in examples if e.is_error]) if w]
    assert not wrong, "\n\n".join(wrong)


def test_examples_parser_reads_pairs_and_errors() -> None:
    examples = parse_examples("platform")
    by_expr = {e.expr: e for e in examples}
    ex = by_expr['forge.lib.platform.toOciString "x86_64-linux"']
    assert ex.result == '"linux/amd64"'
    assert by_expr['forge.lib.platform.toOci "x86_64-windows"'].is_error


DOCUMENTED = re.compile(r"/\*\*(.*?)\*/\s*(?:inherit\s+([A-Za-z_][\w'-]*)\s*;|([A-Za-z_][\w'-]*)\s*=)", re.S)


@pytest.mark.parametrize("sublib", SUBLIBS)
def test_every_export_has_nixdoc_with_inputs_type_examples(sublib: str) -> None:
    exported = nix_eval_json(f"builtins.mapAttrs (n: builtins.isFunction) (import {LIB}).{sublib}")
    docs = {
        (m.group(2) or m.group(3)): m.group(1)
        for m in DOCUMENTED.finditer((LIB / f"{sublib}.nix").read_text())
    }
    problems = []
    for name, is_function in sorted(exported.items()):  # type: ignore[union-attr]
        doc = docs.get(name)
        if doc is None:
            problems.append(f"forge.lib.{sublib}.{name}: no /** */ doc comment")
            continue
        needed = ["# Type", "# Examples"] + (["# Inputs"] if is_function else [])
        problems += [f"forge.lib.{sublib}.{name}: doc lacks {s}" for s in needed if s not in doc]
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Purity

FORBIDDEN = [
    (re.compile(r"\bgetEnv\b"), "builtins.getEnv reads the environment"),
    (re.compile(r"\bcurrentTime\b"), "builtins.currentTime is impure"),
    (re.compile(r"\bcurrentSystem\b"), "builtins.currentSystem breaks pure flake evaluation"),
    (re.compile(r"(?<![\w.}/$-])/(?:etc|bin|sbin|usr|home|root|tmp|var|opt|run|proc|sys|dev|nix|Users|Library)\b"),
     "absolute host path"),
]


def purity_violations(name: str, source: str) -> list[str]:
    found = []
    for lineno, line in enumerate(source.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if pattern.search(line):
                found.append(f"{name}:{lineno}: {why}: {line.strip()}")
    return found


def test_purity_detector_catches_the_old_tools_habits() -> None:
    bad = textwrap.dedent("""\
        home = builtins.getEnv "HOME";
        now = builtins.currentTime;
        sys = builtins.currentSystem;
        nixos = builtins.pathExists /etc/nixos;
        sh = "/bin/sh";
        store = "/nix/store/abc-x";
    """)
    assert len(purity_violations("bad.nix", bad)) == 6
    good = 'program = "${drv}/bin/${name}"; url = "${endpoint}/${cache}"; re = "(.*[^/])/+";'
    assert purity_violations("good.nix", good) == []


def test_lib_is_pure() -> None:
    # lib/tests/ is test code and deliberately builds with the host's /bin/sh (pkgs-shim.nix);
    # the library itself must not.
    files = sorted(LIB.glob("*.nix"))
    assert len(files) >= 7
    violations = [v for f in files for v in purity_violations(f"lib/{f.name}", f.read_text())]
    assert not violations, "\n".join(violations)


# ---------------------------------------------------------------------------------------------
# Escaping through Nix itself

TRICKY = ["", "${x}", "$${x}", "$", "\\", '"', "''", "a\nb\r\tc", "é→✓", "$\\{x}", "\x01", "${", "}"]


def test_escape_string_round_trips_through_nix(tmp_path: Path) -> None:
    literals = nix_eval_json(
        f"map (import {LIB}).errors.escapeString (builtins.fromJSON {nix_str(json.dumps(TRICKY))})"
    )
    source = tmp_path / "literals.nix"
    source.write_text("[\n" + "\n".join(literals) + "\n]\n")  # type: ignore[arg-type]
    proc = run(["nix-instantiate", "--eval", "--strict", "--json", str(source)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == TRICKY


SHELL_TRICKY = ["", "it's", "$HOME", "${x}", "`id`", "a\\", "\\'", "'\\", "$(id)", "!x", "a b\nc\td", "*", "~",
                "\"$@\"", "é→✓", "-n", "x'$y'z", "\\$"]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(nix_text, tricky_text), min_size=1, max_size=20))
@example(SHELL_TRICKY)
@example(["\u2018"])  # found by this test: ShellCheck's SC1112 flags a Unicode quote inside '…'
@example(["\r"])  # found by this test: SC1017, a literal carriage return
def test_escape_shell_arg_is_one_exact_word_and_passes_shellcheck(values: list[str]) -> None:
    quoted = nix_eval_json(f"map (import {LIB}).apps.escapeShellArg (builtins.fromJSON {nix_str(json.dumps(values))})")
    script = "#!/bin/bash\nset -o errexit\nset -o nounset\nset -o pipefail\n\n" + "".join(
        f"printf '%s\\0' {q}\n" for q in quoted)  # type: ignore[union-attr]
    lint = subprocess.run(["shellcheck", "-"], input=script, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout.decode("utf-8")
    assert out.split("\0")[:-1] == values


# ---------------------------------------------------------------------------------------------
# Check builders, built for real


def check_expr(system: str) -> str:
    return textwrap.dedent(f"""\
        let
          lib = import {LIB};
          pkgs = import {SHIM} {{ system = "{system}"; }};
          lock = builtins.fromJSON (builtins.readFile {LOCK_FIXTURE});
        in {{
          closureOk = lib.performance.closureSizeCheck {{ inherit pkgs; drv = pkgs.hello; maxBytes = "1 MiB"; }};
          closureOver = lib.performance.closureSizeCheck {{ inherit pkgs; drv = pkgs.hello; maxBytes = 1000; top = 1; }};
          inputsClean = lib.flakeInputs.check {{ inherit pkgs; lock = {{ nodes.root = {{ }}; }}; }};
          inputsIgnored = lib.flakeInputs.check {{ inherit pkgs; inherit lock; ignore = [ "tool/nixpkgs" ]; }};
          inputsDuplicated = lib.flakeInputs.check {{ inherit pkgs; inherit lock; }};
          hello = pkgs.hello;
          helloData = pkgs.hello-data;
        }}
    """)


@pytest.fixture(scope="module")
def checks_file(system: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("checks") / "checks.nix"
    path.write_text(check_expr(system))
    return path


def nix_build(file: Path, *attrs: str) -> subprocess.CompletedProcess[str]:
    argv = ["nix-build", "--no-out-link", str(file)]
    for attr in attrs:
        argv += ["-A", attr]
    return run(argv)


def test_check_builders_pass_and_write_reports(checks_file: Path) -> None:
    proc = nix_build(checks_file, "closureOk", "inputsClean", "inputsIgnored", "hello", "helloData")
    assert proc.returncode == 0, proc.stderr
    closure, clean, ignored, hello, hello_data = proc.stdout.split()
    report = Path(closure).read_text().splitlines()
    assert report[0].startswith(f"closure of {hello}: ")
    assert report[0].endswith("in 2 paths; budget 1048576 bytes (1.0 MiB)")
    assert report[1] == "largest paths:"
    # Largest first: the 20 kB payload, then the script that refers to it.
    assert report[2].endswith(hello_data) and report[3].endswith(hello)
    assert Path(clean).read_text() == "forge.lib.flakeInputs.check: no input pulls a second copy of another input\n"
    assert Path(ignored).read_text() == Path(clean).read_text()


def test_closure_size_check_fails_over_budget_naming_largest_paths(checks_file: Path) -> None:
    hello_data = nix_build(checks_file, "helloData").stdout.strip()
    proc = nix_build(checks_file, "closureOver")
    assert proc.returncode != 0
    err = proc.stderr
    assert re.search(r"forge\.lib\.performance\.closureSizeCheck: runtime closure of /nix/store/\w+-hello "
                     r"is over budget by \d+ bytes", err), err
    assert "budget 1000 bytes (1000 B)" in err
    listed = [line for line in err.splitlines() if re.match(r"\s+\d+\s+[\d.]+ \w+\s+/nix/store/", line)]
    assert len(listed) == 1 and listed[0].endswith(hello_data)  # top = 1
    assert "hint: remove what the largest paths pull in, or raise maxBytes" in err


def test_flake_inputs_check_fails_with_the_follows_that_fixes_it(checks_file: Path) -> None:
    proc = nix_build(checks_file, "inputsDuplicated")
    assert proc.returncode != 0
    assert "forge.lib.flakeInputs.check: 1 input pulls a second copy of an input already in flake.lock" in proc.stderr
    assert 'inputs.tool.inputs.nixpkgs.follows = "nixpkgs";' in proc.stderr
    assert "then run: nix flake lock" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Throw messages not shown in examples

PINNED_ERRORS = {
    'forge.lib.platform.eachSystem [ "x86_64-windows" ] (s: { })':
        'forge.lib.platform.eachSystem: unknown system "x86_64-windows" [unknown-system] system = "x86_64-windows" '
        'hint: use one of "aarch64-darwin", "aarch64-linux",',
    'forge.lib.platform.forEachSystem [ "x86_64-linux" ] 1':
        "forge.lib.platform.forEachSystem: the second argument must be a function from a system string, got an integer",
    'forge.lib.attic.nixConfig { endpoint = "https://a.example"; cache = "main"; publickey = "x"; }':
        "forge.lib.attic.nixConfig: 2 errors: error: publicKey: required attribute is missing "
        "error: publickey: unknown attribute hint: did you mean `publicKey`?",
    "forge.lib.flakeInputs.duplicates 1":
        "forge.lib.flakeInputs.duplicates: expected a parsed flake.lock (an attribute set with `nodes`), got an integer",
    "forge.lib.errors.mkError { where = 1; kind = \"k\"; message = \"m\"; }":
        "forge.lib.errors.mkError: `where` must be a string, got an integer: 1; for example forge.lib.errors.mkError {",
    'forge.lib.errorReporter.report { where = "x"; value = 1; problems = [ "oops" ]; }':
        "forge.lib.errorReporter.report: `problems` must be a list of problems",
    # A throw inside the offending value must not hide Forge's own message.
    'forge.lib.performance.parseSize { a = throw "inner"; b = 1; }':
        "forge.lib.performance.parseSize: expected a number of bytes or a string such as \"500 MiB\", "
        "got an attribute set: { a = «error»; b = 1; }",
    'forge.lib.performance.parseSize "10000000 TiB"':
        'forge.lib.performance.parseSize: "10000000 TiB" is over the largest budget, 1125899906842624 bytes (1024 TiB)',
    'forge.lib.attic.nixConfig { endpoint = "https://user:s3cret@a.example"; cache = "main"; '
    'publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; }':
        "forge.lib.attic.nixConfig: 1 error: error: endpoint: must not carry credentials",
}


def test_an_attic_endpoint_secret_is_never_echoed() -> None:
    expr = ('forge.lib.attic.nixConfig { endpoint = "https://user:s3cret@a.example/?token=t0ken"; cache = "main"; '
            'publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; }')
    p = run(["nix-instantiate", "--eval", "--strict", "-E", f"let forge.lib = import {LIB}; in {expr}"])
    assert p.returncode != 0 and "must not carry credentials" in p.stderr
    assert "s3cret" not in p.stderr and "t0ken" not in p.stderr


def test_throw_messages_name_function_value_and_fix() -> None:
    def outcome(item: tuple[str, str]) -> str | None:
        expr, expected = item
        p = run(["nix-instantiate", "--eval", "--strict", "-E", f"let forge.lib = import {LIB}; in {expr}"])
        if p.returncode == 0 or squash(expected) not in squash(p.stderr):
            return f"{expr}\n  expected: {expected}\n  got: {p.stderr or p.stdout}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        wrong = [w for w in pool.map(outcome, PINNED_ERRORS.items()) if w]
    assert not wrong, "\n\n".join(wrong)


# ---------------------------------------------------------------------------------------------
# A consumer flake
#
# The consumer (tests/lib-consumer) is copied to a temp dir. Its `forge` input is overridden
# with a temporary flake holding a copy of lib/ and the one-line flake.nix
# `{ outputs = _: { lib = import ./lib; }; }`: that exercises exactly what `forge.lib` is, does
# not depend on the root flake.nix (owned elsewhere, with a nixpkgs input that cannot be fetched
# here), and keeps `path:` from copying this checkout's .git and .venv into the store.


@pytest.fixture(scope="module")
def consumer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base = tmp_path_factory.mktemp("lib-consumer")
    forge = base / "forge"
    shutil.copytree(LIB, forge / "lib")
    (forge / "flake.nix").write_text("{ outputs = _: { lib = import ./lib; }; }\n")
    project = base / "consumer"
    shutil.copytree(CONSUMER, project)
    override = ["--override-input", "forge", f"path:{forge}"]
    proc = run(["nix", "flake", "lock", f"path:{project}", *override])
    assert proc.returncode == 0, proc.stderr
    assert (project / "flake.lock").is_file()
    return project, override


def test_consumer_uses_every_sublibrary_in_pure_eval(consumer: tuple[Path, list[str]]) -> None:
    project, override = consumer
    proc = run(["nix", "eval", "--json", "--option", "pure-eval", "true", f"path:{project}#summary", *override])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    key = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="
    assert summary == {
        "platforms": {"x86_64-linux": "linux/amd64", "aarch64-linux": "linux/arm64"},
        "archTags": ["amd64", "arm64"],
        "fromOci": "aarch64-linux",
        "linux": [True, True],
        "darwin": True,
        "nixConfig": {"extra-substituters": ["https://attic.example.com/main"], "extra-trusted-public-keys": [key]},
        "nixSettings": {"nix": {"settings": {"substituters": ["https://attic.example.com/main"],
                                             "trusted-public-keys": [key]}}},
        "substituter": "https://attic.example.com/main",
        "service": {"name": "api", "port": 8080, "replicas": 2},
        "badServiceProblems": "consumer.services.api: 2 errors:\n"
                              "  error: prot: unknown attribute\n"
                              '    hint: known attributes: "name", "port" or "replicas"\n'
                              '  error: port: must be an integer, got a string: "8080"',
        "error": 'consumer.deploy: no environment "prod" [unknown-environment]\n'
                 '  environment = "prod"\n  hint: use "production"',
        "duplicateInputs": ['inputs.tool.inputs.nixpkgs.follows = "nixpkgs";'],
        "budget": "1.5 GiB",
    }


def test_consumer_checks_build(consumer: tuple[Path, list[str]], system: str) -> None:
    project, override = consumer
    attrs = [f"path:{project}#checks.{system}.{name}" for name in ("closure-budget", "flake-inputs")]
    proc = run(["nix", "build", "--json", "--no-link", *attrs, *override])
    assert proc.returncode == 0, proc.stderr
    outputs = [Path(entry["outputs"]["out"]).read_text() for entry in json.loads(proc.stdout)]
    assert "in 1 path; budget 1048576 bytes (1.0 MiB)" in outputs[0]
    # Its own lock (forge as a path: input) has nothing duplicated.
    assert outputs[1].startswith("forge.lib.flakeInputs.check: no input pulls")


@pytest.mark.parametrize(("name", "message"), [
    ("closure-over-budget", "forge.lib.performance.closureSizeCheck: runtime closure of"),
    ("other-project-inputs", 'inputs.tool.inputs.nixpkgs.follows = "nixpkgs";'),
])
def test_consumer_failing_checks_fail_with_message(consumer: tuple[Path, list[str]], system: str,
                                                    name: str, message: str) -> None:
    project, override = consumer
    proc = run(["nix", "build", "--no-link", f"path:{project}#expectedFailures.{system}.{name}", *override])
    assert proc.returncode != 0
    assert message in proc.stderr


def test_consumer_rejects_impure_lib_use(consumer: tuple[Path, list[str]], tmp_path: Path) -> None:
    # Pure evaluation is really on: the same consumer asking for the host system fails.
    project, override = consumer
    impure = tmp_path / "impure"
    shutil.copytree(project, impure)
    flake = impure / "flake.nix"
    flake.write_text(flake.read_text().replace(
        'fromOci = lib.platform.fromOci "linux/arm64";',
        "fromOci = lib.platform.fromOci (lib.platform.toOciString builtins.currentSystem);"))
    proc = run(["nix", "eval", "--json", f"path:{impure}#summary.fromOci", *override])
    assert proc.returncode != 0
    assert "currentSystem" in proc.stderr
