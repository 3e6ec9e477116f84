"""Uploaded bytes -> a private temporary folder, safely.

``unpacked_upload`` writes each uploaded file into a fresh ``TemporaryDirectory`` (mode
0700) that is always removed when the ``with`` block ends, also on error. Upload names are
reduced to a plain base name; names that are empty, absolute, contain ``..`` or control
characters are refused. Zip archives (recognised by content) are unpacked member by
member: symbolic links, special files, traversal and duplicate names are refused, and sizes
are checked both as declared and while streaming, so a zip bomb is stopped before it
fills the disk.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.errors import InvalidInput, MalformedFile, UnsafeUpload, UploadTooLarge

MiB = 1 << 20
CHUNK_BYTES = 1 << 16
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
RATIO_CHECK_MIN_BYTES = 1 * MiB  # small members cannot be bombs; ratio checked above this
MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 50 * MiB  # per uploaded file and per archive member
    max_files: int = 64  # uploaded files per request
    max_archive_members: int = 256  # per archive
    max_unpacked_bytes: int = 200 * MiB  # everything written, all files together
    max_compression_ratio: float = 200.0


class _Budget:
    """Bytes written so far against the total limit."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limits.max_unpacked_bytes:
            raise _too_large("the unpacked upload", "max_unpacked_bytes", self.limits)


def _check_name_text(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UnsafeUpload(f"{what} has an empty name")
    if _CONTROL.search(name):
        raise UnsafeUpload(f"{what} name {name!r} contains NUL or control characters")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeUpload(f"{what} name {name!r} is an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeUpload(f"{what} name {name!r} contains '..'")
    if len(name) > 4096 or any(len(part) > MAX_NAME_CHARS for part in parts):
        raise InvalidInput(f"{what} name is too long")
    return name


def safe_basename(name: str) -> str:
    """The base name of an uploaded file, or UnsafeUpload for a dangerous name."""
    base = _check_name_text(name, "uploaded file").replace("\\", "/").split("/")[-1]
    if base in ("", "."):
        raise UnsafeUpload(f"uploaded file name {name!r} has no file name")
    return base


def _member_parts(name: str) -> tuple[str, ...]:
    parts = tuple(p for p in _check_name_text(name, "archive member").replace("\\", "/").split("/"))
    return tuple(p for p in parts if p not in ("", "."))


def _chunks(content: BinaryIO | bytes) -> Iterator[bytes]:
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
        for start in range(0, len(data), CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]
        return
    while chunk := content.read(CHUNK_BYTES):
        yield chunk


def _too_large(what: str, limit_name: str, limits: UploadLimits) -> UploadTooLarge:
    limit = getattr(limits, limit_name)
    return UploadTooLarge(
        f"{what} exceeds {limit_name} ({limit:g})", details={"limit": limit_name, "value": limit}
    )


def _write_stream(
    target: Path, chunks: Iterable[bytes], max_bytes: int, budget: _Budget, what: str
) -> int:
    written = 0
    with target.open("xb") as out:  # exclusive: never follows or replaces an existing entry
        for chunk in chunks:
            written += len(chunk)
            if written > max_bytes:
                raise _too_large(what, "max_upload_bytes", budget.limits)
            budget.take(len(chunk))
            out.write(chunk)
    return written


def _member_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF


def _check_member(info: zipfile.ZipInfo, archive: str, limits: UploadLimits) -> None:
    _member_parts(info.filename)  # name checks before anything is written
    mode = _member_mode(info)
    if stat.S_ISLNK(mode):
        raise UnsafeUpload(f"{archive}: member {info.filename!r} is a symbolic link")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeUpload(f"{archive}: member {info.filename!r} is not a regular file")
    if info.flag_bits & 0x1:
        raise MalformedFile(f"{archive}: member {info.filename!r} is encrypted")
    if info.file_size > limits.max_upload_bytes:
        raise _too_large(f"{archive}: member {info.filename!r}", "max_upload_bytes", limits)
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_CHECK_MIN_BYTES and ratio > limits.max_compression_ratio:
        raise _too_large(
            f"{archive}: member {info.filename!r} compression ratio {ratio:.0f}",
            "max_compression_ratio",
            limits,
        )


def _check_archive(zf: zipfile.ZipFile, archive: str, budget: _Budget) -> None:
    limits = budget.limits
    members = zf.infolist()
    if len(members) > limits.max_archive_members:
        raise _too_large(f"{archive}: {len(members)} members", "max_archive_members", limits)
    for info in members:
        _check_member(info, archive, limits)
    declared = sum(info.file_size for info in members)
    if budget.used + declared > limits.max_unpacked_bytes:
        what = f"{archive}: declared unpacked size {declared}"
        raise _too_large(what, "max_unpacked_bytes", limits)


def _shared_name(origin: str, parts: tuple[str, ...]) -> InvalidInput:
    return InvalidInput(f"{origin}: a file and a folder share the name {'/'.join(parts)!r}")


_UNPACK_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError
)


class _Sandbox:
    """The folder records are written into, and the names already taken."""

    def __init__(self, root: Path, limits: UploadLimits) -> None:
        self.root = root
        self.limits = limits
        self.budget = _Budget(limits)
        self.taken: set[tuple[str, ...]] = set()

    def claim(self, parts: tuple[str, ...], origin: str) -> Path:
        if not parts:
            raise UnsafeUpload(f"{origin} has no file name")
        if parts in self.taken:
            name = "/".join(parts)
            raise InvalidInput(f"two uploaded files are named {name!r}", details={"name": name})
        self.taken.add(parts)
        target = self.root.joinpath(*parts)
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise UnsafeUpload(f"{origin} resolves outside the upload folder")
        try:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise _shared_name(origin, parts) from None
        if target.exists() or target.is_symlink():
            raise _shared_name(origin, parts)
        return target


def _member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str) -> Iterator[bytes]:
    try:
        with zf.open(info) as member:
            while chunk := member.read(CHUNK_BYTES):
                yield chunk
    except _UNPACK_ERRORS as exc:
        what = f"{archive}: member {info.filename!r}"
        raise MalformedFile(f"{what} cannot be unpacked ({exc})") from None


