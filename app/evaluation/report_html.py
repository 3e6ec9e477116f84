"""``report.html``: the evaluation report as one self-contained page.

No external URL (no script, font or stylesheet from elsewhere; the figures are PNG images
embedded as base64 ``data:`` URLs, drawn by matplotlib's Agg canvas without pyplot); every
text from the report (label names, reasons, paths) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Curve = tuple[str, int, dict[str, np.ndarray]]  # (label, test positives, curve_points)
_COLUMNS = 5


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _cell(metric: dict[str, Any]) -> str:
    value = metric.get("value")
    if value is None:
        return "<td>&ndash;</td>"
    low, high = metric.get("ci_low"), metric.get("ci_high")
    ci = f"<br><small>[{_num(low)}, {_num(high)}]</small>" if low is not None and high is not None else ""
    return f"<td>{_num(value)}{ci}</td>"


def _figure(curves: Sequence[Curve], kind: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(len(curves) / _COLUMNS))
    fig = Figure(figsize=(3.0 * _COLUMNS, 2.8 * rows), dpi=80)
    FigureCanvasAgg(fig)
    for k, (label, positives, points) in enumerate(curves):
        ax = fig.add_subplot(rows, _COLUMNS, k + 1)
        if kind == "roc":
            ax.plot(points["fpr"], points["tpr"], drawstyle="steps-post")
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
            ax.set_xlabel("1 - specificity", fontsize=7)
            ax.set_ylabel("sensitivity", fontsize=7)
        else:
            ax.plot(points["recall"], points["precision"], drawstyle="steps-post")
            ax.set_xlabel("recall", fontsize=7)
            ax.set_ylabel("precision", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{label[:34]} (n+={positives})", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    title = "ROC curves" if kind == "roc" else "precision-recall curves"
    return f'<img alt="{_e(title)}, test split" src="data:image/png;base64,{data}">'


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.caveat{background:#fff4e5;border-left:4px solid #e69500;padding:.5em 1em}
.untrained{background:#fde8e8;border-left:4px solid #c00;padding:.5em 1em;font-size:1.1em}
img{max-width:100%}
"""


def render_report(report: dict[str, Any], curves: Sequence[Curve]) -> str:
    """The HTML page of a ``report.json`` document and the test split's curves."""
    model, label_set, data, split = report["model"], report["label_set"], report["data"], report["split"]
    metrics = report["metrics"]
    parts: list[str] = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>Evaluation of {_e(model.get('name'))} {_e(model.get('version'))} on {_e(label_set['name'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Evaluation: {_e(model.get('name'))} on label set {_e(label_set['name'])}</h1>",
    ]
    if model.get("untrained"):
        parts.append("<p class='untrained'><strong>UNTRAINED BUNDLE (random weights): every number in this report "
                     "is meaningless.</strong></p>")
    parts.append("<h2>Caveats</h2>")
    parts += [f"<p class='caveat'>{_e(c)}</p>" for c in report["caveats"]]
    parts.append("<h2>What was measured</h2><table>")
    rows = [
        ("model", f"{model.get('name')} {model.get('version')}"),
        ("checkpoint sha256", model.get("checkpoint_sha256") or "-"),
        ("precision / provider", f"{model.get('precision')} / {model.get('provider')}"),
        ("label set", f"{label_set['name']} version {label_set['version']} ({label_set['labels']} labels)"),
        ("data", data["folder"]),
        ("truth", data["truth_source"] + (f" ({data['truth_csv']})" if data.get("truth_csv") else "")),
        ("records scored", f"{data['records_scored']} ({data['windows_scored']} windows); "
                           f"{len(data['unreadable'])} unreadable"),
        ("patients", f"{data['patients']}" + (f" ({data['patient_note']})" if data.get("patient_note") else "")),
        ("validation split", f"{split['validation']['records']} records, {split['validation']['patients']} patients "
                             f"(fraction {split['validation_fraction']}, seed {split['seed']})"),
        ("test split", f"{split['test']['records']} records, {split['test']['patients']} patients"),
        ("thresholds", report["threshold_criterion"]),
        ("intervals", f"95 % percentile bootstrap over {metrics['bootstrap']['resamples']} resamples of the test "
                      f"split's patients (seed {metrics['bootstrap']['seed']})"),
        ("data fingerprint", data["fingerprint"]),
        ("created", f"{report['created']} by ecgfm-ked {report['tool_version']}"),
    ]
    parts += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows]
    parts.append("</table>")

    macro = metrics["macro"]
    parts.append("<h2>Macro averages (test split)</h2><table><tr><th>metric</th><th>value [95 % CI]</th>"
                 "<th>labels averaged</th></tr>")
    for name in ("auroc", "auprc", "f1", "mcc", "sensitivity", "specificity"):
        parts.append(f"<tr><td>{_e(name.upper() if name in ('auroc', 'auprc', 'mcc') else name)}</td>"
                     f"{_cell(macro[name])}<td>{_e(macro[name]['labels'])}</td></tr>")
    parts.append("</table>")

    parts.append("<h2>Per label (test split; threshold from the validation split)</h2><table><tr><th>label</th>"
                 "<th>test n+ / n&minus;</th><th>prevalence</th><th>AUROC</th><th>AUPRC</th><th>threshold</th>"
                 "<th>F1</th><th>MCC</th><th>sensitivity</th><th>specificity</th><th>all records AUROC</th>"
                 "<th>notes</th></tr>")
    for entry in metrics["per_label"]:
        test = entry["test"]
        parts.append(
            f"<tr><td>{_e(entry['label'])}</td><td>{test['positives']} / {test['negatives']}</td>"
            f"<td>{_num(test['prevalence'])}</td>{_cell(test['auroc'])}{_cell(test['auprc'])}"
            f"<td>{_num(entry['validation']['threshold'], 4)}</td>{_cell(test['f1'])}{_cell(test['mcc'])}"
            f"{_cell(test['sensitivity'])}{_cell(test['specificity'])}"
            f"<td>{_num(entry['all_records'].get('auroc'))}</td><td>{_e('; '.join(entry['notes']))}</td></tr>")
    parts.append("</table>")
    if metrics["labels_without_positives"]:
        parts.append("<p>Labels without any positive record in the data (not averaged): "
                     f"{_e(', '.join(metrics['labels_without_positives']))}</p>")

    if curves:
        parts.append("<h2>ROC curves (test split)</h2>" + _figure(curves, "roc"))
        parts.append("<h2>Precision-recall curves (test split)</h2>" + _figure(curves, "pr"))

    parts.append("<h2>Records not evaluated</h2>")
    if data["unreadable"]:
        parts.append("<table><tr><th>record</th><th>reason</th></tr>")
        parts += [f"<tr><td>{_e(u['record_id'])}</td><td style='text-align:left'>{_e(u['reason'])}</td></tr>"
                  for u in data["unreadable"]]
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if data["unmatched_codes"]:
        codes = ", ".join(f"{code} ({n})" for code, n in data["unmatched_codes"].items())
        parts.append(f"<p>Truth codes no label of the set carries (record count): {_e(codes)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
