"""Upload sandbox: real files, real zips built here, every attack refused and cleaned up."""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from app.ecg.readers import discover
from app.ecg.uploads import UploadLimits, safe_basename, unpacked_upload
from app.errors import InvalidInput, MalformedFile, UnsafeUpload, UploadTooLarge

MiB = 1 << 20


@pytest.fixture
def parent(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def _refused(parent: Path, files: list, error: type[Exception], match: str, limits: UploadLimits = UploadLimits()):
    with pytest.raises(error, match=match):
        with unpacked_upload(files, limits, parent=parent):
            pytest.fail("the upload should have been refused")
    assert list(parent.iterdir()) == [], "temporary folder left behind"


def test_plain_files_and_streams(ecg_data_dir: Path, parent: Path) -> None:
    header = (ecg_data_dir / "E07500.hea").read_bytes()
    with (ecg_data_dir / "E07500.mat").open("rb") as mat:
        with unpacked_upload([("C:/x/../E07500.hea".split("/")[-1], header), ("E07500.mat", mat)], parent=parent) as folder:
            assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
            assert sorted(p.name for p in folder.iterdir()) == ["E07500.hea", "E07500.mat"]
            assert (folder / "E07500.mat").read_bytes() == (ecg_data_dir / "E07500.mat").read_bytes()
            assert [p.name for _, p in discover(folder)] == ["E07500.hea"]
    assert list(parent.iterdir()) == []


def test_folder_removed_when_caller_fails(ecg_data_dir: Path, parent: Path) -> None:
    with pytest.raises(RuntimeError):
        with unpacked_upload([("E07500.hea", (ecg_data_dir / "E07500.hea").read_bytes())], parent=parent):
            raise RuntimeError("caller failed")
    assert list(parent.iterdir()) == []


def test_zip_with_nested_folders(ecg_data_dir: Path, parent: Path) -> None:
    names = ["s0010_re.hea", "s0010_re.dat", "s0010_re.xyz"]
    archive = _zip([(f"ptb/{n}", (ecg_data_dir / n).read_bytes()) for n in names] + [("ptb/", b"")])
    with unpacked_upload([("records.zip", archive)], parent=parent) as folder:
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
            f"ptb/{n}" for n in sorted(names)
        ]
        assert [p.name for _, p in discover(folder)] == ["s0010_re.hea"]
    assert list(parent.iterdir()) == []


def test_zip_detected_by_content_not_name(ecg_data_dir: Path, parent: Path) -> None:
    archive = _zip([("E07500.hea", (ecg_data_dir / "E07500.hea").read_bytes())])
    with unpacked_upload([("upload.bin", archive)], parent=parent) as folder:
        assert [p.name for p in folder.iterdir()] == ["E07500.hea"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("E07500.hea", "E07500.hea"), ("dir/sub/E07500.hea", "E07500.hea"), ("dir\\E07500.mat", "E07500.mat")],
)
def test_safe_basename(name: str, expected: str) -> None:
    assert safe_basename(name) == expected


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x.hea", "contains '..'"),
        ("a/../../x.hea", "contains '..'"),
        ("..\\x.hea", "contains '..'"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\x", "absolute path"),
        ("C:\\x.hea", "absolute path"),
        ("a\x00b", "NUL or control"),
        ("x\n.hea", "NUL or control"),
        ("", "empty name"),
        ("  ", "empty name"),
        ("dir/", "no file name"),
        ("..", "contains '..'"),
    ],
)
def test_traversal_names_refused(name: str, problem: str, parent: Path) -> None:
    _refused(parent, [(name, b"data")], UnsafeUpload, re.escape(problem))


def test_duplicate_names_refused(parent: Path) -> None:
    _refused(parent, [("a/x.hea", b"1"), ("b/x.hea", b"2")], InvalidInput, "two uploaded files are named 'x.hea'")


def test_duplicate_between_zip_and_file_refused(parent: Path) -> None:
    _refused(parent, [("x.hea", b"1"), ("r.zip", _zip([("x.hea", b"2")]))], InvalidInput, "named 'x.hea'")


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt", "C:/evil.txt"])
def test_zip_traversal_refused(member: str, parent: Path) -> None:
    _refused(parent, [("r.zip", _zip([("ok.txt", b"x"), (member, b"evil")]))], UnsafeUpload, "archive member")
    assert not (parent.parent / "evil.txt").exists()


