"""The example's services for real, and `forgegen add-service`.

Every service of examples/shop (api: python, web: node, inventory: rust, mailer: go) passes each
level of its test pyramid through `forge test` with the real toolchain (pytest, npm + Playwright
driving Debian's Chromium, cargo, go), and its image builds with Nix (the nixpkgs stand-in, host
compilers). `forgegen add-service` scaffolds each type into a copy of the example; the new service
passes `forge test`, builds its image, and deploys (Kubernetes stand-in, real registry and git)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import npm_cache
from tests.fixtures.kube import wait_until
from tests.fixtures.nixenv import ROOT, Flake
from tests.ports import free_port

pytestmark = pytest.mark.nix

SHOP = ROOT / "examples" / "shop"
VENV_BIN = Path(sys.executable).parent
EXAMPLE = {"api": "python", "web": "node", "inventory": "rust", "mailer": "go"}
LEVELS = {"python": ["unit", "integration", "e2e"], "node": ["unit", "integration", "e2e"],
          "rust": ["unit", "integration"], "go": ["unit", "integration"], "generic": ["unit"]}
# The machine's caches, not the test's HOME (tests/conftest.py points HOME and XDG_* into tmp_path):
# the compilers' work is kept between tests and runs, outside the checkout.
REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
CACHE = REAL_HOME / ".cache"


def tool_env(**extra: str) -> dict[str, str]:
    """This virtualenv first on PATH (pytest, forge); rustup's toolchain and the cargo/go build
    caches of the machine's user."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(REAL_HOME / ".rustup")),
            "CARGO_HOME": os.environ.get("CARGO_HOME", str(REAL_HOME / ".cargo")),
            "CARGO_TARGET_DIR": str(CACHE / "forge" / "cargo-target"), "GOCACHE": str(CACHE / "go-build"),
            "npm_config_cache": str(CACHE / "npm"), **extra}


def node_modules(service: Path) -> None:
    npm_cache.ensure(service, cache=CACHE / "forge")


def run(argv: list[str], cwd: Path, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=tool_env(**extra))


def forgegen(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "forgegen", *args], cwd, timeout=120)


