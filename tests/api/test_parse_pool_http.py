"""POST /diagnose with uploads read in the parse pool (app/ecg/parse_pool.py), through the real app.

Real apps (lifespan, ONNX sessions, database, the pool's worker processes) on the small bundle;
real files: the records of tests/data/ecg, and valid records that are slow (a CSV) or large (WFDB)
written into the test's folder. A worker is really killed (SIGKILL to its pid) in the middle of
a request; the deadline and the memory budget really stop the worker. Each time the request
gets a 4xx with the error body, the server stays healthy, and the next upload is scored.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.ecg.parse_pool import ParsePool, ParsePoolOptions
from tests.fixtures.large_records import process_gone, wait_for, write_csv, write_wfdb

from .conftest import MakeSettings
from .helpers import assert_error, record_files, sample_value, upload

MiB = 1 << 20
SLOW_CSV_ROWS = 60_000  # a valid 12-lead CSV that takes 1.5-4 s to read (see tests/ecg/test_parse_pool.py)


@pytest.fixture
def e07500_upload() -> list[tuple[str, tuple[str, bytes, str]]]:
    return upload(*record_files("E07500"))


@pytest.fixture
def slow_csv_upload(tmp_path: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return upload(write_csv(tmp_path / "slow.csv", SLOW_CSV_ROWS))


def _scored(client: TestClient, files: Any) -> None:
    resp = client.post("/diagnose", files=files)
    assert resp.status_code == 200, resp.text[:500]
    assert resp.json()["results"][0]["source"]["format"] == "wfdb"


def _pool(client: TestClient) -> ParsePool:
    pool = client.app.state.service.parse_pool  # type: ignore[attr-defined]
    assert isinstance(pool, ParsePool)
    return pool


def _failures(client: TestClient, reason: str) -> float:
    return sample_value(client.get("/metrics").text, "ecgfm_parse_failures_total", reason=reason)


def _post_in_background(client: TestClient, files: Any, **params: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["response"] = client.post("/diagnose", files=files, params=params)
        out["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_file_past_the_deadline_gets_413_and_the_next_is_scored(app_settings: MakeSettings, slow_csv_upload,
                                                                   e07500_upload, upload_tmp) -> None:
    with TestClient(create_app(app_settings(parse_timeout_s=0.3, parse_workers=1))) as client:
        before = _failures(client, "timeout")
        resp = client.post("/diagnose", files=slow_csv_upload, params={"sampling_rate": 500})
        err = assert_error(resp, 413, "upload_too_large")
        assert err["details"] == {"limit": "parse_timeout_s", "value": 0.3, "file": "slow.csv"}
        assert "ECGFM_PARSE_TIMEOUT_S" in err["message"]
        assert _failures(client, "timeout") == before + 1
        assert client.get("/healthz").status_code == 200
        _scored(client, e07500_upload)


def test_a_record_over_the_memory_budget_gets_413_naming_it(app_settings: MakeSettings, tmp_path: Path,
                                                            e07500_upload, upload_tmp) -> None:
    """A valid WFDB record of 12 x 1,000,000 samples (500 s at 2 kHz: 24 MB uploaded, 96 MB as
    float64) against a budget of the workers' baseline + 32 MiB."""
    with ParsePool(ParsePoolOptions(workers=1)) as probe:
        baseline_mb = probe.baseline_bytes() // MiB + 1
    budget_mb = baseline_mb + 32
    big = upload(*write_wfdb(tmp_path / "big", "long", 1_000_000, 2000.0))
    with TestClient(create_app(app_settings(parse_memory_mb=budget_mb, parse_workers=1))) as client:
        before = _failures(client, "memory")
        resp = client.post("/diagnose", files=big)
        err = assert_error(resp, 413, "upload_too_large")
        assert err["details"] == {"limit": "parse_memory_mb", "value": budget_mb, "file": "long.hea"}
        assert f"ECGFM_PARSE_MEMORY_MB = {budget_mb} MB" in err["message"]
        assert _failures(client, "memory") == before + 1
        _scored(client, e07500_upload)


def test_a_worker_killed_mid_request_gets_422_and_the_pool_recovers(app_settings: MakeSettings, slow_csv_upload,
                                                                    e07500_upload, upload_tmp) -> None:
    with TestClient(create_app(app_settings())) as client:
        pool = _pool(client)
        assert len(pool.worker_pids()) == 2  # started with the app, before the first request
        before = _failures(client, "crashed")
        thread, out = _post_in_background(client, slow_csv_upload, sampling_rate=500)
        wait_for(lambda: pool.busy_pids())
        (victim,) = pool.busy_pids()
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        thread.join(60)
        err = assert_error(out["response"], 422, "malformed_file")
        assert "the reader process ended (killed by SIGKILL)" in err["message"]
        assert err["details"]["file"] == "slow.csv"
        assert _failures(client, "crashed") == before + 1
        assert client.get("/healthz").status_code == 200
        for _ in range(3):
            _scored(client, e07500_upload)
        pids = pool.worker_pids()
        assert len(pids) == 2 and victim not in pids


def test_an_upload_is_scored_while_another_holds_a_worker(app_settings: MakeSettings, slow_csv_upload,
                                                         e07500_upload, upload_tmp) -> None:
    with TestClient(create_app(app_settings(parse_workers=2))) as client:
        pool = _pool(client)
        _scored(client, e07500_upload)  # warm: label vectors, the first batch
        thread, slow = _post_in_background(client, slow_csv_upload, sampling_rate=500)
        wait_for(lambda: pool.busy_pids())
        started = time.monotonic()
        _scored(client, e07500_upload)
        answered = time.monotonic()
        assert "ended" not in slow, "the slow upload finished first: the test proves nothing (make it larger)"
        assert answered - started < 5.0
        thread.join(60)
        assert slow["response"].status_code == 200, slow["response"].text[:300]


def test_shutdown_leaves_no_worker_process(app_settings: MakeSettings, e07500_upload, upload_tmp) -> None:
    with TestClient(create_app(app_settings())) as client:
        _scored(client, e07500_upload)
        pids = _pool(client).worker_pids()
        assert len(pids) == 2
    assert all(process_gone(pid) for pid in pids), "parse workers outlived the app"


def test_parse_workers_0_reads_in_the_server(app_settings: MakeSettings, e07500_upload, upload_tmp) -> None:
    with TestClient(create_app(app_settings(parse_workers=0))) as client:
        assert client.app.state.service.parse_pool is None  # type: ignore[attr-defined]
        _scored(client, e07500_upload)
