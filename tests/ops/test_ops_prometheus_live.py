"""A real Prometheus scrapes the metrics endpoint; every dashboard query runs against it.

The scrape target comes from the ``scrape_target`` fixture (tests/ops/conftest.py): by
default an HTTP server in this process serving ``render_latest()``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest

from .conftest import PrometheusServer
from ._dashboard import dashboard_exprs, exposed_series, metric_names

pytestmark = pytest.mark.timeout(120)


def _total(result: list) -> float:
    return sum(float(r["value"][1]) for r in result)


@dataclass
class Scraped:
    prometheus: PrometheusServer
    round1_at: float = 0.0  # a time when the latest scrape holds exactly rounds <= 1
    round2_at: float = 0.0  # ... rounds <= 2

    def query(self, expr: str, at: float | None = None) -> dict:
        return self.prometheus.query(expr, at)


@pytest.fixture(scope="module")
def scraped(prometheus: PrometheusServer, scrape_target) -> Scraped:
    """Feed round 1, wait until it is scraped, feed round 2, wait again: every fed counter
    then increased between two samples (rate() > 0), and the difference of instant queries
    at ``round2_at`` and ``round1_at`` is exactly round 2, whatever else this process had
    recorded before."""
    scrape_target.feed(1)
    prometheus.wait_for('up{job="ecgfm-ked"} == 1', bool)
    if not scrape_target.fed_families:
        return Scraped(prometheus)
    # feed() sets the queue depth (5 x round) after every counter and histogram
    prometheus.wait_for("max(ecgfm_batch_queue_depth)", lambda r: bool(r) and _total(r) == 5)
    round1_at = time.time()
    time.sleep(0.01)
    scrape_target.feed(2)
    prometheus.wait_for("max(ecgfm_batch_queue_depth)", lambda r: bool(r) and _total(r) == 10)
    return Scraped(prometheus, round1_at, time.time())


def test_target_is_up_and_exposes_every_family(scraped, scrape_target) -> None:
    result = scraped.query('count by (__name__) ({__name__=~"ecgfm_.+"})')
    assert result["status"] == "success", result
    names = {r["metric"]["__name__"] for r in result["data"]["result"]}
    if scrape_target.fed_families:
        assert names == set(exposed_series()), set(exposed_series()) ^ names


def test_every_dashboard_query_runs(scraped, scrape_target) -> None:
    series = exposed_series()
    failures = []
    for title, expr in dashboard_exprs():
        answer = scraped.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{title}: {expr}: {answer}")
            continue
        families = {series[n][0] for n in metric_names(expr)}
        if not families <= scrape_target.fed_families:
            continue
        result = answer["data"]["result"]
        values = [float(r["value"][1]) for r in result]
        if not result:
            failures.append(f"{title}: {expr}: empty result")
        elif not any(math.isfinite(v) for v in values):
            failures.append(f"{title}: {expr}: no finite value in {values}")
    assert not failures, "\n".join(failures)


def test_query_values_match_what_was_recorded(scraped: Scraped, scrape_target) -> None:
    """Exact round-2 increments: instant value at round2_at minus value at round1_at."""
    if not scrape_target.fed_families:
        pytest.skip("external target: values unknown")

    def q(expr: str, at: float | None = None) -> list:
        answer = scraped.query(expr, at)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def grown(selector: str, label: str | None = None) -> dict[str, float]:
        """Round-2 increase of each series, summed by ``label``, zeros dropped."""
        def by_label(at: float) -> dict[str, float]:
            out: dict[str, float] = {}
            for r in q(selector, at):
                key = r["metric"].get(label, "") if label else ""
                out[key] = out.get(key, 0.0) + float(r["value"][1])
            return out

        before, after = by_label(scraped.round1_at), by_label(scraped.round2_at)
        diff = {k: v - before.get(k, 0.0) for k, v in after.items()}
        return {k: v for k, v in diff.items() if v != 0}

    # round 2 records 4 requests per endpoint
    requests = {
        (r["metric"]["endpoint"], r["metric"]["status"]): float(r["value"][1])
        for r in q(
            "ecgfm_http_requests_total - ecgfm_http_requests_total @ {:.3f}".format(scraped.round1_at),
            scraped.round2_at,
        )
        if float(r["value"][1]) > 0
    }
    assert requests == {("/diagnose", "200"): 4.0, ("/labels/{label_id}", "404"): 4.0}
    assert {
        r["metric"]["endpoint"]
        for r in q("sum by (endpoint) (rate(ecgfm_http_requests_total[5m])) > 0")
    } == {"/diagnose", "/labels/{label_id}"}
    stages = grown("ecgfm_stage_duration_seconds_count", "stage")
    assert stages == {"parse": 2.0, "preprocess": 1.0, "queue": 1.0, "inference": 1.0, "embed": 1.0, "total": 1.0}
    assert grown("ecgfm_stage_duration_seconds_sum", "stage")["inference"] == pytest.approx(1.6)
    # inference observed at 0.8 s and 1.6 s: p50 lies in the (0.5, 1] or (1, 2.5] bucket
    (p50,) = q('histogram_quantile(0.5, sum by (le) (rate(ecgfm_stage_duration_seconds_bucket{stage="inference"}[5m])))')
    assert 0.5 <= float(p50["value"][1]) <= 2.5
    assert grown("ecgfm_embedding_cache_total", "result") == {"hit": 6.0, "miss": 1.0}
    assert grown("ecgfm_ecgs_total", "source_format") == {"wfdb": 2.0, "dicom": 1.0}
    assert grown("ecgfm_errors_total", "code") == {"not_found": 1.0, "malformed_file": 1.0}
    assert grown("ecgfm_inference_batch_size_count") == {"": 3.0}
    assert grown("ecgfm_inference_batch_size_sum") == {"": 41.0}
    assert grown('ecgfm_inference_batch_size_bucket{le="8.0"}') == {"": 2.0}
    assert grown("ecgfm_inference_calls_total", "cores") == {"all": 1.0, "shared": 2.0}
    assert grown('ecgfm_label_count_bucket{le="26.0"}') == {"": 1.0}
    assert grown("ecgfm_request_ecgs_count") == {"": 1.0}

    (info,) = q("ecgfm_model_info == 1")
    labels = info["metric"]
    assert (labels["model_version"], labels["provider"], labels["untrained"]) == (
        "test-1", "CPUExecutionProvider", "true",
    )
    (ready,) = q("max(ecgfm_ready)")
    assert float(ready["value"][1]) == 1.0


def test_a_wrong_expression_is_reported(scraped) -> None:
    """The harness itself can fail: Prometheus rejects bad PromQL with status error."""
    answer = scraped.query("sum by (le (rate(ecgfm_label_count_bucket[5m]))")
    assert answer["status"] == "error"
