"""The sizes a file may declare, checked by every reader before it decodes or allocates.

One place for them, derived from what the service accepts at all: records up to
``MAX_DURATION_S`` (600 s, the ``ECGFM_MAX_DURATION_S`` default) sampled at up to
``MAX_SAMPLING_RATE_HZ`` (10 kHz), with up to ``MAX_LEADS`` signals (12 leads plus the
extra channels real archives carry: Frank leads, respiration, markers).

The largest accepted recording is ``MAX_VALUES`` float64 values (12 leads x 600 s x
10 kHz = 72 million values, ``LARGEST_RECORDING_BYTES`` = 576 MB); no reader allocates more
than ``MEMORY_BUDGET_BYTES`` (four times that) for one file. A file declaring more leads,
samples or decompressed bytes than these is refused before anything that size is allocated:
UploadTooLarge (413) for declared sizes beyond the limits, MalformedFile (422) for sizes
the file's own bytes contradict. Each message names the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from app.ecg.units import MAX_SAMPLING_RATE_HZ
from app.errors import UploadTooLarge

MAX_DURATION_S = 600.0
MAX_LEADS = 64
STANDARD_LEAD_COUNT = 12
MAX_SAMPLES_PER_LEAD = int(MAX_DURATION_S * MAX_SAMPLING_RATE_HZ)  # 6,000,000
MAX_VALUES = STANDARD_LEAD_COUNT * MAX_SAMPLES_PER_LEAD  # 72,000,000 (all leads together)
LARGEST_RECORDING_BYTES = MAX_VALUES * 8  # float64
MEMORY_BUDGET_BYTES = 4 * LARGEST_RECORDING_BYTES
# Stored (possibly compressed) sample data may inflate to at most this many bytes.
MAX_DECOMPRESSED_BYTES = LARGEST_RECORDING_BYTES
# Text formats: a number needs a few dozen characters; a header line names at most MAX_LEADS.
MAX_CELL_CHARS = 64
MAX_HEADER_CELL_CHARS = 256
MAX_LINE_CHARS = 16 * 1024


def check_leads(n_leads: int, what: str) -> None:
    """UploadTooLarge if a file declares more than MAX_LEADS signals."""
    if n_leads > MAX_LEADS:
        raise UploadTooLarge(
            f"{what} declares {n_leads} signals; at most {MAX_LEADS} are accepted",
            details={"limit": "max_leads", "max": MAX_LEADS, "declared": n_leads},
        )


def check_samples(n_leads: int, n_samples: int, what: str) -> None:
    """UploadTooLarge if leads x samples exceed the largest accepted recording."""
    check_leads(n_leads, what)
    if n_samples > MAX_SAMPLES_PER_LEAD:
        raise UploadTooLarge(
            f"{what} declares {n_samples} samples per signal; at most {MAX_SAMPLES_PER_LEAD} "
            f"({MAX_DURATION_S:g} s at {MAX_SAMPLING_RATE_HZ:g} Hz) are accepted",
            details={"limit": "max_samples_per_lead", "max": MAX_SAMPLES_PER_LEAD,
                     "declared": n_samples},
        )
    if n_leads * n_samples > MAX_VALUES:
        raise UploadTooLarge(
            f"{what} declares {n_leads} x {n_samples} samples; at most {MAX_VALUES} values "
            f"(12 leads x {MAX_DURATION_S:g} s at {MAX_SAMPLING_RATE_HZ:g} Hz) are accepted",
            details={"limit": "max_values", "max": MAX_VALUES, "declared": n_leads * n_samples},
        )


def check_decompressed(n_bytes: int, what: str) -> None:
    """UploadTooLarge if data inflates past MAX_DECOMPRESSED_BYTES."""
    if n_bytes > MAX_DECOMPRESSED_BYTES:
        raise UploadTooLarge(
            f"{what} decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes, the limit for "
            "one recording",
            details={"limit": "max_decompressed_bytes", "max": MAX_DECOMPRESSED_BYTES},
        )


def inflated_size(read: Callable[[int], bytes], what: str, *, raw: bool = False) -> int:
    """Bytes a zlib stream inflates to, counted in chunks (never held), refused past the limit.

    ``read(n)`` returns the next compressed bytes (b"" at the end), e.g. a file's ``read``;
    ``raw`` means a raw deflate stream (no zlib header), as in deflated DICOM.
    """
    import zlib

    inflater = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    total = 0
    while True:
        chunk = read(1 << 16)
        if not chunk:
            break
        buf = chunk
        while buf:
            try:
                out = inflater.decompress(buf, 1 << 20)
            except zlib.error:
                return total  # corrupt streams are the decoder's to report
            total += len(out)
            check_decompressed(total, what)
            buf = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total


def count_tokens(text: str) -> int:
    """Whitespace-separated tokens in ``text``, counted without making a string per token
    (``text.split()`` on 100 MB of ``"0 "`` would make 50 million Python strings)."""
    import numpy as np

    data = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    if data.size == 0:
        return 0
    blank = (data == 0x20) | ((data >= 0x09) & (data <= 0x0D))
    starts = int(np.count_nonzero(blank[:-1] & ~blank[1:]))
    return starts + (0 if blank[0] else 1)
