"""Offline scoring: ECG files, folders or bytes in, the diagnose use-case's typed result out.

The same ``DiagnoseService`` that serves ``POST /diagnose`` does the work (label sets,
knowledge, codes, warnings, evidence), so the command line, evaluation and archive scoring
give exactly what the API gives. Formats are detected from content with the reader
registry (``app.ecg.readers``): every record found below a folder (``discover``), and each
file given with the reader that claims it.

``OfflineScorer`` is a context manager: it runs the scorer's batcher on a private event loop
(``asyncio.Runner``) for as long as it is open, so many calls share one model and one set
of cached label vectors. Build one with ``app.service.open_offline_scorer(settings)``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from app.ecg.readers import READERS, discover, sniff
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.uploads import UploadLimits
from app.errors import InvalidInput, MalformedFile, UnsupportedFormat
from app.usecases.diagnose import DiagnoseOptions, DiagnoseService, EcgSource, Timings, read_uploaded_ecgs
from app.usecases.results import DiagnoseResult
from app.usecases.scoring import ServedModel

Found = tuple[FormatReader, Path]


def supported_text() -> str:
    return "; ".join(reader.title for reader in READERS)


def _existing(path: Path) -> Path:
    """``path``, or ``<path>.hea`` for a WFDB record named without its extension."""
    if path.exists():
        return path
    header = path.with_name(path.name + ".hea")
    if not path.suffix and header.is_file():
        return header
    raise MalformedFile(f"{path}: no such file or directory", details={"path": str(path)})


def find_records(paths: Sequence[Path]) -> list[Found]:
    """Every record in ``paths`` (files or folders), each with the reader that claims it.

    In the order given, folders expanded as ``discover`` does (name order; a folder holding a
    file in no supported format is refused, naming it). A file that belongs to another record
    given (a WFDB signal file next to its header) is not a record of its own; a file no reader
    claims raises ``UnsupportedFormat``; a path that does not exist ``MalformedFile``.
    """
    candidates: list[tuple[FormatReader | None, Path]] = []
    for given in paths:
        path = _existing(given)
        if path.is_dir():
            candidates.extend(discover(path))
        else:
            candidates.append((sniff(path), path))
    companions = {c.resolve() for reader, path in candidates if reader is not None for c in reader.companions(path)}
    records: list[Found] = []
    seen: set[Path] = set()
    for reader, path in candidates:
        key = path.resolve()
        if key in companions or key in seen:
            continue
        if reader is None:
            raise UnsupportedFormat(f"{path} is in no supported format (supported: {supported_text()})",
                                    details={"files": [str(path)]})
        seen.add(key)
        records.append((reader, path))
    if not records:
        raise UnsupportedFormat(f"no ECG record in {', '.join(map(str, paths))} (supported: {supported_text()})")
    return records


def read_records(paths: Sequence[Path], hints: ReadHints = ReadHints()) -> list[EcgSource]:
    """The recordings of every record in ``paths``; each source is named by its path."""
    return [EcgSource(reader.read(path, hints), filename=str(path)) for reader, path in find_records(paths)]


class OfflineScorer:
    """Score ECGs outside HTTP with the service's diagnose use-case (see the module docstring)."""

    def __init__(self, diagnose: DiagnoseService, model: ServedModel, limits: UploadLimits) -> None:
        self._diagnose = diagnose
        self.model = model
        self._limits = limits
        self._runner: asyncio.Runner | None = None

    def __enter__(self) -> OfflineScorer:
        runner = asyncio.Runner()
        runner.run(self._start())
        self._runner = runner
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                runner.run(self.model.stop(timeout=30.0))
            finally:
                runner.close()

    async def _start(self) -> None:
        self.model.start()  # binds the batcher to the runner's loop

    def diagnose_sources(self, sources: Sequence[EcgSource], options: DiagnoseOptions, *,
                         request_id: str | None = None) -> DiagnoseResult:
        """Score recordings already read (e.g. built from arrays) as one request."""
        if self._runner is None:
            raise RuntimeError("OfflineScorer is used outside its `with` block")
        if not sources:
            raise InvalidInput("no ECG to score")
        return self._runner.run(self._diagnose.diagnose(
            list(sources), options, Timings(), model=self.model, request_id=request_id or str(uuid.uuid4())))

    def diagnose_paths(self, paths: Sequence[Path], options: DiagnoseOptions, hints: ReadHints = ReadHints(), *,
                       request_id: str | None = None) -> DiagnoseResult:
        """Score every record in ``paths`` (files in any supported format, or folders) as one request.

        Results come in the order of ``find_records``; each names its path in ``source.filename``.
        """
        return self.diagnose_sources(read_records(paths, hints), options, request_id=request_id)

    def diagnose_bytes(self, files: Sequence[tuple[str, bytes | BinaryIO]], options: DiagnoseOptions,
                       hints: ReadHints = ReadHints(), *, request_id: str | None = None) -> DiagnoseResult:
        """Score uploaded-style content (name, bytes) exactly as ``POST /diagnose`` reads it:
        unpacked in a private temporary folder under the upload limits, archives included."""
        return self.diagnose_sources(read_uploaded_ecgs(list(files), self._limits, hints), options,
                                     request_id=request_id)
