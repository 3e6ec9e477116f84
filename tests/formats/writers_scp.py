"""An independent SCP-ECG (EN 1064:2005 / ISO 11073-91064) writer for the SCP-ECG reader's tests.

Written from the standard's description of the record, never from the reader or the library
it uses: a record is a 6-byte preamble (CRC-CCITT over the rest of the record, then the record
size as uint32) followed by sections; every section starts with a 16-byte ID header (CRC over
the section from its 3rd byte, section ID uint16, section length uint32 including the header,
section version, protocol version, 6 reserved bytes: "SCPECG" in Section 0). All integers are
little-endian. This writer produces Sections 0 (pointers), 1 (header tags: patient ID,
acquiring device, date and time of acquisition, time zone), 3 (lead definition) and 6 (rhythm
data) only, uncompressed: no Section 2 (so no Huffman coding: every sample is a 16-bit signed
integer; or, with ``huffman=True``, Section 2 naming the standard's default Huffman table and
Section 6 coded with it), no reference beat subtraction, no bimodal compression, amplitudes stored directly
(difference encoding 0) or as first / second differences.

Samples are quantised ``round(mV / step)`` with ``step`` the amplitude value multiplier
(Section 6 AVM, in nanovolts), so a correct reader returns the original within ``step / 2``.
A lead's byte count in Section 6 is a uint16, so one lead holds at most 32,767 samples
(65.5 s at 500 Hz) in this uncompressed form.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

# EN 1064 Section 3 lead identification codes (the ones these tests use)
LEAD_CODES = {
    "I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8,
    "III": 61, "aVR": 62, "aVL": 63, "aVF": 64,
}

# SCP-ECG stores the recorder's local date and time (tags 25, 26); tag 34 gives its offset
ACQUIRED = datetime(2021, 3, 4, 5, 6, 7)  # noqa: DTZ001 - a local time, as the file holds it


def crc_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-CCITT as the standard defines it: polynomial x^16 + x^12 + x^5 + 1 (0x1021), initial
    value 0xFFFF, most significant bit first, no final XOR. Bit by bit, from the definition."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _section(sid: int, body: bytes, *, version: int = 20, protocol: int = 20) -> bytes:
    body = body + b"\x00" * (len(body) % 2)  # sections have an even length
    reserved = b"SCPECG" if sid == 0 else b"\x00" * 6
    rest = struct.pack("<HIBB", sid, 16 + len(body), version, protocol) + reserved + body
    return struct.pack("<H", crc_ccitt(rest)) + rest


def _tag(tag: int, value: bytes) -> bytes:
    return struct.pack("<BH", tag, len(value)) + value


def _device_tag() -> bytes:
    """Tag 14, machine ID of the acquiring device (fixed part of 36 bytes, then 4 texts)."""
    fixed = struct.pack("<HHHBB", 1, 2, 3, 0, 255)  # institution, department, device, cart, "other"
    fixed += b"TESTW\x00"  # model, 6 bytes
    fixed += bytes([20, 0xA0, 0x00, 0x00, 1])  # protocol 2.0, compatibility, ASCII, capabilities, 50 Hz
    fixed += b"\x00" * 16  # reserved
    texts = [b"1.0", b"SN-0001", b"writers_scp", b"writers_scp 1", b"TestWriter"]
    fixed += bytes([len(texts[0]) + 1])
    return fixed + b"".join(t + b"\x00" for t in texts)


def section1(acquired: datetime | None, *, tz_minutes: int | None = None, patient_id: str = "PID-998877") -> bytes:
    tags = _tag(2, patient_id.encode() + b"\x00") + _tag(14, _device_tag())
    if acquired is not None:
        tags += _tag(25, struct.pack("<HBB", acquired.year, acquired.month, acquired.day))
        tags += _tag(26, bytes([acquired.hour, acquired.minute, acquired.second]))
    if tz_minutes is not None:
        tags += _tag(34, struct.pack("<hH", tz_minutes, 0) + b"\x00")
    return tags + _tag(255, b"")


def section3(codes: list[int], n_samples: int | list[tuple[int, int]], *, flags: int = 0x04 | (12 << 3)) -> bytes:
    ranges = n_samples if isinstance(n_samples, list) else [(1, n_samples)] * len(codes)
    body = bytes([len(codes) & 0xFF, flags])
    for code, (start, end) in zip(codes, ranges, strict=True):
        body += struct.pack("<IIB", start, end, code)
    return body


def _differences(x: np.ndarray, mode: int) -> np.ndarray:
    x = x.astype(np.int64)
    if mode == 0:
        return x
    if mode == 1:
        return np.concatenate((x[:1], np.diff(x)))
    # second differences: d[0] = x[0], d[1] = x[1], d[n] = x[n] - 2 x[n-1] + x[n-2]
    return np.concatenate((x[:2], x[2:] - 2 * x[1:-1] + x[:-2]))


def section6(digits: np.ndarray, *, avm_nv: int, interval_us: int, diff: int = 0) -> bytes:
    coded = [_differences(row, diff) for row in digits]
    for row in coded:
        if row.size and (row.min() < -32768 or row.max() > 32767):
            raise ValueError("a coded sample does not fit 16 bits; use a larger step")
    data = [row.astype("<i2").tobytes() for row in coded]
    if any(len(d) > 0xFFFF for d in data):
        raise ValueError("an uncompressed lead holds at most 32767 samples")
    head = struct.pack("<HHBB", avm_nv, interval_us, diff, 0)
    return head + b"".join(struct.pack("<H", len(d)) for d in data) + b"".join(data)


def _default_huffman_bits(value: int) -> str:
    """One value in the standard's default Huffman table (EN 1064 Section 2, table 19999):
    0 is "0"; +-1..8 are that many 1s, a 0 and a sign bit (0 positive); other values an escape
    "1111111110" + 8 bits or "1111111111" + 16 bits, two's complement, most significant first."""
    if value == 0:
        return "0"
    m = abs(value)
    if m <= 8:
        return "1" * m + "0" + ("1" if value < 0 else "0")
    if -128 <= value <= 127:
        return "1111111110" + format(value & 0xFF, "08b")
    return "1111111111" + format(value & 0xFFFF, "016b")


