"""Recordings built from JSON-style arrays."""

from __future__ import annotations

import numpy as np
import pytest

from app.ecg.leads import STANDARD_LEADS
from app.ecg.readers.arrays import recording_from_arrays
from app.errors import InvalidInput, UnsupportedSignal


def _leads(n: int = 1000, value: float = 0.5) -> dict[str, list[float]]:
    return {lead: [value] * n for lead in STANDARD_LEADS}


def test_builds_recording_in_order() -> None:
    leads = {lead: [float(i)] * 200 for i, lead in enumerate(STANDARD_LEADS)}
    rec = recording_from_arrays(leads, 100)
    assert rec.source_format == "json"
    assert rec.lead_names == STANDARD_LEADS
    assert rec.signals.shape == (12, 200) and rec.signals.dtype == np.float64
    np.testing.assert_array_equal(rec.signals[:, 0], np.arange(12.0))
    assert rec.fs == 100.0


def test_units_are_converted() -> None:
    rec = recording_from_arrays({"I": [1000.0, -500.0]}, 500, units="µV")
    np.testing.assert_allclose(rec.signals, [[1.0, -0.5]])


def test_null_and_inf_become_nan() -> None:
    rec = recording_from_arrays({"I": [1.0, None, float("inf"), 2.0]}, 500)  # type: ignore[list-item]
    assert np.isnan(rec.signals[0, 1:3]).all() and rec.signals[0, 3] == 2.0


@pytest.mark.parametrize(
    ("leads", "message"),
    [
        ({}, "no leads"),
        ({"I": [1.0, 2.0], "II": [1.0]}, r"unequal numbers of samples \(I=2, II=1\)"),
        ({"I": []}, "'I' has no samples"),
        ({"I": [None, None]}, "'I' has no finite samples"),
        ({"I": [float("nan")]}, "'I' has no finite samples"),
        ({"I": ["a", "b"]}, "'I' contains values that are not numbers"),
        ({"I": [[1.0], [2.0]]}, "'I' must be a flat list"),
        ({"I": "123"}, "'I' must be a list of numbers"),
        ({"": [1.0]}, "non-empty string"),
    ],
)
def test_bad_arrays(leads: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        recording_from_arrays(leads, 500)


@pytest.mark.parametrize("rate", [0, 10, 49, 20_000, float("nan")])
def test_absurd_rates(rate: float) -> None:
    with pytest.raises(UnsupportedSignal, match="sampling rate"):
        recording_from_arrays(_leads(10), rate)


def test_unknown_unit() -> None:
    with pytest.raises(UnsupportedSignal, match="'mmHg'"):
        recording_from_arrays(_leads(10), 500, units="mmHg")
