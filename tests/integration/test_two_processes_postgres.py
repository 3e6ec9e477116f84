"""Two server processes on one fresh PostgreSQL database.

Consistency bound under test (app/knowledge/store.py): the store caches nothing in the
process, so a write through process A is visible through process B on B's *first* request
made after A's response returned -- no polling, no delay. Every check below is that first
request; a retry loop would hide a cache.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.helpers import ANY_REVISION

from ._server import e07500_files

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]


@pytest.fixture(scope="module")
def pair(servers, postgres_url: str):
    """A and B started at the same time (both seed the built-in knowledge concurrently)."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda name: servers.start(name, database_url=postgres_url), ["pg-a", "pg-b"])
    print(f"\ncold start on PostgreSQL, two processes at once: A {a.cold_start_s:.2f} s, B {b.cold_start_s:.2f} s")
    with a.client() as ca, b.client() as cb:
        yield ca, cb
    a.assert_clean_exit()
    b.assert_clean_exit()


def test_both_seeded_the_same_knowledge_once(pair) -> None:
    ca, cb = pair
    sets_a, sets_b = ca.get("/label-sets").json(), cb.get("/label-sets").json()
    assert sets_a == sets_b
    assert {s["name"] for s in sets_a} >= {"default", "cinc2021"}
    labels = ca.get("/labels").json()
    names = [l["name"] for l in labels]
    assert len(names) == len(set(names))  # concurrent seeding created nothing twice
    assert cb.get("/labels").json() == labels


def test_label_created_on_a_is_seen_by_b_on_its_first_request(pair) -> None:
    ca, cb = pair
    lags = []
    for i in range(5):
        body = {"name": f"cross process label {i}", "description": f"test-only diagnosis number {i}",
                "encode_text": "description", "label_sets": ["cinc2021"]}
        r = ca.post("/labels", json=body)
        assert r.status_code == 201, r.text
        returned = time.perf_counter()
        created = r.json()
        seen = cb.get(f"/labels/{created['id']}")
        lags.append(time.perf_counter() - returned)
        assert seen.status_code == 200, seen.text
        assert seen.json()["name"] == body["name"]
        assert seen.json()["label_sets"] == ["cinc2021"]
        # and the same name is now taken for B too
        assert cb.post("/labels", json=body).status_code == 409
    print(f"\nB's first read after A's 201 returned: max {max(lags) * 1000:.1f} ms (no retries)")

    # B's diagnose on that set: the new version, the new labels scored (vectors from A's cache entry)
    set_a = ca.get("/label-sets/cinc2021").json()
    r = cb.post("/diagnose", params={"label_set": "cinc2021", "top_k": 0}, files=e07500_files())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label_set"] == {"name": "cinc2021", "version": set_a["version"]}
    scored = [d["label"] for d in body["results"][0]["diagnoses"]]
    assert sorted(scored) == sorted(set_a["labels"])
    assert {f"cross process label {i}" for i in range(5)} <= set(scored)


def test_set_edited_on_a_is_used_by_the_next_diagnose_on_b(pair) -> None:
    ca, cb = pair
    r = ca.post("/label-sets", json={"name": "pg-panel", "labels": ["atrial fibrillation", "sinus rhythm"]})
    assert r.status_code == 201, r.text
    v1 = r.json()["version"]
    r = cb.post("/diagnose", params={"label_set": "pg-panel", "top_k": 0}, files=e07500_files())
    assert r.status_code == 200, r.text
    assert r.json()["label_set"]["version"] == v1
    assert {d["label"] for d in r.json()["results"][0]["diagnoses"]} == {"atrial fibrillation", "sinus rhythm"}

    # A edits the set (adds a label created on A a moment ago); B's very next diagnose uses it
    r = ca.post("/labels", json={"name": "pg panel extra", "description": "added by process A",
                                 "encode_text": "description"})
    assert r.status_code == 201, r.text
    r = ca.put("/label-sets/pg-panel", json={"name": "pg-panel", "description": "",
                                             "labels": ["sinus rhythm", "atrial fibrillation", "pg panel extra"]}, headers=ANY_REVISION)
    assert r.status_code == 200, r.text
    v2 = r.json()["version"]
    assert v2 != v1
    r = cb.post("/diagnose", params={"label_set": "pg-panel", "top_k": 0}, files=e07500_files())
    assert r.status_code == 200, r.text
    assert r.json()["label_set"]["version"] == v2
    assert {d["label"] for d in r.json()["results"][0]["diagnoses"]} == {
        "atrial fibrillation", "sinus rhythm", "pg panel extra"}
    # the earlier version stays readable on B
    old = cb.get("/label-sets/pg-panel", params={"version": v1})
    assert old.status_code == 200, old.text
    assert old.json()["labels"] == ["atrial fibrillation", "sinus rhythm"]

    # deleted on B -> gone for A on its next request
    assert cb.delete("/label-sets/pg-panel").status_code == 204
    assert ca.get("/label-sets/pg-panel").status_code == 404
    r = ca.post("/diagnose", params={"label_set": "pg-panel"}, files=e07500_files())
    assert r.status_code == 404, r.text
