"""An independent ISHNE Holter writer for the ISHNE reader's tests.

Written from the standard (Badilini F, "The ISHNE Holter Standard Output File Format", Ann
Noninvasive Electrocardiol 1998;3(3):263-266), never from the reader or the library it is
compared with. A file is:

- the 8-byte magic number ``ISHNE1.0``;
- a 2-byte checksum: CRC-CCITT (polynomial 0x1021, initial 0xFFFF) of the header that follows
  it, fixed and variable-length blocks together (bytes 10 up to the start of the ECG block),
  stored as a little-endian 16-bit integer;
- the fixed header block of 512 bytes (bytes 10-521), all integers little-endian
  (``long`` 4 bytes, ``short`` 2 bytes, signed):
  10 variable block size (long), 14 samples per lead (long), 18 offset of the variable block
  (long, 522), 22 offset of the ECG block (long, 522 + variable block size), 26 file version
  (short), 28 first name (40 chars), 68 last name (40), 108 patient ID (20), 128 sex (short),
  130 race (short), 132 birth date, 138 record date, 144 file creation date (each 3 shorts:
  day, month, year), 150 start time (3 shorts: hour, minute, second), 156 number of stored
  leads (short), 158 lead specification (12 shorts, Table 1), 182 lead quality (12 shorts),
  206 amplitude resolution (12 shorts, integer nanovolts per digit), 230 pacemaker code
  (short), 232 recorder type (40 chars), 272 sampling rate (short, Hz), 274 proprietary (80
  chars), 354 copyright (80 chars), 434 reserved (88 bytes);
- the variable-length block (free text);
- the ECG block: 16-bit signed little-endian samples, interleaved by lead (sample 1 of lead 1,
  sample 1 of lead 2, ..., sample 2 of lead 1, ...).

Samples are ``round(mV / step)`` with the step the lead's resolution in nV, so a correct reader
returns the original within half a step. Lead specification codes (Table 1): 0 unknown,
1 generic bipolar, 2-4 X, Y, Z, 5-7 I, II, III, 8-10 aVR, aVL, aVF, 11-16 V1-V6, 17-19 ES, AS,
AI (Nehb); -9 marks an absent lead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

MAGIC = b"ISHNE1.0"
FIXED_END = 522  # magic (8) + checksum (2) + fixed header (512)
LEAD_CODES = {
    "X": 2, "Y": 3, "Z": 4, "I": 5, "II": 6, "III": 7, "aVR": 8, "aVL": 9, "aVF": 10,
    "V1": 11, "V2": 12, "V3": 13, "V4": 14, "V5": 15, "V6": 16, "ES": 17, "AS": 18, "AI": 19,
}
ACQUIRED = datetime(2021, 3, 4, 5, 6, 7)  # noqa: DTZ001 - ISHNE stores a local date and time
FAKE_FIRST, FAKE_LAST, FAKE_ID = "JANE_SECRET", "DOE_SECRET", "PID-998877"

# Field offsets (from the start of the file), as the standard lists them
OFF_VAR_SIZE, OFF_ECG_SIZE, OFF_VAR_OFFSET, OFF_ECG_OFFSET = 10, 14, 18, 22
OFF_NLEADS, OFF_LEAD_SPEC, OFF_QUALITY, OFF_RESOLUTION, OFF_RATE = 156, 158, 182, 206, 272


def crc_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT: x^16 + x^12 + x^5 + 1 (0x1021), initial 0xFFFF, MSB first, no final XOR;
    bit by bit from the definition."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True)
class Written:
    path: Path
    digits: np.ndarray  # (n_leads, n) int16 as stored
    steps_mv: np.ndarray  # (n_leads,) mV per digit


def _text(value: str, size: int) -> bytes:
    raw = value.encode("latin-1")[: size - 1]
    return raw + b"\x00" * (size - len(raw))


def _shorts(values: list[int], n: int = 12, fill: int = 0) -> bytes:
    return struct.pack(f"<{n}h", *(values + [fill] * (n - len(values))))


def header(*, var_size: int, ecg_size: int, n_leads: int, codes: list[int], res_nv: list[int],
           fs: int, acquired: datetime | None, var_offset: int = FIXED_END,
           ecg_offset: int | None = None) -> bytes:
    """The 512-byte fixed header block (bytes 10-521)."""
    ecg_offset = FIXED_END + var_size if ecg_offset is None else ecg_offset
    out = struct.pack("<iiiih", var_size, ecg_size, var_offset, ecg_offset, 1)
    out += _text(FAKE_FIRST, 40) + _text(FAKE_LAST, 40) + _text(FAKE_ID, 20)
    out += struct.pack("<hh", 2, 1)  # sex female, race Caucasian
    out += struct.pack("<3h", 11, 2, 1947)  # birth date
    rec_date = (acquired.day, acquired.month, acquired.year) if acquired else (0, 0, 0)
    out += struct.pack("<3h", *rec_date)
    out += struct.pack("<3h", 5, 3, 2021)  # file creation date
    start = (acquired.hour, acquired.minute, acquired.second) if acquired else (0, 0, 0)
    out += struct.pack("<3h", *start)
    out += struct.pack("<h", n_leads)
    out += _shorts(codes, fill=-9) + _shorts([1] * min(n_leads, 12)) + _shorts(res_nv)
    out += struct.pack("<h", 0)  # no pacemaker
    out += _text("digital", 40) + struct.pack("<h", fs)
    out += _text("writers_ishne", 80) + _text("public domain test file", 80) + b"\x00" * 88
    assert len(out) == 512, len(out)
    return out


def assemble(fixed: bytes, var_block: bytes, samples: bytes, *, checksum: int | None = None) -> bytes:
    """Magic, checksum (computed unless given), fixed header, variable block, ECG block."""
    crc = crc_ccitt(fixed + var_block) if checksum is None else checksum
    return MAGIC + struct.pack("<H", crc) + fixed + var_block + samples


def write_ishne(path: Path, signals_mv: np.ndarray, fs: float, names: tuple[str, ...], *,
                res_nv: int | list[int] = 2500, var_block: bytes = b"comment: writers_ishne\x00",
                acquired: datetime | None = ACQUIRED) -> Written:
    """Write ``signals_mv`` (n_leads x n, mV) as an ISHNE file; at most 12 leads."""
    n_leads, n = signals_mv.shape
    assert 1 <= n_leads <= 12 and float(fs).is_integer()
    res = [res_nv] * n_leads if isinstance(res_nv, int) else list(res_nv)
    steps_mv = np.asarray(res, dtype=np.float64) * 1e-6
    digits = np.clip(np.round(signals_mv / steps_mv[:, None]), -32767, 32767).astype("<i2")
    codes = [LEAD_CODES.get(name, 0) for name in names]
    fixed = header(var_size=len(var_block), ecg_size=n, n_leads=n_leads, codes=codes, res_nv=res,
                   fs=int(fs), acquired=acquired)
    samples = digits.T.tobytes()  # interleaved: frame by frame
    path.write_bytes(assemble(fixed, var_block, samples))
    return Written(path, digits, steps_mv)


def rewrite(data: bytes, changes: dict[int, tuple[str, int]], *, fix_crc: bool = True) -> bytes:
    """``data`` with fields changed (offset -> (struct format, value)), CRC recomputed."""
    buf = bytearray(data)
    for offset, (fmt, value) in changes.items():
        struct.pack_into(fmt, buf, offset, value)
    if fix_crc:
        ecg_start = FIXED_END + struct.unpack_from("<i", buf, OFF_VAR_SIZE)[0]
        struct.pack_into("<H", buf, 8, crc_ccitt(bytes(buf[10:ecg_start])))
    return bytes(buf)
