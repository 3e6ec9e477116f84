"""SCP-ECG (EN 1064:2005 / ISO 11073-91064), decoded with ecgdatakit's SCP parser.

The record's structure is checked here, from the standard, before the library decodes a
sample: the preamble (record CRC, record size), Section 0's pointers (every section inside the
record, its ID header naming it, its CRC-CCITT matching), Section 3's lead definitions (lead
count and sample ranges against the reader limits) and Section 6's layout (amplitude value
multiplier, sample interval, encoding, and per-lead byte counts that can hold the samples
Section 3 declares). Only then does ecgdatakit decode Section 6 (Huffman tables of Section 2,
first/second differences, reference beat subtraction with Sections 4 and 5); whatever it
raises becomes MalformedFile (or UnsupportedSignal for a feature it does not decode, such as
bimodal compression).

Samples are digits times Section 6's AVM (nanovolts per digit); ``Recording.gains`` is
1e6 / AVM digits per mV. The rate is 1e6 / the sample interval in microseconds, as the file
states it (500 Hz is 2000 us). ``acquired_at`` comes from Section 1 tags 25 (date) and 26
(time), with tag 34's offset when present (aware) or naive. Lead names come from Section 3's
lead codes (EN 1064 table of lead identifications). Leads recorded at different times (not
simultaneously: different sample ranges in Section 3) are refused; no patient field is read
into metadata.
"""

from __future__ import annotations

import binascii
import struct
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.ecg.readers._common import gain_from_resolution, refuse_unusable_gains
from app.ecg.readers._limits import check_leads, check_samples
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.errors import MalformedFile, UnsupportedSignal

if TYPE_CHECKING:
    from ecgdatakit import ECGRecord  # only for the annotation: the import stays lazy in _decode

_HEADER = 16
_POINTER = 10
# EN 1064 Section 3 lead identification codes: 1-8 and 61-64 the 12 standard leads,
# 9-20 the extra chest, right-sided and Frank leads, 65-69 -aVR and V8/V9 (right).
_LEAD_CODES: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
    19: "CC5", 20: "CM5", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR",
    66: "V8", 67: "V9", 68: "V8R", 69: "V9R",
}


def _u16(data: bytes, pos: int) -> int:
    return int(struct.unpack_from("<H", data, pos)[0])


def _u32(data: bytes, pos: int) -> int:
    return int(struct.unpack_from("<I", data, pos)[0])


def _crc(data: bytes) -> int:
    """CRC-CCITT (0x1021, initial 0xFFFF), as EN 1064 defines the record and section CRCs."""
    return binascii.crc_hqx(data, 0xFFFF)


def _looks_like_scp(head: bytes) -> bool:
    """Section 0's ID header at byte 7 (1-based) and its first pointer naming itself at byte 7."""
    if len(head) < 32:
        return False
    record_size, sec0_id, sec0_len = _u32(head, 2), _u16(head, 8), _u32(head, 10)
    if sec0_id != 0 or sec0_len < _HEADER + _POINTER or (sec0_len - _HEADER) % _POINTER:
        return False
    return record_size >= 6 + sec0_len and _u16(head, 22) == 0 and _u32(head, 28) == 7


@dataclass(frozen=True)
class _Layout:
    """What the structure check found: sections by ID (0-based offset, length), the leads."""

    sections: dict[int, tuple[int, int]]
    codes: tuple[int, ...]
    ranges: tuple[tuple[int, int], ...]
    flags: int
    avm_nv: int
    interval_us: int