def test_zip_symlink_refused(parent: Path) -> None:
    link = zipfile.ZipInfo("E07500.mat")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip([(link, b"/etc/passwd")])
    _refused(parent, [("r.zip", archive)], UnsafeUpload, "symbolic link")


def test_zip_bomb_by_ratio(parent: Path) -> None:
    archive = _zip([("zeros.dat", bytes(20 * MiB))])
    assert len(archive) < 100_000
    _refused(parent, [("bomb.zip", archive)], UploadTooLarge, "max_compression_ratio")


def test_zip_bomb_by_total_size(parent: Path) -> None:
    members = [(f"part{i}.dat", bytes(3 * MiB)) for i in range(4)]  # 12 MiB declared
    limits = UploadLimits(max_unpacked_bytes=10 * MiB, max_compression_ratio=10_000)
    _refused(parent, [("bomb.zip", _zip(members))], UploadTooLarge, "max_unpacked_bytes", limits)


def test_zip_member_over_file_limit(parent: Path) -> None:
    limits = UploadLimits(max_upload_bytes=1 * MiB, max_compression_ratio=10_000)
    _refused(parent, [("r.zip", _zip([("big.dat", bytes(2 * MiB))]))], UploadTooLarge, "max_upload_bytes", limits)


def _lie_about_size(archive: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed-size fields (local header and central directory)."""
    data = bytearray(archive)
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, declared)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, declared)
    return bytes(data)


def test_zip_lying_about_size_stops_at_declared_size(parent: Path) -> None:
    archive = _lie_about_size(_zip([("zeros.dat", bytes(8 * MiB))]), declared=1000)
    limits = UploadLimits(max_unpacked_bytes=2 * MiB)
    with pytest.raises(MalformedFile, match="cannot be unpacked"):
        with unpacked_upload([("liar.zip", archive)], limits, parent=parent):
            pytest.fail("the upload should have been refused")
    assert list(parent.iterdir()) == []


def test_too_many_files(parent: Path) -> None:
    files = [(f"f{i}.hea", b"x") for i in range(4)]
    _refused(parent, files, UploadTooLarge, "max_files", UploadLimits(max_files=3))


def test_too_many_archive_members(parent: Path) -> None:
    archive = _zip([(f"m{i}.txt", b"x") for i in range(6)])
    _refused(parent, [("r.zip", archive)], UploadTooLarge, "max_archive_members", UploadLimits(max_archive_members=5))


def test_oversize_file_bytes_and_stream(parent: Path) -> None:
    limits = UploadLimits(max_upload_bytes=1000)
    _refused(parent, [("big.dat", bytes(1001))], UploadTooLarge, "max_upload_bytes", limits)
    _refused(parent, [("big.dat", io.BytesIO(bytes(5000)))], UploadTooLarge, "max_upload_bytes", limits)


def test_total_size_over_files(parent: Path) -> None:
    limits = UploadLimits(max_upload_bytes=1000, max_unpacked_bytes=1500)
    _refused(parent, [("a.dat", bytes(800)), ("b.dat", bytes(800))], UploadTooLarge, "max_unpacked_bytes", limits)


def test_broken_zip(parent: Path) -> None:
    _refused(parent, [("r.zip", b"PK\x03\x04" + b"\x00" * 40)], MalformedFile, "cannot be opened")


def test_file_and_folder_with_same_name(parent: Path) -> None:
    archive = _zip([("a", b"file"), ("a/b.txt", b"child")])
    _refused(parent, [("r.zip", archive)], InvalidInput, "share the name")


def test_header_pointing_outside_in_zip(ecg_data_dir: Path, parent: Path) -> None:
    header = (ecg_data_dir / "E07500.hea").read_text().replace("E07500.mat", "../E07500.mat").encode()
    archive = _zip([("rec/E07500.hea", header), ("E07500.mat", (ecg_data_dir / "E07500.mat").read_bytes())])
    with pytest.raises(UnsafeUpload, match="not a plain file next to the header"):
        with unpacked_upload([("r.zip", archive)], parent=parent) as folder:
            discover(folder)
    assert list(parent.iterdir()) == []
