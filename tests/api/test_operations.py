"""Operations endpoints (/healthz, /readyz, /model, /formats, /metrics), a service started
without a model, and concurrent requests batched together by the scorer."""

from __future__ import annotations

import asyncio

import httpx
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.ecg.readers import READERS

from .helpers import (
    assert_error,
    assert_same_probabilities,
    ecg_json,
    metric_samples,
    probabilities,
    read_record,
    record_files,
    sample_value,
    upload,
    upload_bytes,
)

STAGES = ("parse", "preprocess", "queue", "inference", "total")


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"model": True, "database": True}}
    assert "ecgfm_ready 1.0" in client.get("/metrics").text  # /readyz refreshes the gauge


def test_not_ready_without_a_bundle(app_settings, tmp_path):
    missing = tmp_path / "no-bundle-here"
    with TestClient(create_app(app_settings(bundle_dir=missing))) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready" and body["checks"]["model"] is False
        assert isinstance(body["reason"], str) and body["reason"]
        assert "ecgfm_ready 0.0" in c.get("/metrics").text
        err = assert_error(c.post("/diagnose", files=upload(*record_files("E07500"))), 503, "model_not_ready")
        assert err["message"]
        assert_error(c.get("/model"), 503, "model_not_ready")
        assert_error(c.get("/labels"), 503, "model_not_ready")
    assert not missing.exists()


def test_model_manifest(client):
    resp = client.get("/model")
    assert resp.status_code == 200
    body = resp.json()
    assert body["model"]["provider"] == "CPUExecutionProvider"
    assert body["model"]["untrained"] is True
    manifest = body["manifest"]
    assert manifest["untrained"] is True
    assert {"graphs", "preprocessing", "text_encoder_id", "parity"} <= manifest.keys()
    assert body["model"]["version"] == manifest["model_version"]


def test_formats_lists_every_reader_and_the_limits(client):
    body = client.get("/formats").json()
    assert [f["name"] for f in body["formats"]] == [r.name for r in READERS]
    assert all(f["title"] and f["extensions"] for f in body["formats"])
    settings = client.app.state.service.settings
    limits = body["limits"]
    assert limits["max_upload_mb"] == settings.max_upload_mb
    assert limits["max_ecgs_per_request"] == settings.max_ecgs_per_request
    assert limits["max_duration_s"] == settings.max_duration_s
    assert {"max_files", "max_archive_members", "max_unpacked_mb", "min_duration_s"} <= limits.keys()
    assert body["preprocessing"]


def _stage_counts(text: str) -> dict[str, float]:
    return {s: sample_value(text, "ecgfm_stage_duration_seconds_count", stage=s) for s in STAGES}


def test_metrics_after_requests(client):
    before = client.get("/metrics").text
    patient_file = "Doe_Jane_1957-03-02.bin"
    patient_ref = "MRN-4471-Roe"

    ok = client.post("/diagnose", files=upload(*record_files("E07500")))
    assert ok.status_code == 200
    ok_json = client.post("/diagnose", json={"ecgs": [ecg_json(read_record("E07500"), ref=patient_ref)]})
    assert ok_json.status_code == 200 and ok_json.json()["results"][0]["id"] == patient_ref
    assert_error(client.post("/diagnose", files=upload_bytes(patient_file, b"\x00 not an ecg " * 40)),
                 415, "unsupported_format")
    label_id = client.get("/labels").json()[0]["id"]
    assert client.get(f"/labels/{label_id}").status_code == 200
    assert client.get("/no/such/path").status_code == 404

    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return sample_value(text, name, **labels) - sample_value(before, name, **labels)

    assert delta("ecgfm_http_requests_total", endpoint="/diagnose", method="POST", status="200") == 2
    assert delta("ecgfm_http_requests_total", endpoint="/diagnose", method="POST", status="415") == 1
    assert delta("ecgfm_http_requests_total", endpoint="/labels/{label_id}", method="GET", status="200") == 1
    assert delta("ecgfm_http_requests_total", endpoint="<unmatched>", status="404") == 1
    endpoints = {lab.get("endpoint") for n, lab, _ in metric_samples(text) if n == "ecgfm_http_requests_total"}
    assert f"/labels/{label_id}" not in endpoints and "/no/such/path" not in endpoints

    counts_before, counts_after = _stage_counts(before), _stage_counts(text)
    for stage in STAGES:
        assert counts_after[stage] - counts_before[stage] >= 2, stage
    assert delta("ecgfm_inference_batch_size_count") >= 1
    assert delta("ecgfm_inference_batch_size_sum") >= 2  # one 10 s window per ECG
    # one request at a time: each model call had the machine to itself (announced work ended on arrival)
    assert delta("ecgfm_inference_calls_total", cores="all") == 2
    assert delta("ecgfm_inference_calls_total", cores="shared") == 0
    assert sample_value(text, "ecgfm_embedding_cache_total", result="hit") > 0
    assert delta("ecgfm_errors_total", code="unsupported_format") == 1
    assert delta("ecgfm_ecgs_total", source_format="wfdb") == 1
    assert delta("ecgfm_ecgs_total", source_format="json") == 1

    # no patient data: neither file names nor the caller's reference
    for secret in ("Doe_Jane", "1957-03-02", patient_file, patient_ref, "E07500"):
        assert secret not in text


async def _concurrent_diagnoses(app, bodies: list[dict]) -> tuple[list[httpx.Response], str, str]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as c:
            before = (await c.get("/metrics")).text
            responses = await asyncio.gather(
                *(c.post("/diagnose", json=body, params={"label_set": "cinc2021", "top_k": 0}) for body in bodies)
            )
            after = (await c.get("/metrics")).text
    return list(responses), before, after


def test_concurrent_requests_share_inference_batches(app_settings):
    # two different one-window ECGs (E07500 and the same record at half amplitude), so any
    # batch holding more than one window holds windows of different requests
    rec = read_record("E07500")
    variants = [ecg_json(rec), ecg_json(rec, scale=0.5)]
    bodies = [{"ecgs": [{**variants[i % 2], "id": f"req-{i}"}]} for i in range(8)]
    app = create_app(app_settings(max_batch_wait_ms=50, max_batch_size=16))
    responses, before, after = asyncio.run(_concurrent_diagnoses(app, bodies))

    assert [r.status_code for r in responses] == [200] * 8, [r.text[:200] for r in responses if r.status_code != 200]
    results = [r.json()["results"][0] for r in responses]
    assert [res["id"] for res in results] == [f"req-{i}" for i in range(8)]
    assert all(res["source"]["windows"] == 1 for res in results)
    # each request got its own ECG's numbers back out of the shared batches
    for i, res in enumerate(results):
        assert_same_probabilities(res, results[i % 2], tol=1e-5)
    first, second = probabilities(results[0]), probabilities(results[1])
    assert max(abs(first[k] - second[k]) for k in first) > 1e-2

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    batches = delta("ecgfm_inference_batch_size_count")
    singles = delta("ecgfm_inference_batch_size_bucket", le="1.0")
    windows = delta("ecgfm_inference_batch_size_sum")
    assert windows == 8 and 1 <= batches < 8
    assert delta("ecgfm_inference_calls_total", cores="all") + delta("ecgfm_inference_calls_total", cores="shared") == batches
    assert batches - singles >= 1, "no inference batch held more than one window"
