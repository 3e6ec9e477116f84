"""``ecgfm-ked evaluate``: measure a bundle on a labelled folder (see ``app.usecases.evaluate``).

Settings, the database and ad-hoc labels as ``ecgfm-ked diagnose`` has them (the same helpers):
``--label-set NAME`` is read from the service's database (built-in sets seeded as ``serve``
does), ``--labels-file FILE`` is scored in a private temporary database. Exit status: 0 done;
1 runtime error (missing folder or bundle, unknown label set, no labelled record, the
``[eval]`` extra not installed), one line ``error [code]: message`` on stderr; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.errors import InvalidInput


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # noqa: T201  (the CLI talks on stderr)


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {number}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def add_evaluate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the ``ecgfm-ked`` subparsers."""
    v: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="measure a bundle on labelled records: thresholds on validation, metrics on test",
        description="Score every labelled record below --data with the service's diagnose use-case, split the "
        "records by patient (stratified by label), choose each label's threshold on the validation split (max F1) "
        "and report AUROC, AUPRC, F1, MCC, sensitivity and specificity on the test split with 95 % patient-"
        "bootstrap intervals: report.json, predictions.csv and report.html in --out. Needs the [eval] extra.")
    v.add_argument("--bundle", help="model bundle directory (default: ECGFM_BUNDLE_DIR or model_store/bundle)")
    v.add_argument("--data", required=True, metavar="DIR", help="folder of records in any supported format")
    which = v.add_mutually_exclusive_group(required=True)
    which.add_argument("--label-set", help="label set name (from the service's database)")
    which.add_argument("--labels-file", metavar="FILE",
                       help="JSON or CSV of name + description + codes, scored ad hoc (as diagnose --labels-file)")
    v.add_argument("--truth", metavar="FILE",
                   help="CSV with columns record,label[,patient] (record: path under --data without extension); "
                   "default: the WFDB headers' '# Dx:' SNOMED CT codes")
    v.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, predictions.csv, report.html")
    v.add_argument("--seed", type=int, default=0, help="seed of the split and the bootstrap (default 0)")
    v.add_argument("--validation-fraction", type=_fraction, default=0.3,
                   help="share of the patients whose records choose the thresholds (default 0.3)")
    v.add_argument("--bootstrap", type=_non_negative, default=1000, help="bootstrap resamples (default 1000; 0: none)")
    v.add_argument("--attach", action="store_true",
                   help="also write a summary evaluation.json into the bundle directory (shown by GET /models)")
    v.add_argument("--database-url", help="SQLAlchemy URL of the label database (default: the service's)")
    v.add_argument("--provider", choices=["auto", "cpu", "cuda"], help="ONNX Runtime execution provider")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_evaluate, evaluate_parser=v)
    return v


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.cli import _diagnose_settings
    from app.evaluation.metrics import require_eval_extra
    from app.evaluation.truth import LabelLike, load_labelled
    from app.knowledge.db import make_engine
    from app.knowledge.store import KnowledgeStore
    from app.service import database_options, open_offline_scorer
    from app.usecases.diagnose import DiagnoseOptions
    from app.usecases.evaluate import EvaluateRequest, evaluate
    from app.usecases.label_files import read_label_file

    if args.labels_file and args.database_url:
        args.evaluate_parser.error("--labels-file is scored in a private database; it cannot be combined with "
                                   "--database-url")
    require_eval_extra()
    data_dir, truth = Path(args.data), Path(args.truth) if args.truth else None
    if not data_dir.is_dir():
        raise InvalidInput(f"{data_dir}: no such folder (--data)")
    if truth is not None and not truth.is_file():
        raise InvalidInput(f"{truth}: no such file (--truth)")
    adhoc = read_label_file(Path(args.labels_file)) if args.labels_file else []
    settings = _diagnose_settings(args)
    labels: list[LabelLike] = list(adhoc)
    data = load_labelled(data_dir, labels, truth_csv=truth) if adhoc else None  # before the model loads
    with open_offline_scorer(settings, adhoc_labels=adhoc) as scorer:
        if adhoc:
            options = DiagnoseOptions(labels=tuple(d.name for d in adhoc))
        else:
            engine = make_engine(settings.resolved_database_url, database_options(settings))
            try:  # the set as the scorer reads it (seeded with the built-in sets when the scorer opened)
                labels = list(KnowledgeStore(engine).get_label_set(args.label_set).labels)
            finally:
                engine.dispose()
            options = DiagnoseOptions(label_set=args.label_set)
        request = EvaluateRequest(
            data_dir=data_dir, out_dir=Path(args.out), labels=labels, options=options, truth_csv=truth,
            seed=args.seed, validation_fraction=args.validation_fraction, bootstrap=args.bootstrap,
            attach_to=settings.bundle_dir if args.attach else None, progress=not args.quiet)
        outcome = evaluate(scorer, request, data=data, log=_log)
    macro = outcome.report["metrics"]["macro"]
    print(json.dumps({  # noqa: T201  (the CLI prints its result)
        "report": str(outcome.report_path), "predictions": str(outcome.predictions_path),
        "html": str(outcome.html_path), "summary": str(outcome.summary_path) if outcome.summary_path else None,
        "records_scored": outcome.report["data"]["records_scored"],
        "unreadable": len(outcome.report["data"]["unreadable"]),
        "macro_auroc": macro["auroc"], "macro_auprc": macro["auprc"],
        "untrained": outcome.report["model"]["untrained"], "timings_s": outcome.timings_s,
    }, indent=2))
    return 0
