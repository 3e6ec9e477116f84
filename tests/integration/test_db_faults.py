"""A real ``ecgfm-ked serve`` on a PostgreSQL cluster of the test's own that is stopped, frozen
and restarted during traffic (never the machine's own server).

While the database is down or frozen: ``/diagnose`` for a label set already used answers 200
with the ``knowledge_from_cache`` warning; writes answer 503 ``database_unavailable`` with
``Retry-After``; ``/readyz`` answers within its timeout, 503, saying the database is down.
When the database is back the service recovers by itself (no restart).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.pg_cluster import PgCluster  # its `cluster` fixture comes from tests/conftest.py

from tests.api.helpers import ANY_REVISION

from ._server import Server, e07500_files

CALL_TIMEOUT_S = 3
READINESS_TIMEOUT_S = 1
RETRY_AFTER_S = 4
BOUND_S = 10.0  # generous bound on any single answer while the database is down or frozen


@pytest.fixture(scope="module")
def server(servers, cluster: PgCluster) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    s = servers.start("db-faults", database_url=cluster.url, env={
        "ECGFM_DATABASE_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S),
        "ECGFM_DATABASE_CONNECT_TIMEOUT_S": "2",
        "ECGFM_DATABASE_STATEMENT_TIMEOUT_S": "2",
        "ECGFM_DATABASE_RETRY_AFTER_S": str(RETRY_AFTER_S),
        "ECGFM_READINESS_TIMEOUT_S": str(READINESS_TIMEOUT_S),
    })
    yield s
    cluster.thaw()
    s.assert_clean_exit()


def _diagnose(c: httpx.Client) -> httpx.Response:
    return c.post("/diagnose", params={"label_set": "cinc2021", "top_k": 3}, files=e07500_files())


def _codes(r: httpx.Response) -> list[str]:
    return [w["code"] for w in r.json()["warnings"]]


class Traffic:
    """Diagnose requests in a loop on a thread; every status and duration is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self._stop.is_set():
                t = time.monotonic()
                r = _diagnose(c)
                codes = _codes(r) if r.status_code == 200 else [r.text[:300]]
                self.answers.append((r.status_code, time.monotonic() - t, codes))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _wait_ready(c: httpx.Client, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = c.get("/readyz")
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def _assert_down(c: httpx.Client) -> None:
    t = time.monotonic()
    r = c.get("/readyz")
    took = time.monotonic() - t
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["checks"] == {"model": True, "database": False}
    assert body["reason"].startswith("database: ") and "knowledge database" in body["reason"]
    assert took < READINESS_TIMEOUT_S + 3.0, took

    t = time.monotonic()
    w = c.post("/labels", json={"name": "written while down", "description": "must be refused"})
    took = time.monotonic() - t
    assert w.status_code == 503, w.text
    assert w.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert w.json()["error"]["code"] == "database_unavailable"
    assert took < CALL_TIMEOUT_S + 3.0, took
    s = c.put("/label-sets/cinc2021", json={"name": "cinc2021", "description": "", "labels": ["sinus rhythm"]}, headers=ANY_REVISION)
    assert s.status_code == 503 and s.headers["Retry-After"] == str(RETRY_AFTER_S), s.text

    d = _diagnose(c)
    assert d.status_code == 200, d.text
    assert "knowledge_from_cache" in _codes(d)
    message = next(w["message"] for w in d.json()["warnings"] if w["code"] == "knowledge_from_cache")
    assert "'cinc2021'" in message and d.json()["label_set"]["version"] in message

    other = c.post("/diagnose", params={"label_set": "never-used-here"}, files=e07500_files())
    assert other.status_code in (404, 503), other.text  # a set never read has no copy in memory


def _assert_recovered(c: httpx.Client, version: str) -> None:
    r = _wait_ready(c)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while True:  # the first request after the probe interval asks the database again
        d = _diagnose(c)
        assert d.status_code == 200, d.text
        if "knowledge_from_cache" not in _codes(d) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "knowledge_from_cache" not in _codes(d)
    assert d.json()["label_set"]["version"] == version


def test_stopped_database_during_traffic(server: Server, cluster: PgCluster) -> None:
    with server.client() as c:
        first = _diagnose(c)
        assert first.status_code == 200, first.text
        assert "knowledge_from_cache" not in _codes(first)
        version = first.json()["label_set"]["version"]
        with Traffic(server.url) as traffic:
            time.sleep(0.5)
            cluster.stop()
            try:
                time.sleep(1.0)
                _assert_down(c)
                time.sleep(0.5)
            finally:
                cluster.start()
        statuses = [a[0] for a in traffic.answers]
        assert statuses and set(statuses) == {200}, traffic.answers
        assert max(a[1] for a in traffic.answers) < BOUND_S, traffic.answers
        assert any("knowledge_from_cache" in a[2] for a in traffic.answers), traffic.answers
        _assert_recovered(c, version)
        created = c.post("/labels", json={"name": "written after restart", "description": "accepted again"})
        assert created.status_code == 201, created.text
    assert "Traceback" not in server.log_tail(200000)


def test_frozen_database_during_traffic(server: Server, cluster: PgCluster) -> None:
    with server.client() as c:
        first = _diagnose(c)
        assert first.status_code == 200, first.text
        version = first.json()["label_set"]["version"]
        with Traffic(server.url) as traffic:
            time.sleep(0.5)
            cluster.freeze()
            try:
                time.sleep(0.5)
                _assert_down(c)
                time.sleep(0.5)
            finally:
                cluster.thaw()
        statuses = [a[0] for a in traffic.answers]
        assert statuses and set(statuses) == {200}, traffic.answers
        assert max(a[1] for a in traffic.answers) < BOUND_S, traffic.answers
        _assert_recovered(c, version)
        created = c.post("/labels", json={"name": "written after thaw", "description": "accepted again"})
        assert created.status_code == 201, created.text
    assert "Traceback" not in server.log_tail(200000)
