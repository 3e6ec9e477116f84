"""Validation / test split by patient, stratified by label as far as the patients allow.

Deterministic greedy multilabel stratification over patient groups (after Sechidis et al.,
"On the stratification of multi-label data", ECML PKDD 2011, applied to groups): every
record of a patient goes to the same side. Each side wants ``fraction`` (validation) or
``1 - fraction`` (test) of every label's positive patients and of the records. Labels are
visited from the rarest to the most common; the still unassigned patients carrying the label
(in an order shuffled by ``seed``) go one at a time to the side that still wants most of that
label (ties: the side that still wants more records, then the seeded coin), and what each
patient carries is taken off that side's wants for every label. Patients with no positive
label go last, to the side that wants more records. A label with two positive patients or
more therefore gets positives on both sides whenever the other labels allow it; one positive
patient can only be on one side (then no threshold or no test metric for that label: the
report says which).

The same records, truth, fraction and seed always give the same split; numpy only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import InvalidInput
from app.evaluation.truth import LabelledRecord

VALIDATION = "validation"
TEST = "test"


@dataclass(frozen=True)
class Split:
    validation: tuple[int, ...]  # indices into the records given, in their order
    test: tuple[int, ...]
    validation_patients: int
    test_patients: int

    def side_of(self, n_records: int) -> list[str]:
        """``"validation"`` or ``"test"`` for each record index."""
        sides = [TEST] * n_records
        for i in self.validation:
            sides[i] = VALIDATION
        return sides


def split_by_patient(records: Sequence[LabelledRecord], label_names: Sequence[str], *, fraction: float = 0.3,
                     seed: int = 0) -> Split:
    """The records' indices on each side (see the module docstring)."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInput(f"the validation fraction must be between 0 and 1 (exclusive), not {fraction}")
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_patient[r.patient_id].append(i)
    if len(by_patient) < 2:
        raise InvalidInput(f"{len(by_patient)} patient(s): a validation/test split needs at least two")
    patients = sorted(by_patient)
    column = {name: j for j, name in enumerate(label_names)}
    carried = np.zeros((len(patients), len(label_names)), dtype=np.int64)  # positive records per patient and label
    sizes = np.array([len(by_patient[p]) for p in patients], dtype=np.int64)
    for k, p in enumerate(patients):
        for i in by_patient[p]:
            for name in records[i].positives:
                if name in column:
                    carried[k, column[name]] += 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))  # tie-breaking order of the patients
    share = np.array([fraction, 1.0 - fraction])
    wants_label = share[:, None] * (carried > 0).sum(axis=0)[None, :].astype(float)  # (2, labels), in patients
    wants_records = share * float(sizes.sum())
    side = np.full(len(patients), -1, dtype=np.int64)

    def assign(k: int, label: int | None) -> None:
        if label is not None and wants_label[0, label] != wants_label[1, label]:
            s = int(np.argmax(wants_label[:, label]))
        elif wants_records[0] != wants_records[1]:
            s = int(np.argmax(wants_records))
        else:
            s = int(rng.integers(2))
        side[k] = s
        wants_label[s] -= carried[k] > 0
        wants_records[s] -= sizes[k]

    positives = (carried > 0).sum(axis=0)
    for label in sorted((j for j in range(len(label_names)) if positives[j] > 0), key=lambda j: (positives[j], j)):
        for k in order:
            if side[k] < 0 and carried[k, label] > 0:
                assign(int(k), label)
    for k in order:
        if side[k] < 0:
            assign(int(k), None)
    if not (side == 0).any() or not (side == 1).any():  # tiny data: move the smallest patient over
        empty = 0 if not (side == 0).any() else 1
        k = int(min(order, key=lambda k: (sizes[k], int(k))))
        side[k] = empty
    validation = sorted(i for k, p in enumerate(patients) if side[k] == 0 for i in by_patient[p])
    test = sorted(i for k, p in enumerate(patients) if side[k] == 1 for i in by_patient[p])
    return Split(tuple(validation), tuple(test), int((side == 0).sum()), int((side == 1).sum()))
