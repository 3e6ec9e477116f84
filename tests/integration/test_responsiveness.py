"""While /diagnose saturates the server, /healthz and /metrics still answer fast.

16 concurrent /diagnose loops (a separate process) keep the model busy; meanwhile this
process probes /healthz and /metrics 20 times each. The p95 of each must be under 50 ms:
inference, parsing and preprocessing run off the event loop, so nothing should block it.

The test machine is shared (2 cores, other jobs): a probing window in which the p95 misses
the bound is followed by another (three at most), and the test fails only if all of them
miss it. A blocked event loop misses it in every window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._server import REPO, clean_env, e07500_files

pytestmark = pytest.mark.timeout(180)

CONCURRENCY = 16
PROBES = 20
LIMIT_S = 0.050
WINDOWS = 3
MAX_LOAD_S = 40.0  # the load process stops itself after this, whatever happens


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def _queue_depth(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "ecgfm_batch_queue_depth":
            return sum(s.value for s in family.samples)
    raise AssertionError("no ecgfm_batch_queue_depth in /metrics")


@dataclass
class Window:
    start: float
    end: float
    health: list[float]
    scrape: list[float]
    depths: list[float]

    def ok(self) -> bool:
        return _p95(self.health) < LIMIT_S and _p95(self.scrape) < LIMIT_S

    def describe(self) -> str:
        def ms(values: list[float]) -> str:
            o = sorted(values)
            return f"p50 {o[len(o) // 2] * 1000:.1f} ms, p95 {_p95(o) * 1000:.1f} ms, max {o[-1] * 1000:.1f} ms"

        return (f"  /healthz {ms(self.health)}\n  /metrics {ms(self.scrape)}\n"
                f"  batch queue depth seen: max {max(self.depths):.0f}")


def _probe(client: httpx.Client) -> Window:
    health, scrape, depths = [], [], []
    start = time.time()
    for _ in range(PROBES):
        t = time.perf_counter()
        r = client.get("/healthz")
        health.append(time.perf_counter() - t)
        assert r.status_code == 200
        time.sleep(0.1)
        t = time.perf_counter()
        r = client.get("/metrics")
        scrape.append(time.perf_counter() - t)
        assert r.status_code == 200
        depths.append(_queue_depth(r.text))
        time.sleep(0.1)
    return Window(start, time.time(), health, scrape, depths)


def test_health_and_metrics_stay_fast_under_load(servers, tmp_path) -> None:
    server = servers.start("responsiveness")
    with server.client() as c:  # warm up: the first diagnose computes and caches the label vectors
        assert c.post("/diagnose", files=e07500_files()).status_code == 200

    stop = tmp_path / "stop-load"
    load = subprocess.Popen(
        [sys.executable, "-m", "tests.integration._load", server.url, str(MAX_LOAD_S), str(CONCURRENCY), str(stop)],
        cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    windows: list[Window] = []
    try:
        time.sleep(2.0)  # let the 16 loops fill the queue
        with httpx.Client(base_url=server.url, timeout=10) as probe:
            probe.get("/healthz")  # open the keep-alive connection outside the measurement
            while len(windows) < WINDOWS:
                windows.append(_probe(probe))
                if windows[-1].ok():
                    break
        stop.touch()
        out, err = load.communicate(timeout=120)
    finally:
        stop.touch()
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)
    assert load.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert not result["errors"], result["errors"][:5]
    assert set(result["statuses"]) == {"200"}, result["statuses"]
    latencies = sorted(e - s for s, e in result["done"])

    lines = [f"\nunder {CONCURRENCY} concurrent /diagnose loops (diagnose p50 "
             f"{latencies[len(latencies) // 2] * 1000:.0f} ms):"]
    for i, w in enumerate(windows, start=1):
        completed = [d for d in result["done"] if w.start <= d[1] <= w.end]
        lines.append(f" window {i}: {len(completed)} /diagnose completed in {w.end - w.start:.1f} s "
                     f"({len(completed) / (w.end - w.start):.1f}/s)\n{w.describe()}")
        # the server really was saturated while we probed
        in_flight = [d for d in result["done"] if d[0] < w.end and d[1] > w.start]
        assert len(in_flight) >= CONCURRENCY and len(completed) >= 2, "\n".join(lines)
        assert max(w.depths) > 0, "the batch queue was never seen non-empty: not saturated?\n" + "\n".join(lines)
    report = "\n".join(lines)
    print(report)
    assert windows[-1].ok(), f"p95 over {LIMIT_S * 1000:.0f} ms in {len(windows)} windows:{report}"