def _sections(data: bytes) -> dict[int, tuple[int, int]]:
    size = len(data)
    sec0_len = _u32(data, 10)
    if 6 + sec0_len > size:
        raise MalformedFile(f"SCP-ECG Section 0 ({sec0_len} bytes) runs past the end of the {size}-byte record")
    found: dict[int, tuple[int, int]] = {}
    for pos in range(6 + _HEADER, 6 + sec0_len - _POINTER + 1, _POINTER):
        sid, length, index = _u16(data, pos), _u32(data, pos + 2), _u32(data, pos + 6)
        if length == 0 or sid == 0:
            continue
        start = index - 1
        if index == 0 or start + length > size:
            raise MalformedFile(
                f"SCP-ECG Section {sid} ({length} bytes at byte {index}) lies beyond the end of "
                f"the {size}-byte record",
                details={"section": sid},
            )
        if sid <= 11:  # sections 12+ are manufacturer-specific: their headers are not checked
            if length < _HEADER or _u16(data, start + 2) != sid:
                raise MalformedFile(f"SCP-ECG Section 0 points to Section {sid}, but no such section header is there",
                                    details={"section": sid})
            if _crc(data[start + 2 : start + length]) != _u16(data, start):
                raise MalformedFile(f"SCP-ECG Section {sid} fails its CRC check (the file is damaged)",
                                    details={"section": sid})
        found[sid] = (start, length)
    return found


def _body(data: bytes, where: tuple[int, int]) -> bytes:
    start, length = where
    return data[start + _HEADER : start + length]


def _check(data: bytes) -> _Layout:
    """The structure check; MalformedFile / UploadTooLarge / UnsupportedSignal naming the problem."""
    if len(data) < 6 + _HEADER + _POINTER or not _looks_like_scp(data[:32]):
        raise MalformedFile("not an SCP-ECG record: no Section 0 at byte 7")
    declared = _u32(data, 2)
    if declared > len(data):
        raise MalformedFile(f"SCP-ECG record is truncated: it declares {declared} bytes, the file has {len(data)}")
    data = data[:declared]
    if _crc(data[2:]) != _u16(data, 0):
        raise MalformedFile("SCP-ECG record fails its CRC check (the file is damaged)")
    sections = _sections(data)
    if 3 not in sections:
        raise MalformedFile("SCP-ECG record has no Section 3 (lead definition)")
    if 6 not in sections:
        raise UnsupportedSignal("SCP-ECG record has no Section 6 (rhythm data); only rhythm data is read")

    sec3 = _body(data, sections[3])
    if len(sec3) < 2:
        raise MalformedFile("SCP-ECG Section 3 is too short")
    n_leads, flags = sec3[0], sec3[1]
    if n_leads == 0:
        raise MalformedFile("SCP-ECG Section 3 declares 0 leads")
    check_leads(n_leads, "SCP-ECG Section 3")
    if 2 + 9 * n_leads > len(sec3):
        raise MalformedFile(f"SCP-ECG Section 3 declares {n_leads} leads but holds {(len(sec3) - 2) // 9}")
    ranges, codes = [], []
    for i in range(n_leads):
        start, end, code = struct.unpack_from("<IIB", sec3, 2 + 9 * i)
        if start < 1 or end < start:
            raise MalformedFile(f"SCP-ECG Section 3: lead {i + 1} has an invalid sample range {start}-{end}")
        ranges.append((int(start), int(end)))
        codes.append(int(code))
    check_samples(n_leads, max(end - start + 1 for start, end in ranges), "SCP-ECG Section 3")
    if len({start for start, _ in ranges}) > 1:
        raise UnsupportedSignal(
            "SCP-ECG leads were not recorded simultaneously (different sample ranges in Section 3); "
            "only simultaneous recordings are read",
            details={"ranges": [f"{s}-{e}" for s, e in ranges]},
        )

    sec6 = _body(data, sections[6])
    if len(sec6) < 6 + 2 * n_leads:
        raise MalformedFile(f"SCP-ECG Section 6 is too short for {n_leads} leads")
    avm, interval, diff = _u16(sec6, 0), _u16(sec6, 2), sec6[4]
    if interval == 0:
        raise MalformedFile("SCP-ECG Section 6 declares a sample interval of 0 us")
    if diff not in (0, 1, 2):
        raise MalformedFile(f"SCP-ECG Section 6 declares an unknown difference encoding {diff}")
    sizes = [_u16(sec6, 6 + 2 * i) for i in range(n_leads)]
    if 6 + 2 * n_leads + sum(sizes) > len(sec6):
        raise MalformedFile(f"SCP-ECG Section 6 lead data ({sum(sizes)} bytes) runs past the end of the section")
    huffman = 2 in sections
    for i, ((start, end), size) in enumerate(zip(ranges, sizes, strict=True)):
        n = end - start + 1
        # uncompressed: 2 bytes a sample; Huffman: at least 1 bit a sample, whatever the table
        room = size * 8 if huffman else size // 2
        if n > room:
            raise MalformedFile(
                f"SCP-ECG Section 6 lead {i + 1} holds {size} bytes, too few for the {n} samples "
                "Section 3 declares (truncated)",
                details={"lead": i + 1, "declared_samples": n, "bytes": size},
            )
    return _Layout(sections, tuple(codes), tuple(ranges), flags, avm, interval)


