"""``ecgfm-ked`` as a user runs it: a subprocess, its exit status, its stdout JSON and stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ._server import ECG_DIR, REPO, clean_env

pytestmark = pytest.mark.timeout(180)

RECORD = str(ECG_DIR / "E07500")  # WFDB without extension


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def _check_diagnose_output(proc: subprocess.CompletedProcess, labels: list[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["model"]["untrained"] is True
    assert out["intended_use"]
    (result,) = out["results"]
    assert result["record"] == RECORD and result["windows"] == 1 and result["window_starts_s"] == [0.0]
    diagnoses = result["diagnoses"]
    assert sorted(d["label"] for d in diagnoses) == sorted(labels)  # --top-k 0: every label
    assert [d["rank"] for d in diagnoses] == list(range(1, len(labels) + 1))
    probs = [d["probability"] for d in diagnoses]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    for d in diagnoses:
        assert len(d["attention"]) == 32 and all(isinstance(v, float) for v in d["attention"])
        assert d["attention"] != [d["attention"][0]] * 32
        assert d["evidence"]
    return out


def test_diagnose_with_labels(bundle_dir: Path) -> None:
    labels = ["atrial fibrillation", "sinus rhythm"]
    proc = cli("diagnose", "--bundle", str(bundle_dir), "--provider", "cpu", "--label", labels[0],
               "--label", labels[1], "--top-k", "0", RECORD)
    out = _check_diagnose_output(proc, labels)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert out["model"]["version"] == manifest["model_version"]


def test_diagnose_with_labels_file(bundle_dir: Path, tmp_path: Path) -> None:
    labels = ["left bundle branch block", "right bundle branch block", "normal ecg"]
    f = tmp_path / "labels.txt"
    f.write_text("\n".join(labels[:2]) + "\n\n  " + labels[2] + "  \n")  # blank lines and spaces ignored
    proc = cli("diagnose", "--bundle", str(bundle_dir), "--provider", "cpu", "--labels-file", str(f),
               "--top-k", "0", RECORD)
    _check_diagnose_output(proc, labels)


def test_diagnose_without_labels_is_refused(bundle_dir: Path) -> None:
    proc = cli("diagnose", "--bundle", str(bundle_dir), RECORD)
    assert proc.returncode == 2
    assert "--label" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_without_bundle_says_how_to_get_one(tmp_path: Path) -> None:
    proc = cli("serve", "--bundle", str(tmp_path / "no-bundle"), "--port", "1", timeout=60)
    assert proc.returncode != 0
    for how in ("ecgfm-ked fetch", "ecgfm-ked export", "ecgfm-ked demo-bundle"):
        assert how in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_of_a_file_that_is_not_a_checkpoint(bundle_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"<html>404 Not Found</html>\n")
    text_dir = tmp_path / "text_model"
    text_dir.mkdir()
    (text_dir / "config.json").write_text((bundle_dir / "text_model" / "config.json").read_text())
    (text_dir / "vocab.txt").write_text((bundle_dir / "tokenizer" / "vocab.txt").read_text())
    proc = cli("export", "--checkpoint", str(bogus), "--text-model", str(text_dir), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "checkpoint" in proc.stderr and str(bogus) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_demo_bundle_refuses_a_non_empty_directory(bundle_dir: Path, tmp_path: Path) -> None:
    # the session's bundle is itself a demo bundle in the real format, marked untrained
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["untrained"] is True and manifest.get("untrained_note")

    out = tmp_path / "occupied"
    out.mkdir()
    (out / "keep.txt").write_text("someone's file")
    proc = cli("demo-bundle", "--out", str(out), timeout=60)
    assert proc.returncode != 0
    assert "not empty" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "someone's file"
