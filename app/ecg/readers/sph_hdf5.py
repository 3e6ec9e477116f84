"""SPH layout HDF5 (Shandong Provincial Hospital 12-lead database): dataset ``ecg`` (12, N).

Each file holds one dataset ``ecg`` of shape (12, N), float16 millivolts, 500 Hz, leads in
the standard order I, II, III, aVR, aVL, aVF, V1-V6; nothing else (the database's patient
table lives in a separate metadata.csv, which is never read). A sampling rate stored as an
attribute (``fs`` / ``sampling_rate`` on the dataset or the file) is honoured, then
``ReadHints.sampling_rate``, then 500 Hz; ``ReadHints.units`` / ``lead_names`` override mV
and the standard order for files written in the same layout by other tools.

float16 keeps 11 significant bits: a value is within |x| * 2**-11 of what was written
(2**-25 mV absolute below 2**-14 mV). ``Recording.gains`` stays None: the layout stores
millivolts and no gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from app.ecg.readers._common import (
    hinted_lead_names,
    hinted_mv_factor,
    hinted_rate,
    nonfinite_warning,
)
from app.ecg.readers._limits import check_samples
from app.ecg.readers.base import FormatReader, ReadHints
from app.ecg.recording import Recording
from app.errors import InvalidInput, MalformedFile

SPH_FS = 500.0
MAGIC = b"\x89HDF\r\n\x1a\n"
_RATE_ATTRS = ("fs", "sampling_rate", "sample_rate", "frequency")


class _HasAttrs(Protocol):
    """An h5py Dataset, Group or File: anything with HDF5 attributes."""

    @property
    def attrs(self) -> Mapping[str, object]: ...


def _rate_attr(*objs: _HasAttrs) -> float | None:
    for obj in objs:
        for key in _RATE_ATTRS:
            if key in obj.attrs:
                try:
                    value = float(np.asarray(obj.attrs[key]).reshape(-1)[0])
                except (TypeError, ValueError, IndexError):
                    raise MalformedFile(f"HDF5 attribute {key!r} is not a number") from None
                if not np.isfinite(value) or value <= 0:
                    raise MalformedFile(f"HDF5 attribute {key!r} = {value} is not a sampling rate")
                return value
    return None


class SphHdf5Reader:
    name = "sph_hdf5"
    title = "SPH HDF5 (dataset 'ecg' 12 x N, float16 mV, 500 Hz)"
    extensions = (".h5", ".hdf5")

    def claims(self, path: Path, head: bytes) -> bool:
        if head[:8] != MAGIC:
            return False
        import h5py

        try:
            with h5py.File(path, "r") as f:
                ds = f.get("ecg")
                return (
                    isinstance(ds, h5py.Dataset)
                    and ds.ndim == 2
                    and ds.shape[0] == 12
                    and ds.dtype.kind in "fiu"
                )
        except Exception:
            return False

    def companions(self, path: Path) -> list[Path]:
        return []

    def read(self, path: Path, hints: ReadHints) -> Recording:
        import h5py

        try:
            f = h5py.File(path, "r")
        except Exception as e:
            raise MalformedFile(f"cannot open HDF5 file: {e}") from None
        try:
            ds = f.get("ecg")
            if ds is None:
                raise MalformedFile(
                    f"HDF5 file has no dataset 'ecg' (top-level entries: {', '.join(sorted(f.keys())) or 'none'})"
                )
            if not isinstance(ds, h5py.Dataset):
                raise MalformedFile("HDF5 entry 'ecg' is a group, not a dataset")
            if ds.dtype.kind not in "fiu":
                raise MalformedFile(f"HDF5 dataset 'ecg' has dtype {ds.dtype}; expected numbers")
            if ds.ndim != 2 or ds.shape[0] != 12:
                raise MalformedFile(f"HDF5 dataset 'ecg' has shape {ds.shape}; expected (12, N)")
            if ds.shape[1] == 0:
                raise MalformedFile("HDF5 dataset 'ecg' holds no samples")
            if ds.dtype.itemsize > 8:
                raise MalformedFile(f"HDF5 dataset 'ecg' has dtype {ds.dtype}; expected at most 64-bit numbers")
            # declared sizes first: a sparse or compressed dataset may declare far more than
            # the file holds, and h5py would allocate it all on read
            check_samples(int(ds.shape[0]), int(ds.shape[1]), "HDF5 dataset 'ecg'")
            try:
                data = ds[()]
            except Exception as e:
                raise MalformedFile(f"cannot read HDF5 dataset 'ecg': {e}") from None
            fs_attr = _rate_attr(ds, f)
        except InvalidInput:
            raise
        except Exception as e:
            raise MalformedFile(f"cannot read HDF5 file: {e}") from None
        finally:
            f.close()

        fs_hint = hinted_rate(hints)
        if fs_attr is not None:
            if fs_hint is not None and abs(fs_hint - fs_attr) > 1e-6 * fs_attr:
                raise InvalidInput(f"sampling_rate {fs_hint:g} Hz contradicts the file's {fs_attr:g} Hz")
            fs, fs_source = fs_attr, "file attribute"
        elif fs_hint is not None:
            fs, fs_source = fs_hint, "hint"
        else:
            fs, fs_source = SPH_FS, "SPH layout (500 Hz)"
        factor, unit = hinted_mv_factor(hints)
        names = hinted_lead_names(hints, "dataset 'ecg'")
        stored_dtype = str(data.dtype)
        signals = data.astype(np.float64)
        del data
        signals *= factor
        warnings = nonfinite_warning(signals, names)
        return Recording(
            signals=signals, fs=fs, lead_names=names,
            source_format=self.name, warnings=warnings,
            metadata={"layout": "SPH", "dtype": stored_dtype, "fs_source": fs_source, "units": unit},
        )


READER: FormatReader = SphHdf5Reader()
