"""The model repository over HTTP (real app, real sessions, real SQLite): GET /models, model=
pins, POST /models/{version}/activate (admin, audited, recorded for every worker), and
POST /embeddings against the ECG encoder graph run directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.access.scopes import Scope
from app.api.main import create_app
from app.ecg.preprocess import preprocess
from app.ecg.readers import read_any
from app.serving.runtime import RuntimeOptions, load_runtime
from tests.fixtures.models import bundle_version

from .conftest import make_key, make_settings
from .helpers import record_files, record_path, upload


@pytest.fixture(scope="module")
def store(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    v2 = bundle_version(small_bundle, root, "test-small-v2")
    # what `ecgfm-ked evaluate --attach` leaves in a bundle (the evaluation itself: tests/evaluation)
    (v2 / "evaluation.json").write_text(json.dumps({
        "schema": 1, "label_set": {"name": "cinc2021", "version": "abc"}, "n_records": 120,
        "macro_auroc": {"value": 0.5, "ci95": [0.4, 0.6]}, "macro_auprc": {"value": 0.2, "ci95": [0.1, 0.3]},
        "data_fingerprint": "f" * 64, "date": "2026-12-04T20:00:00Z"}))
    return root


@pytest.fixture
def models_client(small_bundle: Path, store: Path, tmp_path: Path):
    settings = make_settings(small_bundle, tmp_path / "data", auth="required", model_store_dir=store,
                             model_poll_s=0)
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = f"Bearer {make_key(c, 'site-admin', Scope.admin)}"
        yield c


def _diagnose(client: TestClient, **params):
    return client.post("/diagnose", files=upload(*record_files("E07500")), params=params)


def test_models_lists_versions_pins_and_switches_with_an_audit_record(models_client: TestClient, small_bundle,
                                                                       tmp_path, store) -> None:
    c = models_client
    listing = c.get("/models").json()
    assert listing["active"] == "test-small" and listing["recorded_active"] is None
    by_version = {m["version"]: m for m in listing["models"]}
    assert by_version["test-small"]["state"] == "active" and by_version["test-small-v2"]["state"] == "available"
    assert by_version["test-small-v2"]["evaluation"]["macro_auroc"]["value"] == 0.5
    assert by_version["test-small"]["untrained"] is True and by_version["test-small"]["parity"]

    pinned = _diagnose(c, model="test-small-v2")
    assert pinned.status_code == 409 and pinned.json()["error"]["code"] == "model_not_loaded"
    unknown = _diagnose(c, model="nope")
    assert unknown.status_code == 404 and "test-small-v2" in unknown.json()["error"]["message"]

    diagnose_key = make_key(c, "ward-cart", Scope.diagnose)
    refused = c.post("/models/test-small-v2/activate", headers={"Authorization": f"Bearer {diagnose_key}"})
    assert refused.status_code == 403
    assert c.post("/models/nope/activate").status_code == 404

    switched = c.post("/models/test-small-v2/activate", headers={"X-Request-ID": "switch-1"})
    assert switched.status_code == 200, switched.text
    body = switched.json()
    assert body["active"] == "test-small-v2" and body["previous"] == "test-small" and body["switched"]
    assert body["activated_by"] == "site-admin"
    answer = _diagnose(c)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "test-small-v2"
    assert c.get("/model").json()["model"]["version"] == "test-small-v2"
    assert c.get("/models").json()["recorded_active"] == "test-small-v2"
    [event] = c.get("/audit", params={"target_kind": "model"}).json()["events"]
    assert event["action"] == "model.activate" and event["actor"] == "site-admin"
    assert event["target"] == "test-small-v2" and event["request_id"] == "switch-1"
    assert event["before"] is None and event["after"] == {"version": "test-small-v2"}

    # a service started later on the same database starts on the recorded version
    settings = make_settings(small_bundle, tmp_path / "data", model_store_dir=store, model_poll_s=0)
    with TestClient(create_app(settings)) as later:
        assert later.get("/model").json()["model"]["version"] == "test-small-v2"
        assert later.get("/models").json()["active"] == "test-small-v2"


def test_a_bundle_that_cannot_load_is_refused_and_the_active_one_keeps_serving(models_client: TestClient,
                                                                                small_bundle, store) -> None:
    damaged = bundle_version(small_bundle, store, "test-small-damaged")
    try:
        (damaged / "ecg_encoder.onnx").unlink()
        (damaged / "ecg_encoder.onnx").write_bytes(b"not a graph")
        answer = models_client.post("/models/test-small-damaged/activate")
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "model_unusable"
        assert "ecg_encoder.onnx" in answer.json()["error"]["message"]
        assert models_client.get("/models").json()["active"] == "test-small"
        assert _diagnose(models_client).status_code == 200
    finally:
        for item in damaged.iterdir():
            item.unlink()
        damaged.rmdir()


def test_embeddings_equal_the_encoder_graph_run_directly(client: TestClient, small_bundle: Path, upload_tmp) -> None:
    runtime = load_runtime(small_bundle, RuntimeOptions(provider="cpu", intra_op_threads=2))
    for record in ("E07500", "S0001"):
        path = record_path(record)
        if not path.exists():
            continue
        windows = preprocess(read_any(path)).windows
        expected = runtime.encode_ecg(windows)
        answer = client.post("/embeddings", files=upload(*record_files(record)), params={"include_tokens": "true"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"]["version"] == "test-small" and body["dimension"] == expected.shape[2]
        assert "mean" in body["pooling"] and body["intended_use"]
        [ecg] = body["results"]
        assert len(ecg["windows"]) == len(windows)
        tokens = np.array([w["tokens"] for w in ecg["windows"]])
        np.testing.assert_allclose(tokens, expected, atol=1e-5)
        pooled = np.array([w["pooled"] for w in ecg["windows"]])
        np.testing.assert_allclose(pooled, expected.mean(axis=1), atol=1e-5)
        np.testing.assert_allclose(ecg["pooled"], expected.mean(axis=1).mean(axis=0), atol=1e-5)
    lean = client.post("/embeddings", files=upload(*record_files("E07500"))).json()
    assert lean["results"][0]["windows"][0]["tokens"] is None
    bad = client.post("/embeddings", files=[("files", ("x.txt", b"hello", "text/plain"))])
    assert bad.status_code in (415, 422) and bad.json()["error"]["code"]


def test_tokens_for_too_many_windows_are_refused_before_the_model_runs(client: TestClient, monkeypatch,
                                                                       upload_tmp) -> None:
    from app.api.routes import embeddings

    monkeypatch.setattr(embeddings, "MAX_TOKEN_WINDOWS", 2)  # S0001: 4 windows of 10 s
    answer = client.post("/embeddings", files=upload(*record_files("S0001")), params={"include_tokens": "true"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_input" and error["details"] == {"windows": 4, "limit": 2}
    assert client.post("/embeddings", files=upload(*record_files("S0001"))).status_code == 200