def forge_test(root: Path, target: str, **extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run([str(VENV_BIN / "forge"), "test", target, "--json"], root, **extra)
    return proc, json.loads(proc.stdout)


def outcomes(doc: dict) -> list[tuple[str, str]]:
    [service] = doc["services"]
    return [(lv["level"], lv["outcome"]) for lv in service["levels"]]


def expected_outcomes(kind: str) -> list[tuple[str, str]]:
    return [(lv, "passed" if lv in LEVELS[kind] else "not-configured") for lv in ("unit", "integration", "e2e")]


def copy_example(dst: Path) -> Path:
    shutil.copytree(SHOP, dst, ignore=shutil.ignore_patterns("gitops.git", "result", "node_modules", "target"))
    return dst


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


# --- the example's services ------------------------------------------------------------------


@pytest.mark.parametrize("service", list(EXAMPLE))
def test_example_service_passes_every_level_its_type_defines(tmp_path: Path, service: str) -> None:
    root = copy_example(tmp_path / "shop")
    if EXAMPLE[service] == "node":
        node_modules(root / "services" / service)
    proc, doc = forge_test(root, service)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes(doc) == expected_outcomes(EXAMPLE[service])
    assert doc["outcome"] == "passed"


def test_web_e2e_drives_chromium_and_keeps_a_screenshot_and_trace_when_it_fails(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "shop")
    web = root / "services" / "web"
    node_modules(web)
    passed, doc = forge_test(root, "web:e2e")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert 'the page shows "ok"' in passed.stderr + passed.stdout
    app = web / "src" / "app.js"
    app.write_text(app.read_text().replace('body: "ok\\n"', 'body: "degraded\\n"'))
    failed, doc = forge_test(root, "web:e2e", E2E_TIMEOUT_MS="3000")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert outcomes(doc) == [("e2e", "failed")]
    results = root / ".forge" / "test-results" / "web" / "e2e"
    assert (results / "failure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (results / "trace.zip").read_bytes()[:2] == b"PK"


def test_example_images_build_with_nix_and_the_built_services_answer_healthz(shop: Flake) -> None:
    installables = [f".#{s}" for s in EXAMPLE] + [f".#{s}-image" for s in EXAMPLE]
    built = json.loads(shop.nix("build", "--json", "--no-link", *installables, timeout=1200).stdout)
    outs = {Path(b["outputs"]["out"]).name.split("-", 1)[1]: Path(b["outputs"]["out"]) for b in built}
    for service in EXAMPLE:
        assert outs[f"{service}.tar.gz"].stat().st_size > 0  # the image (a docker-archive)
        [package] = [out for name, out in outs.items() if name in (service, f"{service}-0.1.0")]
        check_serves(package / "bin" / service)


def check_serves(program: Path) -> None:
    """Run ``program`` on a free port and see it answer GET /healthz."""
    port = free_port()
    proc = subprocess.Popen([str(program)], env=tool_env(PORT=str(port)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _healthy(port), timeout=60, interval=0.1)
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, b"ok\n"), program
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    except OSError:
        return False


def test_example_is_what_add_service_writes(tmp_path: Path) -> None:
    """examples/shop's inventory and mailer are exactly the scaffolds: regenerating them changes nothing."""
    from forgegen import scaffold

    for name, kind in (("inventory", "rust"), ("mailer", "go"), ("api", "python"), ("web", "node")):
        files, _ = scaffold.service_files(kind, name, f"services/{name}")
        for rel, text in files.items():
            assert (SHOP / rel).read_text() == text, rel


# --- forgegen add-service ----------------------------------------------------------------------


def add_service(root: Path, name: str, kind: str, *more: str) -> subprocess.CompletedProcess[str]:
    return forgegen(root, "add-service", name, "--type", kind, *more)


@pytest.mark.parametrize("kind", ["rust", "python", "go", "node", "generic"])
def test_add_service_scaffolds_a_service_that_passes_its_tests_and_builds_its_image(
        shop: Flake, tmp_path: Path, kind: str) -> None:
    gitops = shutil.copytree(ROOT / "examples" / "gitops", tmp_path / "gitops")
    name = f"new-{kind}"
    proc = add_service(shop.dir, name, kind, "--gitops-dir", str(gitops), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["service"] == name and report["flake_snippet"] is None
    assert sorted(report["edited"]) == sorted([str(gitops / "clusters/production/kustomization.yaml"),
                                               str(gitops / "clusters/staging/kustomization.yaml"),
                                               "deploy.yaml", "flake.nix"])
    assert (shop.dir / "nix" / "forge" / "plans" / f"{name}.json").is_file()  # synced
    assert forgegen(shop.dir, "sync", "--check").returncode == 0
    for env in ("staging", "production"):
        overlay = gitops / "clusters" / env / name
        assert "newTag: amd64-0000000" in (overlay / "kustomization.yaml").read_text()
        assert f"  - {name}\n" in (gitops / "clusters" / env / "kustomization.yaml").read_text()
        rendered = subprocess.run(["kubectl", "kustomize", str(gitops / "clusters" / env)], capture_output=True,
                                  text=True, check=True).stdout
        assert f"image: localhost:5000/shop/{name}:amd64-0000000" in rendered
    if kind == "node":
        node_modules(shop.dir / "services" / name)
    tested, doc = forge_test(shop.dir, name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert outcomes(doc) == expected_outcomes(kind)
    shop.commit(f"add {name}")
    built = json.loads(shop.nix("build", "--json", "--no-link", f".#{name}", f".#{name}-image", timeout=1200).stdout)
    outs = sorted(b["outputs"]["out"] for b in built)
    assert [o for o in outs if o.endswith(f"-{name}.tar.gz")], outs
    if kind != "generic":
        [package] = [o for o in outs if not o.endswith(".tar.gz")]
        check_serves(Path(package) / "bin" / name)


@pytest.mark.parametrize(("args", "message"), [
    (["api", "--type", "go"], "already has a service named 'api' (line "),
    (["Bad_Name", "--type", "go"], "cannot use 'Bad_Name' as a service name"),
    (["orders", "--type", "cobol"], "unknown service type 'cobol'"),
    (["orders", "--type", "go", "--path", "services/api"], "services/api exists and is not empty"),
    (["orders", "--type", "go", "--path", "../outside"], "cannot use '../outside' as the service's path"),
    (["orders", "--type", "go", "--path", "flake.nix"], "flake.nix exists and is not empty"),
])
def test_bad_input_is_refused_with_exit_2_and_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    root = copy_example(tmp_path / "shop")
    gitops = shutil.copytree(ROOT / "examples" / "gitops", tmp_path / "gitops")
    before, gitops_before = tree(root), tree(gitops)
    proc = forgegen(root, "add-service", *args, "--gitops-dir", str(gitops))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "hint:" in proc.stderr
    assert tree(root) == before and tree(gitops) == gitops_before


def test_dry_run_writes_nothing_and_reports_every_file(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "shop")
    before = tree(root)
    proc = add_service(root, "orders", "python", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dry_run"] is True and "sync" not in report
    assert "services/orders/orders/app.py" in report["created"]  # relative to where it runs
    assert sorted(report["edited"]) == ["deploy.yaml", "flake.nix"]
    # ./gitops.git is a bare repository created by the demo: no working tree to add overlays to.
    assert report["gitops"] == [] and "GitOps" in report["notes"][0]
    assert tree(root) == before


def test_deploy_yaml_keeps_its_comments_and_layout(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "shop")
    deploy = root / "deploy.yaml"
    original = deploy.read_text() + "    # a trailing note about web\n\n# the end of the file\n"
    deploy.write_text(original)
    assert add_service(root, "orders", "go").returncode == 0
    new = deploy.read_text()
    entry = ("\n  orders:\n    type: go\n    path: \"services/orders\"\n    image: {package: orders-image}\n"
             "    workload: {kind: Deployment}\n    dev:  # test levels: the go defaults (forgegen add-service)\n"
             "      start: \"go run .\"\n      health: \"http://127.0.0.1:{port}/healthz\"\n")
    assert entry in new
    assert new.replace(entry, "", 1) == original  # everything else byte for byte


def test_a_flake_forge_did_not_write_gets_the_lines_printed_not_edited(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "shop")
    flake = root / "flake.nix"
    flake.write_text(flake.read_text().replace("# forgegen add-service: new packages go above this line\n", ""))
    before = flake.read_text()
    proc = add_service(root, "orders", "rust", "--json")
    assert proc.returncode == 0, proc.stderr
    snippet = json.loads(proc.stdout)["flake_snippet"]
    assert "orders = pkgs.rustPlatform.buildRustPackage {" in snippet and "orders-image = " in snippet
    assert "add these lines" in proc.stderr and snippet in proc.stderr
    assert flake.read_text() == before


def test_init_then_add_service_edits_the_flake_init_wrote(tmp_path: Path) -> None:
    root = tmp_path / "acme"
    root.mkdir()
    assert forgegen(root, "init", "--project", "acme").returncode == 0
    proc = add_service(root, "orders", "generic")
    assert proc.returncode == 0, proc.stderr
    flake = (root / "flake.nix").read_text()
    assert "orders = pkgs.writeShellApplication {" in flake
    assert flake.index("orders-image = ") < flake.index("# forgegen add-service: new packages go above")
    assert (root / "services/orders/main.sh").is_file()


@pytest.mark.kube
@pytest.mark.registry
def test_a_scaffolded_service_deploys_in_the_example(shop: Flake, registry, kube, tmp_path: Path) -> None:
    from tests.fixtures.shop import start_shop_cluster

    gitops = shutil.copytree(ROOT / "examples" / "gitops", tmp_path / "gitops")
    proc = add_service(shop.dir, "orders", "go", "--gitops-dir", str(gitops))
    assert proc.returncode == 0, proc.stderr
    with start_shop_cluster(shop, registry, kube, tmp_path, gitops_source=gitops) as cluster:
        assert cluster.running_image("orders") == f"{registry.host}/shop/orders:amd64-0000000"
        sha = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=shop.dir, capture_output=True,
                             text=True, check=True).stdout.strip()
        deployed = cluster.run("deploy:orders:staging", "--json", timeout=1200)
        assert deployed.returncode == 0, deployed.stderr
        report = json.loads(deployed.stdout)
        assert report["outcome"] == "success"
        assert report["image"] == f"{registry.host}/shop/orders:amd64-{sha}"
        assert cluster.running_image("orders") == report["image"]
        assert f"newTag: amd64-{sha}" in cluster.remote_file("clusters/staging/orders/kustomization.yaml")


def test_the_flake_apps_run_the_example_pyramids(shop: Flake) -> None:
    """`nix run .#test:S` and `.#test:S:LEVEL` (the apps forgegen renders) on the example."""
    node_modules(shop.dir / "services" / "web")
    env = {k: v for k, v in tool_env().items() if k in ("RUSTUP_HOME", "CARGO_HOME", "CARGO_TARGET_DIR", "GOCACHE")}
    mailer = shop.run_app("test:mailer", env=env, timeout=900)
    assert "forge test mailer:integration: passed" in mailer.stderr
    assert "forge test mailer:e2e: not configured" in mailer.stderr
    web = shop.run_app("test:web:e2e", env=env, timeout=900)
    assert 'the page shows "ok"' in web.stdout + web.stderr
    assert "forge test web:e2e: passed" in web.stderr
