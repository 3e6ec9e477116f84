"""``ecgfm-ked evaluate`` as a user runs it (the installed console script, real ONNX sessions on
the session's small untrained bundle) on the 120 labelled WFDB records of cinc2021-a and
cinc2021-b: exit status, the files it writes, metrics recomputed here with scikit-learn from
predictions.csv, the summary attached to the bundle, the HTML in headless Chromium.

The 120 records are scored once per module (``run``); an untrained bundle gives meaningless
numbers, which is fine: this checks the mechanics.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, matthews_corrcoef, roc_auc_score

from app.evaluation.summary import SUMMARY_FILE, read_summary
from tests.fixtures.browser import launched_chromium
from tests.integration._server import REPO, clean_env

pytestmark = pytest.mark.timeout(300)

ECGFM_KED = Path(sys.executable).parent / "ecgfm-ked"


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ECGFM_KED), *args], cwd=REPO, env=clean_env(ECGFM_DATA_DIR=str(data_dir)),
                          capture_output=True, text=True, timeout=280)


class Run(NamedTuple):
    proc: subprocess.CompletedProcess[str]
    out: Path
    bundle: Path
    seconds: float
    report: dict[str, Any]


def _linked_bundle(bundle: Path, where: Path) -> Path:
    """A bundle folder of links to the shared one, so --attach writes its summary here only."""
    where.mkdir()
    for item in bundle.iterdir():
        if item.name != SUMMARY_FILE:
            (where / item.name).symlink_to(item)
    return where


@pytest.fixture(scope="module")
def run(bundle_dir: Path, shared_samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("evaluate")
    bundle = _linked_bundle(bundle_dir, root / "bundle")
    out = root / "out"
    started = time.perf_counter()
    proc = cli("evaluate", "--bundle", str(bundle), "--data", str(shared_samples_dir), "--label-set", "cinc2021",
               "--out", str(out), "--bootstrap", "200", "--seed", "5", "--attach", data_dir=root / "data")
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"evaluate on the shared samples: {seconds:.1f} s")  # the measured end-to-end time
    return Run(proc, out, bundle, seconds, json.loads((out / "report.json").read_text()))


def _predictions(out: Path) -> tuple[list[dict[str, str]], list[str]]:
    with (out / "predictions.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    return rows, fields


def test_report_names_model_data_split_and_caveats(run: Run) -> None:
    report = run.report
    summary = json.loads(run.proc.stdout)
    assert summary["records_scored"] == 120 and summary["untrained"] is True
    assert report["model"]["version"] == json.loads((run.bundle / "manifest.json").read_text())["model_version"]
    assert report["model"]["untrained"] is True and "checkpoint_sha256" in report["model"]
    assert report["label_set"]["name"] == "cinc2021" and len(report["label_set"]["version"]) >= 8
    assert report["seed"] == 5 and report["data"]["records_scored"] == 120
    split = report["split"]
    assert split["validation"]["records"] + split["test"]["records"] == 120
    assert 0.25 < split["validation"]["records"] / 120 < 0.35
    assert any("UNTRAINED" in c for c in report["caveats"]) and any("not a clinical validation" in c
                                                                     for c in report["caveats"])
    assert any("each record was treated as its own patient" in c for c in report["caveats"])
    unreadable = {u["record_id"]: u["reason"] for u in report["data"]["unreadable"]}
    assert len(unreadable) == 21 and "ptbdb/s0010_re" in unreadable
    assert report["metrics"]["labels_without_positives"]  # e.g. pacing rhythm: reported, not averaged
    text = json.dumps(report)
    assert "patient_id" not in text and "NaN" not in text
    assert "scoring" in run.proc.stderr  # the progress bar


def test_metrics_equal_scikit_learn_recomputed_from_predictions(run: Run) -> None:
    rows, fields = _predictions(run.out)
    report = run.report
    labels = [e["label"] for e in report["metrics"]["per_label"]]
    assert fields == ["record_id", "split", *labels, *(f"truth:{n}" for n in labels)]
    assert len(rows) == 120 and len({r["record_id"] for r in rows}) == 120
    test = [r for r in rows if r["split"] == "test"]
    assert len(test) == report["split"]["test"]["records"]
    checked = 0
    for entry in report["metrics"]["per_label"]:
        name = entry["label"]
        y = np.array([int(r[f"truth:{name}"]) for r in test])
        p = np.array([float(r[name]) for r in test])
        assert entry["test"]["positives"] == int(y.sum())
        if entry["test"]["auroc"]["value"] is None:
            assert not y.any() or y.all()
            continue
        assert entry["test"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert entry["test"]["auprc"]["value"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        threshold = report["thresholds"].get(name)
        if threshold is not None:
            predicted = p >= threshold
            assert entry["test"]["f1"]["value"] == pytest.approx(f1_score(y, predicted, zero_division=0), abs=1e-12)
            assert entry["test"]["mcc"]["value"] == pytest.approx(matthews_corrcoef(y, predicted), abs=1e-12)
            # the threshold was chosen on validation records only
            val = [r for r in rows if r["split"] == "validation"]
            assert threshold in {float(r[name]) for r in val}
            checked += 1
        low, high = entry["test"]["auroc"]["ci_low"], entry["test"]["auroc"]["ci_high"]
        assert low is None or low <= high
    assert checked >= 5
    macro = report["metrics"]["macro"]["auroc"]
    values = [e["test"]["auroc"]["value"] for e in report["metrics"]["per_label"] if e["test"]["auroc"]["value"]]
    assert macro["value"] == pytest.approx(np.mean(values)) and macro["labels"] == len(values)


def test_summary_attached_to_the_bundle(run: Run) -> None:
    summary = read_summary(run.bundle)
    assert summary is not None
    assert summary["macro_auroc"]["value"] == run.report["metrics"]["macro"]["auroc"]["value"]
    assert summary["n_records"] == 120 and summary["label_set"]["name"] == "cinc2021"
    assert summary["data_fingerprint"] == run.report["data"]["fingerprint"]
    assert Path(summary["report"]) == (run.out / "report.json").resolve()
    assert (run.bundle / "manifest.json").is_symlink()  # manifest.json untouched: still the link


def test_read_summary_of_absent_or_damaged_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_summary(tmp_path) is None
    (tmp_path / SUMMARY_FILE).write_text("{not json")
    assert read_summary(tmp_path) is None
    (tmp_path / SUMMARY_FILE).write_text("[1, 2]")
    assert read_summary(tmp_path) is None
    assert "evaluation.json" in caplog.text


def test_html_is_self_contained_and_opens_in_chromium(run: Run) -> None:
    page_text = (run.out / "report.html").read_text()
    assert "http://" not in page_text and "https://" not in page_text
    assert "<strong>UNTRAINED BUNDLE" in page_text and run.report["label_set"]["version"] in page_text
    outside: list[str] = []
    with launched_chromium() as browser:
        page = browser.new_page()

        def route(r: Any) -> None:
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto((run.out / "report.html").as_uri(), wait_until="load")
        assert "cinc2021" in page.title()
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == 2 and all(w > 100 for w in widths)
        assert page.locator("table").count() >= 4
    assert outside == []


def test_damaged_record_is_listed_not_dropped(bundle_dir: Path, shared_samples_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "a"
    shutil.copytree(shared_samples_dir / "cinc2021-a", data)
    signal = data / "E07503.mat"
    signal.write_bytes(signal.read_bytes()[:1000])  # truncated signal file: the header still reads
    out = tmp_path / "out"
    proc = cli("evaluate", "--bundle", str(bundle_dir), "--data", str(data), "--label-set", "cinc2021",
               "--out", str(out), "--bootstrap", "20", "--quiet", data_dir=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["records_scored"] == 49
    reasons = {u["record_id"]: u["reason"] for u in report["data"]["unreadable"]}
    assert set(reasons) == {"E07503"} and reasons["E07503"]
    rows, _ = _predictions(out)
    assert "E07503" not in {r["record_id"] for r in rows}


@pytest.mark.parametrize(("args", "needle"), [
    (["--data", "{samples}", "--label-set", "no-such-set"], "no-such-set"),
    (["--data", "{tmp}/missing", "--label-set", "cinc2021"], "no such folder"),
])
def test_runtime_errors_exit_1(bundle_dir: Path, shared_samples_dir: Path, tmp_path: Path, args: list[str],
                               needle: str) -> None:
    args = [a.format(samples=shared_samples_dir / "cinc2021-a", tmp=tmp_path) for a in args]
    proc = cli("evaluate", "--bundle", str(bundle_dir), *args, "--out", str(tmp_path / "out"),
               data_dir=tmp_path / "data")
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [
    ["--data", "x", "--out", "y"],  # neither --label-set nor --labels-file
    ["--data", "x", "--out", "y", "--label-set", "a", "--labels-file", "f"],
    ["--data", "x", "--out", "y", "--label-set", "a", "--validation-fraction", "1.5"],
    ["--data", "x", "--out", "y", "--labels-file", "f", "--database-url", "sqlite://"],
    ["--out", "y", "--label-set", "a"],
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    proc = cli("evaluate", *args, data_dir=tmp_path / "data")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_labels_file_with_csv_truth(bundle_dir: Path, shared_samples_dir: Path, tmp_path: Path) -> None:
    """Ad-hoc labels (scored in a private database, as diagnose --labels-file) and truth from a CSV."""
    data = tmp_path / "a"
    shutil.copytree(shared_samples_dir / "cinc2021-a", data)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([
        {"name": "sinus tachycardia", "description": "Sinus rhythm faster than 100 per minute", "encode_text": "name"},
        {"name": "sinus bradycardia", "description": "Sinus rhythm slower than 60 per minute", "encode_text": "name"},
    ]))
    truth = tmp_path / "truth.csv"
    ids = sorted(p.stem for p in data.glob("*.hea"))
    truth.write_text("record,label,patient\n" + "".join(
        f"{rid},{'sinus tachycardia' if k % 2 else 'sinus bradycardia'},pt{k // 2}\n" for k, rid in enumerate(ids)))
    out = tmp_path / "out"
    proc = cli("evaluate", "--bundle", str(bundle_dir), "--data", str(data), "--labels-file", str(labels),
               "--truth", str(truth), "--out", str(out), "--bootstrap", "20", "--quiet", data_dir=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["label_set"]["name"] == "adhoc" and report["data"]["truth_source"] == "csv"
    # 25 patients given; E07509 and E07510 (identical signals, pt4 and pt5) are kept together as one
    assert report["data"]["patients_known"] and report["data"]["patients"] == 24
    assert "pt0" not in json.dumps(report)  # no patient identifiers in the report
    assert not (tmp_path / "data").exists()  # the service's database was never opened


def test_missing_eval_extra_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    monkeypatch.setitem(sys.modules, "sklearn", None)  # as in the serving install: import fails
    status = main(["evaluate", "--data", str(tmp_path), "--label-set", "cinc2021", "--out", str(tmp_path / "o")])
    assert status == 1
    assert 'pip install ".[eval]"' in capsys.readouterr().err
