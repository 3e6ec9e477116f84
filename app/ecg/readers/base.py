"""What every format reader looks like."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.ecg.recording import Recording

HEAD_BYTES = 4096


@dataclass(frozen=True)
class ReadHints:
    """What the caller knows that a file may not say."""

    sampling_rate: float | None = None
    units: str | None = None
    lead_names: tuple[str, ...] | None = None


class FormatReader(Protocol):
    """One file format. Readers are immutable descriptions, so the data members are read-only:
    a plain class attribute such as ``extensions = (".npy",)`` satisfies them."""

    @property
    def name(self) -> str:
        """Machine name, stable across releases (used in /formats and in error details)."""

    @property
    def title(self) -> str:
        """Human-readable description of the format."""

    @property
    def extensions(self) -> tuple[str, ...]:
        """Usual file name endings, for documentation only: detection goes by content."""

    def claims(self, path: Path, head: bytes) -> bool:
        """True if the file's content (``head`` = its first bytes) is this format."""

    def companions(self, path: Path) -> list[Path]:
        """Other files of the same record (e.g. WFDB signal files), resolved inside its folder."""

    def read(self, path: Path, hints: ReadHints) -> Recording:
        """Read one record; raise MalformedFile / UnsupportedSignal with a clear message."""
