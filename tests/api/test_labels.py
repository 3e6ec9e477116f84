"""Labels and label sets over HTTP: CRUD, versions, embedding at registration, use in
/diagnose, error bodies, and persistence across a restart on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.api.main import create_app

from .helpers import ANY_REVISION, assert_error, ecg_json, read_record, sample_value

WELLENS = {
    "name": "wellens pattern (api test)",
    "description": "Biphasic or deeply inverted symmetric T waves in V2-V3 with little or no ST elevation, "
    "a sign of critical proximal LAD stenosis.",
    "synonyms": ["wellens syndrome"],
    "codes": {"SNOMED CT": "0000001"},
    "encode_text": "description",
}


def _builtin_names(client, n: int = 3) -> list[str]:
    return client.get("/label-sets/default").json()["labels"][:n]


def _diagnose(client, **params) -> dict:
    resp = client.post("/diagnose", json={"ecgs": [ecg_json(read_record("E07500"))]}, params={"top_k": 0, **params})
    assert resp.status_code == 200, resp.text[:300]
    return resp.json()


def test_label_lifecycle(client):
    members = _builtin_names(client)
    created_set = client.post("/label-sets", json={"name": "api-panel", "description": "test", "labels": members})
    assert created_set.status_code == 201, created_set.text
    v0 = created_set.json()["version"]
    assert created_set.json()["labels"] == members and created_set.json()["builtin"] is False

    _diagnose(client, label_set="api-panel")  # embeds the built-in members' texts
    misses_before = sample_value(client.get("/metrics").text, "ecgfm_embedding_cache_total", result="miss")
    resp = client.post("/labels", json={**WELLENS, "label_sets": ["api-panel"]})
    assert resp.status_code == 201, resp.text
    label = resp.json()
    assert label["embedded"] is True and label["builtin"] is False
    assert label["label_sets"] == ["api-panel"] and label["name"] == WELLENS["name"]
    assert sample_value(client.get("/metrics").text, "ecgfm_embedding_cache_total", result="miss") > misses_before

    s1 = client.get("/label-sets/api-panel").json()
    v1 = s1["version"]
    assert v1 != v0 and s1["labels"] == [*members, WELLENS["name"]]

    # diagnose with the set: the new label is scored; its vector was cached at registration
    misses = sample_value(client.get("/metrics").text, "ecgfm_embedding_cache_total", result="miss")
    body = _diagnose(client, label_set="api-panel")
    assert body["label_set"] == {"name": "api-panel", "version": v1}
    scored = {d["label"]: d for d in body["results"][0]["diagnoses"]}
    assert set(scored) == set(s1["labels"])
    assert scored[WELLENS["name"]]["label_id"] == label["id"]
    assert scored[WELLENS["name"]]["knowledge"] == WELLENS["description"]
    assert scored[WELLENS["name"]]["codes"] == WELLENS["codes"]
    assert sample_value(client.get("/metrics").text, "ecgfm_embedding_cache_total", result="miss") == misses

    # reads
    one = client.get(f"/labels/{label['id']}")
    assert one.status_code == 200 and one.json()["description"] == WELLENS["description"]
    listed = {item["name"]: item for item in client.get("/labels").json()}
    assert listed[WELLENS["name"]]["label_sets"] == ["api-panel"]
    assert listed[members[0]]["builtin"] is True

    # edit: the set gets a new version; older versions keep their membership
    edited = client.put(f"/labels/{label['id']}", json={**WELLENS, "description": "Edited: " + WELLENS["description"]}, headers=ANY_REVISION)
    assert edited.status_code == 200 and edited.json()["description"].startswith("Edited: ")
    v2 = client.get("/label-sets/api-panel").json()["version"]
    assert v2 not in (v0, v1)
    assert client.get("/label-sets/api-panel", params={"version": v0}).json()["labels"] == members
    assert client.get("/label-sets/api-panel", params={"version": v1}).json()["labels"] == s1["labels"]
    assert _diagnose(client, label_set="api-panel")["label_set"]["version"] == v2

    # delete: refused while in a set, allowed with force (and the set drops it)
    err = assert_error(client.delete(f"/labels/{label['id']}"), 409, "conflict")
    assert "api-panel" in err["message"]
    assert client.get(f"/labels/{label['id']}").status_code == 200
    assert client.delete(f"/labels/{label['id']}", params={"force": "true"}).status_code == 204
    assert_error(client.get(f"/labels/{label['id']}"), 404, "not_found")
    after = client.get("/label-sets/api-panel").json()
    assert after["labels"] == members and after["version"] == v0  # same content, same version
    assert client.get("/label-sets/api-panel", params={"version": v2}).json()["labels"] == s1["labels"]


def test_label_errors(client):
    created = client.post("/labels", json={**WELLENS, "name": "duplicate probe (api test)"})
    assert created.status_code == 201
    assert_error(client.post("/labels", json={**WELLENS, "name": "duplicate probe (api test)"}), 409, "conflict")
    assert_error(client.post("/labels", json={**WELLENS, "name": "Duplicate Probe (API test)"}), 409, "conflict")

    assert_error(client.post("/labels", json={"name": "no description"}), 422, "invalid_request")
    assert_error(client.post("/labels", json={**WELLENS, "name": "x1", "colour": "red"}), 422, "invalid_request")
    assert_error(client.post("/labels", json={**WELLENS, "name": "x2", "encode_text": "both"}), 422, "invalid_request")
    assert_error(client.post("/labels", content=b"{", headers={"content-type": "application/json"}),
                 422, "invalid_request")
    assert_error(client.post("/labels", json={**WELLENS, "name": "   "}), 400, "invalid_input")
    assert_error(client.post("/labels", json={**WELLENS, "name": "x3", "label_sets": ["no-such-set"]}),
                 404, "not_found")
    assert all(item["name"] not in ("x1", "x2", "x3") for item in client.get("/labels").json())

    assert_error(client.get("/labels/987654"), 404, "not_found")
    assert_error(client.put("/labels/987654", json=WELLENS, headers=ANY_REVISION), 404, "not_found")
    assert_error(client.delete("/labels/987654"), 404, "not_found")
    assert_error(client.get("/labels/not-a-number"), 422, "invalid_request")
    # renaming onto an existing name
    other = _builtin_names(client, 1)[0]
    assert_error(client.put(f"/labels/{created.json()['id']}", json={**WELLENS, "name": other}, headers=ANY_REVISION), 409, "conflict")


def test_label_set_crud(client):
    names = _builtin_names(client, 4)
    resp = client.post("/label-sets", json={"name": "crud-set", "labels": names[:2]})
    assert resp.status_code == 201
    v_a = resp.json()["version"]
    assert_error(client.post("/label-sets", json={"name": "crud-set", "labels": names[:1]}), 409, "conflict")
    assert "crud-set" in {s["name"] for s in client.get("/label-sets").json()}

    swapped = client.put("/label-sets/crud-set", json={"name": "crud-set", "description": "", "labels": [names[1], names[0]]}, headers=ANY_REVISION)
    assert swapped.status_code == 200
    v_b = swapped.json()["version"]
    assert v_b != v_a  # order is content
    grown = client.put("/label-sets/crud-set", json={"name": "crud-set", "description": "", "labels": names}, headers=ANY_REVISION)
    assert grown.json()["labels"] == names
    assert client.get("/label-sets/crud-set", params={"version": v_a}).json()["labels"] == names[:2]
    assert client.get("/label-sets/crud-set", params={"version": v_b}).json()["labels"] == [names[1], names[0]]
    assert _diagnose(client, label_set="crud-set")["label_set"]["version"] == grown.json()["version"]

    assert client.delete("/label-sets/crud-set").status_code == 204
    assert_error(client.get("/label-sets/crud-set"), 404, "not_found")
    # snapshots outlive the set, so earlier results stay reproducible
    assert client.get("/label-sets/crud-set", params={"version": v_a}).json()["labels"] == names[:2]

    assert_error(client.get("/label-sets/no-such-set"), 404, "not_found")
    assert_error(client.get("/label-sets/default", params={"version": "0000000000000000"}), 404, "not_found")
    assert_error(client.put("/label-sets/no-such-set", json={"name": "no-such-set", "description": "", "labels": names[:1]}, headers=ANY_REVISION),
                 404, "not_found")
    assert_error(client.delete("/label-sets/no-such-set"), 404, "not_found")
    assert_error(client.post("/label-sets", json={"name": "bad-set", "labels": ["no such label"]}), 404, "not_found")
    assert_error(client.post("/label-sets", json={"name": "bad-set", "labels": []}), 422, "invalid_request")
    assert_error(client.post("/label-sets", json={"name": "bad-set"}), 422, "invalid_request")


# --- persistence across a restart --------------------------------------------------------------


def _persist_and_restart(settings) -> None:
    with TestClient(create_app(settings)) as first:
        members = _builtin_names(first, 2)
        v0 = first.post("/label-sets", json={"name": "restart-set", "labels": members}).json()["version"]
        created = first.post("/labels", json={**WELLENS, "label_sets": ["restart-set"]})
        assert created.status_code == 201, created.text
        v1 = first.get("/label-sets/restart-set").json()["version"]
        builtin_count = len(first.get("/labels").json())

    with TestClient(create_app(settings)) as second:
        label = second.get(f"/labels/{created.json()['id']}")
        assert label.status_code == 200
        assert label.json()["name"] == WELLENS["name"] and label.json()["label_sets"] == ["restart-set"]
        current = second.get("/label-sets/restart-set").json()
        assert current["version"] == v1 and current["labels"] == [*members, WELLENS["name"]]
        assert second.get("/label-sets/restart-set", params={"version": v0}).json()["labels"] == members
        assert len(second.get("/labels").json()) == builtin_count  # built-ins not seeded twice
        body = _diagnose(second, label_set="restart-set")
        assert body["label_set"]["version"] == v1
        assert WELLENS["name"] in {d["label"] for d in body["results"][0]["diagnoses"]}


def test_knowledge_survives_restart_sqlite(app_settings, tmp_path):
    db_file = tmp_path / "restart" / "knowledge.sqlite3"
    db_file.parent.mkdir()
    _persist_and_restart(app_settings(database_url=f"sqlite:///{db_file}"))
    assert db_file.stat().st_size > 0


def test_knowledge_survives_restart_postgres(app_settings, pg_database):
    _persist_and_restart(app_settings(database_url=pg_database))
