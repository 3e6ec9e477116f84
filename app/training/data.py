"""Labelled records -> training and validation windows with their targets.

* **Split by patient**: validation takes whole patients (``LabelledRecord.patient_id``; where a
  dataset has no patient ids the reader gives each record its own), about ``val_fraction`` of
  the records, chosen label-stratified; a patient is never moved to validation if that would
  leave a label with no positive record in training.
* **Subsample** (the few-shot ``fraction`` of the training records): deterministic for a seed and
  stratified by label. First every label with a positive training record gets one (rarest label
  first, while the budget allows), then records are added greedily where the label counts lag
  most behind ``fraction`` x their training counts (records with no positive label count as a
  class of their own). Ties follow a permutation drawn from the seed. ``fraction = 1`` keeps all.
* **Windows**: each record is read with the service's readers and cut by the service's own
  ``preprocess`` (the bundle contract's rate and window), so the model is trained on exactly
  what it will be served. Every window of a record is a training sample carrying the record's
  labels (a 115 s record gives 12); validation scores a record as the service does by default,
  the maximum over its windows. A record that cannot be read or preprocessed (e.g. shorter than
  one window) is left out and listed, as the service would refuse it.
The data fingerprint is ``app.evaluation.truth.data_fingerprint`` (sha256 over the sorted record
ids and their labels), the same definition evaluation uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from app.contract import PRETRAINING, ModelContract
from app.errors import InvalidInput, ServiceError


class Labelled(Protocol):
    """What the split and the subsample need of a labelled record (``app.evaluation.truth.LabelledRecord``)."""

    @property
    def path(self) -> Path: ...
    @property
    def record_id(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def positives(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Skipped:
    record_id: str
    reason: str


@dataclass
class Windows:
    """Model windows of some records, flattened: ``x[i]`` belongs to record ``owner[i]``."""

    x: np.ndarray  # (M, leads, samples) float32 mV
    y: np.ndarray  # (M, C) float32 0/1: the owner's labels
    owner: np.ndarray  # (M,) int64 index into ``records``
    records: list[str]  # record ids
    record_targets: np.ndarray  # (R, C) float32
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def label_matrix(records: Sequence[Labelled], label_names: Sequence[str]) -> np.ndarray:
    """(N, C) bool: record n is positive for label c."""
    index = {name: i for i, name in enumerate(label_names)}
    y = np.zeros((len(records), len(label_names)), dtype=bool)
    for n, rec in enumerate(records):
        for name in rec.positives:
            if name in index:
                y[n, index[name]] = True
    return y


def _with_none_class(y: np.ndarray) -> np.ndarray:
    """Append a column for records with no positive label (a class of its own for stratifying)."""
    none = ~y.any(axis=1, keepdims=True)
    return np.concatenate([y, none], axis=1).astype(np.float64)


def stratified_pick(counts: np.ndarray, sizes: np.ndarray, target: int, *, seed: int, cover: np.ndarray,
                    protect: bool = False) -> list[int]:
    """Pick units (records or patients) until their sizes reach ``target``, label-stratified.

    ``counts`` (U, K): positives per unit and class; ``sizes`` (U,): records per unit; ``cover``
    (K,) bool: classes that must get at least one positive unit first (rarest first) while the
    budget allows. ``protect``: never pick a unit that would leave a class with positives none
    outside the pick (the split keeps every label in training). Deterministic for ``seed``.
    """
    n_units, n_classes = counts.shape
    order = np.random.default_rng(seed).permutation(n_units)
    rank = np.empty(n_units, dtype=np.int64)
    rank[order] = np.arange(n_units)
    totals = counts.sum(axis=0)
    picked = np.zeros(n_units, dtype=bool)
    picked_counts = np.zeros(n_classes)
    size = 0

    def allowed(u: int) -> bool:
        if picked[u]:
            return False
        if protect:
            left = totals - picked_counts - counts[u]
            if np.any((totals > 0) & (left <= 0)):
                return False
        return True

    def take(u: int) -> None:
        nonlocal size, picked_counts
        picked[u] = True
        picked_counts = picked_counts + counts[u]
        size += int(sizes[u])

    holders = (counts > 0).sum(axis=0)
    for k in sorted(np.flatnonzero(cover & (totals > 0)), key=lambda k: (holders[k], k)):
        if size >= target:
            break
        if picked_counts[k] > 0:
            continue
        for u in order:
            if counts[u, k] > 0 and allowed(int(u)):
                take(int(u))
                break
    share = target / max(float(sizes.sum()), 1.0)
    while size < target:
        candidates = np.array([u for u in order if allowed(int(u))], dtype=np.int64)
        if candidates.size == 0:
            break
        deficit = share * totals - picked_counts
        scores = counts[candidates] @ deficit
        best = candidates[scores == scores.max()]
        take(int(best[np.argmin(rank[best])]))
    return sorted(int(u) for u in np.flatnonzero(picked))


def split_by_patient(records: Sequence[Labelled], label_names: Sequence[str], *, val_fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) record indices; no patient in both. Validation is about
    ``val_fraction`` of the records, label-stratified over whole patients."""
    patients = sorted({r.patient_id for r in records})
    if len(patients) < 2:
        raise InvalidInput(f"{len(records)} labelled record(s) from {len(patients)} patient(s): a validation "
                           "split needs records of at least 2 patients")
    of_patient = {p: i for i, p in enumerate(patients)}
    y = _with_none_class(label_matrix(records, label_names))
    counts = np.zeros((len(patients), y.shape[1]))
    sizes = np.zeros(len(patients), dtype=np.int64)
    for n, rec in enumerate(records):
        counts[of_patient[rec.patient_id]] += y[n]
        sizes[of_patient[rec.patient_id]] += 1
    target = min(max(1, round(val_fraction * len(records))), len(records) - 1)
    # cover in validation only labels held by 2+ patients: the other one stays in training
    cover = (counts > 0).sum(axis=0) >= 2
    cover[-1] = False
    chosen = set(stratified_pick(counts, sizes, target, seed=seed, cover=cover, protect=True))
    if not chosen:  # every patient holds a label's only positives: take the smallest patient anyway
        chosen = {int(np.lexsort((np.arange(len(patients)), sizes))[0])}
    val_patients = {patients[u] for u in chosen}
    train = [n for n, r in enumerate(records) if r.patient_id not in val_patients]
    val = [n for n, r in enumerate(records) if r.patient_id in val_patients]
    return train, val


