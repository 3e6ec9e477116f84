"""Build a ``Recording`` from in-memory arrays (the JSON API body).

``Recording.gains`` stays None: the body carries physical values in its ``units``, no gain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from app.ecg.leads import canonical_lead
from app.ecg.recording import Recording
from app.ecg.units import check_sampling_rate, to_millivolts_factor
from app.errors import InvalidInput


def _lead_array(name: object, values: object) -> np.ndarray:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"lead name {name!r} must be a non-empty string")
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidInput(f"lead {name!r} must be a list of numbers")
    try:
        array = np.array(values, dtype=np.float64)  # None (JSON null) becomes NaN
    except (TypeError, ValueError):
        raise InvalidInput(f"lead {name!r} contains values that are not numbers") from None
    if array.ndim != 1:
        raise InvalidInput(f"lead {name!r} must be a flat list of numbers, not nested lists")
    if array.size == 0:
        raise InvalidInput(f"lead {name!r} has no samples")
    array[~np.isfinite(array)] = np.nan
    if np.isnan(array).all():
        raise InvalidInput(f"lead {name!r} has no finite samples")
    return array


def _check_distinct_leads(names: Sequence[object]) -> None:
    """Two spellings of one lead ("II" and "lead ii", "V1" and "C1") would leave one of them to
    win silently; refuse them, naming both."""
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str):
            continue
        key = canonical_lead(name) or name.strip().lower()
        if key in seen:
            raise InvalidInput(f"leads {seen[key]!r} and {name!r} are the same lead ({key}); give each lead once",
                               details={"leads": [seen[key], name]})
        seen[key] = name


def recording_from_arrays(
    leads: Mapping[str, Sequence[float | None]], sampling_rate: float, units: str = "mV"
) -> Recording:
    """One ``Recording`` (source_format "json") from lead name -> samples.

    Missing samples may be given as null (or NaN/inf); they are kept as NaN for
    preprocessing to count. Raises InvalidInput / UnsupportedSignal naming the problem.
    """
    if not leads:
        raise InvalidInput("no leads given; expected an object mapping lead names to samples")
    fs = check_sampling_rate(sampling_rate)
    factor = to_millivolts_factor(units)
    _check_distinct_leads(list(leads))
    arrays = {name: _lead_array(name, values) for name, values in leads.items()}
    lengths = {name: array.size for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise InvalidInput(
            f"leads have unequal numbers of samples ({listing}); all leads must be the same length",
            details={"lengths": lengths},
        )
    signals = np.vstack(list(arrays.values())) * factor
    return Recording(
        signals=signals,
        fs=fs,
        lead_names=tuple(arrays),
        source_format="json",
        metadata={"units_in": units},
    )
