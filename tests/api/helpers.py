"""Helpers for the HTTP tests: real records as uploads or JSON bodies, error-body checks,
Prometheus text parsing. Nothing here fakes the service; it only builds requests and
reads responses."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from app.ecg.readers import read_any
from app.ecg.recording import Recording

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"
PROB_TOL = 1e-3


def record_path(record: str) -> Path:
    return ECG_DIR / f"{record}.hea"


def record_files(record: str) -> list[Path]:
    """The header and every signal file of a WFDB record in tests/data/ecg."""
    return sorted(p for p in ECG_DIR.glob(f"{record}.*") if p.suffix in (".hea", ".mat", ".dat", ".xyz"))


def upload(*paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``files`` fields for the given files."""
    return [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]


def upload_bytes(name: str, data: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream"))]


def zip_of(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def read_record(record: str) -> Recording:
    return read_any(record_path(record))


def ecg_json(rec: Recording, *, leads: list[str] | None = None, scale: float = 1.0, units: str = "mV",
             samples: int | None = None, ref: str | None = None) -> dict[str, Any]:
    """One ``ecgs`` entry built from a real recording (values in mV times ``scale``)."""
    keep = leads or list(rec.lead_names)
    rows = {name: row for name, row in zip(rec.lead_names, rec.signals, strict=True)}
    entry: dict[str, Any] = {
        "sampling_rate": rec.fs,
        "units": units,
        "leads": {name: (rows[name][:samples] * scale).tolist() for name in keep},
    }
    if ref is not None:
        entry["id"] = ref
    return entry


def assert_error(resp, status: int, code: str) -> dict[str, Any]:
    """The response is ``status`` with the documented error body; returns ``error``."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = resp.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["request_id"] is None or isinstance(body["request_id"], str), body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["details"], dict), err
    return err


def probabilities(result: dict[str, Any]) -> dict[str, float]:
    """label -> probability of one ECG result (ask with top_k=0 to get every label)."""
    return {d["label"]: d["probability"] for d in result["diagnoses"]}


def assert_same_probabilities(a: dict[str, Any], b: dict[str, Any], tol: float = PROB_TOL) -> None:
    pa, pb = probabilities(a), probabilities(b)
    assert pa.keys() == pb.keys()
    worst = max(abs(pa[k] - pb[k]) for k in pa)
    assert worst <= tol, f"probabilities differ by up to {worst:.2e}"


def spread(result: dict[str, Any]) -> float:
    """Range of a result's probabilities (a comparison is meaningless if all are equal)."""
    values = np.array(list(probabilities(result).values()))
    return float(values.max() - values.min())


# --- Prometheus -----------------------------------------------------------------------------


def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, dict(s.labels), s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for n, lab, v in metric_samples(text) if n == name and all(lab.get(k) == w for k, w in labels.items()))


# ``If-Match: *``: replace whatever the label or set is now (tests that are not about concurrent
# edits; tests/api/test_label_lifecycle.py sends real revisions)
ANY_REVISION = {"If-Match": "*"}
