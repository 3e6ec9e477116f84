"""The offline scoring path (app/usecases/offline.py, app/service.py): real record files, the
session's small bundle, real ONNX sessions and a real SQLite database in the test's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.ecg.readers.base import ReadHints
from app.errors import InvalidInput, MalformedFile, NotFound, UnsupportedFormat
from app.knowledge.types import LabelDraft
from app.ops.settings import Settings
from app.service import build_service, open_offline_scorer
from app.usecases.diagnose import DiagnoseOptions
from app.usecases.offline import OfflineScorer, find_records, read_records
from app.usecases.results import DiagnoseResult

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"

pytestmark = pytest.mark.timeout(300)


def copy_record(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".mat"):
        (folder / (name + suffix)).write_bytes((ECG_DIR / (name + suffix)).read_bytes())
    return folder / (name + ".hea")


# --- finding records -------------------------------------------------------------------------


def test_folders_files_and_record_names(tmp_path: Path) -> None:
    e07500 = copy_record("E07500", tmp_path / "one")
    a0001 = copy_record("A0001", tmp_path / "two" / "deeper")
    found = find_records([tmp_path / "two", e07500.with_suffix("")])
    assert [(reader.name, path) for reader, path in found] == [("wfdb", a0001), ("wfdb", e07500)]


def test_signal_files_given_with_their_header_are_not_records(tmp_path: Path) -> None:
    header = copy_record("E07500", tmp_path)
    found = find_records([header.with_suffix(".mat"), header, header])
    assert [path for _reader, path in found] == [header]


def test_a_file_in_no_format_is_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.hea"
    notes.write_text("these are notes, not a header\n")
    with pytest.raises(UnsupportedFormat, match=r"notes\.hea is in no supported format"):
        find_records([notes])


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(MalformedFile, match="no such file or directory") as info:
        find_records([tmp_path / "E07500"])
    assert info.value.details == {"path": str(tmp_path / "E07500")}


def test_an_empty_folder_has_no_record(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="no ECG record"):
        find_records([tmp_path])


def test_records_read_with_hints(tmp_path: Path) -> None:
    signals = np.random.default_rng(0).normal(0, 0.1, size=(12, 3000))
    np.save(tmp_path / "ecg.npy", signals)
    (source,) = read_records([tmp_path / "ecg.npy"], ReadHints(sampling_rate=300.0, units="mV"))
    assert source.filename == str(tmp_path / "ecg.npy")
    assert source.recording.source_format == "npy" and source.recording.fs == 300.0
    np.testing.assert_allclose(source.recording.signals, signals)


# --- scoring ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(bundle_dir=small_bundle, data_dir=tmp_path_factory.mktemp("offline-data"), database_url=None,
                    provider="cpu", intra_op_threads=2)


@pytest.fixture(scope="module")
def scorer(settings: Settings) -> OfflineScorer:
    with open_offline_scorer(settings) as opened:
        yield opened  # type: ignore[misc]


def probabilities(result: DiagnoseResult) -> list[dict[str, float]]:
    return [{d.label: d.probability for d in r.diagnoses} for r in result.results]


def test_paths_and_bytes_give_the_same_result(scorer: OfflineScorer) -> None:
    options = DiagnoseOptions(label_set="cinc2021", top_k=0)
    from_paths = scorer.diagnose_paths([ECG_DIR / "E07500", ECG_DIR / "A0001.hea"], options, request_id="r-1")
    files = [(name, (ECG_DIR / name).read_bytes()) for name in ("A0001.hea", "A0001.mat", "E07500.hea", "E07500.mat")]
    from_bytes = scorer.diagnose_bytes(files, options)
    assert from_paths.request_id == "r-1" and from_bytes.request_id != "r-1"
    assert from_paths.label_set == from_bytes.label_set
    assert from_paths.label_set.name == "cinc2021"
    # paths: in the order given; bytes: in name order, as POST /diagnose reads an upload
    assert probabilities(from_paths) == probabilities(from_bytes)[::-1]
    assert [r.source.filename for r in from_bytes.results] == ["A0001.hea", "E07500.hea"]
    assert len(from_paths.results[0].diagnoses) == 26


def test_explicit_labels_and_an_unknown_set(scorer: OfflineScorer) -> None:
    names = ("sinus rhythm", "atrial fibrillation")
    result = scorer.diagnose_paths([ECG_DIR / "E07500"], DiagnoseOptions(labels=names, top_k=0))
    assert result.label_set.name == "adhoc"
    assert sorted(d.label for d in result.results[0].diagnoses) == sorted(names)
    with pytest.raises(NotFound):
        scorer.diagnose_paths([ECG_DIR / "E07500"], DiagnoseOptions(label_set="no-such-set"))


def test_the_scorer_is_used_inside_its_block(settings: Settings) -> None:
    service = build_service(settings)
    try:
        idle = OfflineScorer(service.diagnose, service.model, service.limits)
        with pytest.raises(RuntimeError, match="with"):
            idle.diagnose_paths([ECG_DIR / "E07500"], DiagnoseOptions())
    finally:
        service.close()


def test_adhoc_labels_are_scored_in_a_private_database(settings: Settings, tmp_path: Path) -> None:
    private_settings = settings.model_copy(update={"data_dir": tmp_path / "site"})
    drafts = [
        LabelDraft("wellens pattern", "Deeply inverted or biphasic T waves in V2-V3 with preserved R waves"),
        LabelDraft("sinus bradycardia", "Sinus rhythm below 60 per minute", codes={"SNOMED CT": "426177001"}),
    ]
    with open_offline_scorer(private_settings, adhoc_labels=drafts) as scorer:
        result = scorer.diagnose_paths([ECG_DIR / "E07500"],
                                       DiagnoseOptions(labels=tuple(d.name for d in drafts), top_k=0))
        with pytest.raises(NotFound):  # the private database holds only the file's labels
            scorer.diagnose_paths([ECG_DIR / "E07500"], DiagnoseOptions(label_set="default"))
    assert not (tmp_path / "site").exists()
    by_name = {d.label: d for d in result.results[0].diagnoses}
    assert by_name["sinus bradycardia"].codes == {"SNOMED CT": "426177001"}
    assert by_name["wellens pattern"].knowledge == drafts[0].description


def test_adhoc_labels_are_validated(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="description"), \
            open_offline_scorer(settings, adhoc_labels=[LabelDraft("empty", "")]):
        pass
