"""Fixtures for the operations tests: a scrape target and a real Prometheus server.

The Prometheus tests scrape whatever the ``scrape_target`` fixture returns. By default it is
a small HTTP server on 127.0.0.1 that serves ``app.ops.metrics.render_latest()`` of this
test process, fed through the public recording functions. To point the same tests at a
running service instead, set ``ECGFM_OPS_SCRAPE_URL=http://127.0.0.1:8000/metrics`` (then
nothing is fed and only query validity is checked), or override ``scrape_target`` in a
conftest closer to the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "ecgfm-ked.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ScrapeTarget:
    """Where Prometheus scrapes, and how to make the target record observations."""

    url: str                                   # http://host:port/path
    feed: Callable[[int], None] = lambda round_no: None   # record observations (round 1, 2, ...)
    fed_families: frozenset[str] = field(default_factory=frozenset)  # families feed() populates

    @property
    def address(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    @property
    def metrics_path(self) -> str:
        return urllib.parse.urlsplit(self.url).path or "/metrics"


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        from app.ops.metrics import render_latest

        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body, content_type = render_latest()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


def feed_all_metrics(round_no: int) -> None:
    """Record observations for every metric through the public functions only."""
    from app.ops import metrics as m

    for _ in range(round_no + 2):
        m.record_http_request("/diagnose", "POST", 200, 0.35)
        m.record_http_request("/labels/{label_id}", "GET", 404, 0.004)
    m.record_error("not_found")
    m.record_error("malformed_file")
    for stage, seconds in zip(m.STAGES, (0.004, 0.02, 0.003, 0.8, 0.05, 1.2), strict=True):
        m.observe_stage(stage, seconds * round_no)
    with m.time_stage("parse"):
        time.sleep(0.002)
    for size, alone in ((1, True), (8, False), (32, False)):
        m.observe_inference_batch(size, alone=alone)
    m.observe_request_ecgs(3)
    m.observe_label_count(26)
    m.observe_label_count(71)
    m.record_embedding_cache(hits=3 * round_no, misses=1)
    m.record_ecgs("wfdb", 2)
    m.record_ecgs("dicom")
    m.set_queue_depth(5 * round_no)
    m.record_parse_failure("timeout")
    m.set_parse_workers_busy(1)
    m.set_model_info(
        model_name="ecgfm-ked",
        model_version="test-1",
        provider="CPUExecutionProvider",
        precision="fp32",
        untrained=True,
    )
    m.set_ready(True)


@pytest.fixture(scope="module")
def scrape_target() -> Iterator[ScrapeTarget]:
    external = os.environ.get("ECGFM_OPS_SCRAPE_URL")
    if external:
        yield ScrapeTarget(url=external)
        return
    from app.ops import metrics

    server = ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    try:
        yield ScrapeTarget(
            url=f"http://127.0.0.1:{server.server_address[1]}/metrics",
            feed=feed_all_metrics,
            fed_families=metrics.METRIC_NAMES,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip(
            "prometheus binary not found; install it with "
            "`apt-get update && apt-get install -y --no-install-recommends prometheus`"
        )
    return path


@dataclass
class PrometheusServer:
    base_url: str
    log_path: Path

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a JSON error body
            return json.load(exc)

    def query(self, expr: str, at: float | None = None) -> dict:
        """Instant query at unix time ``at`` (default now)."""
        return self.api("/api/v1/query", query=expr, time=f"{time.time() if at is None else at:.3f}")

    def wait_for(self, expr: str, predicate: Callable[[list], bool], timeout: float = 20.0) -> list:
        """Poll an instant query until predicate(result) holds; fail after timeout."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            last = self.query(expr)
            if last.get("status") == "success" and predicate(last["data"]["result"]):
                return last["data"]["result"]
            time.sleep(0.25)
        targets = self.api("/api/v1/targets")
        pytest.fail(
            f"timed out after {timeout}s waiting for {expr!r}; last answer {last}; "
            f"targets {json.dumps(targets)[:2000]}; log tail {self.log_tail()}"
        )

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture(scope="module")
def prometheus(
    prometheus_bin: str, scrape_target: ScrapeTarget, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A real Prometheus on a free 127.0.0.1 port scraping ``scrape_target`` every second."""
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: ecgfm-ked\n"
        f"    metrics_path: {scrape_target.metrics_path}\n"
        "    static_configs:\n"
        f"      - targets: [\"{scrape_target.address}\"]\n"
    )
    port = free_port()
    log_path = work / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
            start_new_session=True,
        )
    server = PrometheusServer(base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}: {server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready after 30 s: {server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