def subsample(records: Sequence[Labelled], label_names: Sequence[str], *, fraction: float, seed: int) -> list[int]:
    """Indices of the ``fraction`` of ``records`` kept for training (all for 1.0); at least one."""
    if not 0.0 < fraction <= 1.0:
        raise InvalidInput(f"fraction must be in (0, 1], not {fraction}")
    if fraction >= 1.0 or not records:
        return list(range(len(records)))
    y = _with_none_class(label_matrix(records, label_names))
    cover = np.ones(y.shape[1], dtype=bool)
    cover[-1] = False
    target = max(1, round(fraction * len(records)))
    return stratified_pick(y, np.ones(len(records), dtype=np.int64), target, seed=seed, cover=cover)


def load_windows(records: Sequence[Labelled], label_names: Sequence[str], *,
                 contract: ModelContract = PRETRAINING) -> Windows:
    """Read and preprocess every record as the service does; unreadable ones are skipped and listed."""
    from app.ecg.preprocess import preprocess
    from app.usecases.offline import read_records

    xs: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    kept: list[Labelled] = []
    skipped: list[Skipped] = []
    for rec in records:
        try:
            (source,) = read_records([Path(rec.path)])
            windows = preprocess(source.recording, contract=contract).windows
        except (ServiceError, ValueError) as exc:
            skipped.append(Skipped(rec.record_id, getattr(exc, "message", None) or str(exc)))
            continue
        owners.append(np.full(len(windows), len(kept), dtype=np.int64))
        xs.append(windows.astype(np.float32))
        kept.append(rec)
    targets = label_matrix(kept, label_names).astype(np.float32)
    if not xs:
        empty = np.zeros((0, len(contract.lead_order), contract.window_samples), dtype=np.float32)
        return Windows(empty, np.zeros((0, len(label_names)), np.float32), np.zeros(0, np.int64), [],
                       targets, skipped)
    owner = np.concatenate(owners)
    return Windows(np.concatenate(xs), targets[owner], owner, [r.record_id for r in kept], targets, skipped)
