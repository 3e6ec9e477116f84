"""The request body guard on a real ``ecgfm-ked serve`` (uvicorn) over raw sockets: a chunked
body past the limit is answered 413 while the client is still sending (the server neither reads
nor writes the rest), a stalled body gets 408, and a client that leaves mid-body is no 500."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import sample_value
from tests.integration._server import Server, ServerFactory

LIMIT_MB = 1
LIMIT_BYTES = LIMIT_MB * 1024 * 1024
TIMEOUT_S = 2
CHUNK = b"0.1,0.2,0.3,0.4\n" * 4096  # 64 KiB
MAX_SENT = 64 * LIMIT_BYTES  # the test's own bound: a server that read on would take the whole 1 GB


@pytest.fixture(scope="module")
def server(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    workdir = tmp_path_factory.mktemp("edges-server")
    tmp = workdir / "tmp"
    tmp.mkdir()
    factory = ServerFactory(small_bundle, workdir)
    try:
        s = factory.start("edges", env={"ECGFM_MAX_REQUEST_MB": str(LIMIT_MB),
                                        "ECGFM_BODY_READ_TIMEOUT_S": str(TIMEOUT_S), "TMPDIR": str(tmp)})
        yield s, tmp
    finally:
        factory.close()


def _head(path: str, content_type: str, extra: str = "Transfer-Encoding: chunked\r\n") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}\r\n").encode()


def _response(sock: socket.socket, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer (read until the server closes or the body is complete)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _send_until_answered(sock: socket.socket, first: bytes, chunk: bytes) -> int:
    """Send ``first`` then chunked-encoded ``chunk`` again and again until the server answers;
    returns the bytes of body sent."""
    sock.sendall(first)
    sent = 0
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    while sent < MAX_SENT:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return sent
        try:
            sock.sendall(framed)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(chunk)
    raise AssertionError(f"no answer after {sent} bytes: the body limit is not enforced while streaming")


def _error(body: bytes) -> dict:
    parsed = json.loads(body)
    assert set(parsed) == {"error", "request_id"}
    return parsed["error"]


def test_chunked_multipart_past_the_limit_is_refused_while_streaming(server: tuple[Server, Path]) -> None:
    srv, tmp = server
    boundary = "edge"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.csv\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    present = set(tmp.iterdir())  # the server's own start-up files
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        first = _head("/diagnose", f"multipart/form-data; boundary={boundary}")
        first += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        sent = _send_until_answered(sock, first, CHUNK)
        status, headers, body = _response(sock)
    assert status == 413, body[:300]
    assert _error(body)["code"] == "upload_too_large"
    assert headers.get("connection") == "close"
    assert sent < 16 * LIMIT_BYTES, sent  # answered near the limit (socket buffers hold a few MB), not at the end
    assert set(tmp.iterdir()) == present, "the refused upload left files behind"


def test_chunked_json_past_the_limit_is_refused_while_streaming(server: tuple[Server, Path]) -> None:
    srv, _tmp = server
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        first = _head("/diagnose", "application/json") + b"7\r\n{\"ecgs\"\r\n"
        sent = _send_until_answered(sock, first, b" " * 65536)
        status, _headers, body = _response(sock)
    assert status == 413, body[:300]
    assert _error(body)["code"] == "upload_too_large"
    assert sent < 16 * LIMIT_BYTES, sent


def test_a_stalled_body_times_out_with_408(server: tuple[Server, Path]) -> None:
    srv, _tmp = server
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        started = time.monotonic()
        sock.sendall(_head("/labels", "application/json", "Content-Length: 1000\r\n") + b'{"name": "st')
        status, headers, body = _response(sock, timeout=TIMEOUT_S + 30)
        waited = time.monotonic() - started
    assert status == 408, body[:300]
    err = _error(body)
    assert err["code"] == "request_timeout" and f"{TIMEOUT_S} s" in err["message"]
    assert headers.get("connection") == "close"
    assert TIMEOUT_S - 0.5 <= waited < TIMEOUT_S + 20


def test_a_client_leaving_mid_body_is_no_server_error(server: tuple[Server, Path]) -> None:
    srv, _tmp = server
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        before = c.get("/metrics").text
        part = (b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.csv"\r\n\r\n'
                + b"0.1,0.2\n" * 100)
        for path, content_type, start in (("/diagnose", "application/json", b"{" * 1000),
                                          ("/labels", "application/json", b"{" * 1000),
                                          ("/diagnose", "multipart/form-data; boundary=x", part)):
            with socket.create_connection(("127.0.0.1", srv.port)) as sock:
                sock.sendall(_head(path, content_type, "Content-Length: 100000\r\n") + start)
                time.sleep(0.3)
        deadline = time.monotonic() + 20
        while True:  # the server notes each request once it has seen the disconnect
            after = c.get("/metrics").text
            gone = (sample_value(after, "ecgfm_http_requests_total", status="499")
                    - sample_value(before, "ecgfm_http_requests_total", status="499"))
            if gone >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert gone == 3, [line for line in after.splitlines() if line.startswith("ecgfm_http_requests_total")]
        assert sample_value(after, "ecgfm_http_requests_total", status="500") == \
            sample_value(before, "ecgfm_http_requests_total", status="500")
        assert c.get("/healthz").status_code == 200
    log = srv.log_tail(200000)
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
