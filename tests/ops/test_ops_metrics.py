"""app/ops/metrics.py: recording functions, label hygiene, rendering, multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app.ops import metrics as m

REPO = Path(__file__).resolve().parents[2]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_single_process_mode_renders_default_registry(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    m.record_http_request("/healthz", "GET", 200, 0.001)
    body, content_type = m.render_latest()
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert set(families) >= m.METRIC_NAMES
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_http_request_labels_are_route_templates_only() -> None:
    before = value("ecgfm_http_requests_total", endpoint="/labels/{label_id}", method="GET", status="404")
    m.record_http_request("/labels/{label_id}", "get", 404, 0.002)
    assert value(
        "ecgfm_http_requests_total", endpoint="/labels/{label_id}", method="GET", status="404"
    ) == before + 1
    assert value(
        "ecgfm_http_request_duration_seconds_count", endpoint="/labels/{label_id}", method="GET"
    ) >= 1
    # query strings, spaces and odd methods never become label values
    before_other = value("ecgfm_http_requests_total", endpoint="other", method="OTHER", status="other")
    m.record_http_request("/diagnose?patient=Jane Doe", "BREW", "teapot", 0.1)
    assert value("ecgfm_http_requests_total", endpoint="other", method="OTHER", status="other") == before_other + 1
    body = m.render_latest()[0].decode()
    assert "Jane" not in body and "patient" not in body
    m.record_http_request(m.UNMATCHED_ENDPOINT, "GET", 404, 0.001)
    assert value("ecgfm_http_requests_total", endpoint=m.UNMATCHED_ENDPOINT, method="GET", status="404") >= 1


def test_error_codes_and_formats_are_tokens() -> None:
    before = value("ecgfm_errors_total", code="malformed_file")
    m.record_error("malformed_file")
    assert value("ecgfm_errors_total", code="malformed_file") == before + 1
    before_other = value("ecgfm_errors_total", code="other")
    m.record_error("Header of ECG for Mr Smith is broken")
    assert value("ecgfm_errors_total", code="other") == before_other + 1
    before = value("ecgfm_ecgs_total", source_format="wfdb")
    m.record_ecgs("wfdb", 3)
    m.record_ecgs("wfdb", 0)
    assert value("ecgfm_ecgs_total", source_format="wfdb") == before + 3


def test_stages_histograms_and_buckets() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        m.observe_stage("decode", 0.1)
    with pytest.raises(ValueError, match="unknown stage"):
        with m.time_stage("nap"):
            pass
    before = value("ecgfm_stage_duration_seconds_count", stage="inference")
    with pytest.raises(RuntimeError):
        with m.time_stage("inference"):
            raise RuntimeError("boom")  # the failed stage is still timed
    assert value("ecgfm_stage_duration_seconds_count", stage="inference") == before + 1
    # bucket edges: 1 ms .. 30 s for stages; the exact edges asked for the others
    assert value("ecgfm_stage_duration_seconds_bucket", stage="inference", le="0.001") is not None
    m.observe_stage("embed", 0.0009)
    assert value("ecgfm_stage_duration_seconds_bucket", stage="embed", le="0.001") >= 1
    m.observe_stage("total", 29.0)
    assert value("ecgfm_stage_duration_seconds_bucket", stage="total", le="30.0") > value(
        "ecgfm_stage_duration_seconds_bucket", stage="total", le="20.0"
    )
    for name, edges in (
        ("ecgfm_inference_batch_size", m.BATCH_SIZE_BUCKETS),
        ("ecgfm_label_count", m.LABEL_COUNT_BUCKETS),
    ):
        family = next(f for f in REGISTRY.collect() if f.name == name)
        les = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
        assert les == [str(float(e)) for e in edges] + ["+Inf"]
    before = value("ecgfm_label_count_bucket", le="26.0") - value("ecgfm_label_count_bucket", le="10.0")
    m.observe_label_count(26)
    assert value("ecgfm_label_count_bucket", le="26.0") - value("ecgfm_label_count_bucket", le="10.0") == before + 1
    with pytest.raises(ValueError):
        m.observe_inference_batch(-1)


def test_cache_queue_ready_and_model_info() -> None:
    hits, misses = value("ecgfm_embedding_cache_total", result="hit"), value("ecgfm_embedding_cache_total", result="miss")
    m.record_embedding_cache(hits=4, misses=1)
    assert value("ecgfm_embedding_cache_total", result="hit") == hits + 4
    assert value("ecgfm_embedding_cache_total", result="miss") == misses + 1
    m.set_queue_depth(7)
    assert value("ecgfm_batch_queue_depth") == 7
    m.set_ready(False)
    assert value("ecgfm_ready") == 0
    m.set_ready(True)
    assert value("ecgfm_ready") == 1
    first = dict(model_name="ecgfm-ked", model_version="v1", provider="CPUExecutionProvider", precision="fp32")
    m.set_model_info(**first, untrained=True)
    assert value("ecgfm_model_info", **first, untrained="true") == 1
    second = dict(first, model_version="v2", provider="CUDAExecutionProvider", precision="fp16")
    m.set_model_info(**second, untrained=False)
    assert value("ecgfm_model_info", **second, untrained="false") == 1
    assert REGISTRY.get_sample_value("ecgfm_model_info", dict(first, untrained="true")) is None


def test_prepare_multiproc_dir_empties_stale_files(tmp_path: Path) -> None:
    directory = tmp_path / "mp"
    assert m.prepare_multiproc_dir(directory) == directory and directory.is_dir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    m.prepare_multiproc_dir(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]


# --- multiprocess mode: separate interpreters (the mode is fixed at import) --------------

WORKER = textwrap.dedent(
    """
    import os, sys
    from app.ops import metrics as m
    n = int(sys.argv[1])
    for _ in range(n):
        m.record_http_request("/diagnose", "POST", 200, 0.2)
        m.observe_inference_batch(8)
    m.record_error("malformed_file")
    m.record_ecgs("wfdb", n)
    m.record_embedding_cache(hits=n, misses=1)
    m.set_queue_depth(n)
    m.set_ready(True)
    m.set_model_info(model_name="ecgfm-ked", model_version="v1", provider="CPUExecutionProvider",
                     precision="fp32", untrained=False)
    print(os.getpid())
    """
)

READER = textwrap.dedent(
    """
    import sys
    from app.ops import metrics as m
    for pid in sys.argv[1:]:
        m.mark_process_dead(int(pid))
    body, ctype = m.render_latest()
    sys.stdout.write(body.decode())
    """
)


def _run(code: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_multiprocess_render_sums_workers(tmp_path: Path) -> None:
    mp_dir = m.prepare_multiproc_dir(tmp_path / "prom-mp")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir), "PYTHONPATH": str(REPO)}
    workers = [_run(WORKER, env, "2"), _run(WORKER, env, "3")]  # run concurrently
    pids = []
    for proc in workers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pids.append(out.strip())
    assert len(set(pids)) == 2
    assert {p.name for p in mp_dir.iterdir()} >= {f"counter_{pid}.db" for pid in pids}

    reader = _run(READER, env)
    text, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    s = _samples(text)
    key = lambda name, **labels: (name, tuple(sorted(labels.items())))  # noqa: E731
    assert s[key("ecgfm_http_requests_total", endpoint="/diagnose", method="POST", status="200")] == 5
    assert s[key("ecgfm_http_request_duration_seconds_count", endpoint="/diagnose", method="POST")] == 5
    assert s[key("ecgfm_inference_batch_size_count")] == 5
    assert s[key("ecgfm_inference_batch_size_bucket", le="8.0")] == 5
    assert s[key("ecgfm_inference_batch_size_bucket", le="4.0")] == 0
    assert s[key("ecgfm_inference_calls_total", cores="all")] == 5
    assert s[key("ecgfm_errors_total", code="malformed_file")] == 2
    assert s[key("ecgfm_ecgs_total", source_format="wfdb")] == 5
    assert s[key("ecgfm_embedding_cache_total", result="hit")] == 5
    assert s[key("ecgfm_batch_queue_depth")] == 5  # livesum over both workers
    assert s[key("ecgfm_ready")] == 1  # livemax
    info = [k for k in s if k[0] == "ecgfm_model_info"]
    assert len(info) == 1 and s[info[0]] == 1  # one series, not one per pid
    assert not any(k[0].endswith("_created") for k in s)

    # the supervisor reports worker "3" dead: its live gauges go, its counters stay
    reader = _run(READER, env, pids[1])
    text, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    s = _samples(text)
    assert s[key("ecgfm_batch_queue_depth")] == 2
    assert s[key("ecgfm_http_requests_total", endpoint="/diagnose", method="POST", status="200")] == 5


def test_mark_process_dead_is_a_noop_without_multiprocess(monkeypatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    m.mark_process_dead(os.getpid())
    assert m.prepare_multiproc_dir() is None