def _acquired_at(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


class ScpEcgReader:
    name = "scp_ecg"
    title = "SCP-ECG (EN 1064 / ISO 11073-91064)"
    extensions = (".scp",)

    def claims(self, path: Path, head: bytes) -> bool:
        return _looks_like_scp(head)

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise MalformedFile(f"cannot read SCP-ECG file ({e.strerror})") from None
        try:
            layout = _check(data)
        except (struct.error, IndexError):
            raise MalformedFile("SCP-ECG record is truncated or inconsistent") from None
        names = tuple(_LEAD_CODES.get(c, f"lead code {c}") for c in layout.codes)
        if len(set(names)) != len(names):
            raise MalformedFile(f"SCP-ECG Section 3 names a lead twice ({', '.join(names)})")
        refuse_unusable_gains([float(layout.avm_nv)] * len(names), names, label="SCP-ECG Section 6",
                              field="amplitude value multiplier (AVM)")
        record = self._decode(Path(path))
        leads = record.leads
        if len(leads) != len(names):
            raise MalformedFile(f"SCP-ECG rhythm data holds {len(leads)} leads, Section 3 declares {len(names)}")
        lengths = {len(lead.samples) for lead in leads}
        n = min(lengths)
        signals = np.empty((len(leads), n), dtype=np.float64)
        mv_per_digit = layout.avm_nv * 1e-6
        for row, lead in enumerate(leads):
            signals[row] = np.asarray(lead.samples[:n], dtype=np.float64) * mv_per_digit
        warnings_out: list[SignalWarning] = []
        if len(lengths) > 1:
            warnings_out.append(SignalWarning("unequal_lead_lengths",
                                              f"leads have {sorted(lengths)} samples; all cut to {n}"))
        gain = gain_from_resolution(layout.avm_nv * 1e-3, 1e-3)  # uV per digit -> digits per mV
        return Recording(
            signals=signals, fs=1e6 / layout.interval_us, lead_names=names, source_format=self.name,
            warnings=warnings_out, gains=(gain,) * len(names),
            acquired_at=_acquired_at(record.recording.date),
            metadata={
                "scp_version": record.file_format.version,
                "sections": sorted(layout.sections),
                "compression": record.recording.acquisition.signal.compression,
                "encoding": record.recording.acquisition.signal.data_encoding,
                "amplitude_nv_per_digit": layout.avm_nv,
                "sample_interval_us": layout.interval_us,
            },
        )

    @staticmethod
    def _decode(path: Path) -> ECGRecord:
        from ecgdatakit.exceptions import ECGDataKitError, UnsupportedFormatError
        from ecgdatakit.parsing.parsers.scp_ecg import SCPECGParser

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # CRCs were checked above; its other notes are not ours
                return SCPECGParser().parse(path)
        except UnsupportedFormatError as e:
            raise UnsupportedSignal(f"SCP-ECG feature not supported: {e}") from None
        except ECGDataKitError as e:
            raise MalformedFile(f"cannot decode SCP-ECG: {e}") from None
        except (ValueError, struct.error, IndexError, OverflowError, KeyError, TypeError) as e:
            raise MalformedFile(f"cannot decode SCP-ECG ({type(e).__name__}: {e})") from None


READER: FormatReader = ScpEcgReader()
