"""The malformed-file corpus (tests/formats/malformed_corpus.py) through the readers, through
POST /diagnose, and, for the files that declare or inflate to gigabytes, in a subprocess whose
peak memory is measured against the readers' budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.api.conftest import client  # noqa: F401 - the API tests' app fixture, used below
from tests.formats.malformed_corpus import BOMBS, CASES, Case

from app.ecg.readers import read_any
from app.ecg.readers._limits import LARGEST_RECORDING_BYTES, MEMORY_BUDGET_BYTES

ROOT = Path(__file__).resolve().parents[2]


def _check_read(case: Case, path: Path) -> None:
    if case.error is None:
        rec = read_any(path, case.hints)
        assert rec.signals.ndim == 2 and rec.signals.shape[1] > 0
        codes = [w.code for w in rec.warnings]
        if case.phrase:
            assert case.phrase in codes, codes
        return
    with pytest.raises(case.error) as info:
        read_any(path, case.hints)
    assert type(info.value) is case.error, type(info.value)
    message = info.value.message
    assert case.phrase in message, message
    assert str(path.parent) not in message and "/tmp" not in message, message


@pytest.mark.parametrize("name", sorted(CASES))
def test_reader_refuses_or_reads(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    _check_read(case, case.build(tmp_path))


def test_limit_errors_name_the_limit(tmp_path: Path) -> None:
    from app.errors import UploadTooLarge

    for name in ("npy_1e15_samples", "h5_sparse", "sierra_3e7_leads", "mat_compression_bomb"):
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(UploadTooLarge) as info:
            read_any(CASES[name].build(folder), CASES[name].hints)
        assert info.value.details["limit"] in (
            "max_samples_per_lead", "max_leads", "max_values", "max_decompressed_bytes"
        ), info.value.details
        assert "at most" in info.value.message or "more than" in info.value.message


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import h5py, pydicom, pyedflib, scipy.io, wfdb  # the readers' libraries, loaded before the baseline
    from app.ecg.readers import read_any
    from app.ecg.readers.base import ReadHints
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_any(__import__("pathlib").Path(sys.argv[1]), ReadHints(sampling_rate=500))
        outcome = "read"
    except Exception as exc:
        outcome = type(exc).__name__
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "peak_kib": after - before}))
    """
)
# Each bomb declares or inflates to at least the largest accepted recording (576 MB) and
# often gigabytes; refused from its declared sizes, it may cost only a small part of that.
PEAK_BOUND_BYTES = 128 << 20


def read_measuring_peak(path: Path) -> dict[str, object]:
    """Read ``path`` in a fresh interpreter (its readers' libraries loaded first): the outcome
    (``"read"`` or the exception's class name) and the peak RSS growth of the read in KiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_refused_within_memory_budget(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    path = case.build(tmp_path)
    assert path.stat().st_size < 8 << 20  # small on disk
    result = read_measuring_peak(path)
    assert case.error is not None
    assert result["outcome"] == case.error.__name__, result
    assert result["peak_kib"] * 1024 < PEAK_BOUND_BYTES < MEMORY_BUDGET_BYTES, result


def test_budget_is_a_few_times_the_largest_recording() -> None:
    assert LARGEST_RECORDING_BYTES == 12 * 600 * 10_000 * 8
    assert MEMORY_BUDGET_BYTES == 4 * LARGEST_RECORDING_BYTES


# --- through the API ------------------------------------------------------------------------------

API_CASES = (
    "csv_padded_cell", "csv_2mb_header", "npy_1e15_samples", "h5_sparse", "mat_compression_bomb",
    "muse_exponent_400", "sierra_3e7_leads", "aecg_external_entity", "dicom_deflate_bomb",
    "edf_declares_10_days", "csv_nan_inf",
)
_CODES = {"UploadTooLarge": "upload_too_large", "MalformedFile": "malformed_file",
          "UnsupportedSignal": "unsupported_signal", "InvalidInput": "invalid_input"}


@pytest.mark.parametrize("name", API_CASES)
def test_diagnose_answers_4xx_or_warns(name: str, client, tmp_path: Path) -> None:  # noqa: F811
    case = CASES[name]
    path = case.build(tmp_path)
    files = [("files", (path.name, path.read_bytes(), "application/octet-stream"))]
    params = {"top_k": 1, "sampling_rate": 500}
    resp = client.post("/diagnose", files=files, params=params)
    if case.error is None:
        assert resp.status_code == 200, resp.text[:500]
        [result] = resp.json()["results"]
        assert case.phrase in json.dumps(result), result
    else:
        assert resp.status_code == case.status, resp.text[:500]
        error = resp.json()["error"]
        assert error["code"] == _CODES[case.error.__name__], error
        assert case.phrase in error["message"], error
        assert str(tmp_path) not in resp.text and "/tmp/" not in resp.text
    assert client.get("/healthz").status_code == 200


def test_diagnose_reads_a_record_named_with_its_extension(client, tmp_path: Path) -> None:  # noqa: F811
    path = CASES["wfdb_record_name_with_extension"].build(tmp_path)
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream"))
             for p in (path, path.with_suffix(".mat"))]
    resp = client.post("/diagnose", files=files, params={"top_k": 1})
    assert resp.status_code == 200, resp.text[:500]
