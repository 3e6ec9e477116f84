"""``ecgfm-ked`` as a user runs it: the installed console script as a subprocess, its exit
status, its stdout JSON and stderr.

``diagnose`` runs the service's own diagnose use-case (``app.usecases.offline``), so its output
is compared with ``POST /diagnose`` of the real app (lifespan, ONNX sessions, SQLite) on the same
bundle and the same database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import __version__
from app.api.main import create_app
from app.ecg.readers import read_any
from app.knowledge.builtin import load_builtin_sets
from app.ops.settings import Settings

from ._server import ECG_DIR, REPO, clean_env, e07500_files

pytestmark = pytest.mark.timeout(300)

ECGFM_KED = Path(sys.executable).parent / "ecgfm-ked"  # the console script pip installed next to this Python
RECORD = str(ECG_DIR / "E07500")  # WFDB without extension


def cli(*args: str, data_dir: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """``ecgfm-ked ARGS`` with a database of its own in ``data_dir`` (never the repository's ./data)."""
    return subprocess.run([str(ECGFM_KED), *args], cwd=REPO, env=clean_env(ECGFM_DATA_DIR=str(data_dir), **env),
                          capture_output=True, text=True, timeout=timeout)


def diagnose(bundle: Path, data_dir: Path, *args: str) -> dict[str, Any]:
    proc = cli("diagnose", "--bundle", str(bundle), *args, data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("usage:") or "error:" in last, proc.stderr
    for needle in needles:
        assert needle in last, last


def probabilities(result: dict[str, Any]) -> dict[str, float]:
    return {d["label"]: d["probability"] for d in result["diagnoses"]}


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    """A response without what differs between two runs of the same request (id, timings,
    the source's name: an upload's base name in the API, the path given on the command line)
    and with probabilities and evidence weights left out (compared with a tolerance)."""
    out = {k: v for k, v in response.items() if k not in ("request_id", "timings_ms")}
    out["results"] = [
        {**r, "source": {k: v for k, v in r["source"].items() if k != "filename"},
         "diagnoses": sorted(({k: v for k, v in d.items() if k not in ("rank", "probability", "evidence")}
                              for d in r["diagnoses"]), key=lambda d: d["label"])}
        for r in response["results"]
    ]
    return out


@pytest.fixture(scope="module")
def site(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose SQLite database the real app has seeded (as a running site's)."""
    data_dir = tmp_path_factory.mktemp("site-data")
    settings = Settings(bundle_dir=bundle_dir, data_dir=data_dir, database_url=None, provider="cpu", auth="disabled")
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
    return data_dir


def test_version_of_the_installed_script(tmp_path: Path) -> None:
    proc = cli("--version", data_dir=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ecgfm-ked {__version__}"
    assert not (tmp_path / "data").exists()  # nothing opened


def test_diagnose_gives_the_api_answer_for_a_site_label_set(bundle_dir: Path, tmp_path: Path) -> None:
    """The key promise: one scoring path. A label set registered through the API on the site's
    database is scored by the command line with the same probabilities (1e-6) and the same answer."""
    data_dir = tmp_path / "site"
    settings = Settings(bundle_dir=bundle_dir, data_dir=data_dir, database_url=None, provider="cpu", auth="disabled")
    members = ["sinus bradycardia", "atrial fibrillation", "right bundle branch block", "sinus rhythm"]
    with TestClient(create_app(settings)) as client:
        created = client.post("/label-sets", json={"name": "ward-rhythm", "labels": members})
        assert created.status_code == 201, created.text
        api = client.post("/diagnose", files=e07500_files(), params={"label_set": "ward-rhythm", "top_k": 0})
        assert api.status_code == 200, api.text
    api_body = api.json()

    out = diagnose(bundle_dir, data_dir, "--provider", "cpu", "--label-set", "ward-rhythm", "--top-k", "0", RECORD)

    assert out["label_set"] == api_body["label_set"] == {"name": "ward-rhythm", "version": created.json()["version"]}
    (cli_result,), (api_result,) = out["results"], api_body["results"]
    cli_p, api_p = probabilities(cli_result), probabilities(api_result)
    assert sorted(cli_p) == sorted(api_p) == sorted(members)
    for label in members:
        assert abs(cli_p[label] - api_p[label]) <= 1e-6, (label, cli_p[label], api_p[label])
    assert comparable(out) == comparable(api_body)  # same shape and content: model, knowledge, codes, warnings
    assert cli_result["source"]["filename"] == RECORD + ".hea" and api_result["source"]["filename"] == "E07500.hea"
    assert out["request_id"] != api_body["request_id"]


def test_label_set_by_name_brings_knowledge_and_codes(bundle_dir: Path, site: Path) -> None:
    builtin = {s.name: s for s in load_builtin_sets()}["cinc2021"]
    out = diagnose(bundle_dir, site, "--label-set", "cinc2021", "--top-k", "0", "--include-windows", RECORD)
    assert out["model"]["untrained"] is True
    assert [w["code"] for w in out["warnings"]] == ["untrained_model"]
    assert out["label_set"]["name"] == "cinc2021" and out["intended_use"]
    (result,) = out["results"]
    assert result["source"]["format"] == "wfdb" and result["source"]["windows"] == 1
    expected = {label.name: label for label in builtin.labels}
    assert sorted(d["label"] for d in result["diagnoses"]) == sorted(expected)
    assert [d["rank"] for d in result["diagnoses"]] == list(range(1, len(expected) + 1))
    for d in result["diagnoses"]:
        label = expected[d["label"]]
        assert d["knowledge"] == label.description and d["knowledge"] != d["label"]
        assert d["codes"] == label.codes and d["codes"]["SNOMED CT"]
        assert isinstance(d["label_id"], int) and d["evidence"]
        assert d["window_probabilities"] == [d["probability"]]


def test_default_label_set_and_top_k_as_the_api(bundle_dir: Path, site: Path) -> None:
    out = diagnose(bundle_dir, site, RECORD)  # no label option: the service's default set, top 5
    assert out["label_set"]["name"] == "default"
    assert len(out["results"][0]["diagnoses"]) == 5


def test_non_wfdb_file_is_read_by_content(bundle_dir: Path, site: Path, tmp_path: Path) -> None:
    """The same signals as NPY (under a name that says nothing) score as the WFDB record does."""
    recording = read_any(Path(RECORD + ".hea"))
    npy = tmp_path / "export.bin"
    np.save(npy.with_suffix(".npy"), recording.signals.astype(np.float64))
    npy.with_suffix(".npy").rename(npy)
    leads = ",".join(recording.lead_names)
    out = diagnose(bundle_dir, site, "--label-set", "cinc2021", "--top-k", "0", "--sampling-rate", "500",
                   "--units", "mV", "--lead-names", leads, str(npy), RECORD)
    npy_result, wfdb_result = out["results"]
    assert npy_result["source"]["format"] == "npy" and wfdb_result["source"]["format"] == "wfdb"
    assert npy_result["source"]["filename"] == str(npy)
    npy_p, wfdb_p = probabilities(npy_result), probabilities(wfdb_result)
    assert npy_p.keys() == wfdb_p.keys()
    assert max(abs(npy_p[k] - wfdb_p[k]) for k in npy_p) <= 1e-6


def test_folder_gives_every_record_in_it(bundle_dir: Path, site: Path, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    (folder / "b").mkdir(parents=True)
    for name in ("E07500.hea", "E07500.mat"):
        (folder / name).write_bytes((ECG_DIR / name).read_bytes())
    for name in ("A0001.hea", "A0001.mat"):
        (folder / "b" / name).write_bytes((ECG_DIR / name).read_bytes())
    out = diagnose(bundle_dir, site, "--label", "sinus rhythm", "--label", "atrial fibrillation", str(folder))
    assert [r["source"]["filename"] for r in out["results"]] == [str(folder / "E07500.hea"),
                                                                 str(folder / "b" / "A0001.hea")]
    assert out["label_set"]["name"] == "adhoc"
    for result in out["results"]:
        assert [d["label"] for d in result["diagnoses"]] in (["sinus rhythm", "atrial fibrillation"],
                                                              ["atrial fibrillation", "sinus rhythm"])


def test_labels_file_is_scored_without_being_stored(bundle_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "name,description,SNOMED CT\n"
        "wellens pattern,\"Deeply inverted or biphasic T waves in V2-V3, preserved R waves\",\n"
        "sinus bradycardia,Sinus rhythm with a rate below 60 per minute,426177001\n"
    )
    data_dir = tmp_path / "never-made"
    out = diagnose(bundle_dir, data_dir, "--labels-file", str(labels), "--top-k", "0", RECORD)
    assert not data_dir.exists()  # the site's database was not opened, let alone written
    assert out["label_set"]["name"] == "adhoc"
    by_name = {d["label"]: d for d in out["results"][0]["diagnoses"]}
    assert by_name["wellens pattern"]["knowledge"] == "Deeply inverted or biphasic T waves in V2-V3, preserved R waves"
    assert by_name["wellens pattern"]["codes"] == {}
    assert by_name["sinus bradycardia"]["codes"] == {"SNOMED CT": "426177001"}

    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps([
        {"name": "wellens pattern", "description": "Deeply inverted or biphasic T waves in V2-V3, preserved R waves"},
        {"name": "sinus bradycardia", "description": "Sinus rhythm with a rate below 60 per minute",
         "codes": {"SNOMED CT": "426177001"}},
    ]))
    again = diagnose(bundle_dir, data_dir, "--labels-file", str(as_json), "--top-k", "0", RECORD)
    assert again["label_set"] == out["label_set"]  # same content, same version
    assert probabilities(again["results"][0]) == probabilities(out["results"][0])


def test_fhir_output(bundle_dir: Path, site: Path) -> None:
    out = diagnose(bundle_dir, site, "--label-set", "cinc2021", "--top-k", "3", "--format", "fhir", RECORD)
    assert out["resourceType"] == "Bundle"
    kinds = [e["resource"]["resourceType"] for e in out["entry"]]
    assert kinds.count("DiagnosticReport") == 1 and kinds.count("Observation") == 3


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--label-set", "no-such-set", RECORD], ["not_found", "no-such-set"]),
        (["--label", "no such label", RECORD], ["not_found", "no such label"]),
        ([str(ECG_DIR / "SOURCE.txt")], ["unsupported_format", "SOURCE.txt"]),
        ([str(ECG_DIR / "missing-record")], ["missing-record", "no such file"]),
    ],
    ids=["unknown-label-set", "unknown-label", "unreadable-file", "missing-file"],
)
def test_runtime_errors_exit_1(bundle_dir: Path, site: Path, args: list[str], needles: list[str]) -> None:
    proc = cli("diagnose", "--bundle", str(bundle_dir), *args, data_dir=site)
    assert_one_line_error(proc, 1, *needles)


def test_missing_bundle_exits_1_and_says_how_to_get_one(tmp_path: Path) -> None:
    proc = cli("diagnose", "--bundle", str(tmp_path / "no-bundle"), RECORD, data_dir=tmp_path / "data")
    line = assert_one_line_error(proc, 1, "bundle_invalid")
    for how in ("ecgfm-ked fetch", "ecgfm-ked demo-bundle"):
        assert how in line


def test_bad_labels_file_exits_1(bundle_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("label,text\nafib,irregular\n")
    proc = cli("diagnose", "--bundle", str(bundle_dir), "--labels-file", str(labels), RECORD, data_dir=tmp_path)
    assert_one_line_error(proc, 1, "invalid_input", "name and description")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--label", "sinus rhythm", "--label-set", "default", RECORD], "not allowed with"),
        (["--labels-file", "x.csv", "--database-url", "sqlite:///x.db", RECORD], "--database-url"),
        (["--top-k", "-1", RECORD], "--top-k"),
        (["--format", "xml", RECORD], "--format"),
        ([], "PATH"),
    ],
    ids=["label-and-label-set", "labels-file-and-database", "negative-top-k", "unknown-format", "no-path"],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = cli("diagnose", "--bundle", str(tmp_path / "unused"), *args, data_dir=tmp_path / "data")
    assert_usage_error(proc, needle)
    assert not (tmp_path / "data").exists()


def test_serve_without_bundle_says_how_to_get_one(tmp_path: Path) -> None:
    proc = cli("serve", "--bundle", str(tmp_path / "no-bundle"), "--port", "1", data_dir=tmp_path / "data", timeout=60)
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
    proc = cli("export", "--checkpoint", str(bogus), "--text-model", str(text_dir), "--out", str(tmp_path / "out"),
               data_dir=tmp_path / "data")
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
    proc = cli("demo-bundle", "--out", str(out), data_dir=tmp_path / "data", timeout=60)
    assert proc.returncode != 0
    assert "not empty" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "someone's file"
