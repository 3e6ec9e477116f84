"""Changing what every clinician is told, over HTTP: revisions as ETags, If-Match on replaces
(428 without, 409 version_conflict when stale, nothing lost), full replaces that cannot wipe a
field by leaving it out, soft delete and restore of built-ins, and the audit trail naming the
key and the request. The real app (tests/api/conftest.py ``client``: keys required, an admin
key), its SQLite database seeded with the built-in knowledge."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from app.access.scopes import Scope

from .conftest import make_key
from .helpers import assert_error, ecg_json, read_record

LABEL: dict[str, Any] = {
    "name": "lifecycle test finding",
    "description": "A diagnosis made up for the lifecycle tests.",
    "synonyms": ["lifecycle finding"],
    "codes": {"SNOMED CT": "0000002"},
    "encode_text": "description",
}


def test_the_etag_is_the_revision_and_if_match_guards_every_replace(client: TestClient) -> None:
    created = client.post("/labels", json=LABEL)
    assert created.status_code == 201 and created.headers["ETag"] == '"1"' and created.json()["revision"] == 1
    url = f"/labels/{created.json()['id']}"
    read = client.get(url)
    assert read.headers["ETag"] == '"1"'

    assert_error(client.put(url, json=LABEL), 428, "precondition_required")
    assert_error(client.put(url, json=LABEL, headers={"If-Match": "three"}), 400, "invalid_input")
    changed = client.put(url, json={**LABEL, "description": "First edit."}, headers={"If-Match": read.headers["ETag"]})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"' and changed.json()["revision"] == 2

    # a second client that read revision 1 too: refused with the current revision, and its edit lost nothing
    stale = client.put(url, json={**LABEL, "description": "Second edit, from a stale read."},
                       headers={"If-Match": '"1"'})
    body = assert_error(stale, 409, "version_conflict")
    assert body["details"]["current_revision"] == 2 and body["details"]["etag"] == '"2"'
    assert client.get(url).json()["description"] == "First edit."

    weak = client.put(url, json={**LABEL, "description": "Third edit."}, headers={"If-Match": 'W/"2"'})
    assert weak.status_code == 200 and weak.json()["revision"] == 3
    assert_error(client.delete(url, headers={"If-Match": '"2"'}), 409, "version_conflict")
    assert client.get(url).status_code == 200


def test_a_replace_names_every_field(client: TestClient) -> None:
    """Leaving ``codes`` out of a PUT no longer wipes the label's SNOMED code: it is refused."""
    created = client.post("/labels", json={**LABEL, "name": "full replace finding"}).json()
    partial = {k: v for k, v in LABEL.items() if k != "codes"} | {"name": "full replace finding"}
    r = assert_error(client.put(f"/labels/{created['id']}", json=partial, headers={"If-Match": "*"}), 422,
                     "invalid_request")
    assert "codes" in r["message"]
    assert client.get(f"/labels/{created['id']}").json()["codes"] == LABEL["codes"]
    set_body = {"name": "replace-set", "labels": ["full replace finding"]}
    assert client.post("/label-sets", json=set_body).status_code == 201
    assert_error(client.put("/label-sets/replace-set", json=set_body, headers={"If-Match": "*"}), 422,
                 "invalid_request")  # description left out


def test_deleting_a_built_in_set_can_be_undone(client: TestClient) -> None:
    ecg = {"ecgs": [ecg_json(read_record("E07500"))]}
    before = client.get("/label-sets/default").json()
    assert before["builtin"]
    assert client.delete("/label-sets/default", headers={"If-Match": f'"{before["revision"]}"'}).status_code == 204
    assert_error(client.post("/diagnose", json=ecg), 404, "not_found")
    listed = client.get("/label-sets", params={"include_deleted": "true"}).json()
    assert next(s for s in listed if s["name"] == "default")["deleted_at"] is not None
    assert "default" not in {s["name"] for s in client.get("/label-sets").json()}
    assert_error(client.post("/label-sets", json={"name": "default", "labels": before["labels"][:1]}), 409, "conflict")

    restored = client.post("/label-sets/default/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["labels"] == before["labels"] and restored.json()["version"] == before["version"]
    scored = client.post("/diagnose", json=ecg)
    assert scored.status_code == 200 and scored.json()["label_set"]["version"] == before["version"]


def test_a_built_in_label_deleted_by_force_comes_back_to_its_place(client: TestClient) -> None:
    default = client.get("/label-sets/default").json()
    label = next(x for x in client.get("/labels").json() if x["name"] == default["labels"][2])
    assert_error(client.delete(f"/labels/{label['id']}"), 409, "conflict")  # still in sets
    assert client.delete(f"/labels/{label['id']}", params={"force": "true"}).status_code == 204
    assert label["name"] not in client.get("/label-sets/default").json()["labels"]
    gone = assert_error(client.get(f"/labels/{label['id']}"), 404, "not_found")
    assert gone["details"]["deleted"] is True
    assert client.get(f"/labels/{label['id']}", params={"include_deleted": "true"}).json()["deleted_at"]
    back = client.post(f"/labels/{label['id']}/restore").json()
    assert back["deleted_at"] is None and sorted(back["label_sets"]) == sorted(label["label_sets"])
    assert client.get("/label-sets/default").json()["labels"] == default["labels"]


def test_the_audit_trail_names_the_key_and_the_request(client: TestClient) -> None:
    editor = {"Authorization": f"Bearer {make_key(client, 'lifecycle-editor', Scope.labels)}"}
    created = client.post("/labels", json={**LABEL, "name": "audited over http"}, headers=editor)
    request_id = created.headers["X-Request-ID"]
    label_id = created.json()["id"]
    client.put(f"/labels/{label_id}", json={**LABEL, "name": "audited over http", "description": "Edited."},
               headers={**editor, "If-Match": '"1"'})
    assert_error(client.put(f"/labels/{label_id}", json={**LABEL, "name": "audited over http"},
                            headers={**editor, "If-Match": '"1"'}), 409, "version_conflict")
    trail = client.get("/audit", params={"target_kind": "label", "target": str(label_id)}).json()["events"]
    assert [(e["action"], e["actor"]) for e in trail] == [("label.update", "lifecycle-editor"),
                                                          ("label.create", "lifecycle-editor")]
    assert trail[1]["request_id"] == request_id
    assert trail[0]["before"]["description"] == LABEL["description"] and trail[0]["after"]["description"] == "Edited."
