"""Per-label and macro metrics with patient-level bootstrap intervals.

* Thresholds: one per label, chosen on the **validation** split only, as the probability that
  maximises F1 there (``precision_recall_curve``; ties go to the lowest such threshold; a
  record is called positive when its probability is ``>=`` the threshold). A label without a
  positive on the validation side gets no threshold (and no F1 / MCC / sensitivity /
  specificity), said so, never a guessed one.
* F1, MCC, sensitivity, specificity: on the **test** split only, at the validation threshold.
* AUROC, AUPRC (average precision), prevalence: on the test split (the headline figures); also
  on all records (validation + test, labelled ``all_records``: threshold-free, so nothing was
  tuned on them, but the two splits together are not an independent test).
* Macro averages: over the labels with at least one positive and one negative on the test side
  (and, for the threshold metrics, a threshold); how many labels entered is stated. Labels
  without positives are listed, never averaged in as NaN.
* 95 % intervals: percentile bootstrap (2.5th and 97.5th percentiles) over ``bootstrap``
  resamples of the test split's **patients** with replacement (all of a patient's records move
  together), from ``numpy.random.default_rng(seed)``: the same seed gives the same intervals.
  A resample in which a label has only one class does not count for that label (the number of
  resamples that counted is reported); a macro replicate averages the macro labels defined in
  that resample.

Point estimates come from scikit-learn (``roc_auc_score``, ``average_precision_score``,
``f1_score``, ``matthews_corrcoef``, ``confusion_matrix``). The bootstrap recomputes the same
definitions with numpy (thousands of resamples x labels would take minutes through
scikit-learn's per-call validation); ``tests/evaluation/test_metrics.py`` checks that the two
agree. scikit-learn is imported inside the functions that use it (the ``[eval]`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from app.errors import ServiceError

CONFIDENCE = 0.95
THRESHOLD_CRITERION = ("max F1 on the validation split (ties: the lowest threshold); "
                       "positive when probability >= threshold")
THRESHOLD_METRICS = ("f1", "mcc", "sensitivity", "specificity")
RANKING_METRICS = ("auroc", "auprc")


class EvalExtraMissing(ServiceError):
    """scikit-learn or matplotlib is not installed (the ``[eval]`` extra)."""

    code = "missing_extra"


def require_eval_extra() -> None:
    """Raise ``EvalExtraMissing`` naming the install when scikit-learn or matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        raise EvalExtraMissing(f"evaluation needs scikit-learn and matplotlib ({exc.name} is not installed): "
                               'pip install ".[eval]"') from None


# --- numpy definitions (the bootstrap's), equal to scikit-learn's -------------------------


def fast_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half), as ``roc_auc_score``."""
    pos = y.astype(bool)
    n_pos = int(pos.sum())
    n_neg = len(y) - n_pos
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fast_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (step-wise, no interpolation), as ``average_precision_score``."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last index of each distinct score
    tps = np.cumsum(y_sorted)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def confusion(y: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn)."""
    yb, pb = y.astype(bool), predicted.astype(bool)
    tp = int(np.sum(yb & pb))
    fp = int(np.sum(~yb & pb))
    fn = int(np.sum(yb & ~pb))
    return tp, fp, fn, len(y) - tp - fp - fn


def threshold_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | None]:
    """F1 (0 when undefined, as ``f1_score(zero_division=0)``), MCC (0 when undefined, as
    ``matthews_corrcoef``), sensitivity and specificity (None when undefined)."""
    f1_den = 2 * tp + fp + fn
    mcc_den = math.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "f1": 2 * tp / f1_den if f1_den else 0.0,
        "mcc": (tp * tn - fp * fn) / mcc_den if mcc_den else 0.0,
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
    }


# --- scikit-learn point estimates ------------------------------------------------------------


def choose_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """(threshold, its F1) maximising F1 on these records, or None without a positive."""
    from sklearn.metrics import precision_recall_curve

    if not y.any():
        return None
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1))  # thresholds increase: the first maximum is the lowest threshold
    return float(thresholds[best]), float(f1[best])


