"""Tests for app.build.fetch against a real local HTTP server.

The internet (Zenodo and the Hugging Face hub) is mocked by a real ``ThreadingHTTPServer``
on 127.0.0.1 started by these tests: it serves a fake Zenodo record JSON, a few MB of
random bytes as the checkpoint (with HTTP Range support, switchable off), and HF-style
``/<repo>/resolve/main/<file>`` paths. Everything else (httpx, files, threads) is real.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.errors import FetchError
from app.build import fetch as F

RECORD = "14881564"
CKPT = F.DEFAULT_CHECKPOINT_NAME
REPO = F.DEFAULT_HF_REPO
PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
CONFIG = json.dumps({"model_type": "bert", "hidden_size": 768}).encode()
VOCAB = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nheart\n"


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    record: dict | None = None
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    drop_after: int | None = None  # first file response: close after this many bytes
    ignore_range: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def file_requests(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.log if p == path]


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            rng = self.headers.get("Range")
            with state.lock:
                state.log.append((self.path, rng))
            if self.path == f"/api/records/{RECORD}" and state.record is not None:
                body = json.dumps(state.record).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and not state.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with state.lock:
                drop, state.drop_after = state.drop_after, None
            if drop is not None:
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    ckpt_path = f"/api/records/{RECORD}/files/{CKPT}/content"
    state.files[ckpt_path] = PAYLOAD
    state.files[f"/{REPO}/resolve/main/config.json"] = CONFIG
    state.files[f"/{REPO}/resolve/main/vocab.txt"] = VOCAB
    state.record = {
        "id": int(RECORD),
        "files": [
            {"key": "README.md", "size": 3, "checksum": "md5:" + "0" * 32,
             "links": {"self": f"{base}/api/records/{RECORD}/files/README.md/content"}},
            {"key": CKPT, "size": len(PAYLOAD),
             "checksum": "md5:" + hashlib.md5(PAYLOAD).hexdigest(),
             "links": {"self": f"{base}{ckpt_path}"}},
        ],
    }
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    state.base = base  # type: ignore[attr-defined]
    state.ckpt_path = ckpt_path  # type: ignore[attr-defined]
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(5)


def _fetch(state, cache: Path, **kw):
    return F.fetch_model(cache, zenodo_url=state.base, hf_endpoint=state.base, progress=False,
                         timeout=5.0, **kw)


def test_full_fetch_lays_out_cache_and_verifies(server, tmp_path):
    got = _fetch(server, tmp_path)
    assert got.checkpoint == tmp_path / "checkpoints" / CKPT
    assert got.checkpoint.read_bytes() == PAYLOAD
    assert got.checkpoint_sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert got.text_model_dir == tmp_path / "text-model"
    assert (got.text_model_dir / "config.json").read_bytes() == CONFIG
    assert (got.text_model_dir / "vocab.txt").read_bytes() == VOCAB
    # the optional tokenizer_config.json was a 404: fine, and recorded as absent
    assert not (got.text_model_dir / "tokenizer_config.json").exists()
    manifest = json.loads((got.text_model_dir / ".fetch-manifest.json").read_text())
    assert manifest["absent_optional"] == ["tokenizer_config.json"]
    assert manifest["files"]["vocab.txt"] == hashlib.sha256(VOCAB).hexdigest()
    rec = json.loads((got.checkpoint.parent / (CKPT + ".verified.json")).read_text())
    assert rec["sha256"] == got.checkpoint_sha256
    assert rec["md5"] == hashlib.md5(PAYLOAD).hexdigest()
    assert not list(tmp_path.rglob("*.part"))
    assert server.file_requests(server.ckpt_path) == [None]  # one plain GET, no range


def test_second_call_downloads_nothing(server, tmp_path):
    first = _fetch(server, tmp_path)
    n = len(server.log)
    second = _fetch(server, tmp_path)
    assert second == first
    assert len(server.log) == n  # no request at all: not even the record metadata


def test_resume_after_dropped_connection_uses_range(server, tmp_path):
    cut = 1024 * 1024 + 7
    server.drop_after = cut
    with pytest.raises(FetchError, match="interrupted") as ei:
        _fetch(server, tmp_path, retries=0)
    assert "run the fetch again" in ei.value.message
    part = tmp_path / "checkpoints" / (CKPT + ".part")
    assert part.stat().st_size == cut
    assert not (tmp_path / "checkpoints" / CKPT).exists()

    got = _fetch(server, tmp_path)
    assert server.file_requests(server.ckpt_path) == [None, f"bytes={cut}-"]
    assert got.checkpoint.read_bytes() == PAYLOAD
    assert got.checkpoint_sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert not part.exists()


def test_retries_resume_within_one_call(server, tmp_path):
    server.drop_after = 500_000
    got = _fetch(server, tmp_path, retries=1)
    assert got.checkpoint.read_bytes() == PAYLOAD
    assert server.file_requests(server.ckpt_path) == [None, "bytes=500000-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.drop_after = 2_000_000
    with pytest.raises(FetchError):
        _fetch(server, tmp_path, retries=0)
    server.ignore_range = True  # answers 200 with the whole file to the Range request
    got = _fetch(server, tmp_path)
    assert server.file_requests(server.ckpt_path) == [None, "bytes=2000000-"]
    # not appended to the stale part: exactly the file
    assert got.checkpoint.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_part_and_names_both(server, tmp_path):
    wrong = "d41d8cd98f00b204e9800998ecf8427e"
    server.record["files"][1]["checksum"] = "md5:" + wrong
    with pytest.raises(FetchError) as ei:
        _fetch(server, tmp_path)
    msg = ei.value.message
    assert "checksum mismatch" in msg
    assert wrong in msg and hashlib.md5(PAYLOAD).hexdigest() in msg
    ckdir = tmp_path / "checkpoints"
    assert not (ckdir / (CKPT + ".part")).exists()
    assert not (ckdir / CKPT).exists()
    assert ei.value.code == "fetch_failed"


def test_truncated_part_longer_than_file_is_discarded(server, tmp_path):
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    (ckdir / (CKPT + ".part")).write_bytes(os.urandom(len(PAYLOAD) + 10))
    got = _fetch(server, tmp_path)
    assert got.checkpoint.read_bytes() == PAYLOAD
    assert server.file_requests(server.ckpt_path) == [None]


def test_offline_gives_clear_error(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(FetchError) as ei:
        F.fetch_model(tmp_path, zenodo_url=base, hf_endpoint=base, progress=False, timeout=3.0)
    msg = ei.value.message
    assert f"could not reach 127.0.0.1:{port}" in msg
    assert "--checkpoint PATH" in msg and "--text-model DIR" in msg
    assert not (tmp_path / "checkpoints" / CKPT).exists()


def test_missing_file_in_record(server, tmp_path):
    with pytest.raises(FetchError, match=r"has no file named nope\.pt .*README\.md"):
        _fetch(server, tmp_path, checkpoint_name="nope.pt")


def test_invenio_rdm_record_shape_and_content_link(server, tmp_path):
    entry = dict(server.record["files"][1])
    entry["links"] = {"self": f"{server.base}/api/records/{RECORD}/files/{CKPT}",  # metadata
                      "content": server.ckpt_path}  # relative link, resolved on the base
    server.record = {"id": RECORD, "files": {"enabled": True, "entries": {CKPT: entry}}}
    info = F.zenodo_file_info(RECORD, CKPT, zenodo_url=server.base)
    assert info.url == server.base + server.ckpt_path
    assert info.size == len(PAYLOAD) and info.md5 == hashlib.md5(PAYLOAD).hexdigest()


def test_fallback_download_url_without_links(server, tmp_path):
    del server.record["files"][1]["links"]
    info = F.zenodo_file_info(RECORD, CKPT, zenodo_url=server.base + "/")
    assert info.url == f"{server.base}/records/{RECORD}/files/{CKPT}"


def test_download_file_adopts_matching_file_placed_by_hand(server, tmp_path):
    dest = tmp_path / "x.pt"
    dest.write_bytes(PAYLOAD)
    sha = F.download_file(server.base + server.ckpt_path, dest,
                          expected_md5=hashlib.md5(PAYLOAD).hexdigest(),
                          expected_size=len(PAYLOAD), progress=False)
    assert sha == hashlib.sha256(PAYLOAD).hexdigest()
    assert server.log == []  # verified locally, nothing downloaded


def test_required_text_file_404_is_an_error(server, tmp_path):
    del server.files[f"/{REPO}/resolve/main/vocab.txt"]
    with pytest.raises(FetchError, match=r"vocab\.txt was not found \(HTTP 404\)"):
        _fetch(server, tmp_path)


def test_env_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("ECGFM_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("ECGFM_ZENODO_URL", "http://z.example/")
    monkeypatch.delenv("ECGFM_HF_ENDPOINT", raising=False)
    assert F.default_cache_dir() == tmp_path / "c"
    assert F.default_zenodo_url() == "http://z.example"
    assert F.default_hf_endpoint() == "https://huggingface.co"
    monkeypatch.delenv("ECGFM_CACHE_DIR")
    assert F.default_cache_dir() == Path.home() / ".cache" / "ecgfm-ked"
