"""Small checks the format readers share: hinted rate and units, numbers, missing samples, gains."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from app.ecg.leads import STANDARD_LEADS
from app.ecg.readers.base import ReadHints
from app.ecg.recording import SignalWarning
from app.ecg.units import mv_factor
from app.errors import InvalidInput, MalformedFile


def hinted_rate(hints: ReadHints) -> float | None:
    """``hints.sampling_rate`` checked to be a positive finite number (or None)."""
    fs = hints.sampling_rate
    if fs is None:
        return None
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise InvalidInput(f"sampling_rate {hints.sampling_rate!r} is not a number") from None
    if not np.isfinite(fs) or fs <= 0:
        raise InvalidInput(f"sampling_rate must be a positive number of Hz, got {fs}")
    return fs


def file_or_hinted_rate(fs: float | None, hints: ReadHints, missing: str) -> float:
    """The rate the file states, else ``hints.sampling_rate``; MalformedFile(missing) if neither."""
    if fs is not None:
        return fs
    if not hints.sampling_rate:
        raise MalformedFile(missing)
    return float(hints.sampling_rate)


def hinted_mv_factor(hints: ReadHints, default: str = "mV") -> tuple[float, str]:
    """The factor for ``hints.units`` (default mV); InvalidInput for a unit that is not a voltage."""
    unit = hints.units or default
    f = mv_factor(unit)
    if f is None:
        raise InvalidInput(
            f"units {unit!r} is not a voltage unit; use one of nV, uV, mV, V",
            details={"units": unit},
        )
    return f, unit


def hinted_lead_names(hints: ReadHints, holder: str) -> tuple[str, ...]:
    """``hints.lead_names`` for a fixed 12-lead layout (``holder`` names it), else the standard order."""
    if hints.lead_names is None:
        return STANDARD_LEADS
    if len(hints.lead_names) != 12:
        raise InvalidInput(f"{len(hints.lead_names)} lead names given; {holder} has 12 leads")
    return tuple(hints.lead_names)


def parse_number(raw: str | None, label: str, what: str) -> float | None:
    """``raw`` as a finite float, None when empty; else MalformedFile "<label>: <what> ..."."""
    if not raw:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise MalformedFile(f"{label}: {what} {raw!r} is not a number") from None
    if not np.isfinite(v):
        raise MalformedFile(f"{label}: {what} is not finite")
    return v


def stack_leads(rows: list[np.ndarray], warnings: list[SignalWarning]) -> np.ndarray:
    """Leads as one (n_leads, n_samples) array, all cut to the shortest (with a warning)."""
    lengths = {r.size for r in rows}
    n = min(lengths)
    if len(lengths) > 1:
        warnings.append(
            SignalWarning(
                "unequal_lead_lengths", f"leads have {sorted(lengths)} samples; all cut to {n}"
            )
        )
    return np.vstack([r[:n] for r in rows])


def nonfinite_warning(signals: np.ndarray, names: tuple[str, ...]) -> list[SignalWarning]:
    """Turn +-inf into NaN in place and report leads holding missing samples."""
    bad = ~np.isfinite(signals)
    if not bad.any():
        return []
    signals[bad] = np.nan
    leads = tuple(n for n, row in zip(names, bad, strict=True) if row.any())
    return [
        SignalWarning(
            "nan_samples",
            f"{int(bad.sum())} missing or non-finite samples in lead(s) {', '.join(leads)}",
            leads,
        )
    ]


def gain_per_mv(digits_per_unit: float, mv_per_unit: float) -> float:
    """A gain stated in digital units per physical unit, as digits per millivolt
    (``Recording.gains``' one convention): 200 adu/mV stays 200, 0.2 adu/uV becomes 200."""
    return digits_per_unit / mv_per_unit


def gain_from_resolution(units_per_digit: float, mv_per_unit: float) -> float:
    """A resolution stated in physical units per digit (an LSB size: 4.88 uV, 5 uV) as a gain in
    digits per millivolt; the sign the file declares is kept (a negative resolution inverts)."""
    return 1.0 / (units_per_digit * mv_per_unit)


def refuse_unusable_gains(values: Sequence[float], leads: Sequence[str], *, label: str, field: str) -> None:
    """MalformedFile naming the leads whose declared ``field`` (a gain, a resolution, a range) is
    zero or not finite.

    Such a value does not convert digits to millivolts at all: zero makes every sample 0 (or
    divides by zero), infinity makes every sample 0 or inf, NaN makes every sample NaN. Reading
    on would hand preprocessing a flat or missing lead whose cause is lost, so the file is
    refused where the value is read, with the field and leads named (details: ``leads``,
    ``field``, ``values`` as text, because JSON has no inf or NaN).
    """
    bad = [(lead, v) for lead, v in zip(leads, values, strict=True) if v == 0 or not math.isfinite(v)]
    if not bad:
        return
    names = [lead for lead, _ in bad]
    shown = [f"{v:g}" for _, v in bad]
    raise MalformedFile(
        f"{label}: {field} is zero or not finite for lead(s) {', '.join(names)} "
        f"({', '.join(sorted(set(shown)))}); the samples cannot be converted to millivolts",
        details={"leads": names, "field": field, "values": shown},
    )
