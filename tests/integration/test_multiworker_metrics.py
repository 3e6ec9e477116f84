"""``serve --workers 2`` with PROMETHEUS_MULTIPROC_DIR: /metrics counts every worker's requests.

The per-worker split is read straight from the multiprocess directory (one mmap file per
worker pid), so the test knows both workers handled requests; every scrape -- answered by
whichever worker the kernel hands the connection to -- must report the same totals.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ._server import e07500_files

pytestmark = pytest.mark.timeout(240)

N_HEALTH = 40
N_DIAGNOSE = 4
SCRAPES = 12


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def _per_worker_health(mp_dir: Path) -> dict[str, float]:
    """/healthz requests counted in each worker's own counter file."""
    out = {}
    for f in sorted(mp_dir.glob("counter_*.db")):
        pid = re.search(r"counter_(\d+)\.db", f.name).group(1)
        total = 0.0
        for metric in MultiProcessCollector.merge([str(f)], accumulate=True):
            for s in metric.samples:
                if s.name == "ecgfm_http_requests_total" and s.labels.get("endpoint") == "/healthz":
                    total += s.value
        out[pid] = total
    return out


def _wait_workers_started(server, n: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while server.log_tail(200000).count("Application startup complete") < n:
        assert server.proc.poll() is None, server.log_tail()
        assert time.monotonic() < deadline, f"{n} workers not started after {timeout} s:\n{server.log_tail()}"
        time.sleep(0.1)


@pytest.mark.parametrize("given_dir", [True, False], ids=["PROMETHEUS_MULTIPROC_DIR", "no-dir-given"])
def test_metrics_total_every_worker(servers, tmp_path, given_dir: bool) -> None:
    if given_dir:
        mp_dir = tmp_path / "prometheus-multiproc"
        mp_dir.mkdir()
        (mp_dir / "counter_999999.db").write_bytes(b"stale file of a previous run")  # serve must clear it
        server = servers.start("workers-2", workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
        _wait_workers_started(server, 2)
        assert not (mp_dir / "counter_999999.db").exists()
    else:
        # serve makes (and afterwards removes) a directory of its own and says so
        server = servers.start("workers-2-nodir", workers=2)
        _wait_workers_started(server, 2)
        found = re.search(r"PROMETHEUS_MULTIPROC_DIR is not set; using (\S+) for the 2 workers", server.log_tail(200000))
        assert found, server.log_tail()
        mp_dir = Path(found.group(1))
        assert mp_dir.is_dir()

    def health(_i: int) -> int:
        # a fresh connection per request, so the kernel may hand each one to either worker
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return c.get("/healthz").status_code

    def diagnose(_i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return c.post("/diagnose", files=e07500_files()).status_code

    with ThreadPoolExecutor(8) as pool:
        diag = [pool.submit(diagnose, i) for i in range(N_DIAGNOSE)]
        assert list(pool.map(health, range(N_HEALTH))) == [200] * N_HEALTH
        assert [f.result() for f in diag] == [200] * N_DIAGNOSE

    per_worker = _per_worker_health(mp_dir)
    print(f"\n/healthz requests per worker pid: {per_worker}")
    assert len(per_worker) == 2, per_worker  # one file per worker, none of the supervisor
    assert sum(per_worker.values()) == N_HEALTH
    assert all(v > 0 for v in per_worker.values()), f"one worker answered everything: {per_worker}"

    def scrape(_i: int) -> str:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.get("/metrics")
            assert r.status_code == 200
            return r.text

    with ThreadPoolExecutor(4) as pool:
        scrapes = [_samples(t) for t in pool.map(scrape, range(SCRAPES))]
    for s in scrapes:
        assert _value(s, "ecgfm_http_requests_total", endpoint="/healthz", status="200") == N_HEALTH
        assert _value(s, "ecgfm_http_requests_total", endpoint="/diagnose", status="200") == N_DIAGNOSE
        assert _value(s, "ecgfm_http_request_duration_seconds_count", endpoint="/diagnose") == N_DIAGNOSE
        assert _value(s, "ecgfm_stage_duration_seconds_count", stage="total") == N_DIAGNOSE
        assert _value(s, "ecgfm_request_ecgs_count") == N_DIAGNOSE
        assert _value(s, "ecgfm_ecgs_total", source_format="wfdb") == N_DIAGNOSE
        assert _value(s, "ecgfm_ready") == 1.0
        assert _value(s, "ecgfm_model_info", untrained="true") == 1.0
        assert _value(s, "ecgfm_batch_queue_depth") == 0.0
    assert all(s == scrapes[0] for s in scrapes), "scrapes differ although nothing happened between them"

    server.assert_clean_exit()
    if not given_dir:
        assert not mp_dir.exists(), "serve left its own metrics directory behind"
