"""Format readers and the registry that detects formats from content.

Adding a format: write one module with a ``FormatReader`` named ``READER`` and add one
line to ``READERS`` (most specific first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.ecg.readers import (
    cpsc_mat,
    csv_reader,
    dicom_reader,
    edf_reader,
    ge_muse,
    hl7_aecg,
    ishne,
    npy_reader,
    philips_sierra,
    scp_ecg,
    sph_hdf5,
    wfdb_reader,
)
from app.ecg.readers.base import HEAD_BYTES, FormatReader, ReadHints
from app.ecg.recording import Recording
from app.errors import InvalidInput, MalformedFile, UnsupportedFormat

READERS: list[FormatReader] = [
    wfdb_reader.READER,
    dicom_reader.READER,
    scp_ecg.READER,
    ishne.READER,
    hl7_aecg.READER,
    ge_muse.READER,
    philips_sierra.READER,
    edf_reader.READER,
    cpsc_mat.READER,
    sph_hdf5.READER,
    npy_reader.READER,
    csv_reader.READER,
]

# Archive/OS clutter that never holds a record (macOS resource forks, Finder files).
_IGNORED_DIRS = frozenset({"__MACOSX"})


def formats() -> list[dict[str, Any]]:
    """One description per registered format, in detection order."""
    return [
        {"name": r.name, "title": r.title, "extensions": list(r.extensions)} for r in READERS
    ]


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(HEAD_BYTES)
    except OSError as exc:
        raise MalformedFile(f"{path.name}: cannot be read ({exc.strerror})") from None


def sniff(path: Path) -> FormatReader | None:
    """The first registered reader whose content check claims the file, or None."""
    head = _head(path)
    return next((reader for reader in READERS if reader.claims(path, head)), None)


def _is_ignored(path: Path, directory: Path) -> bool:
    parts = path.relative_to(directory).parts
    return path.name.startswith(".") or any(part in _IGNORED_DIRS for part in parts)


def _candidate_files(directory: Path) -> list[Path]:
    files = (p for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink())
    return [p for p in files if not _is_ignored(p, directory)]


def _supported_text() -> str:
    return "; ".join(r.title for r in READERS)


def discover(directory: Path) -> list[tuple[FormatReader, Path]]:
    """Every record in an unpacked upload, each with the reader that claimed it.

    Files that are companions of a claimed record (e.g. WFDB signal files) are not
    records themselves. Hidden files and ``__MACOSX`` folders are skipped. Files nobody
    claims, or a folder without any record, raise UnsupportedFormat listing them.
    """
    files = _candidate_files(directory)
    claimed = {path: sniff(path) for path in files}
    companions: set[Path] = set()
    for path, reader in claimed.items():
        if reader is not None:
            companions.update(p.resolve() for p in reader.companions(path))
    free = [p for p in files if p.resolve() not in companions]
    unknown = [p for p in free if claimed[p] is None]
    if unknown:
        names = [str(p.relative_to(directory)) for p in unknown]
        raise UnsupportedFormat(
            f"files in no supported format: {', '.join(names)} (supported: {_supported_text()})",
            details={"files": names},
        )
    records = [(reader, p) for p in free if (reader := claimed[p]) is not None]
    if not records:
        raise UnsupportedFormat(
            f"the upload contains no ECG record (supported: {_supported_text()})"
        )
    return records


def read_any(path: Path, hints: ReadHints = ReadHints()) -> Recording:
    """Read one record: a file in any registered format, or a folder holding exactly one."""
    if path.is_dir():
        records = discover(path)
        if len(records) != 1:
            raise InvalidInput(f"{path.name} holds {len(records)} records; expected exactly one")
        reader, record_path = records[0]
        return reader.read(record_path, hints)
    sniffed = sniff(path)
    if sniffed is None:
        raise UnsupportedFormat(
            f"{path.name} is in no supported format (supported: {_supported_text()})",
            details={"files": [path.name]},
        )
    return sniffed.read(path, hints)
