"""The federation step (forgegen/runtime/federation.py) with real parts: two Ariadne subgraph
servers on loopback answering ``_service { sdl }``, the pinned Node composition helper
(@theguild/federation-composition), and a real bare GitOps repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from forgegen.errors import ConfigError
from forgegen.plan import Plan, build_plan
from forgegen.runtime import federation
from forgegen.runtime.steps import release_steps
from forgegen.runtime.tags import SourceRevision
from forgegen.schema import parse_config
from tests.fixtures.gitops import seed_remote
from tests.fixtures.subgraphs import PRODUCTS, REVIEWS, REVIEWS_CONFLICTING, subgraph_server

SUPERGRAPH = "clusters/staging/router/supergraph.graphql"


def config_text(remote: Path, products: str, reviews: str, *, extra: str = "") -> str:
    return f"""\
version: 1
project: shop
registry: {{host: "localhost:5000"}}
gitops: {{repo: "{remote}"}}
federation:
  router_config_path: "clusters/{{cluster}}/router"
environments:
  - name: staging
services:
  products:
    graphql: {{endpoint: "{products}"}}
  reviews:
    graphql: {{endpoint: "{reviews}", retries: 1, timeout: 5}}
{extra}"""


def make_plan(remote: Path, products: str, reviews: str, **kw: str) -> Plan:
    return build_plan(parse_config(config_text(remote, products, reviews, **kw)))


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    template = tmp_path / "template"
    (template / "clusters" / "staging").mkdir(parents=True)
    (template / "clusters" / "staging" / "README").write_text("the staging cluster\n")
    return seed_remote(template, tmp_path / "gitops.git")


def git_out(remote: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={remote}", *args], capture_output=True, text=True, check=True).stdout


def test_composes_the_subgraphs_and_commits_the_supergraph_once(remote: Path, tmp_path: Path) -> None:
    with subgraph_server("products", PRODUCTS) as products, subgraph_server("reviews", REVIEWS) as reviews:
        plan = make_plan(remote, products.url, reviews.url)
        said: list[str] = []
        report = federation.run_federation(plan, "staging", api=None, source_commit="abc1234", say=said.append,
                                           cache=tmp_path / "cache")
        assert report is not None and report["outcome"] == "success" and report["errors"] == []
        assert [s["name"] for s in report["subgraphs"]] == ["products", "reviews"]
        assert products.requests and reviews.requests  # each server was asked for its SDL
        g = report["gitops"]
        assert g["changed"] and g["commit"] and g["file"] == SUPERGRAPH
        assert git_out(remote, "rev-parse", "main").strip() == g["commit"]
        committed = git_out(remote, "show", f"main:{SUPERGRAPH}")
        # a real supergraph: both subgraphs joined, their types with join directives, routing URLs
        assert "@link(url: \"https://specs.apollo.dev/join/v0.3\"" in committed
        assert f'PRODUCTS @join__graph(name: "products", url: "{products.url}")' in committed
        assert f'REVIEWS @join__graph(name: "reviews", url: "{reviews.url}")' in committed
        assert '@join__type(graph: PRODUCTS, key: "id")' in committed
        assert '@join__type(graph: REVIEWS, key: "id")' in committed
        assert "type Review" in committed and "@join__field(graph: REVIEWS)" in committed
        assert git_out(remote, "log", "-1", "--format=%B", "main").strip() == \
            "federation(shop): staging supergraph\n\nsource: abc1234"
        # the same subgraphs again: the same supergraph, so no second commit
        again = federation.run_federation(plan, "staging", api=None, source_commit="def5678", say=said.append,
                                          cache=tmp_path / "cache")
        assert again is not None and again["gitops"]["changed"] is False and again["gitops"]["commit"] is None
        assert git_out(remote, "rev-parse", "main").strip() == g["commit"]
        assert any("supergraph unchanged (no commit)" in line for line in said)


def test_a_broken_composition_fails_with_every_error_and_commits_nothing(remote: Path, tmp_path: Path) -> None:
    before = git_out(remote, "rev-parse", "main")
    with subgraph_server("products", PRODUCTS) as products, \
            subgraph_server("reviews", REVIEWS_CONFLICTING) as reviews:
        plan = make_plan(remote, products.url, reviews.url)
        with pytest.raises(federation.FederationFailed) as info:
            federation.run_federation(plan, "staging", api=None, source_commit="abc1234", cache=tmp_path / "cache")
    err = info.value
    codes = {e["code"] for e in err.errors}
    assert {"FIELD_TYPE_MISMATCH", "INVALID_FIELD_SHARING"} <= codes, err.errors
    assert all(e["message"] for e in err.errors)
    assert "does not compose" in err.message and "FIELD_TYPE_MISMATCH: " in err.message
    assert '"Product.name"' in err.message and "nothing was committed" in (err.hint or "")
    assert git_out(remote, "rev-parse", "main") == before  # nothing committed
    assert err.exit_code == 1


def test_an_endpoint_that_does_not_answer_fails_naming_the_service(remote: Path, tmp_path: Path) -> None:
    from tests.ports import free_port

    dead = f"http://127.0.0.1:{free_port()}/graphql"
    with subgraph_server("products", PRODUCTS) as products:
        plan = make_plan(remote, products.url, dead)
        with pytest.raises(federation.FederationFailed) as info:
            federation.run_federation(plan, "staging", api=None, source_commit="abc1234", cache=tmp_path / "cache")
    assert f"cannot fetch the subgraph SDL of reviews from {dead}" in info.value.message
    assert "after 2 attempt(s)" in info.value.message  # retries: 1


def test_a_schema_file_subgraph_composes_with_a_fetched_one(remote: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "reviews").mkdir(parents=True)
    (src / "reviews" / "schema.graphql").write_text(REVIEWS)
    text = config_text(remote, "PRODUCTS", "REVIEWS").replace(
        '    graphql: {endpoint: "REVIEWS", retries: 1, timeout: 5}\n',
        '    graphql: {schema_file: reviews/schema.graphql, routing_url: "http://reviews.{environment}.svc/graphql"}\n')
    with subgraph_server("products", PRODUCTS) as products:
        plan = build_plan(parse_config(text.replace("PRODUCTS", products.url)))
        report = federation.run_federation(plan, "staging", api=None, source_commit="abc1234",
                                           cache=tmp_path / "cache", cwd=src)
    assert report is not None and report["outcome"] == "success"
    committed = git_out(remote, "show", f"main:{SUPERGRAPH}")
    assert 'REVIEWS @join__graph(name: "reviews", url: "http://reviews.staging.svc/graphql")' in committed


def test_dry_run_lists_the_federation_step_before_the_gate(remote: Path) -> None:
    plan = make_plan(remote, "http://products.{environment}.svc/graphql", "http://reviews.shop.svc/graphql")
    steps = release_steps(plan, list(plan.services), ["staging"], SourceRevision("aaaaaaa", "git"))
    names = [s.name for s in steps]
    assert names[-2:] == ["federation", "gate"]
    fed = steps[-2]
    assert fed.details["file"] == SUPERGRAPH
    assert fed.details["subgraphs"][0] == {"name": "products", "service": "products",
                                           "source": "http://products.staging.svc/graphql",
                                           "url": "http://products.staging.svc/graphql"}
    assert "compose the supergraph" in fed.summary


def test_plans_without_federation_are_unchanged(remote: Path) -> None:
    text = config_text(remote, "http://a/graphql", "http://b/graphql")
    plain = text.split("federation:")[0] + "environments:" + text.split("environments:")[1]
    plain = plain.replace('    graphql: {endpoint: "http://a/graphql"}\n', "    type: generic\n").replace(
        '    graphql: {endpoint: "http://b/graphql", retries: 1, timeout: 5}\n', "    type: generic\n")
    doc = build_plan(parse_config(plain)).to_json()
    assert '"federation"' not in doc and '"graphql"' not in doc
    assert '"federation"' in make_plan(remote, "http://a/graphql", "http://b/graphql").to_json()


@pytest.mark.parametrize(("graphql", "problem"), [
    ('{endpoint: "https://tok@api.example.com/graphql"}', "carries a user name or token"),
    ('{endpoint: "http://a/graphql", schema_file: a.graphql}', "exactly one of 'endpoint' or 'schema_file'"),
    ("{schema_file: a.graphql}", "needs 'routing_url'"),
    ('{endpoint: "http://a/{nope}"}', "nope"),
    ('{endpoint: "file:///etc/passwd"}', "is not an http:// or https:// URL"),
])
def test_bad_graphql_settings_are_refused_with_where(remote: Path, graphql: str, problem: str) -> None:
    text = config_text(remote, "http://a/graphql", "http://b/graphql").replace(
        '{endpoint: "http://a/graphql"}', graphql, 1)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert "services.products.graphql" in str(info.value) and problem in str(info.value)


def test_graphql_without_federation_and_federation_without_subgraphs_are_refused(remote: Path) -> None:
    text = config_text(remote, "http://a/graphql", "http://b/graphql")
    no_fed = text.replace('federation:\n  router_config_path: "clusters/{cluster}/router"\n', "")
    with pytest.raises(ConfigError, match="graphql needs a top-level 'federation' section"):
        parse_config(no_fed)
    no_sub = text.replace('    graphql: {endpoint: "http://a/graphql"}\n', "    type: generic\n").replace(
        '    graphql: {endpoint: "http://b/graphql", retries: 1, timeout: 5}\n', "    type: generic\n")
    with pytest.raises(ConfigError, match="nothing to compose"):
        parse_config(no_sub)


def test_a_hand_edited_plan_with_a_credential_in_an_endpoint_is_refused(remote: Path, tmp_path: Path) -> None:
    from forgegen.plan import load_plan

    doc = make_plan(remote, "http://a/graphql", "http://b/graphql").to_json()
    path = tmp_path / "plan.json"
    path.write_text(doc.replace("http://a/graphql", "http://user:s3cret@a/graphql"))
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert "products.graphql.endpoint" in str(info.value) and "s3cret" not in str(info.value)
