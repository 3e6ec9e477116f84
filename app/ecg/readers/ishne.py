"""ISHNE Holter standard output format (Badilini F, Ann Noninvasive Electrocardiol 1998;3:263-266).

A file is the magic number ``ISHNE1.0``, a CRC-CCITT of the header, a 512-byte fixed header,
a variable-length block of free text and the ECG block: 16-bit signed little-endian samples
interleaved by lead. Before a sample is read the header is checked here, from the standard:
the magic number, the variable block inside the file, the checksum (CRC-CCITT, polynomial
0x1021, initial 0xFFFF, over bytes 10 up to the ECG block; stored as a little-endian short,
the byte-swapped value accepted too, as some writers store it), the number of leads (1..12,
the header describes at most 12; more than the reader limit of 64 is a 413 like every format),
the samples per lead (at least 1, within the reader limits, else 413; more than the file's
bytes hold is a 422 "truncated"), the sampling rate (positive) and each lead's amplitude
resolution (positive nanovolts per digit).

Samples are digits x the lead's resolution (nV per digit); ``Recording.gains`` is 1e6 /
resolution digits per mV. ``acquired_at`` is the header's record date and start time (local,
naive; None when either is not a valid date/time). Lead names come from the lead specification
codes of the standard's Table 1 (5-16: I, II, III, aVR, aVL, aVF, V1-V6; 2-4 X, Y, Z; 17-19 the
Nehb leads ES, AS, AI); any other code (0 unknown, 1 generic bipolar, -9 absent) is named
``lead <n> (ISHNE code <c>)``. The standard's lead-fault value -32768 becomes NaN (a
``nan_samples`` warning). The ECG block offset stored in the header is redundant (522 + the
variable block size); where it disagrees, 522 + the variable block size is used, as the
standard defines the layout, and the disagreement is listed in ``metadata.header_quirks``.
No patient field (name, ID, sex, race, birth date) is read.

Decoded here with numpy, not by ecgdatakit's ISHNE parser, which the tests use as a cross-check
(tests/formats/test_ishne.py: equal samples, gains, names, rate and time): once the header is
checked the decode is one ``np.fromfile`` of a known count and a reshape, and doing it here
reads exactly the declared frames (ecgdatakit reads every byte after the header into memory and
ignores the declared sample count), refuses a failing checksum (ecgdatakit only warns) and does
not parse the patient block at all. Speed is no reason either way: 0.26 ms here vs 0.32 ms for
ecgdatakit's parser, a 12-lead 10 s record at 500 Hz.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from app.ecg.readers._common import gain_from_resolution, nonfinite_warning, refuse_unusable_gains
from app.ecg.readers._limits import check_leads, check_samples
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.errors import MalformedFile

MAGIC = b"ISHNE1.0"
_FIXED_END = 522  # magic (8) + checksum (2) + fixed header block (512)
_MAX_HEADER_LEADS = 12  # the lead specification, quality and resolution arrays hold 12
_FAULT = -32768  # the standard's proposed value for a lead fault
# Table 1 of the standard: lead specification codes
_LEAD_CODES: dict[int, str] = {
    2: "X", 3: "Y", 4: "Z", 5: "I", 6: "II", 7: "III", 8: "aVR", 9: "aVL", 10: "aVF",
    11: "V1", 12: "V2", 13: "V3", 14: "V4", 15: "V5", 16: "V6", 17: "ES", 18: "AS", 19: "AI",
}


def _i16(data: bytes, pos: int) -> int:
    return int(struct.unpack_from("<h", data, pos)[0])


def _i32(data: bytes, pos: int) -> int:
    return int(struct.unpack_from("<i", data, pos)[0])


def _datetime(head: bytes) -> datetime | None:
    day, month, year = (_i16(head, 138 + 2 * i) for i in range(3))
    hour, minute, second = (_i16(head, 150 + 2 * i) for i in range(3))
    try:
        return datetime(year, month, day, hour, minute, second)  # noqa: DTZ001 - local, as stored
    except ValueError:
        return None


@dataclass(frozen=True)
class _Layout:
    """What the header check found."""

    n_leads: int
    n: int  # samples per lead
    fs: int
    data_offset: int
    var_size: int
    trailing_bytes: int
    quirks: tuple[str, ...]


def _crc(handle: BinaryIO, head: bytes, var_size: int) -> int:
    """CRC-CCITT of bytes 10 .. 522 + var_size, the variable block read in 1 MB chunks."""
    crc = binascii.crc_hqx(head[10:_FIXED_END], 0xFFFF)
    remaining = var_size
    while remaining > 0:
        chunk = handle.read(min(remaining, 1 << 20))
        if not chunk:
            break
        crc = binascii.crc_hqx(chunk, crc)
        remaining -= len(chunk)
    return crc


def _check(head: bytes, size: int, handle: BinaryIO) -> _Layout:
    """The header check; the layout found, or MalformedFile / UploadTooLarge naming the problem."""
    if head[:8] != MAGIC:
        raise MalformedFile("not an ISHNE Holter file: no ISHNE1.0 magic number")
    if len(head) < _FIXED_END:
        raise MalformedFile(f"ISHNE header is truncated: the file has {size} bytes, the header {_FIXED_END}")
    var_size = _i32(head, 10)
    if var_size < 0:
        raise MalformedFile(f"ISHNE header declares a variable-length block of {var_size} bytes")
    if _FIXED_END + var_size > size:
        raise MalformedFile(
            f"ISHNE variable-length block ({var_size} bytes) runs past the end of the {size}-byte file "
            "(truncated or inconsistent)")
    stored = struct.unpack_from("<H", head, 8)[0]
    computed = _crc(handle, head, var_size)
    if stored not in (computed, ((computed & 0xFF) << 8) | (computed >> 8)):
        raise MalformedFile("ISHNE header fails its CRC check (the file is damaged)",
                            details={"stored": f"{stored:#06x}", "computed": f"{computed:#06x}"})
    n_leads = _i16(head, 156)
    if n_leads <= 0:
        raise MalformedFile(f"ISHNE header declares {n_leads} leads")
    check_leads(n_leads, "ISHNE header")
    if n_leads > _MAX_HEADER_LEADS:
        raise MalformedFile(f"ISHNE header declares {n_leads} leads; the header describes at most "
                            f"{_MAX_HEADER_LEADS} (lead specification and resolution)")
    n = _i32(head, 14)
    if n <= 0:
        raise MalformedFile(f"ISHNE header declares {n} samples per lead")
    check_samples(n_leads, n, "ISHNE header")
    data_offset = _FIXED_END + var_size
    held = (size - data_offset) // (2 * n_leads)
    if n > held:
        raise MalformedFile(
            f"ISHNE ECG block is truncated: the header declares {n} samples per lead, the file holds {held}",
            details={"declared_samples": n, "samples_in_file": held})
    fs = _i16(head, 272)
    if fs <= 0:
        raise MalformedFile(f"ISHNE header declares a sampling rate of {fs} Hz")
    quirks = []
    if _i32(head, 18) != _FIXED_END:
        quirks.append(f"variable block offset {_i32(head, 18)} (the standard: {_FIXED_END}); {_FIXED_END} used")
    if _i32(head, 22) != data_offset:
        quirks.append(f"ECG block offset {_i32(head, 22)} (522 + variable block: {data_offset}); "
                      f"{data_offset} used")
    return _Layout(n_leads, n, fs, data_offset, var_size, size - data_offset - 2 * n_leads * n, tuple(quirks))


def _names(codes: list[int]) -> tuple[str, ...]:
    names = tuple(_LEAD_CODES.get(c, f"lead {i + 1} (ISHNE code {c})") for i, c in enumerate(codes))
    if len(set(names)) != len(names):
        raise MalformedFile(f"ISHNE lead specification names a lead twice ({', '.join(names)})")
    return names


class IshneReader:
    name = "ishne"
    title = "ISHNE Holter standard output format"
    extensions = (".ecg",)

    def claims(self, path: Path, head: bytes) -> bool:
        return head[:8] == MAGIC

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        try:
            with Path(path).open("rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(0)
                head = handle.read(_FIXED_END)
                layout = _check(head, size, handle)
                n_leads, n = layout.n_leads, layout.n
                handle.seek(layout.data_offset)
                digits = np.fromfile(handle, dtype="<i2", count=n_leads * n)
        except OSError as e:
            raise MalformedFile(f"cannot read ISHNE file ({e.strerror})") from None
        except struct.error:
            raise MalformedFile("ISHNE header is truncated or inconsistent") from None
        if digits.size != n_leads * n:
            raise MalformedFile("ISHNE ECG block is truncated")
        codes = [_i16(head, 158 + 2 * i) for i in range(n_leads)]
        names = _names(codes)
        res_nv = [_i16(head, 206 + 2 * i) for i in range(n_leads)]
        refuse_unusable_gains([float(r) for r in res_nv], names, label="ISHNE header",
                              field="amplitude resolution")
        negative = [name for name, r in zip(names, res_nv, strict=True) if r < 0]
        if negative:
            raise MalformedFile(f"ISHNE header: amplitude resolution is negative for lead(s) {', '.join(negative)}",
                                details={"leads": negative, "field": "amplitude resolution"})
        frames = digits.reshape(n, n_leads).T
        signals = frames.astype(np.float64) * (np.asarray(res_nv, dtype=np.float64) * 1e-6)[:, None]
        signals[frames == _FAULT] = np.nan
        warnings_out: list[SignalWarning] = nonfinite_warning(signals, names)
        quirks = list(layout.quirks)
        if layout.trailing_bytes:
            quirks.append(f"{layout.trailing_bytes} bytes after the declared samples ignored")
        return Recording(
            signals=signals, fs=float(layout.fs), lead_names=names,
            source_format=self.name, warnings=warnings_out,
            gains=tuple(gain_from_resolution(r * 1e-3, 1e-3) for r in res_nv),  # uV per digit
            acquired_at=_datetime(head),
            metadata={
                "ishne_file_version": _i16(head, 26),
                "lead_specification_codes": codes,
                "lead_quality_codes": [_i16(head, 182 + 2 * i) for i in range(n_leads)],
                "amplitude_nv_per_digit": res_nv,
                "variable_block_bytes": layout.var_size,
                **({"header_quirks": quirks} if quirks else {}),
            },
        )


READER: FormatReader = IshneReader()
