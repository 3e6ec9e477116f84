"""Truth for evaluation: which labels of a label set each record of a folder carries.

Read without the model (no ONNX, no database, no scikit-learn, matplotlib or torch), so that
evaluation and few-shot fine-tuning (``app.training``) share it.

Records are found as the service finds them (``app.usecases.offline.find_records``: formats
detected from content, WFDB signal files belong to their header), one file at a time, so that
one damaged record is reported instead of failing the folder. Truth comes from either

* the records themselves: the WFDB header comment ``# Dx: code,code`` (SNOMED CT codes, as in
  the PhysioNet/CinC Challenge 2020/2021 data; ``#Dx:`` without the space too), matched to the
  labels through each label's ``SNOMED CT`` codes (several per label for merged classes,
  ``713427006|59118001``). Codes no label carries are counted in ``unmatched_codes``. Other
  formats carry no truth this reader knows: give them a CSV.
* a CSV (``truth_csv``) with a header row and columns ``record`` (the path relative to the data
  folder, without extension, e.g. ``cinc2021-a/E07500``; with its extension is accepted too),
  ``label`` (a label name of the set, matched ignoring case and spacing; one row per label;
  an empty cell says "none of the set's labels") and optionally ``patient``. With a CSV, the
  headers' ``# Dx:`` lines are not read.

Every record found is either in ``records`` or in ``unreadable`` with the reason (a header that
cannot be parsed, no ``# Dx:`` line, no CSV row, ...): nothing is dropped silently. Files that
are no record and would never be one (README, SOURCE.txt, licences, CSV tables) are listed in
``ignored_files``.

Patients: from the CSV's ``patient`` column where it is given; otherwise (WFDB headers carry no
patient id) each record is its own patient (``patients_known`` is False). Records whose signal
bytes are identical (the same recording copied under two names: the shared samples hold one
such pair) are put in one patient group (``duplicates``), so a copy can never be on both sides
of a validation/test split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from app.ecg.readers.base import FormatReader
from app.errors import InvalidInput, MalformedFile, ServiceError, UnsupportedFormat
from app.knowledge.types import CODE_SEPARATOR, SNOMED_CT, name_key
from app.usecases.offline import find_records

__all__ = [
    "LabelLike",
    "LabelledData",
    "LabelledRecord",
    "Unreadable",
    "data_fingerprint",
    "load_labelled",
    "read_dx_codes",
]

_DX_LINE = re.compile(r"^\s*#\s*Dx\s*:(?P<codes>.*)$", re.IGNORECASE | re.MULTILINE)
# Files that hold documentation or tables, never a record: listed in ``ignored_files`` when no
# reader claims them (a CSV a reader claims, one naming leads in its header, is a record).
_NOT_RECORDS = frozenset({".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".pdf", ".html", ".htm", ".yaml", ".yml"})
_IGNORED_DIRS = frozenset({"__MACOSX"})
MAX_TRUTH_CSV_BYTES = 64 * 1024 * 1024
_HASH_CHUNK = 1024 * 1024


class LabelLike(Protocol):
    """What truth needs of a label: its name and its codes (``{"SNOMED CT": "164889003|..."}``).

    ``app.knowledge.types.Label`` and ``LabelDraft`` both fit."""

    @property
    def name(self) -> str: ...

    @property
    def codes(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class LabelledRecord:
    path: Path  # the record file, as find_records returns it
    record_id: str  # path relative to the data folder, without extension ("cinc2021-a/E07500")
    patient_id: str  # the patient id, or record_id when none is known
    positives: frozenset[str]  # names of the label set's labels present in this record


@dataclass(frozen=True)
class Unreadable:
    record_id: str
    reason: str


@dataclass(frozen=True)
class LabelledData:
    records: list[LabelledRecord]
    unreadable: list[Unreadable]
    label_names: list[str]  # the label set's labels, in its order
    unmatched_codes: dict[str, int]  # truth codes in the data no label carries -> count
    # beyond the API the brief fixes:
    truth_source: str = "wfdb-dx"  # "wfdb-dx" (header comments) or "csv" (truth_csv)
    patients_known: bool = False  # a patient id came from the truth CSV (else each record is its own patient)
    duplicates: list[tuple[str, ...]] = field(default_factory=list)  # record ids with identical signals
    ignored_files: list[str] = field(default_factory=list)  # files that are no record (README, licences, tables)
    unknown_labels: dict[str, int] = field(default_factory=dict)  # truth-CSV label names not in the set -> rows
    truth_without_record: list[str] = field(default_factory=list)  # truth-CSV records not found in the folder

    def positives_count(self) -> dict[str, int]:
        """Records carrying each label, in the set's order."""
        counts = Counter(name for r in self.records for name in r.positives)
        return {name: counts.get(name, 0) for name in self.label_names}


