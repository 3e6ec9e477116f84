"""Format registry: detection from content, companions, unknown files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.ecg.readers import READERS, discover, formats, read_any, sniff
from app.ecg.readers.wfdb_reader import READER as WFDB
from app.errors import InvalidInput, UnsupportedFormat


def _copy(src: Path, names: list[str], dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / name, dst / name)


def test_formats_describe_registry() -> None:
    described = formats()
    assert described[0] == {"name": "wfdb", "title": WFDB.title, "extensions": [".hea", ".dat", ".mat"]}
    assert len(described) == len(READERS)


def test_discover_finds_records_and_skips_companions(ecg_data_dir: Path, tmp_path: Path) -> None:
    _copy(ecg_data_dir, ["E07500.hea", "E07500.mat"], tmp_path)
    _copy(ecg_data_dir, ["s0010_re.hea", "s0010_re.dat", "s0010_re.xyz"], tmp_path / "nested" / "ptb")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01junk")
    found = discover(tmp_path)
    assert [(reader.name, path.relative_to(tmp_path).as_posix()) for reader, path in found] == [
        ("wfdb", "E07500.hea"),
        ("wfdb", "nested/ptb/s0010_re.hea"),
    ]


def test_discover_lists_unclaimed_files(ecg_data_dir: Path, tmp_path: Path) -> None:
    _copy(ecg_data_dir, ["E07500.hea", "E07500.mat", "A0001.mat"], tmp_path)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(UnsupportedFormat) as info:
        discover(tmp_path)
    assert "A0001.mat" in info.value.message and "notes.txt" in info.value.message
    assert info.value.details["files"] == ["A0001.mat", "notes.txt"]


def test_discover_without_records(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="no ECG record"):
        discover(tmp_path)


def test_discover_header_outside_folder_is_unsafe(ecg_data_dir: Path, tmp_path: Path) -> None:
    from app.errors import UnsafeUpload

    inner = tmp_path / "inner"
    _copy(ecg_data_dir, ["E07500.mat"], tmp_path)
    inner.mkdir()
    (inner / "E07500.hea").write_text((ecg_data_dir / "E07500.hea").read_text().replace("E07500.mat", "../E07500.mat"))
    with pytest.raises(UnsafeUpload):
        discover(inner)


def test_read_any_file_and_folder(ecg_data_dir: Path, tmp_path: Path) -> None:
    assert read_any(ecg_data_dir / "E07500.hea").n_samples == 5000
    _copy(ecg_data_dir, ["A0001.hea", "A0001.mat"], tmp_path / "one")
    assert read_any(tmp_path / "one").n_samples == 7500
    _copy(ecg_data_dir, ["E07500.hea", "E07500.mat"], tmp_path / "one")
    with pytest.raises(InvalidInput, match="2 records"):
        read_any(tmp_path / "one")


def test_read_any_unknown_file(ecg_data_dir: Path) -> None:
    assert sniff(ecg_data_dir / "E07500.mat") is None
    with pytest.raises(UnsupportedFormat, match=r"E07500\.mat is in no supported format"):
        read_any(ecg_data_dir / "E07500.mat")
