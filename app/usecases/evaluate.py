"""The evaluate use-case: labelled records -> the service's own scores -> metrics -> report files.

labelled data (``app.evaluation.truth``) -> score every record through the ``OfflineScorer``
(the diagnose use-case the API runs: the same reading, preprocessing, windows, aggregation and
rounding; every label of the set, ``top_k=0``; the per-ECG probability the API answers) in
chunks -> split by patient (``app.evaluation.split``) -> thresholds on validation, metrics on
test, patient bootstrap (``app.evaluation.metrics``) -> ``report.json``, ``predictions.csv``,
``report.html`` in the output folder, and with ``attach`` a short ``evaluation.json`` in the
bundle folder (``app.evaluation.summary``).

A record that cannot be read or scored (``ServiceError``: a damaged signal file, too short, no
leads ...) is added to the report's unreadable records with the service's own message; a chunk
that fails is scored record by record to find which. scikit-learn and matplotlib are imported
only when the metrics and the figures are computed.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app import __version__
from app.errors import InvalidInput, ServiceError
from app.evaluation.split import TEST, VALIDATION, split_by_patient
from app.evaluation.summary import SUMMARY_FILE, build_summary, write_summary
from app.evaluation.truth import LabelledData, LabelledRecord, LabelLike, Unreadable, data_fingerprint, load_labelled
from app.usecases.diagnose import DiagnoseOptions, EcgSource
from app.usecases.offline import OfflineScorer, read_records
from app.usecases.results import DiagnoseResult, ModelInfo

REPORT_JSON = "report.json"
PREDICTIONS_CSV = "predictions.csv"
REPORT_HTML = "report.html"
TRUTH_PREFIX = "truth:"
SMALL_SAMPLE = 200  # test records below which the report calls the sample small
FEW_POSITIVES = 10


@dataclass(frozen=True)
class EvaluateRequest:
    data_dir: Path
    out_dir: Path
    labels: Sequence[LabelLike]  # the set's labels with their codes, in the set's order
    options: DiagnoseOptions  # which labels the scorer scores: the set by name, or ad-hoc labels by name
    truth_csv: Path | None = None
    seed: int = 0
    validation_fraction: float = 0.3
    bootstrap: int = 1000
    attach_to: Path | None = None  # bundle folder to write evaluation.json into
    chunk_size: int = 32  # records per diagnose call
    progress: bool = True  # tqdm bar on stderr


@dataclass(frozen=True)
class EvaluateOutcome:
    report: dict[str, Any]
    report_path: Path
    predictions_path: Path
    html_path: Path
    summary_path: Path | None
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class _Scored:
    records: list[LabelledRecord]
    probabilities: list[list[float]]
    unreadable: list[Unreadable]
    model: ModelInfo | None = None
    label_set: tuple[str, str] | None = None
    windows: int = 0
    records_with_warnings: int = 0


def _probabilities(result: DiagnoseResult, label_names: Sequence[str]) -> list[list[float]]:
    out: list[list[float]] = []
    for ecg in result.results:
        by_name = {d.label: d.probability for d in ecg.diagnoses}
        missing = [n for n in label_names if n not in by_name]
        if missing:
            raise InvalidInput(f"the scorer did not return every label of the set (missing: {missing[:5]})")
        out.append([float(by_name[n]) for n in label_names])
    return out


def _note_result(scored: _Scored, result: DiagnoseResult) -> None:
    ref = (result.label_set.name, result.label_set.version)
    if scored.label_set is None:
        scored.label_set, scored.model = ref, result.model
    elif scored.label_set != ref:
        raise InvalidInput(f"label set {ref[0]!r} changed while it was being evaluated (version "
                           f"{scored.label_set[1]} -> {ref[1]}); run the evaluation again")
    scored.windows += sum(ecg.source.windows for ecg in result.results)
    scored.records_with_warnings += sum(1 for ecg in result.results if ecg.warnings)


def score_records(scorer: OfflineScorer, records: Sequence[LabelledRecord], label_names: Sequence[str],
                  options: DiagnoseOptions, *, chunk_size: int = 32, progress: bool = True) -> _Scored:
    """Each record's per-ECG probability for every label, through the service's diagnose use-case."""
    from tqdm import tqdm

    options = DiagnoseOptions(label_set=options.label_set, labels=options.labels, top_k=0, threshold=0.0,
                              pad=options.pad, aggregation=options.aggregation)
    scored = _Scored([], [], [])
    with tqdm(total=len(records), unit="ECG", desc="scoring", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(records), chunk_size):
            chunk = records[start:start + chunk_size]
            readable: list[tuple[LabelledRecord, EcgSource]] = []
            for record in chunk:
                try:
                    (source,) = read_records([record.path])
                except ServiceError as exc:
                    scored.unreadable.append(Unreadable(record.record_id, exc.message))
                    continue
                readable.append((record, source))
            if readable:
                _score_chunk(scorer, readable, label_names, options, scored)
            bar.update(len(chunk))
    return scored


def _score_chunk(scorer: OfflineScorer, readable: list[tuple[LabelledRecord, EcgSource]],
                 label_names: Sequence[str], options: DiagnoseOptions, scored: _Scored) -> None:
    try:
        result = scorer.diagnose_sources([s for _, s in readable], options)
    except ServiceError:
        if len(readable) == 1:
            raise
        for one in readable:  # find the record(s) that cannot be scored
            try:
                _score_chunk(scorer, [one], label_names, options, scored)
            except ServiceError as exc:
                scored.unreadable.append(Unreadable(one[0].record_id, exc.message))
        return
    _note_result(scored, result)
    scored.records.extend(r for r, _ in readable)
    scored.probabilities.extend(_probabilities(result, label_names))


def _caveats(model: dict[str, Any], n_test: int, test_patients: int, data: LabelledData,
             scored_records: int) -> list[str]:
    caveats: list[str] = []
    if model.get("untrained"):
        caveats.append("UNTRAINED BUNDLE (random weights): every number in this report is meaningless; it only "
                       "checks that the evaluation runs.")
    caveats += [
        "Zero-shot: the model was not trained or tuned on these records; only the per-label thresholds were chosen, "
        "on the validation split. This is a measurement on this sample, not a clinical validation.",
        f"Sample size: {scored_records} records scored, {n_test} of them ({test_patients} patients) in the test "
        "split that every F1, MCC, sensitivity, specificity and the headline AUROC/AUPRC come from"
        + ("; a small sample: read the 95 % intervals, not the point values." if n_test < SMALL_SAMPLE else "."),
        "Probabilities are uncalibrated model outputs and depend on the whole label set scored together; the "
        "thresholds hold for this label set and this bundle only.",
    ]
    if not data.patients_known:
        caveats.append("No patient ids were available (WFDB headers carry none, and no patient column was given): "
                       "each record was treated as its own patient. If a patient has several records, the split "
                       "and the intervals are optimistic.")
    if data.duplicates:
        caveats.append(f"{len(data.duplicates)} group(s) of records with identical signals were kept on one side "
                       "of the split (treated as one patient).")
    return caveats


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_predictions(path: Path, records: Sequence[LabelledRecord], sides: Sequence[str],
                       probabilities: np.ndarray, label_names: Sequence[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "split", *label_names, *(TRUTH_PREFIX + n for n in label_names)])
        for record, side, row in zip(records, sides, probabilities, strict=True):
            writer.writerow([record.record_id, side, *(repr(float(v)) for v in row),
                             *(int(n in record.positives) for n in label_names)])
    os.replace(tmp, path)


def evaluate(scorer: OfflineScorer, request: EvaluateRequest, *, data: LabelledData | None = None,
             log: Callable[[str], None] = lambda _msg: None) -> EvaluateOutcome:
    """Run the whole evaluation (see the module docstring); ``data``: truth already loaded."""
    from app.evaluation.metrics import Inputs, compute_metrics, curve_points, require_eval_extra
    from app.evaluation.report_html import render_report

    require_eval_extra()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if data is None:
        data = load_labelled(request.data_dir, request.labels, truth_csv=request.truth_csv)
    timings["truth"] = time.perf_counter() - t
    label_names = data.label_names
    if not data.records:
        reasons = "; ".join(f"{u.record_id}: {u.reason}" for u in data.unreadable[:3])
        raise InvalidInput(f"no labelled record in {request.data_dir} ({len(data.unreadable)} unreadable"
                           + (f": {reasons}" if reasons else "") + ")")
    log(f"{len(data.records)} labelled records, {len(data.unreadable)} unreadable; scoring {len(label_names)} labels")

    t = time.perf_counter()
    scored = score_records(scorer, data.records, label_names, request.options, chunk_size=request.chunk_size,
                           progress=request.progress)
    timings["scoring"] = time.perf_counter() - t
    if not scored.records or scored.model is None or scored.label_set is None:
        raise InvalidInput(f"none of the {len(data.records)} labelled records could be scored "
                           f"(first: {scored.unreadable[0].reason if scored.unreadable else '-'})")

    t = time.perf_counter()
    records = scored.records
    split = split_by_patient(records, label_names, fraction=request.validation_fraction, seed=request.seed)
    sides = split.side_of(len(records))
    y_true = np.array([[int(n in r.positives) for n in label_names] for r in records], dtype=np.int64)
    y_prob = np.asarray(scored.probabilities, dtype=np.float64)
    metrics = compute_metrics(Inputs(y_true, y_prob, [r.patient_id for r in records], split.validation, split.test,
                                     label_names), bootstrap=request.bootstrap, seed=request.seed)
    timings["metrics"] = time.perf_counter() - t

    t = time.perf_counter()
    model = scored.model.as_dict()
    unreadable = sorted(data.unreadable + scored.unreadable, key=lambda u: u.record_id)
    scored_ids = [r.record_id for r in records]
    report: dict[str, Any] = {
        "kind": "ecgfm-ked evaluation",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "model": model,
        "label_set": {"name": scored.label_set[0], "version": scored.label_set[1], "labels": len(label_names)},
        "data": {
            "folder": str(request.data_dir),
            "truth_source": data.truth_source,
            "truth_csv": str(request.truth_csv) if request.truth_csv else None,
            "records_found": len(data.records) + len(data.unreadable),
            "records_scored": len(records),
            "windows_scored": scored.windows,
            "records_with_signal_warnings": scored.records_with_warnings,
            "patients_known": data.patients_known,
            "patients": split.validation_patients + split.test_patients,
            "patient_note": None if data.patients_known else
            "no patient ids: each record is its own patient (records with identical signals are grouped)",
            "fingerprint": data_fingerprint(data, scored_ids),
            "unreadable": [{"record_id": u.record_id, "reason": u.reason} for u in unreadable],
            "ignored_files": len(data.ignored_files),
            "duplicates": [list(group) for group in data.duplicates],
            "unmatched_codes": data.unmatched_codes,
            "unknown_truth_labels": data.unknown_labels,
            "truth_rows_without_record": data.truth_without_record,
            "positives": {n: int(y_true[:, j].sum()) for j, n in enumerate(label_names)},
        },
        "split": {
            "method": "greedy multilabel stratification by patient (app/evaluation/split.py)",
            "validation_fraction": request.validation_fraction,
            "seed": request.seed,
            "validation": {"records": len(split.validation), "patients": split.validation_patients},
            "test": {"records": len(split.test), "patients": split.test_patients},
        },
        "seed": request.seed,
        "thresholds": metrics.pop("thresholds"),
        "threshold_criterion": metrics.pop("threshold_criterion"),
        "metrics": metrics,
        "caveats": _caveats(model, len(split.test), split.test_patients, data, len(records)),
        "files": {"predictions": PREDICTIONS_CSV, "html": REPORT_HTML},
    }
    for entry in metrics["per_label"]:
        if entry["test"]["positives"] and entry["test"]["positives"] < FEW_POSITIVES:
            entry["notes"].append(f"only {entry['test']['positives']} positive(s) on the test side: the interval is "
                                  "wide and the point value unreliable")

    out = request.out_dir
    out.mkdir(parents=True, exist_ok=True)
    predictions_path = out / PREDICTIONS_CSV
    _write_predictions(predictions_path, records, sides, y_prob, label_names)
    test = np.asarray(split.test, dtype=np.int64)
    curves = [(entry["label"], int(y_true[test, j].sum()), curve_points(y_true[test, j], y_prob[test, j]))
              for j, entry in enumerate(metrics["per_label"]) if entry["test"]["auroc"]["value"] is not None]
    html_path = out / REPORT_HTML
    tmp = html_path.with_name(f".{html_path.name}.tmp")
    tmp.write_text(render_report(report, curves), encoding="utf-8")
    os.replace(tmp, html_path)
    timings["writing"] = time.perf_counter() - t
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    report_path = out / REPORT_JSON
    _write_json_atomic(report_path, report)
    summary_path = None
    if request.attach_to is not None:
        summary_path = write_summary(request.attach_to, build_summary(report, report_path.resolve()))
        log(f"summary written to {request.attach_to / SUMMARY_FILE}")
    return EvaluateOutcome(report, report_path, predictions_path, html_path, summary_path, report["timings_s"])


__all__ = ["TEST", "VALIDATION", "EvaluateOutcome", "EvaluateRequest", "evaluate", "score_records"]
