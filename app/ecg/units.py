"""Physical units of ECG samples and the sampling rates the service accepts."""

from __future__ import annotations

import math

from app.errors import UnsupportedSignal

MIN_SAMPLING_RATE_HZ = 50.0
MAX_SAMPLING_RATE_HZ = 10_000.0

_MV_PER_UNIT: dict[str, float] = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
    "nv": 1e-6,
    "nanovolt": 1e-6,
    "nanovolts": 1e-6,
}


def _normalise(unit: str) -> str:
    text = "".join(unit.split()).lower()
    # MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC) both mean micro.
    return text.replace("\u00b5", "u").replace("\u03bc", "u")


def mv_factor(unit: str | None) -> float | None:
    """Factor that converts samples in ``unit`` to millivolts, or None if it is no voltage unit."""
    if not isinstance(unit, str):
        return None
    return _MV_PER_UNIT.get(_normalise(unit))


def to_millivolts_factor(unit: str) -> float:
    """Factor that converts samples in ``unit`` to millivolts (mV, uV/µV, V, nV)."""
    if not unit.strip():
        raise UnsupportedSignal("no signal unit given; expected one of mV, uV, V, nV")
    factor = mv_factor(unit)
    if factor is None:
        raise UnsupportedSignal(
            f"unsupported signal unit {unit!r}; expected one of mV, uV, V, nV",
            details={"unit": unit},
        )
    return factor


def check_sampling_rate(fs: float) -> float:
    """The rate as a float if it lies within 50..10000 Hz, else UnsupportedSignal."""
    try:
        rate = float(fs)
    except (TypeError, ValueError):
        raise UnsupportedSignal(f"sampling rate {fs!r} is not a number") from None
    if isinstance(fs, bool) or not math.isfinite(rate) or not (
        MIN_SAMPLING_RATE_HZ <= rate <= MAX_SAMPLING_RATE_HZ
    ):
        raise UnsupportedSignal(
            f"sampling rate {fs!r} Hz is outside the accepted range "
            f"{MIN_SAMPLING_RATE_HZ:g}..{MAX_SAMPLING_RATE_HZ:g} Hz",
            details={"sampling_rate": str(fs)},
        )
    return rate
