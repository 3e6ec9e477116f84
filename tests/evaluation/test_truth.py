"""Truth from the records' WFDB ``# Dx:`` lines and from a CSV (real files of ../shared/ecg-samples)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.evaluation.truth import data_fingerprint, load_labelled, read_dx_codes
from app.knowledge.types import LabelDraft


def _index(samples: Path) -> dict[str, set[str]]:
    with (samples / "index.csv").open(newline="") as handle:
        return {row["record"]: set(row["dx_snomed"].split("|")) for row in csv.DictReader(handle)}


def test_dx_codes_of_the_samples_match_the_labels_codes(shared_samples_dir: Path,
                                                         cinc2021_labels: tuple[LabelDraft, ...]) -> None:
    data = load_labelled(shared_samples_dir, cinc2021_labels)
    index = _index(shared_samples_dir)
    assert len(data.records) == 120 and {r.record_id for r in data.records} == set(index)
    assert data.label_names == [label.name for label in cinc2021_labels]
    carried = {label.name: set(label.codes.get("SNOMED CT", "").split("|")) for label in cinc2021_labels}
    unmatched: dict[str, int] = {}
    for r in data.records:
        codes = index[r.record_id]
        assert r.positives == {name for name, cs in carried.items() if cs & codes}, r.record_id
        for code in codes - set().union(*carried.values()):
            unmatched[code] = unmatched.get(code, 0) + 1
    assert data.unmatched_codes == unmatched
    first = next(r for r in data.records if r.record_id == "cinc2021-a/E07500")
    assert first.positives == {"sinus bradycardia"} and first.path.name == "E07500.hea"
    # no patient ids in WFDB headers: each record its own patient, except the two identical recordings
    assert not data.patients_known
    assert data.duplicates == [("cinc2021-a/E07509", "cinc2021-a/E07510")]
    patients = {r.record_id: r.patient_id for r in data.records}
    assert patients["cinc2021-a/E07510"] == patients["cinc2021-a/E07509"] == "cinc2021-a/E07509"
    assert len(set(patients.values())) == 119
    # nothing dropped silently: records without truth are listed with the reason
    reasons = {u.record_id: u.reason for u in data.unreadable}
    assert "Dx" in reasons["ptbdb/s0010_re"] and "truth CSV" in reasons["cinc2021-b/SPH/SPH00001"]
    assert len(reasons) == 21 and "cpsc2018-raw/A1980" in reasons
    assert "index.csv" in data.ignored_files and "cinc2021-a/SOURCE.txt" in data.ignored_files


def test_dx_line_variants() -> None:
    assert read_dx_codes("x 12 500 5000\n# Age: 3\n# Dx: 1,2, 2\n") == ["1", "2"]
    assert read_dx_codes("x 12 500 5000\n#Dx: 426783006\n") == ["426783006"]
    assert read_dx_codes("x 12 500 5000\n# Age: 3\n") is None


def test_csv_truth_with_patients(shared_samples_dir: Path, cinc2021_labels: tuple[LabelDraft, ...],
                                 tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(shared_samples_dir / "cinc2021-a", data_dir / "a")
    truth = tmp_path / "truth.csv"
    lines = ["record,label,patient", "a/E07500,Atrial Fibrillation,p1", "a/E07500,sinus rhythm,p1",
             "a/E07501.hea,,p1", "a/E07502,no such label,p2", "missing/X1,sinus rhythm,"]
    truth.write_text("\n".join(lines) + "\n")
    data = load_labelled(data_dir, cinc2021_labels, truth_csv=truth)
    by_id = {r.record_id: r for r in data.records}
    assert set(by_id) == {"a/E07500", "a/E07501", "a/E07502"}
    assert by_id["a/E07500"].positives == {"atrial fibrillation", "sinus rhythm"}
    assert by_id["a/E07501"].positives == frozenset() and by_id["a/E07502"].positives == frozenset()
    assert by_id["a/E07500"].patient_id == by_id["a/E07501"].patient_id == "p1"
    assert by_id["a/E07502"].patient_id == "p2"
    assert data.patients_known and data.truth_source == "csv"
    assert data.unknown_labels == {"no such label": 1} and data.truth_without_record == ["missing/X1"]
    reasons = {u.record_id: u.reason for u in data.unreadable}
    assert len(reasons) == 47 and reasons["a/E07503"] == "no row in the truth CSV"


def test_damaged_header_is_unreadable_not_dropped(shared_samples_dir: Path, cinc2021_labels: tuple[LabelDraft, ...],
                                                  tmp_path: Path) -> None:
    data_dir = tmp_path / "a"
    shutil.copytree(shared_samples_dir / "cinc2021-a", data_dir)
    (data_dir / "E07503.hea").write_text("E07503 12 500 5000\nE07503.mat 16x1+24 nonsense\n")
    (data_dir / "E07504.hea").write_bytes(b"\x00\x01garbage")
    data = load_labelled(data_dir, cinc2021_labels)
    assert len(data.records) == 48
    ids = {u.record_id for u in data.unreadable}
    assert {"E07503", "E07504"} <= ids


def test_fingerprint_depends_on_ids_and_truth_only(shared_samples_dir: Path,
                                                   cinc2021_labels: tuple[LabelDraft, ...]) -> None:
    a = load_labelled(shared_samples_dir / "cinc2021-a", cinc2021_labels)
    b = load_labelled(shared_samples_dir / "cinc2021-a", cinc2021_labels, detect_duplicates=False)
    assert data_fingerprint(a) == data_fingerprint(b)
    ids = [r.record_id for r in a.records]
    assert data_fingerprint(a, ids[:10]) != data_fingerprint(a)


def test_missing_folder_and_bad_csv(tmp_path: Path, cinc2021_labels: tuple[LabelDraft, ...],
                                    shared_samples_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="no such folder"):
        load_labelled(tmp_path / "nope", cinc2021_labels)
    bad = tmp_path / "t.csv"
    bad.write_text("file,diagnosis\nx,y\n")
    with pytest.raises(InvalidInput, match="'record' and 'label'"):
        load_labelled(shared_samples_dir / "cinc2021-a", cinc2021_labels, truth_csv=bad)