def huffman_default(values: np.ndarray) -> bytes:
    """Values coded with the default Huffman table, the bit stream padded with 0s to a byte."""
    bits = "".join(_default_huffman_bits(int(v)) for v in values)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def section2_default() -> bytes:
    """Section 2 saying "the default Huffman table" (number of tables 19999)."""
    return struct.pack("<H", 19999)


def section6_huffman(digits: np.ndarray, *, avm_nv: int, interval_us: int, diff: int = 2) -> bytes:
    coded = [_differences(row, diff) for row in digits]
    for row in coded:
        if row.size and (row.min() < -32768 or row.max() > 32767):
            raise ValueError("a coded sample does not fit 16 bits; use a larger step")
    data = [huffman_default(row) for row in coded]
    if any(len(d) > 0xFFFF for d in data):
        raise ValueError("a lead's coded data must fit 65535 bytes")
    head = struct.pack("<HHBB", avm_nv, interval_us, diff, 0)
    return head + b"".join(struct.pack("<H", len(d)) for d in data) + b"".join(data)


def assemble(sections: dict[int, bytes], *, version: int = 20) -> bytes:
    """A record from section bodies {id: body}: Section 0 with a pointer for each of the
    sections 0-11 (length 0 and index 0 for those absent) and any higher ones present."""
    ids = sorted(set(range(12)) | set(sections))
    built = {sid: _section(sid, body, version=version, protocol=version) for sid, body in sections.items()}
    sec0_len = 16 + 10 * len(ids)
    offsets: dict[int, int] = {0: 7}  # 1-based byte index; Section 0 starts at byte 7
    pos = 7 + sec0_len
    for sid in ids:
        if sid in built:
            offsets[sid] = pos
            pos += len(built[sid])
    pointers = b""
    for sid in ids:
        if sid == 0:
            pointers += struct.pack("<HII", 0, sec0_len, 7)
        elif sid in built:
            pointers += struct.pack("<HII", sid, len(built[sid]), offsets[sid])
        else:
            pointers += struct.pack("<HII", sid, 0, 0)
    out = _section(0, pointers, version=version, protocol=version)
    out += b"".join(built[sid] for sid in ids if sid in built)
    rest = struct.pack("<I", 6 + len(out)) + out
    return struct.pack("<H", crc_ccitt(rest)) + rest


@dataclass(frozen=True)
class Written:
    path: Path
    digits: np.ndarray  # (n_leads, n) the stored integers
    step_mv: float  # one digit in mV
    fs: float


def write_scp(path: Path, sig_mv: np.ndarray, fs: float, names: tuple[str, ...] | list[str], *,
              step_uv: float = 5.0, diff: int = 0, acquired: datetime | None = ACQUIRED,
              tz_minutes: int | None = 60, huffman: bool = False) -> Written:
    """Write signals (n_leads, n) in mV as an SCP-ECG record at ``step_uv`` microvolts per digit;
    ``huffman``: Section 6 coded with the default Huffman table (and a Section 2 saying so)."""
    avm = round(step_uv * 1000)
    if not 0 < avm <= 0xFFFF:
        raise ValueError("AVM is a uint16 in nanovolts")
    interval = round(1e6 / fs)
    step_mv = avm / 1e6
    digits = np.round(np.asarray(sig_mv, dtype=np.float64) / step_mv).astype(np.int64)
    codes = [LEAD_CODES[n] for n in names]
    sections = {
        1: section1(acquired, tz_minutes=tz_minutes),
        3: section3(codes, digits.shape[1]),
        6: (section6_huffman if huffman else section6)(digits, avm_nv=avm, interval_us=interval, diff=diff),
    }
    if huffman:
        sections[2] = section2_default()
    data = assemble(sections)
    path.write_bytes(data)
    return Written(path, digits, step_mv, 1e6 / interval)



def section_offset(data: bytes, sid: int) -> tuple[int, int]:
    """(0-based offset, length) of section ``sid`` from Section 0's pointers."""
    sec0_len = struct.unpack_from("<I", data, 10)[0]
    for pos in range(22, 6 + sec0_len, 10):
        s, length, index = struct.unpack_from("<HII", data, pos)
        if s == sid:
            return index - 1, length
    raise KeyError(sid)


def fix_crcs(data: bytes) -> bytes:
    """Recompute every section CRC and the record CRC (after a deliberate edit)."""
    buf = bytearray(data)
    sec0_len = struct.unpack_from("<I", buf, 10)[0]
    for pos in range(22, 6 + sec0_len, 10):
        _, length, index = struct.unpack_from("<HII", buf, pos)
        if length and index and index - 1 + length <= len(buf):
            start = index - 1
            struct.pack_into("<H", buf, start, crc_ccitt(bytes(buf[start + 2 : start + length])))
    struct.pack_into("<H", buf, 0, crc_ccitt(bytes(buf[2:])))
    return bytes(buf)
