"""A real Prometheus scrapes the real running service; every Grafana dashboard query runs.

Reuses the tests/ops harness: its ``prometheus`` fixture (a Prometheus binary on a free
127.0.0.1 port, 1 s scrape interval) scrapes whatever ``scrape_target`` returns, which here
is a real ``ecgfm-ked serve`` process fed through real /diagnose calls.
"""

from __future__ import annotations

import math

import httpx
import pytest

from tests.ops._dashboard import dashboard_exprs
from tests.ops.conftest import PrometheusServer, ScrapeTarget, prometheus, prometheus_bin  # noqa: F401 (fixtures)

from ._server import e07500_files

pytestmark = pytest.mark.timeout(240)

DIAGNOSE_PER_ROUND = 3


@pytest.fixture(scope="module")
def service(servers):
    return servers.start("prometheus-target")


@pytest.fixture(scope="module")
def scrape_target(service) -> ScrapeTarget:
    def feed(round_no: int) -> None:
        # the /diagnose calls come last: once a scrape holds all of them, it holds the rest
        with service.client() as c:
            assert c.get("/labels/987654").status_code == 404  # an error, by code
            assert c.get("/label-sets/default").status_code == 200
            for _ in range(DIAGNOSE_PER_ROUND):
                r = c.post("/diagnose", params={"top_k": 3}, files=e07500_files())
                assert r.status_code == 200, r.text

    return ScrapeTarget(url=f"{service.url}/metrics", feed=feed)


def _count(prom: PrometheusServer, expr: str) -> float:
    answer = prom.query(expr)
    assert answer["status"] == "success", answer
    return sum(float(r["value"][1]) for r in answer["data"]["result"])


@pytest.fixture(scope="module")
def scraped(prometheus: PrometheusServer, scrape_target: ScrapeTarget) -> PrometheusServer:  # noqa: F811
    """Two rounds of traffic, each seen by a scrape, so every rate() has an increase."""
    prometheus.wait_for('up{job="ecgfm-ked"} == 1', bool, timeout=30)
    for round_no in (1, 2):
        scrape_target.feed(round_no)
        prometheus.wait_for(
            # the HTTP counter is the last thing a request records (middleware, after the route)
            'sum(ecgfm_http_requests_total{endpoint="/diagnose"})',
            lambda r, n=round_no: bool(r) and float(r[0]["value"][1]) == n * DIAGNOSE_PER_ROUND,
            timeout=30,
        )
    return prometheus


def test_every_dashboard_query_succeeds(scraped: PrometheusServer) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    failures, empty = [], []
    for title, expr in exprs:
        answer = scraped.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{title}: {expr}: {answer}")
        elif not answer["data"]["result"]:
            empty.append(f"{title}: {expr}")
    assert not failures, "\n".join(failures)
    # every panel has data after real traffic (errors come from the 404s above)
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_stage_latency_and_request_rate_have_data(scraped: PrometheusServer) -> None:
    stage_exprs = [e for t, e in dashboard_exprs() if t.startswith("Stage latency")]
    assert len(stage_exprs) == 3
    for expr in stage_exprs:
        answer = scraped.query(expr)
        assert answer["status"] == "success", answer
        by_stage = {r["metric"]["stage"]: float(r["value"][1]) for r in answer["data"]["result"]}
        assert set(by_stage) == {"parse", "preprocess", "queue", "inference", "embed", "total"}, by_stage
        for stage, seconds in by_stage.items():
            assert math.isfinite(seconds) and 0 < seconds < 30, (expr, stage, seconds)

    (rate_expr,) = [e for t, e in dashboard_exprs() if t.startswith("Request rate")]
    answer = scraped.query(rate_expr)
    assert answer["status"] == "success", answer
    rates = {(r["metric"]["endpoint"], r["metric"]["method"], r["metric"]["status"]): float(r["value"][1])
             for r in answer["data"]["result"]}
    assert rates[("/diagnose", "POST", "200")] > 0, rates
    assert rates[("/labels/{label_id}", "GET", "404")] > 0, rates
    assert not any(ep == "/metrics" for ep, _, _ in rates), "scrapes must not count as traffic"
    assert not any("987654" in ep for ep, _, _ in rates), "endpoint label must be the route template"

    # the counts behind the rates are exact
    assert _count(scraped, 'sum(ecgfm_http_requests_total{endpoint="/diagnose",status="200"})') == 2 * DIAGNOSE_PER_ROUND
    assert _count(scraped, 'sum(ecgfm_errors_total{code="not_found"})') == 2


def test_model_and_readiness_series(scraped: PrometheusServer, service) -> None:
    manifest = httpx.get(f"{service.url}/model", timeout=10).json()["manifest"]
    answer = scraped.query("ecgfm_model_info == 1")
    assert answer["status"] == "success", answer
    (info,) = answer["data"]["result"]
    assert info["metric"]["model_version"] == manifest["model_version"]
    assert info["metric"]["untrained"] == "true"
    assert info["metric"]["provider"] == "CPUExecutionProvider"
    assert _count(scraped, "max(ecgfm_ready)") == 1.0