def _unpack(archive_path: Path, archive: str, box: _Sandbox) -> None:
    try:
        zf = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        what = f"{archive} looks like a zip archive but"
        raise MalformedFile(f"{what} cannot be opened ({exc})") from None
    with zf:
        _check_archive(zf, archive, box.budget)
        for info in zf.infolist():
            parts = _member_parts(info.filename)
            if info.is_dir() or not parts:
                continue
            what = f"{archive}: member {info.filename!r}"
            target = box.claim(parts, what)
            cap = min(info.file_size, box.limits.max_upload_bytes)
            written = _write_stream(target, _member_chunks(zf, info, archive), cap, box.budget, what)
            if written != info.file_size:
                raise MalformedFile(f"{archive}: member {info.filename!r} is shorter than declared")


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) in ZIP_MAGIC


def _ingest(files: Iterable[tuple[str, BinaryIO | bytes]], box: _Sandbox, staging: Path) -> None:
    limits = box.limits
    for index, (name, content) in enumerate(files):
        if index >= limits.max_files:
            raise _too_large(f"more than {limits.max_files} files", "max_files", limits)
        base = safe_basename(name)
        staged = staging / str(index)
        what = f"upload {base!r}"
        _write_stream(staged, _chunks(content), limits.max_upload_bytes, box.budget, what)
        if _is_zip(staged):
            box.budget.used -= staged.stat().st_size  # the archive itself is not kept
            _unpack(staged, base, box)
            staged.unlink()
        else:
            os.replace(staged, box.claim((base,), what))


@contextmanager
def unpacked_upload(
    files: Iterable[tuple[str, BinaryIO | bytes]],
    limits: UploadLimits = UploadLimits(),
    *,
    parent: Path | None = None,
) -> Iterator[Path]:
    """A private folder holding the uploaded files (zips unpacked); removed on exit.

    ``parent`` chooses where the temporary folder is made (default: the system temp dir).
    """
    with tempfile.TemporaryDirectory(prefix="ecg-upload-", dir=parent) as tmp:
        root = Path(tmp)
        os.chmod(root, 0o700)
        staging, files_dir = root / "staging", root / "files"
        staging.mkdir(mode=0o700)
        files_dir.mkdir(mode=0o700)
        _ingest(files, _Sandbox(files_dir, limits), staging)
        yield files_dir
