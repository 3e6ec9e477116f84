"""API keys through HTTP: the real app (tests/api/conftest.py ``client``: keys required, an admin
key sent by default), its real database and routes.

The routes are enumerated from the app itself, so a route added later without a key check fails here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.access.scopes import Scope
from app.api.main import create_app
from tests.api.conftest import MakeSettings, make_key

PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
          "/"}  # GET /: the page for a person, which holds no data (every call it makes sends a key)
# the least scope each guarded operation needs: writes of knowledge need labels, keys and audit admin
NEEDS = {"createLabel": Scope.labels, "updateLabel": Scope.labels, "deleteLabel": Scope.labels,
         "createLabelSet": Scope.labels, "updateLabelSet": Scope.labels, "deleteLabelSet": Scope.labels,
         "restoreLabel": Scope.labels, "restoreLabelSet": Scope.labels,
         "createKey": Scope.admin, "listKeys": Scope.admin, "revokeKey": Scope.admin, "listAudit": Scope.admin}


def api_routes(routes: object) -> list[APIRoute]:
    """Every APIRoute, also inside included routers (kept apart in this FastAPI's route list)."""
    found: list[APIRoute] = []
    for route in routes:  # type: ignore[attr-defined]
        included = getattr(route, "original_router", None)
        if included is not None:
            found += api_routes(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def operations(client: TestClient) -> list[tuple[str, str, str]]:
    """(method, concrete path, operation id) of every API route of the app."""
    found = []
    for route in api_routes(client.app.routes):  # type: ignore[attr-defined]
        if route.path in PUBLIC:
            continue
        path = re.sub(r"\{label_id\}", "1", route.path)
        path = re.sub(r"\{[a-z_]+\}", "default", path)
        for method in sorted(route.methods):
            found.append((method, path, route.operation_id or route.name))
    return found


def anonymous(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None,
              **kwargs: object):  # type: ignore[no-untyped-def]
    return client.request(method, path, headers={**(headers or {}), "Authorization": ""}, **kwargs)  # type: ignore[arg-type]


def test_every_guarded_route_refuses_anonymous_callers(client: TestClient) -> None:
    ops = operations(client)
    assert len(ops) >= 12, ops
    for method, path, op in ops:
        r = anonymous(client, method, path)
        assert r.status_code == 401, (op, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/"):
        assert anonymous(client, "GET", path).status_code == 200, path


def test_the_key_is_checked_before_the_body_and_the_path_are_read(client: TestClient) -> None:
    """A caller without a valid key learns nothing from the request's shape: a body that is not
    JSON, a body of the wrong schema and a label id that is not a number all get 401 (403 for a
    key too narrow), never the 400/422 that would describe the schema (FastAPI reads a declared
    body before it runs dependencies; app/api/auth.py KeyFirstRoute checks the key first)."""
    narrow = {"Authorization": f"Bearer {make_key(client, 'before-body-diagnose', Scope.diagnose)}"}
    json_type = {"Content-Type": "application/json"}
    bad = {"not json": b"{not json", "wrong schema": b'{"name": 7, "unexpected": []}'}
    writes = [("POST", "/labels"), ("PUT", "/labels/1"), ("POST", "/label-sets"), ("PUT", "/label-sets/default"),
              ("POST", "/keys")]
    for method, path in writes:
        for what, body in bad.items():
            r = anonymous(client, method, path, headers=json_type, content=body)
            assert r.status_code == 401, (method, path, what, r.status_code, r.text)
            r = client.request(method, path, headers={**narrow, **json_type}, content=body)
            assert r.status_code == 403, (method, path, what, r.status_code, r.text)
    for method in ("GET", "PUT", "DELETE"):
        assert anonymous(client, method, "/labels/not-a-number").status_code == 401, method


def test_a_wrong_or_malformed_key_is_401(client: TestClient) -> None:
    for header in ("Bearer ekd_not-a-real-key", "Bearer ", "Basic dXNlcjpwdw==", "ekd_nobearer"):
        r = client.get("/label-sets", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "ekd_not-a-real-key" not in r.text


def test_scopes_decide_what_a_key_may_do(client: TestClient) -> None:
    keys = {scope: make_key(client, f"scope-test-{scope.value}", scope) for scope in Scope}
    for method, path, op in operations(client):
        needed = NEEDS.get(op, Scope.diagnose)
        for scope, secret in keys.items():
            if scope.allows(needed):
                continue
            r = client.request(method, path, headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 403, (op, scope, r.status_code, r.text)
            body = r.json()["error"]
            assert body["code"] == "forbidden" and body["details"]["needed_scope"] == needed.value
    diagnose_key = {"Authorization": f"Bearer {keys[Scope.diagnose]}"}
    assert client.get("/label-sets", headers=diagnose_key).status_code == 200  # diagnose may read
    assert client.get("/model", headers=diagnose_key).status_code == 200


def test_keys_through_the_api_and_revocation(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post("/keys", json={"name": "ward-9-cart", "scope": "diagnose"})
    assert r.status_code == 201, r.text
    secret = r.json()["key"]
    assert secret.startswith("ekd_") and r.json()["prefix"] == secret[: len(r.json()["prefix"])]
    as_cart = {"Authorization": f"Bearer {secret}"}
    assert client.get("/formats", headers=as_cart).status_code == 200
    listed = client.get("/keys").json()
    assert "ward-9-cart" in {k["name"] for k in listed} and secret not in client.get("/keys").text
    assert client.post("/keys", json={"name": "WARD-9-cart", "scope": "admin"}).status_code == 409
    assert client.post("/keys", json={"name": "x", "scope": "root"}).status_code == 422
    assert client.delete("/keys/ward-9-cart").status_code == 204
    assert client.get("/formats", headers=as_cart).status_code == 401  # revoked through this process: at once
    assert client.delete("/keys/no-such-key").status_code == 404
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and secret[len("ekd_"):] not in logged
    # the access log line of a call made with a key names the key (never the key itself)
    access = [r.getMessage() for r in caplog.records if r.name == "app.access" and "path=/formats" in r.getMessage()]
    assert access and 'actor="ward-9-cart"' in access[0], access
    assert 'actor="ward-9-cart"' not in access[-1]  # the refused call: no key accepted, no name


def test_openapi_declares_the_bearer_scheme_per_operation(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    (scheme,) = doc["components"]["securitySchemes"].values()
    assert scheme["type"] == "http" and scheme["scheme"].lower() == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in PUBLIC:
                assert "security" not in op, (method, path)
            else:
                assert op.get("security"), (method, path)
                assert "401" in op["responses"] and "403" in op["responses"], (method, path)


def test_auth_disabled_is_explicit_and_loud(app_settings: MakeSettings, caplog: pytest.LogCaptureFixture,
                                            tmp_path: Path) -> None:
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(app_settings(auth="disabled"))) as open_client:
        assert open_client.get("/label-sets").status_code == 200
    assert any("AUTHENTICATION IS DISABLED" in r.getMessage() for r in caplog.records)
    with TestClient(create_app(app_settings(auth="required", data_dir=tmp_path / "other"))) as closed:
        assert closed.get("/label-sets").status_code == 401


def test_the_audit_trail_records_key_changes_with_the_key_name(client: TestClient) -> None:
    assert client.post("/keys", json={"name": "audited-cart", "scope": "diagnose"}).status_code == 201
    assert client.delete("/keys/audited-cart").status_code == 204
    page = client.get("/audit", params={"target_kind": "key", "target": "audited-cart"}).json()
    assert [(e["action"], e["actor"]) for e in page["events"]] == [("key.revoke", "tests-admin"),
                                                                   ("key.create", "tests-admin")]
    create = page["events"][1]
    assert create["before"] is None and create["after"]["scope"] == "diagnose" and create["request_id"]
    assert "key" not in create["after"] and page["next_before_id"] is None
    first = client.get("/audit", params={"target": "audited-cart", "limit": 1}).json()
    assert len(first["events"]) == 1 and first["next_before_id"] == first["events"][0]["id"]
    older = client.get("/audit", params={"target": "audited-cart", "before_id": first["next_before_id"]}).json()
    assert [e["action"] for e in older["events"]] == ["key.create"]
    assert client.get("/audit", params={"since": "2000-01-01T00:00:00Z", "target": "audited-cart"}).json()["events"]
    assert client.get("/audit", params={"limit": 0}).status_code == 422
