"""Bounded work overall, on real ``ecgfm-ked serve`` processes over real HTTP.

* a flood past ``ECGFM_MAX_QUEUED_ECGS`` gets 503 ``overloaded`` with ``Retry-After``, the rest
  200, nothing else; every refusal is counted (``ecgfm_diagnose_shed_total{reason="rejected"}``);
* a request not scored within ``ECGFM_REQUEST_DEADLINE_S`` gets 503 ``deadline_exceeded`` and the
  model never runs for it;
* a client that disconnects while its request waits for the model is not scored (``abandoned``);
* SIGTERM lets a request in flight finish (200), refuses new connections, and exits cleanly;
  a request that cannot finish is cut off after ``ECGFM_SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import time
import uuid

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._server import Server, e07500_files

pytestmark = pytest.mark.timeout(240)


def _metric(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _assert_503(r: httpx.Response, code: str, retry_after: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers.get("retry-after") == retry_after, dict(r.headers)
    body = r.json()
    assert body["error"]["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]
    assert "/" not in body["error"]["message"].replace("retry later", ""), body  # no server paths


async def _flood(url: str, n: int, files) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return list(await asyncio.gather(*(client.post("/diagnose", files=files) for _ in range(n))))


def test_flood_past_the_queue_bound_gets_503_with_retry_after(servers) -> None:
    server = servers.start("flood", env={"ECGFM_MAX_QUEUED_ECGS": "2", "ECGFM_RETRY_AFTER_S": "3"})
    files = e07500_files()
    with server.client() as c:  # warm up: the label vectors are computed once
        assert c.post("/diagnose", files=files).status_code == 200
    statuses: dict[int, int] = {}
    refused: list[httpx.Response] = []
    for _ in range(5):  # a round with no overlap at all cannot happen 5 times at 48 at once, but be sure
        responses = asyncio.run(_flood(server.url, 48, files))
        for r in responses:
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 503:
                refused.append(r)
        if refused:
            break
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.get(200, 0) >= 2 and refused, statuses
    for r in refused:
        _assert_503(r, "overloaded", "3")
    assert refused[0].json()["error"]["details"]["limit"] == 2
    assert _metric(server, "ecgfm_diagnose_shed_total", reason="rejected") == len(refused)
    assert _metric(server, "ecgfm_errors_total", code="overloaded") == len(refused)
    assert _metric(server, "ecgfm_admitted_ecgs") == 0  # every admission was released
    with server.client() as c:  # still healthy and serving
        assert c.get("/healthz").status_code == 200
        assert c.post("/diagnose", files=files).status_code == 200
    server.assert_clean_exit()


def test_request_past_its_deadline_is_answered_503_and_never_scored(servers) -> None:
    server = servers.start("deadline", env={"ECGFM_REQUEST_DEADLINE_S": "0.001", "ECGFM_RETRY_AFTER_S": "5"})
    calls_before = _metric(server, "ecgfm_inference_calls_total")
    with server.client() as c:
        for _ in range(3):
            _assert_503(c.post("/diagnose", files=e07500_files()), "deadline_exceeded", "5")
        assert c.get("/healthz").status_code == 200
    assert _metric(server, "ecgfm_diagnose_shed_total", reason="expired") == 3
    assert _metric(server, "ecgfm_inference_calls_total") == calls_before  # the model never ran
    assert _metric(server, "ecgfm_ecgs_total") == 0
    server.assert_clean_exit()


def _npy(seconds: float, fs: int = 100) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.save(buf, (rng.standard_normal((12, int(seconds * fs))) * 0.1).astype(np.float32))
    return buf.getvalue()


def _multipart(files: list[tuple[str, bytes]], query: str = "") -> tuple[bytes, bytes]:
    """(request head, body) of a POST /diagnose multipart upload, for raw sockets."""
    boundary = uuid.uuid4().hex
    parts = b""
    for name, data in files:
        parts += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body = parts + f"--{boundary}--\r\n".encode()
    head = (f"POST /diagnose{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def _read_response(sock: socket.socket, timeout: float = 60.0) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


def _wait_for(check, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


LONG_ECGS = 6  # 600 s records at 100 Hz: 60 windows each, one model call each (batch size 1)


def test_client_that_disconnects_while_queued_is_not_scored(servers) -> None:
    # one lane, one thread: a long record keeps the model busy while small requests queue behind it
    server = servers.start("disconnect", env={"ECGFM_INFERENCE_LANES": "1", "ECGFM_INTRA_OP_THREADS": "1",
                                              "ECGFM_MAX_BATCH_SIZE": "1", "ECGFM_MAX_QUEUED_ECGS": "1000",
                                              "ECGFM_REQUEST_DEADLINE_S": "300"})
    with server.client() as c:
        assert c.post("/diagnose", files=e07500_files()).status_code == 200
    windows_before = _metric(server, "ecgfm_inference_batch_size_sum")
    prepared_before = _metric(server, "ecgfm_stage_duration_seconds_count", stage="preprocess")
    blocker_head, blocker_body = _multipart(
        [(f"long{i}.npy", _npy(600)) for i in range(LONG_ECGS)], "?sampling_rate=100&units=mV")
    small_head, small_body = _multipart([(name, data) for _, (name, data, _) in e07500_files()])
    blocker = socket.create_connection(("127.0.0.1", server.port))
    gone: list[socket.socket] = []
    try:
        blocker.sendall(blocker_head + blocker_body)
        # the blocker has reached the model (its 4 ECGs are admitted and some windows are scored)
        _wait_for(lambda: _metric(server, "ecgfm_inference_batch_size_sum") > windows_before,
                  what="the long request to reach the model")
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(small_head + small_body)
            gone.append(s)
        # all 5 preprocessed, hence submitted to the model's queue right after, behind the long record
        _wait_for(lambda: _metric(server, "ecgfm_stage_duration_seconds_count", stage="preprocess")
                  >= prepared_before + 6, what="the small requests to reach the model's queue")
        time.sleep(0.1)
        queued = _metric(server, "ecgfm_batch_queue_depth")
        for s in gone:
            s.shutdown(socket.SHUT_RDWR)
            s.close()
        status, _ = _read_response(blocker, timeout=120)
        assert status == 200
    finally:
        blocker.close()
    _wait_for(lambda: _metric(server, "ecgfm_admitted_ecgs") == 0, what="every admission released")
    abandoned = _metric(server, "ecgfm_diagnose_shed_total", reason="abandoned")
    assert queued >= 5, "the small requests were not queued behind the long one: the test proves nothing"
    assert abandoned == 5
    # only the long records' windows (60 each) were scored: none of the 5 small requests' (1 each)
    assert _metric(server, "ecgfm_inference_batch_size_sum") - windows_before == LONG_ECGS * 60
    assert _metric(server, "ecgfm_http_requests_total", endpoint="/diagnose", status="200") == 2
    server.assert_clean_exit()


def test_sigterm_drains_the_request_in_flight_and_refuses_new_ones(servers) -> None:
    server = servers.start("sigterm", env={"ECGFM_SHUTDOWN_GRACE_S": "20"})
    head, body = _multipart([(name, data) for _, (name, data, _) in e07500_files()])
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(head + body[: len(body) // 2])  # in flight: the route is reading its body
        _wait_for(lambda: _metric(server, "ecgfm_admitted_ecgs") == 1, what="the request to be admitted")
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None, "exited with a request in flight"
        with pytest.raises(httpx.TransportError):  # no new connections while draining
            httpx.get(f"{server.url}/healthz", timeout=2)
        sock.sendall(body[len(body) // 2:])
        status, payload = _read_response(sock)
        assert status == 200, payload[:500]
        assert b'"diagnoses"' in payload
    finally:
        sock.close()
    server.proc.wait(timeout=20)
    server.assert_clean_exit()


def test_sigterm_cuts_off_a_request_that_outlives_the_grace_period(servers) -> None:
    server = servers.start("grace", env={"ECGFM_SHUTDOWN_GRACE_S": "1"})
    head, body = _multipart([(name, data) for _, (name, data, _) in e07500_files()])
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(head + body[:100])  # a stalled upload: it will never finish by itself
        _wait_for(lambda: _metric(server, "ecgfm_admitted_ecgs") == 1, what="the request to be admitted")
        t = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=15)
        assert time.monotonic() - t < 10, "shutdown was not bounded by the grace period"
    finally:
        sock.close()
    log = server.log_tail(50000)
    assert "timeout graceful shutdown exceeded" in log, log[-3000:]
    assert "Application shutdown complete" in log, log[-3000:]


def test_draining_service_answers_503_shutting_down(bundle_dir, tmp_path) -> None:
    """The flag a shutdown signal sets (app.api.server.on_shutdown_signal): new work is refused."""
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.ops.settings import Settings

    settings = Settings(bundle_dir=bundle_dir, data_dir=tmp_path / "data", provider="cpu", retry_after_s=4, auth="disabled")
    with TestClient(create_app(settings)) as client:
        assert client.post("/diagnose", files=e07500_files()).status_code == 200
        client.app.state.service.diagnose.start_draining()  # what the SIGTERM handler does
        r = client.post("/diagnose", files=e07500_files())
        assert r.status_code == 503 and r.headers["retry-after"] == "4"
        assert r.json()["error"]["code"] == "shutting_down"
        assert client.get("/healthz").status_code == 200
