"""A real server on SQLite: diagnose a real record over HTTP, register a label, restart on the
same data directory, and find the label and the label-set version unchanged."""

from __future__ import annotations

import pytest

from ._server import e07500_files

pytestmark = pytest.mark.timeout(240)

NEW_LABEL = {
    "name": "integration test wellens pattern",
    "description": "Biphasic or deeply inverted symmetric T waves in V2-V3 with little or no ST elevation.",
    "synonyms": ["wellens syndrome (test)"],
    "codes": {"SNOMED CT": "000000001"},
    "encode_text": "description",
    "label_sets": ["default"],
}


def _check_diagnose(body: dict, *, label_set: str, top_k: int | None = None) -> list[dict]:
    assert body["label_set"]["name"] == label_set
    assert len(body["label_set"]["version"]) == 16
    assert body["model"]["untrained"] is True
    assert any(w["code"] == "untrained_model" for w in body["warnings"])
    (result,) = body["results"]
    src = result["source"]
    assert (src["format"], src["fs"], src["duration_s"], src["windows"]) == ("wfdb", 500.0, 10.0, 1)
    assert src["leads_read"] == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    diagnoses = result["diagnoses"]
    if top_k:
        assert len(diagnoses) == top_k
    assert [d["rank"] for d in diagnoses] == list(range(1, len(diagnoses) + 1))
    probs = [d["probability"] for d in diagnoses]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert len(set(d["label"] for d in diagnoses)) == len(diagnoses)
    for d in diagnoses:
        assert d["knowledge"] and d["evidence"], d
        for span in d["evidence"]:
            assert 0.0 <= span["start_s"] < span["end_s"] <= 10.0
    return diagnoses


def test_diagnose_label_and_restart_on_the_same_data_dir(servers, tmp_path) -> None:
    data_dir = tmp_path / "data"  # does not exist yet: the server creates it
    first = servers.start("sqlite-1", data_dir=data_dir)
    print(f"\ncold start (process start -> /readyz 200), fresh SQLite database: {first.cold_start_s:.2f} s")

    with first.client() as c:
        r = c.post("/diagnose", params={"top_k": 5}, files=e07500_files())
        assert r.status_code == 200, r.text
        _check_diagnose(r.json(), label_set="default", top_k=5)

        before = c.get("/label-sets/default").json()
        r = c.post("/labels", json=NEW_LABEL)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["embedded"] is True and created["label_sets"] == ["default"]
        after = c.get("/label-sets/default").json()
        assert after["version"] != before["version"]
        assert after["labels"] == before["labels"] + [NEW_LABEL["name"]]

        # the new label is scored by the next diagnose on that set
        r = c.post("/diagnose", params={"top_k": 0}, files=e07500_files())
        assert r.status_code == 200, r.text
        assert r.json()["label_set"]["version"] == after["version"]
        names = [d["label"] for d in _check_diagnose(r.json(), label_set="default")]
        assert sorted(names) == sorted(after["labels"])

        # a second identical name is refused (the store, not only this process, knows it)
        assert c.post("/labels", json=NEW_LABEL).status_code == 409

    first.assert_clean_exit()

    second = servers.start("sqlite-2", data_dir=data_dir)
    print(f"cold start, existing SQLite database: {second.cold_start_s:.2f} s")
    with second.client() as c:
        label = c.get(f"/labels/{created['id']}")
        assert label.status_code == 200, label.text
        got = label.json()
        for key in ("name", "description", "synonyms", "codes", "encode_text"):
            assert got[key] == NEW_LABEL[key], key
        assert got["label_sets"] == ["default"]
        restarted = c.get("/label-sets/default").json()
        assert restarted["version"] == after["version"]
        assert restarted["labels"] == after["labels"]

        r = c.post("/diagnose", params={"top_k": 0}, files=e07500_files())
        assert r.status_code == 200, r.text
        assert r.json()["label_set"]["version"] == after["version"]
        assert NEW_LABEL["name"] in [d["label"] for d in r.json()["results"][0]["diagnoses"]]
    second.assert_clean_exit()
