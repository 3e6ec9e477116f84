"""The validation/test split: by patient, stratified, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.evaluation.split import split_by_patient
from app.evaluation.truth import LabelledRecord


def _records(n_patients: int, per_patient: int) -> list[LabelledRecord]:
    out = []
    for p in range(n_patients):
        for k in range(per_patient):
            labels = {"a"} if p % 3 == 0 else ({"b"} if p % 7 == 0 else set())
            out.append(LabelledRecord(Path(f"r{p}_{k}.hea"), f"r{p}_{k}", f"p{p}", frozenset(labels)))
    return out


def test_no_patient_on_both_sides_and_fraction_kept() -> None:
    records = _records(40, 3)
    split = split_by_patient(records, ["a", "b", "c"], fraction=0.3, seed=1)
    val_patients = {records[i].patient_id for i in split.validation}
    test_patients = {records[i].patient_id for i in split.test}
    assert not val_patients & test_patients
    assert sorted(split.validation + split.test) == list(range(len(records)))
    assert split.validation_patients == len(val_patients) == 12 and split.test_patients == 28
    for label in ("a", "b"):  # stratified: each label's positive patients shared out as asked
        val = sum(label in records[i].positives for i in split.validation) // 3
        total = sum(label in r.positives for r in records) // 3
        assert abs(val - 0.3 * total) <= 1, (label, val, total)


def test_seeded_and_deterministic() -> None:
    records = _records(30, 1)
    first = split_by_patient(records, ["a", "b"], seed=3)
    assert first == split_by_patient(records, ["a", "b"], seed=3)
    assert any(split_by_patient(records, ["a", "b"], seed=s) != first for s in range(4, 10))


def test_a_label_with_two_patients_is_on_both_sides() -> None:
    records = [LabelledRecord(Path(f"{i}"), f"{i}", f"{i}", frozenset({"rare"} if i < 2 else set()))
               for i in range(10)]
    split = split_by_patient(records, ["rare"], fraction=0.3, seed=0)
    assert sum(records[i].positives == {"rare"} for i in split.validation) == 1
    assert sum(records[i].positives == {"rare"} for i in split.test) == 1


def test_refuses_what_cannot_be_split() -> None:
    one = [LabelledRecord(Path("x"), "x", "p", frozenset())] * 3
    with pytest.raises(InvalidInput, match="two"):
        split_by_patient(one, ["a"])
    with pytest.raises(InvalidInput, match="fraction"):
        split_by_patient(_records(4, 1), ["a"], fraction=1.0)
