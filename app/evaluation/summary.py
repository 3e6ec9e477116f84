"""``evaluation.json``: the short summary of an evaluation, attached to a bundle folder.

``ecgfm-ked evaluate --attach`` writes it next to the bundle's graphs (it is no graph: the
bundle's ``manifest.json`` and its hashes are left alone); ``read_summary(bundle_dir)`` reads it
for ``GET /models``. Standard library only (the serving install imports this).

Content: macro AUROC / AUPRC on the test split with their 95 % patient-bootstrap intervals,
record counts, the label set (name + version), the model it measured (version, checkpoint
sha256, untrained), the data fingerprint (sha256 over the sorted record ids and their truth),
the date and the path of the full report.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUMMARY_FILE = "evaluation.json"
SCHEMA = 1
MAX_SUMMARY_BYTES = 1024 * 1024
_REQUIRED = ("schema", "label_set", "macro_auroc", "macro_auprc", "n_records", "data_fingerprint", "date")


def _macro(report: dict[str, Any], metric: str) -> dict[str, Any]:
    cell = report["metrics"]["macro"][metric]
    return {"value": cell["value"], "ci_low": cell.get("ci_low"), "ci_high": cell.get("ci_high"),
            "labels": cell.get("labels")}


def build_summary(report: dict[str, Any], report_path: Path) -> dict[str, Any]:
    """The summary of a ``report.json`` document."""
    model = report["model"]
    return {
        "schema": SCHEMA,
        "kind": "ecgfm-ked evaluation summary",
        "date": report["created"],
        "model": {"version": model.get("version"), "checkpoint_sha256": model.get("checkpoint_sha256"),
                  "untrained": bool(model.get("untrained"))},
        "label_set": {"name": report["label_set"]["name"], "version": report["label_set"]["version"]},
        "macro_auroc": _macro(report, "auroc"),
        "macro_auprc": _macro(report, "auprc"),
        "split": "test",
        "confidence": report["metrics"]["bootstrap"]["confidence"],
        "n_records": report["data"]["records_scored"],
        "n_test_records": report["split"]["test"]["records"],
        "n_unreadable": len(report["data"]["unreadable"]),
        "data_fingerprint": report["data"]["fingerprint"],
        "seed": report["seed"],
        "report": str(report_path),
    }


def write_summary(bundle_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``evaluation.json`` into ``bundle_dir`` atomically (replacing an earlier one)."""
    path = Path(bundle_dir) / SUMMARY_FILE
    tmp = path.with_name(f".{SUMMARY_FILE}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_summary(bundle_dir: Path) -> dict[str, Any] | None:
    """The bundle's evaluation summary, or None when there is none; a damaged or unreadable
    file also gives None (with a warning logged), never an exception."""
    path = Path(bundle_dir) / SUMMARY_FILE
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            log.warning("%s is larger than %d bytes; ignored", path, MAX_SUMMARY_BYTES)
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s cannot be read (%s); ignored", path, exc)
        return None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED):
        log.warning("%s is not an evaluation summary (missing %s); ignored", path,
                    [k for k in _REQUIRED if not isinstance(data, dict) or k not in data])
        return None
    return data
