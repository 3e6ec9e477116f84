"""Metrics: the bootstrap's numpy definitions equal scikit-learn's; intervals seeded and by patient."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

from app.evaluation.metrics import (
    Inputs,
    compute_metrics,
    confusion,
    fast_auroc,
    fast_average_precision,
    threshold_metrics,
)


def test_numpy_definitions_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(3, 80))
        y = rng.integers(0, 2, n)
        if y.all() or not y.any():
            continue
        s = np.round(rng.random(n), 1)  # many ties
        assert fast_auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert fast_average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
        predicted = s >= 0.5
        m = threshold_metrics(*confusion(y, predicted))
        assert m["f1"] == pytest.approx(f1_score(y, predicted, zero_division=0), abs=1e-12)
        assert m["mcc"] == pytest.approx(matthews_corrcoef(y, predicted), abs=1e-12)
        checked += 1
    assert checked > 250


def _inputs(seed: int = 0) -> Inputs:
    rng = np.random.default_rng(seed)
    n, labels = 90, 4
    y = rng.integers(0, 2, (n, labels))
    y[:, 3] = 0  # a label without positives
    p = np.clip(0.3 * y + rng.random((n, labels)) * 0.7, 0, 1)
    patients = [f"p{i // 2}" for i in range(n)]  # two records per patient
    val = [i for i in range(n) if (i // 2) % 3 == 0]
    test = [i for i in range(n) if (i // 2) % 3 != 0]
    return Inputs(y, p, patients, val, test, ["a", "b", "c", "never"])


def test_point_values_thresholds_and_labels_without_positives() -> None:
    inputs = _inputs()
    report = compute_metrics(inputs, bootstrap=50, seed=1)
    test, val = np.asarray(inputs.test), np.asarray(inputs.validation)
    for j, entry in enumerate(report["per_label"][:3]):
        yt, pt = inputs.y_true[test, j], inputs.y_prob[test, j]
        assert entry["test"]["auroc"]["value"] == pytest.approx(roc_auc_score(yt, pt))
        threshold = report["thresholds"][entry["label"]]
        assert threshold in set(inputs.y_prob[val, j])  # chosen among the validation probabilities
        best = max(f1_score(inputs.y_true[val, j], inputs.y_prob[val, j] >= t) for t in inputs.y_prob[val, j])
        assert entry["validation"]["threshold_f1"] == pytest.approx(best)
        assert entry["test"]["f1"]["value"] == pytest.approx(f1_score(yt, pt >= threshold))
    never = report["per_label"][3]
    assert never["status"] == "no positive in the data" and never["test"]["auroc"]["value"] is None
    assert report["labels_without_positives"] == ["never"]
    assert report["macro"]["auroc"]["labels"] == 3
    assert report["macro"]["auroc"]["value"] == pytest.approx(
        np.mean([e["test"]["auroc"]["value"] for e in report["per_label"][:3]]))


def test_bootstrap_reproducible_with_the_seed_and_not_with_another() -> None:
    inputs = _inputs()
    a = compute_metrics(inputs, bootstrap=200, seed=7)
    b = compute_metrics(inputs, bootstrap=200, seed=7)
    c = compute_metrics(inputs, bootstrap=200, seed=8)
    assert a == b
    assert a["macro"]["auroc"]["ci_low"] != c["macro"]["auroc"]["ci_low"]
    low, high = a["macro"]["auroc"]["ci_low"], a["macro"]["auroc"]["ci_high"]
    assert low < a["macro"]["auroc"]["value"] < high and a["macro"]["auroc"]["replicates"] == 200


def test_bootstrap_resamples_patients_not_records() -> None:
    """With every patient's two records identical, a patient resample keeps the pairs: a
    record-level resample would break them apart. Check through the intervals' invariance to
    duplicating each patient's records (the same patients, twice as many records each)."""
    base = _inputs()
    doubled_idx = np.repeat(np.arange(len(base.patients)), 2)
    doubled = Inputs(base.y_true[doubled_idx], base.y_prob[doubled_idx], [base.patients[i] for i in doubled_idx],
                     [2 * i + k for i in base.validation for k in (0, 1)],
                     [2 * i + k for i in base.test for k in (0, 1)], base.label_names)
    a = compute_metrics(base, bootstrap=100, seed=3)["macro"]["auroc"]
    b = compute_metrics(doubled, bootstrap=100, seed=3)["macro"]["auroc"]
    assert a["ci_low"] == pytest.approx(b["ci_low"]) and a["ci_high"] == pytest.approx(b["ci_high"])
