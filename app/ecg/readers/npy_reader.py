"""NumPy ``.npy``: a bare (leads, samples) or (samples, leads) array.

The file carries neither rate, units nor lead names: ``ReadHints.sampling_rate`` is
required, ``ReadHints.units`` defaults to mV, and ``ReadHints.lead_names`` defaults to the
standard order I, II, III, aVR, aVL, aVF, V1-V6 when the array has 12 leads. Pickled
(object) arrays are never loaded. ``Recording.gains`` stays None: the file states no gain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.ecg.leads import STANDARD_LEADS
from app.ecg.readers._common import hinted_mv_factor, hinted_rate, nonfinite_warning
from app.ecg.readers._limits import MAX_VALUES, check_leads, check_samples
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording, SignalWarning
from app.errors import InvalidInput, MalformedFile

MAGIC = b"\x93NUMPY"


class NpyReader:
    name = "npy"
    title = "NumPy array (.npy, leads x samples or samples x leads)"
    extensions = (".npy",)

    def claims(self, path: Path, head: bytes) -> bool:
        return head[:6] == MAGIC

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        _check_declared(path)
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode=None)
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise MalformedFile(
                    "NPY file holds an object (pickled) array; save a numeric array instead"
                ) from None
            raise MalformedFile(f"cannot read NPY file: {e}") from None
        except (OSError, EOFError) as e:
            raise MalformedFile(f"cannot read NPY file: {e}") from None
        if not isinstance(arr, np.ndarray):
            raise MalformedFile("NPY file does not hold a single array")
        if arr.dtype.fields is not None or not (
            np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
        ):
            raise MalformedFile(f"NPY array has dtype {arr.dtype}; expected real numbers (int or float)")
        while arr.ndim > 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise MalformedFile(
                f"NPY array has shape {arr.shape}; expected 2-D (leads, samples) or (samples, leads)"
            )

        names = tuple(hints.lead_names) if hints.lead_names else None
        n_leads = len(names) if names else 12
        rows, cols = arr.shape
        if rows == n_leads:  # (leads, samples); also the square case
            signals = arr
        elif cols == n_leads:
            signals = arr.T
        elif names:
            raise InvalidInput(
                f"NPY array has shape {arr.shape} but {n_leads} lead names were given",
                details={"shape": list(arr.shape), "lead_names": list(names)},
            )
        else:
            raise InvalidInput(
                f"NPY array has shape {arr.shape}, not 12 leads; pass lead_names to say which "
                "leads it holds",
                details={"shape": list(arr.shape)},
            )
        if names is None:
            names = STANDARD_LEADS

        fs = hinted_rate(hints)
        if fs is None:
            raise InvalidInput("NPY files do not carry a sampling rate: pass sampling_rate (Hz)")
        factor, unit = hinted_mv_factor(hints)
        warnings: list[SignalWarning] = []
        if np.issubdtype(arr.dtype, np.integer) and hints.units is None:
            warnings.append(
                SignalWarning("assumed_units", f"integer samples read as {unit}; pass units if they are ADC counts")
            )
        out = np.asarray(signals, dtype=np.float64) * factor
        out = np.ascontiguousarray(out)
        warnings += nonfinite_warning(out, names)
        return Recording(
            signals=out, fs=fs, lead_names=names,
            source_format=self.name, warnings=warnings,
            metadata={
                "dtype": str(arr.dtype),
                "layout": "leads x samples" if signals is arr else "samples x leads",
                "units": unit,
                "lead_names_source": "hint" if hints.lead_names else "standard order",
            },
        )


def _check_declared(path: Path) -> None:
    """Refuse, from the header alone, an array beyond the limits or longer than the file."""
    fmt = np.lib.format
    try:
        with path.open("rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, _fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise MalformedFile(f"NPY format version {version} is not supported")
            data_start = fh.tell()
        size = path.stat().st_size
    except MalformedFile:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        raise MalformedFile(f"cannot read NPY file: its header is invalid ({e})") from None
    if dtype.hasobject:
        raise MalformedFile("NPY file holds an object (pickled) array; save a numeric array instead")
    if any(int(n) < 0 for n in shape):
        raise MalformedFile(f"NPY header declares a negative dimension {shape}")
    values = 1
    for n in shape:
        values *= int(n)
    dims = [int(n) for n in shape if int(n) != 1]
    if len(dims) == 2:
        check_leads(min(dims), "NPY header")
        check_samples(min(dims), max(dims), "NPY header")
    elif values > MAX_VALUES:
        check_samples(1, values, "NPY header")
    expected = values * dtype.itemsize
    if size - data_start < expected:
        raise MalformedFile(
            f"cannot read NPY file: it is truncated; its header declares shape {tuple(shape)} {dtype} "
            f"({expected} bytes), the file holds {max(size - data_start, 0)}",
            details={"declared_bytes": expected},
        )


READER: FormatReader = NpyReader()
