"""Lead names, limb-lead derivation and unit conversion."""

from __future__ import annotations

import numpy as np
import pytest

from app.ecg.leads import STANDARD_LEADS, canonical_lead, derive_limb_leads
from app.ecg.units import check_sampling_rate, to_millivolts_factor
from app.errors import UnsupportedSignal


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("I", "I"), ("i", "I"), ("Lead I", "I"), ("LEAD_I", "I"), ("DI", "I"),
        ("II", "II"), ("ii", "II"), ("Lead II", "II"), ("LEAD_II", "II"), ("lead-ii", "II"), (" II ", "II"),
        ("iii", "III"), ("DIII", "III"),
        ("aVR", "aVR"), ("AVR", "aVR"), ("avr", "aVR"), ("a VR", "aVR"), ("Lead aVR", "aVR"),
        ("avl", "aVL"), ("AVF", "aVF"),
        ("v1", "V1"), ("V6", "V6"), ("Lead V3", "V3"), ("C2", "V2"),
    ],
)
def test_canonical_lead_maps_variants(name: str, expected: str) -> None:
    assert canonical_lead(name) == expected


@pytest.mark.parametrize("name", ["vx", "vy", "vz", "MLII", "V7", "", "ECG", "IV", "lead"])
def test_canonical_lead_ignores_non_standard(name: str) -> None:
    assert canonical_lead(name) is None


def test_standard_leads_are_their_own_canonical_names() -> None:
    assert [canonical_lead(lead) for lead in STANDARD_LEADS] == list(STANDARD_LEADS)
    assert len(STANDARD_LEADS) == 12


def test_derive_limb_leads_formulas() -> None:
    lead_i, lead_ii = np.array([1.0, -0.5, 2.0]), np.array([3.0, 0.5, -1.0])
    derived = derive_limb_leads(lead_i, lead_ii)
    np.testing.assert_allclose(derived["III"], [2.0, 1.0, -3.0])
    np.testing.assert_allclose(derived["aVR"], [-2.0, 0.0, -0.5])
    np.testing.assert_allclose(derived["aVL"], [-0.5, -0.75, 2.5])
    np.testing.assert_allclose(derived["aVF"], [2.5, 0.75, -2.0])


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("mV", 1.0), ("mv", 1.0), (" MV ", 1.0), ("millivolts", 1.0),
        ("uV", 1e-3), ("µV", 1e-3), ("μV", 1e-3), ("microvolt", 1e-3), ("UV", 1e-3),
        ("V", 1e3), ("v", 1e3), ("nV", 1e-6), ("n V", 1e-6),
    ],
)
def test_to_millivolts_factor(unit: str, factor: float) -> None:
    assert to_millivolts_factor(unit) == pytest.approx(factor)


@pytest.mark.parametrize("unit", ["mmHg", "kV", "", "  ", "adu"])
def test_unknown_unit_is_refused_by_name(unit: str) -> None:
    with pytest.raises(UnsupportedSignal) as info:
        to_millivolts_factor(unit)
    if unit.strip():
        assert repr(unit) in info.value.message


@pytest.mark.parametrize("rate", [49.9, 10_001, 0, -500, float("nan"), float("inf"), "fast", True])
def test_sampling_rate_out_of_range(rate: object) -> None:
    with pytest.raises(UnsupportedSignal, match="sampling rate"):
        check_sampling_rate(rate)  # type: ignore[arg-type]


def test_sampling_rate_bounds_accepted() -> None:
    assert check_sampling_rate(50) == 50.0
    assert check_sampling_rate("500") == 500.0
    assert check_sampling_rate(10_000) == 10_000.0