def read_dx_codes(header_text: str) -> list[str] | None:
    """The codes of a WFDB header's ``# Dx:`` line (in order, duplicates removed), or None
    when there is no such line."""
    match = _DX_LINE.search(header_text)
    if match is None:
        return None
    codes = [c.strip() for c in re.split(r"[,;\s]+", match["codes"]) if c.strip()]
    return list(dict.fromkeys(codes))


def _record_id(path: Path, data_dir: Path) -> str:
    return path.relative_to(data_dir).with_suffix("").as_posix()


def _candidate_files(data_dir: Path) -> list[Path]:
    out: list[Path] = []
    for p in sorted(data_dir.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        parts = p.relative_to(data_dir).parts
        if any(part.startswith(".") or part in _IGNORED_DIRS for part in parts):
            continue
        out.append(p)
    return out


def _reason(exc: ServiceError) -> str:
    return exc.message


@dataclass
class _Found:
    reader: FormatReader
    path: Path
    record_id: str
    companions: list[Path]


def _find(data_dir: Path) -> tuple[list[_Found], list[Unreadable], list[str]]:
    """Records (each with its reader and signal files), unreadable records, ignored files."""
    claimed: list[_Found] = []
    unclaimed: list[tuple[Path, str]] = []
    broken: dict[str, str] = {}
    for path in _candidate_files(data_dir):
        rid = _record_id(path, data_dir)
        try:
            ((reader, found),) = find_records([path])  # the service's own detection, one file at a time
            companions = [c.resolve() for c in reader.companions(found)]
        except UnsupportedFormat as exc:
            unclaimed.append((path, _reason(exc)))
            continue
        except ServiceError as exc:  # a header that cannot be parsed, a file that cannot be read
            broken.setdefault(rid, f"{path.name}: {_reason(exc)}")
            continue
        claimed.append(_Found(reader, found, rid, companions))
    signal_files = {c for f in claimed for c in f.companions}
    records = [f for f in claimed if f.path.resolve() not in signal_files]
    unreadable = [Unreadable(rid, reason) for rid, reason in broken.items()]
    ignored: list[str] = []
    known = {f.record_id for f in records} | set(broken)
    for path, _ in unclaimed:
        if path.resolve() in signal_files:
            continue
        rid = _record_id(path, data_dir)
        if path.suffix.lower() in _NOT_RECORDS:
            ignored.append(path.relative_to(data_dir).as_posix())
        elif rid not in known:  # e.g. a damaged header no reader recognises any more, a lone signal file
            unreadable.append(Unreadable(rid, f"{path.name} is in no supported format"))
            known.add(rid)
    return records, unreadable, ignored


def _content_digest(found: _Found) -> str:
    """sha256 of the record's signal bytes (its signal files, or the file itself)."""
    digest = hashlib.sha256()
    for p in sorted(found.companions) or [found.path]:
        try:
            with p.open("rb") as handle:
                while chunk := handle.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError:
            return f"unreadable:{found.record_id}"  # never equal to another's; reading it later reports it
    return digest.hexdigest()


@dataclass(frozen=True)
class _CsvTruth:
    labels: dict[str, set[str]]  # record id -> label names (the set's spelling)
    patients: dict[str, str]
    unknown_labels: dict[str, int]


def _normalise_record(value: str) -> str:
    text = value.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _read_truth_csv(path: Path, by_key: Mapping[str, str]) -> _CsvTruth:
    try:
        if path.stat().st_size > MAX_TRUTH_CSV_BYTES:
            raise InvalidInput(f"{path}: the truth CSV is larger than {MAX_TRUTH_CSV_BYTES} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MalformedFile(f"{path}: cannot be read ({exc.strerror})", details={"path": str(path)}) from None
    except UnicodeDecodeError:
        raise MalformedFile(f"{path}: the truth CSV must be UTF-8 text", details={"path": str(path)}) from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise InvalidInput(f"{path}: the truth CSV is empty (expected columns record,label[,patient])")
    columns = {h.strip().casefold(): i for i, h in enumerate(header)}
    if "record" not in columns or "label" not in columns:
        raise InvalidInput(f"{path}: the truth CSV needs the columns 'record' and 'label' (found {header})")
    rec_i, lab_i, pat_i = columns["record"], columns["label"], columns.get("patient")
    labels: dict[str, set[str]] = defaultdict(set)
    patients: dict[str, str] = {}
    unknown: Counter[str] = Counter()
    for line_no, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (len(header) - len(row))
        record = _normalise_record(cells[rec_i])
        if not record:
            raise InvalidInput(f"{path}, line {line_no}: the record is empty")
        labels.setdefault(record, set())
        label = cells[lab_i].strip()
        if label:
            name = by_key.get(name_key(label))
            if name is None:
                unknown[label] += 1
            else:
                labels[record].add(name)
        patient = cells[pat_i].strip() if pat_i is not None else ""
        if patient and patients.setdefault(record, patient) != patient:
            raise InvalidInput(f"{path}, line {line_no}: record {record!r} is given two patients")
    return _CsvTruth(dict(labels), patients, dict(unknown))


def _resolve_csv_ids(truth: _CsvTruth, ids: set[str]) -> _CsvTruth:
    """CSV record names given with their extension are mapped to the id without it."""
    labels: dict[str, set[str]] = {}
    patients: dict[str, str] = {}
    for record, names in truth.labels.items():
        key = record
        if key not in ids:
            stem = PurePosixPath(record).with_suffix("").as_posix() if PurePosixPath(record).suffix else record
            key = stem if stem in ids else record
        labels.setdefault(key, set()).update(names)
        if record in truth.patients:
            patients[key] = truth.patients[record]
    return _CsvTruth(labels, patients, truth.unknown_labels)


def _codes_to_labels(labels: Sequence[LabelLike]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for label in labels:
        raw = label.codes.get(SNOMED_CT, "")
        for code in (c.strip() for c in raw.split(CODE_SEPARATOR)):
            if code:
                out[code].append(label.name)
    return dict(out)


def _header_text(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(1024 * 1024).decode("latin-1")


class _Groups:
    """Union-find over record ids (patients and identical recordings)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def load_labelled(data_dir: Path, labels: Sequence[LabelLike], *, truth_csv: Path | None = None,
                  detect_duplicates: bool = True) -> LabelledData:
    """Every record below ``data_dir`` with its truth for ``labels`` (see the module docstring).

    Raises ``InvalidInput`` for a missing folder, no labels, a folder without any record, or a
    truth CSV that cannot be used; a record that cannot be used is listed in ``unreadable``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InvalidInput(f"{data_dir}: no such folder", details={"path": str(data_dir)})
    if not labels:
        raise InvalidInput("no label to evaluate")
    label_names = [label.name for label in labels]
    by_key = {name_key(n): n for n in label_names}
    found, unreadable, ignored = _find(data_dir)
    if not found and not unreadable:
        raise UnsupportedFormat(f"no ECG record in {data_dir}", details={"path": str(data_dir)})

    by_id: dict[str, _Found] = {}
    for f in found:
        if f.record_id in by_id:
            unreadable.append(Unreadable(f.record_id, f"{f.path.name}: another record ({by_id[f.record_id].path.name}) "
                                         "has the same name without extension; rename one"))
        else:
            by_id[f.record_id] = f

    csv_truth = _read_truth_csv(truth_csv, by_key) if truth_csv is not None else None
    if csv_truth is not None:
        csv_truth = _resolve_csv_ids(csv_truth, set(by_id))
    code_map = _codes_to_labels(labels)
    unmatched: Counter[str] = Counter()
    positives: dict[str, frozenset[str]] = {}
    for rid, f in by_id.items():
        if csv_truth is not None:
            if rid not in csv_truth.labels:
                unreadable.append(Unreadable(rid, "no row in the truth CSV"))
            else:
                positives[rid] = frozenset(csv_truth.labels[rid])
            continue
        if f.path.suffix.lower() != ".hea":
            unreadable.append(Unreadable(rid, f"{f.path.name}: no truth (only WFDB headers carry '# Dx:' codes; "
                                              "give this record's labels in a truth CSV)"))
            continue
        try:
            codes = read_dx_codes(_header_text(f.path))
        except OSError as exc:
            unreadable.append(Unreadable(rid, f"{f.path.name}: cannot be read ({exc.strerror})"))
            continue
        if codes is None:
            unreadable.append(Unreadable(rid, f"{f.path.name}: no '# Dx:' line in the header (and no truth CSV)"))
            continue
        if not codes:
            unreadable.append(Unreadable(rid, f"{f.path.name}: the '# Dx:' line lists no code"))
            continue
        names: set[str] = set()
        for code in codes:
            if code in code_map:
                names.update(code_map[code])
            else:
                unmatched[code] += 1
        positives[rid] = frozenset(names)

    groups = _Groups()
    given = csv_truth.patients if csv_truth is not None else {}
    first_of_patient: dict[str, str] = {}
    for rid in sorted(positives):
        patient = given.get(rid)
        if patient is not None:
            groups.union(first_of_patient.setdefault(patient, rid), rid)
    duplicates: list[tuple[str, ...]] = []
    if detect_duplicates:
        same: dict[str, list[str]] = defaultdict(list)
        for rid in sorted(positives):
            same[_content_digest(by_id[rid])].append(rid)
        for ids in same.values():
            if len(ids) > 1:
                duplicates.append(tuple(ids))
                for other in ids[1:]:
                    groups.union(ids[0], other)
    # a group's patient id: the id given for its first record (by record id), else that record's id
    members: dict[str, list[str]] = defaultdict(list)
    for rid in sorted(positives):
        members[groups.find(rid)].append(rid)
    patient_of: dict[str, str] = {}
    for ids in members.values():
        named = [given[r] for r in ids if r in given]
        pid = named[0] if named else ids[0]
        for r in ids:
            patient_of[r] = pid

    records = [LabelledRecord(by_id[rid].path, rid, patient_of[rid], positives[rid]) for rid in sorted(positives)]
    unreadable.sort(key=lambda u: u.record_id)
    return LabelledData(
        records=records,
        unreadable=unreadable,
        label_names=label_names,
        unmatched_codes=dict(sorted(unmatched.items(), key=lambda kv: (-kv[1], kv[0]))),
        truth_source="csv" if csv_truth is not None else "wfdb-dx",
        patients_known=bool(given),
        duplicates=duplicates,
        ignored_files=ignored,
        unknown_labels=dict(csv_truth.unknown_labels) if csv_truth is not None else {},
        truth_without_record=sorted(set(csv_truth.labels) - set(by_id)) if csv_truth is not None else [],
    )


def data_fingerprint(data: LabelledData, record_ids: Sequence[str] | None = None) -> str:
    """sha256 over the sorted record ids and their truth (and the label names): the same
    records with the same truth give the same fingerprint, whatever order they were read in."""
    wanted = None if record_ids is None else set(record_ids)
    rows = sorted((r.record_id, sorted(r.positives)) for r in data.records if wanted is None or r.record_id in wanted)
    payload = json.dumps({"labels": data.label_names, "records": rows}, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
