"""Every accepted format, end to end: a real record converted by an independent writer
(pydicom, XML writers, pyedflib, csv, numpy, scipy.io, h5py) and POSTed to /diagnose must
score like the WFDB original, within what the format's quantisation allows.

Bounds, per format, follow the format's quantisation step. The untrained test model is
sensitive to input changes: it moves probabilities by up to ~9e-3 per uV of quantisation step
(measured: DICOM and HL7 aECG at 2.5 uV/LSB 9.9e-3, GE MUSE at 4.88 uV 1.5e-2, Philips Sierra
XLI at 5 uV 4.4e-2, EDF 16-bit 1.4e-3, SPH float16 1.4e-3; CSV with 4 decimals, NPY float32 and
the CPSC float64 struct are exact to 2e-6). The bound is 0.01 per uV of step (a ~2x margin);
lossless formats must agree to 1e-4. A trained model is expected to be far less sensitive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.ops.settings import Settings
from tests.formats import writers_ishne as ISHNE
from tests.formats import writers_scp as SCP
from tests.formats import writers_tabular as T
from tests.formats import writers_xml_dicom as W

RECORD = "cinc2021-a/E07500"
PER_UV = 0.01
BOUND = {
    "dicom": 2.5 * PER_UV,  # writer's LSB: 2.5 uV
    "hl7_aecg": 2.5 * PER_UV,  # scale 2.5 uV
    "ge_muse": 4.88 * PER_UV,  # 4.88 uV per bit
    "philips_sierra": 5.0 * PER_UV,  # 5 uV resolution, XLI compressed
    "scp_ecg": 5.0 * PER_UV,  # AVM 5000 nV (5 uV per digit), uncompressed Section 6
    "ishne": 2.5 * PER_UV,  # amplitude resolution 2500 nV (2.5 uV per digit)
    "edf": 1.0 * PER_UV,  # 16 bits over the physical range (< 1 uV per step)
    "sph_hdf5": 1.0 * PER_UV,  # float16: 2^-11 relative
    "csv": 1e-4,  # 4 decimals in mV: 0.05 uV
    "npy": 1e-4,  # float32
    "cpsc2018_mat": 1e-4,  # float64
}


@pytest.fixture(scope="module")
def service(small_bundle, tmp_path_factory):
    data = tmp_path_factory.mktemp("formats-service")
    app = create_app(Settings(bundle_dir=small_bundle, data_dir=data, max_batch_wait_ms=0, auth="disabled"))  # keys: tests/api/test_auth.py
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def original(service, shared_samples_dir):
    base = shared_samples_dir / RECORD
    files = [("files", (p.name, p.read_bytes())) for p in (base.with_suffix(".hea"), base.with_suffix(".mat"))]
    return _probabilities(service, files)


def _probabilities(client: TestClient, files, **params) -> dict[str, float]:
    r = client.post("/diagnose", files=files, params={"label_set": "cinc2021", "top_k": 0, **params})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    return {d["label"]: d["probability"] for d in result["diagnoses"]} | {"__format__": result["source"]["format"]}


def _upload(path: Path):
    return [("files", (path.name, path.read_bytes()))]


def _rec() -> W.Rec:
    return W.load(RECORD)


def _write_dicom(tmp: Path) -> tuple[Path, dict]:
    return W.write_dicom(tmp / "ecg.dcm", _rec()), {}


def _write_aecg(tmp: Path) -> tuple[Path, dict]:
    return W.write_aecg(tmp / "aecg.xml", _rec()), {}


def _write_muse(tmp: Path) -> tuple[Path, dict]:
    return W.write_muse(tmp / "muse.xml", _rec()), {}


def _write_sierra(tmp: Path) -> tuple[Path, dict]:
    return W.write_sierra(tmp / "sierra.xml", _rec(), xli=True), {}


def _write_scp(tmp: Path) -> tuple[Path, dict]:
    rec = _rec()
    return SCP.write_scp(tmp / "ecg.scp", rec.signals, rec.fs, rec.names, step_uv=5.0).path, {}


def _write_ishne(tmp: Path) -> tuple[Path, dict]:
    rec = _rec()
    return ISHNE.write_ishne(tmp / "ecg.ecg", rec.signals, rec.fs, rec.names, res_nv=2500).path, {}


def _write_edf(tmp: Path) -> tuple[Path, dict]:
    sig, fs, names = T.load_wfdb(RECORD)
    path = tmp / "ecg.edf"
    T.write_edf(path, sig, fs, list(names))
    return path, {}


def _write_csv(tmp: Path) -> tuple[Path, dict]:
    sig, fs, names = T.load_wfdb(RECORD)
    path = tmp / "ecg.csv"
    T.write_csv(path, sig, list(names), decimals=4)
    return path, {"sampling_rate": fs}


def _write_npy(tmp: Path) -> tuple[Path, dict]:
    sig, fs, _names = T.load_wfdb(RECORD)
    path = tmp / "ecg.npy"
    np.save(path, sig.astype(np.float32))
    return path, {"sampling_rate": fs}


def _write_cpsc(tmp: Path) -> tuple[Path, dict]:
    sig, _fs, _names = T.load_wfdb(RECORD)
    path = tmp / "A0000.mat"
    T.write_cpsc(path, sig)
    return path, {}


def _write_sph(tmp: Path) -> tuple[Path, dict]:
    sig, _fs, _names = T.load_wfdb(RECORD)
    path = tmp / "ecg.h5"
    T.write_sph(path, sig)
    return path, {}


WRITERS = {
    "dicom": _write_dicom,
    "hl7_aecg": _write_aecg,
    "ge_muse": _write_muse,
    "philips_sierra": _write_sierra,
    "scp_ecg": _write_scp,
    "ishne": _write_ishne,
    "edf": _write_edf,
    "csv": _write_csv,
    "npy": _write_npy,
    "cpsc2018_mat": _write_cpsc,
    "sph_hdf5": _write_sph,
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_converted_record_scores_like_the_wfdb_original(fmt, service, original, tmp_path):
    path, params = WRITERS[fmt](tmp_path)
    got = _probabilities(service, _upload(path), **params)
    assert got.pop("__format__") == fmt
    expected = {k: v for k, v in original.items() if k != "__format__"}
    assert got.keys() == expected.keys()
    worst = max(abs(got[k] - expected[k]) for k in expected)
    assert worst <= BOUND[fmt], f"{fmt}: max |diff| {worst:.2e} > {BOUND[fmt]:.2e}"


def test_muse_reports_derived_limb_leads(service, tmp_path):
    path, _ = _write_muse(tmp_path)
    r = service.post("/diagnose", files=_upload(path), params={"label_set": "cinc2021"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["results"][0]["source"]["derived_leads"]) == ["III", "aVF", "aVL", "aVR"]


def test_formats_endpoint_lists_every_registered_reader(service):
    from app.ecg.readers import READERS

    body = service.get("/formats").json()
    assert [f["name"] for f in body["formats"]] == [r.name for r in READERS]
    assert {"dicom", "hl7_aecg", "ge_muse", "philips_sierra", "edf", "csv", "npy", "wfdb"} <= {
        f["name"] for f in body["formats"]
    }
    assert body["limits"]["max_upload_mb"] > 0
