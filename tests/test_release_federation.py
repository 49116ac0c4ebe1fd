"""`nix run .#release` with the federation step, on the Kubernetes stand-in: the example's api and
web declared as GraphQL subgraphs served by two real Ariadne servers on loopback; the release
composes their supergraph with the pinned Node helper, commits it to the GitOps repository and
reconciles Flux to that commit (or fails at step ``federation`` and commits nothing)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.health import Health
from tests.fixtures.nixenv import Flake
from tests.fixtures.registry import Registry
from tests.fixtures.shop import BOTH_BACKENDS, ShopCluster, api_and_web_only, shop_cluster_on
from tests.fixtures.subgraphs import PRODUCTS, REVIEWS, REVIEWS_CONFLICTING, Subgraph, subgraph_server

pytestmark = [pytest.mark.nix, pytest.mark.kube, pytest.mark.registry]

SUPERGRAPH = "clusters/staging/router/supergraph.graphql"


@pytest.fixture
def reviews_sdl() -> str:
    return REVIEWS


@pytest.fixture
def subgraphs(reviews_sdl: str) -> Iterator[tuple[Subgraph, Subgraph]]:
    with subgraph_server("products", PRODUCTS) as products, subgraph_server("reviews", reviews_sdl) as reviews:
        yield products, reviews


@pytest.fixture
def fed_cluster(backend: str, request: pytest.FixtureRequest, shop: Flake, registry: Registry, tmp_path: Path,
                health: Health, subgraphs: tuple[Subgraph, Subgraph]) -> Iterator[ShopCluster]:
    products, reviews = subgraphs

    def edit_deploy(text: str) -> str:
        text = api_and_web_only(text).replace("http://api.shop.svc/healthz", health.url)
        assert '\nfederation:\n  router_config_path: "clusters/{cluster}/router"\n' in text  # the example's
        example = text[text.index("    graphql:"):text.index("\n\n  web:")]  # api's: a schema file
        text = text.replace(example, f'    graphql: {{endpoint: "{products.url}", subgraph_name: products}}', 1)
        return text.replace("    depends_on: [api]\n",
                            f'    depends_on: [api]\n    graphql: {{endpoint: "{reviews.url}", subgraph_name: reviews}}\n', 1)

    with shop_cluster_on(backend, request, shop, registry, tmp_path, edit_deploy=edit_deploy) as cluster:
        yield cluster


PLACEHOLDER = "# replaced by the supergraph `forge release` composes\n"  # examples/gitops/clusters/*/router


def composed(c: ShopCluster) -> bool:
    return c.remote_file(SUPERGRAPH) != PLACEHOLDER


@BOTH_BACKENDS
def test_release_composes_commits_and_reconciles_the_supergraph(fed_cluster: ShopCluster,
                                                                 subgraphs: tuple[Subgraph, Subgraph]) -> None:
    c = fed_cluster
    products, reviews = subgraphs
    dry = c.run("release", "--environments", "staging", "--dry-run", stdin=subprocess.DEVNULL)
    assert dry.returncode == 0, dry.stderr
    assert f"staging: fetch products, reviews's SDL, compose the supergraph, commit {SUPERGRAPH}" in dry.stdout
    assert not composed(c) and not products.requests  # a dry run fetches and commits nothing

    proc = c.run("release", "--environments", "staging", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["outcome"] == "success"
    fed = report["stages"][0]["federation"]
    assert fed["outcome"] == "success" and [s["name"] for s in fed["subgraphs"]] == ["products", "reviews"]
    commit = fed["gitops"]["commit"]
    assert commit and fed["gitops"]["file"] == SUPERGRAPH
    committed = c.remote_file(SUPERGRAPH)
    assert f'PRODUCTS @join__graph(name: "products", url: "{products.url}")' in committed
    assert f'REVIEWS @join__graph(name: "reviews", url: "{reviews.url}")' in committed
    assert c.remote_log(SUPERGRAPH)[0] == "federation(shop): staging supergraph"
    # reconciled like any deploy: Flux applied the supergraph's commit
    assert fed["reconcile"]["revision"].endswith(commit)
    c.wait_applied("apps-staging", commit)
    # where the router reads it: the ConfigMap generated from the committed file, applied by Flux
    assert c.get("configmaps", "router-supergraph")["data"]["supergraph.graphql"] == committed
    assert "federation: staging: committed" in proc.stderr


@BOTH_BACKENDS
@pytest.mark.parametrize("reviews_sdl", [REVIEWS_CONFLICTING])
def test_release_fails_at_federation_when_the_supergraph_does_not_compose(fed_cluster: ShopCluster) -> None:
    c = fed_cluster
    proc = c.run("release", "--environments", "staging", "--yes", "--json", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {"environment": "staging", "service": None, "step": "federation"}
    errors = report["stages"][0]["federation"]["errors"]
    assert {"FIELD_TYPE_MISMATCH", "INVALID_FIELD_SHARING"} <= {e["code"] for e in errors}
    assert all('"Product.name"' in e["message"] for e in errors if e["code"] == "FIELD_TYPE_MISMATCH")
    assert "FIELD_TYPE_MISMATCH: " in report["error"]["message"]
    assert {"environment": "staging", "service": None, "steps": ["gate"]} in report["not_done"]
    assert not composed(c)  # nothing committed
    assert "stopped at staging / federation" in proc.stderr