def _ranking_point(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {"auroc": float(roc_auc_score(y, p)), "auprc": float(average_precision_score(y, p))}


def _threshold_point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score, matthews_corrcoef

    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    return {
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "mcc": float(matthews_corrcoef(y, predicted)),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def _class_status(y: np.ndarray, where: str) -> str | None:
    if not y.any():
        return f"no positive in the {where}"
    if y.all():
        return f"no negative in the {where}"
    return None


# --- the whole computation -------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    y_true: np.ndarray  # (records, labels) 0/1
    y_prob: np.ndarray  # (records, labels)
    patients: Sequence[str]  # one per record
    validation: Sequence[int]
    test: Sequence[int]
    label_names: Sequence[str]


def _interval(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"ci_low": None, "ci_high": None, "replicates": 0}
    low, high = np.percentile(np.asarray(values), [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return {"ci_low": float(low), "ci_high": float(high), "replicates": len(values)}


def _metric(value: float | None, values: list[float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if values is not None:
        out.update(_interval(values))
    return out


def compute_metrics(inputs: Inputs, *, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-label and macro metrics (JSON-ready: no NaN, undefined values are None with a status)."""
    y, p = inputs.y_true.astype(np.int64), inputs.y_prob.astype(np.float64)
    val, test = np.asarray(inputs.validation, dtype=np.int64), np.asarray(inputs.test, dtype=np.int64)
    names = list(inputs.label_names)
    per_label: list[dict[str, Any]] = []
    thresholds: dict[int, float] = {}
    ranked: list[int] = []  # labels with both classes on the test side
    for j, name in enumerate(names):
        yt, pt, yv, pv = y[test, j], p[test, j], y[val, j], p[val, j]
        entry: dict[str, Any] = {"label": name, "notes": []}
        entry["all_records"] = {"positives": int(y[:, j].sum()), "n": len(y),
                                "prevalence": float(y[:, j].mean()) if len(y) else None}
        status_all = _class_status(y[:, j], "data")
        if status_all is None:
            entry["all_records"].update(_ranking_point(y[:, j], p[:, j]))
        chosen = choose_threshold(yv, pv)
        entry["validation"] = {"positives": int(yv.sum()), "negatives": int(len(yv) - yv.sum()),
                               "threshold": chosen[0] if chosen else None,
                               "threshold_f1": chosen[1] if chosen else None}
        if chosen is None:
            entry["notes"].append("no threshold: no positive in the validation split")
        else:
            thresholds[j] = chosen[0]
        status = _class_status(yt, "test split")
        entry["test"] = {"n": len(yt), "positives": int(yt.sum()), "negatives": int(len(yt) - yt.sum()),
                         "prevalence": float(yt.mean()) if len(yt) else None}
        if status is None:
            ranked.append(j)
            entry["test"].update({k: {"value": v} for k, v in _ranking_point(yt, pt).items()})
        else:
            entry["notes"].append(f"no AUROC/AUPRC on the test split: {status}")
            entry["test"].update({k: {"value": None} for k in RANKING_METRICS})
        if j in thresholds and len(yt):
            point = _threshold_point(yt, pt, thresholds[j])
            entry["test"]["confusion"] = point.pop("confusion")
            entry["test"].update({k: {"value": v} for k, v in point.items()})
            if status is not None:
                entry["notes"].append(f"F1/MCC/sensitivity/specificity with {status}: not comparable")
        else:
            entry["test"].update({k: {"value": None} for k in THRESHOLD_METRICS})
        entry["status"] = status_all or status or ("no threshold" if j not in thresholds else "ok")
        per_label.append(entry)
    thresholded = [j for j in ranked if j in thresholds]

    boot = _bootstrap(y, p, inputs.patients, test, ranked, thresholds, bootstrap, seed)
    for j in range(len(names)):
        for metric in RANKING_METRICS + THRESHOLD_METRICS:
            cell = per_label[j]["test"][metric]
            if cell["value"] is not None and (metric in RANKING_METRICS or j in ranked):
                cell.update(_interval(boot.per_label[metric].get(j, [])))

    macro: dict[str, Any] = {}
    for metric, members in [(m, ranked) for m in RANKING_METRICS] + [(m, thresholded) for m in THRESHOLD_METRICS]:
        values = [per_label[j]["test"][metric]["value"] for j in members]
        values = [v for v in values if v is not None]
        macro[metric] = {"value": float(np.mean(values)) if values else None, "labels": len(values),
                         **_interval(boot.macro[metric])}
    return {
        "per_label": per_label,
        "macro": macro,
        "thresholds": {names[j]: t for j, t in thresholds.items()},
        "threshold_criterion": THRESHOLD_CRITERION,
        "labels_without_positives": [n for j, n in enumerate(names) if not y[:, j].any()],
        "labels_without_test_positives": [n for j, n in enumerate(names) if y[:, j].any() and not y[test, j].any()],
        "bootstrap": {"resamples": bootstrap, "seed": seed, "unit": "patient", "confidence": CONFIDENCE,
                      "method": "percentile"},
    }


@dataclass
class _Boot:
    per_label: dict[str, dict[int, list[float]]]
    macro: dict[str, list[float]]


def _bootstrap(y: np.ndarray, p: np.ndarray, patients: Sequence[str], test: np.ndarray, ranked: list[int],
               thresholds: dict[int, float], resamples: int, seed: int) -> _Boot:
    metrics = RANKING_METRICS + THRESHOLD_METRICS
    out = _Boot({m: {} for m in metrics}, {m: [] for m in metrics})
    if resamples <= 0 or len(test) == 0:
        return out
    groups: dict[str, list[int]] = {}
    for i in test:
        groups.setdefault(patients[int(i)], []).append(int(i))
    members = [np.asarray(groups[k], dtype=np.int64) for k in sorted(groups)]
    rng = np.random.default_rng(seed)
    predicted = {j: p[:, j] >= t for j, t in thresholds.items()}
    for _ in range(resamples):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[k] for k in pick])
        sums: dict[str, list[float]] = {m: [] for m in metrics}
        for j in ranked:
            yj = y[idx, j]
            n_pos = int(yj.sum())
            if n_pos == 0 or n_pos == len(yj):
                continue
            pj = p[idx, j]
            values: dict[str, float | None] = {"auroc": fast_auroc(yj, pj), "auprc": fast_average_precision(yj, pj)}
            if j in predicted:
                values.update(threshold_metrics(*confusion(yj, predicted[j][idx])))
            for m, v in values.items():
                if v is not None:
                    out.per_label[m].setdefault(j, []).append(v)
                    sums[m].append(v)
        for m in metrics:
            if sums[m]:
                out.macro[m].append(float(np.mean(sums[m])))
    return out


def curve_points(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """ROC (fpr, tpr) and precision-recall (recall, precision) points, from scikit-learn."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision}
