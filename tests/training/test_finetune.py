"""Few-shot fine-tuning (app/training) on the real-format small checkpoint and real WFDB records.

Nothing is mocked: the checkpoint is written in the published format (tests/fixtures/models.py),
the records are the PhysioNet/CinC 2021 samples of ../shared/ecg-samples read by the service's
readers, and the fine-tuned checkpoint is exported and served by the real app.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.build.checkpoint import build_ecg_encoder, build_text_encoder, build_tqn, read_checkpoint
from app.cli import main
from app.evaluation.truth import LabelledRecord, load_labelled
from app.knowledge.builtin import load_builtin_sets
from app.training import data as D
from app.training.loop import Models, seed_everything, train_step
from app.training.recipe import Recipe, optimizer, set_trainable
from app.training.run import label_inputs
from app.training.text import LabelTexts
from tests.fixtures.models import CheckpointFiles

RECORDS = ["E07500", "E07501", "E07502", "E07503", "E07504", "E07505", "E07506", "E07507"]


def cinc_labels() -> list:
    (s,) = [s for s in load_builtin_sets() if s.name == "cinc2021"]
    return list(s.labels)


@pytest.fixture(scope="module")
def few_records(shared_samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 10 s Georgia records (WFDB + '# Dx:' SNOMED codes) copied into a folder of their own."""
    out = tmp_path_factory.mktemp("few_records")
    for rid in RECORDS:
        for f in (shared_samples_dir / "cinc2021-a").glob(f"{rid}.*"):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def finetuned(small_checkpoint: CheckpointFiles, few_records: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The CLI run once: (out checkpoint, exit status, database url)."""
    tmp = tmp_path_factory.mktemp("finetuned")
    db = f"sqlite:///{tmp / 'db.sqlite3'}"
    out = tmp / "finetuned.pt"
    rc = main(["finetune", "--checkpoint", str(small_checkpoint.path), "--text-model", str(small_checkpoint.text_dir),
               "--data", str(few_records), "--label-set", "cinc2021", "--fraction", "1.0", "--out", str(out),
               "--epochs", "2", "--batch-size", "4", "--seed", "42", "--device", "cpu", "--database-url", db,
               "--val-fraction", "0.25"])
    return out, rc, db


def _models(ckpt: CheckpointFiles, texts: list[str]) -> Models:
    base = read_checkpoint(ckpt.path)
    ids, mask = label_inputs(ckpt.text_dir, texts)
    return Models(build_ecg_encoder(base), build_tqn(base), LabelTexts(build_text_encoder(base, ckpt.text_dir), ids,
                                                                       mask))


def _batch(records_dir: Path, n: int = 4) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    labels = cinc_labels()
    data = load_labelled(records_dir, labels)
    w = D.load_windows(data.records[:n], data.label_names)
    return torch.from_numpy(w.x), torch.from_numpy(w.y), [d.name if d.encode_text == "name" else d.description
                                                          for d in labels]


def test_loss_falls_on_one_batch(small_checkpoint: CheckpointFiles, few_records: Path) -> None:
    x, y, texts = _batch(few_records)
    seed_everything(0)
    models = _models(small_checkpoint, texts)
    recipe = Recipe(lr=1e-4)
    opt = optimizer(set_trainable(models.ecg, models.tqn, models.labels.text), recipe)
    losses = [train_step(models, x, y, opt, recipe)["loss"] for _ in range(8)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_frozen_parameters_do_not_change_and_trainable_ones_do(small_checkpoint: CheckpointFiles,
                                                               few_records: Path) -> None:
    x, y, texts = _batch(few_records)
    seed_everything(0)
    models = _models(small_checkpoint, texts)
    recipe = Recipe()
    trainable = set_trainable(models.ecg, models.tqn, models.labels.text)
    names = {n for n, _ in trainable}
    before = {f"{s}.{k}": v.clone() for s, m in (("ecg_model", models.ecg), ("model", models.tqn),
                                                 ("text_encoder", models.labels.text))
              for k, v in m.named_parameters()}
    opt = optimizer(trainable, recipe)
    for _ in range(2):
        train_step(models, x, y, opt, recipe)
    after = {f"{s}.{k}": v for s, m in (("ecg_model", models.ecg), ("model", models.tqn),
                                        ("text_encoder", models.labels.text)) for k, v in m.named_parameters()}
    last = len(models.labels.text.bert_model.encoder.layer) - 1
    assert any(n.startswith(f"text_encoder.bert_model.encoder.layer.{last}.") for n in names)
    for name, value in after.items():
        changed = not torch.equal(value, before[name])
        frozen = (name.startswith("text_encoder.bert_model.embeddings.")
                  or (name.startswith("text_encoder.bert_model.encoder.layer.")
                      and not name.startswith(f"text_encoder.bert_model.encoder.layer.{last}."))
                  or name.endswith("logit_scale"))
        assert (name in names) != frozen, name
        assert changed != frozen, f"{name}: changed={changed}, frozen={frozen}"


def test_label_texts_equal_the_served_text_encoder(small_checkpoint: CheckpointFiles) -> None:
    texts = [*(d.name for d in cinc_labels()[:6]), "a much longer description of left bundle branch block"]
    models = _models(small_checkpoint, texts)
    models.train(False)
    with torch.no_grad():
        split = models.labels()
        served = models.labels.text(models.labels.input_ids, models.labels.attention_mask)
    assert torch.allclose(split, served, atol=1e-5), float((split - served).abs().max())


def test_subsample_is_deterministic_and_stratified(shared_samples_dir: Path) -> None:
    labels = cinc_labels()
    data = load_labelled(shared_samples_dir / "cinc2021-a", labels)
    names = data.label_names
    y = D.label_matrix(data.records, names)
    for fraction in (0.1, 0.5):
        first = D.subsample(data.records, names, fraction=fraction, seed=42)
        assert first == D.subsample(data.records, names, fraction=fraction, seed=42)
        assert len(first) == max(1, round(fraction * len(data.records)))
        labelled = np.flatnonzero(y.any(axis=0))
        covered = y[first].any(axis=0)
        if len(first) >= len(labelled):  # the budget allows one record per label
            assert covered[labelled].all()
    assert D.subsample(data.records, names, fraction=1.0, seed=1) == list(range(len(data.records)))
    # proportions follow the pool: each label's share in the subsample is near its share overall
    half = D.subsample(data.records, names, fraction=0.5, seed=42)
    assert np.abs(y[half].sum(0) - 0.5 * y.sum(0)).max() <= 1.0 + 1e-9


def test_split_keeps_patients_apart(shared_samples_dir: Path) -> None:
    labels = cinc_labels()
    data = load_labelled(shared_samples_dir / "cinc2021-b", labels)
    # group the records into patients of 1-3 records (as a truth CSV's patient column would)
    records = [LabelledRecord(r.path, r.record_id, f"p{i // 3}" if i % 2 else r.patient_id, r.positives)
               for i, r in enumerate(data.records)]
    names = data.label_names
    train, val = D.split_by_patient(records, names, val_fraction=0.3, seed=42)
    assert (train, val) == D.split_by_patient(records, names, val_fraction=0.3, seed=42)
    assert sorted(train + val) == list(range(len(records)))
    assert not {records[i].patient_id for i in train} & {records[i].patient_id for i in val}
    y = D.label_matrix(records, names)
    assert (y[train].any(axis=0) | ~y.any(axis=0)).all()  # every label with positives keeps one in training
    assert 0.15 * len(records) <= len(val) <= 0.45 * len(records)


def test_finetune_writes_a_strictly_loadable_checkpoint(finetuned: tuple[Path, int, str],
                                                        small_checkpoint: CheckpointFiles) -> None:
    out, rc, _ = finetuned
    assert rc == 0
    base, tuned = read_checkpoint(small_checkpoint.path), read_checkpoint(out)
    for section in ("ecg_model", "model", "text_encoder"):
        a, b = getattr(base, section), getattr(tuned, section)
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert not torch.equal(base.ecg_model["0.0.weight"], tuned.ecg_model["0.0.weight"])
    build_ecg_encoder(tuned), build_tqn(tuned), build_text_encoder(tuned, small_checkpoint.text_dir)
    ft = tuned.config["finetuned"]
    assert ft["base_checkpoint"]["sha256"] == base.sha256
    assert ft["fraction"] == 1.0 and ft["seed"] == 42 and ft["recipe"]["batch_size"] == 4
    assert len(ft["data"]["fingerprint"]) == 64 and ft["label_set"]["name"] == "cinc2021"
    assert ft["validation"]["best_epoch"] in (1, 2)
    history = json.loads(out.with_name(out.name + ".history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [0, 1, 2]
    assert set(tuned.extra_keys) == set(base.extra_keys)


def test_finetuned_checkpoint_exports_and_serves(finetuned: tuple[Path, int, str], small_checkpoint: CheckpointFiles,
                                                 tmp_path: Path) -> None:
    from app.api.main import create_app
    from app.build.export import export_bundle
    from tests.api.conftest import make_settings
    from tests.api.helpers import record_files, upload

    out, rc, _ = finetuned
    assert rc == 0
    result = export_bundle(out, small_checkpoint.text_dir, tmp_path / "bundle")
    tuned = read_checkpoint(out)
    assert result.manifest["finetuned"]["base_checkpoint"]["sha256"] == read_checkpoint(small_checkpoint.path).sha256
    assert result.manifest["source_checkpoint"]["sha256"] == tuned.sha256
    settings = make_settings(result.bundle_dir, tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        response = client.post("/diagnose", files=upload(*record_files("E07500")), params={"label_set": "cinc2021"})
        assert response.status_code == 200, response.text
        assert response.json()["model"]["checkpoint_sha256"] == tuned.sha256
        described = client.get("/model").json()
        assert described["manifest"]["finetuned"]["fraction"] == 1.0


def test_cli_exit_codes(small_checkpoint: CheckpointFiles, few_records: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    common = ["finetune", "--checkpoint", str(small_checkpoint.path), "--text-model", str(small_checkpoint.text_dir),
              "--out", str(tmp_path / "o.pt"), "--database-url", f"sqlite:///{tmp_path / 'db.sqlite3'}"]
    assert main([*common, "--data", str(few_records), "--label-set", "no-such-set", "--fraction", "0.1"]) == 1
    assert "no-such-set" in capsys.readouterr().err
    assert main([*common, "--data", str(tmp_path / "missing"), "--label-set", "cinc2021", "--fraction", "0.1"]) == 1
    assert "no such folder" in capsys.readouterr().err
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit) as exit_info:
            main([*common, "--data", str(few_records), "--label-set", "cinc2021", "--fraction", bad])
        assert exit_info.value.code == 2
    assert not (tmp_path / "o.pt").exists()
