"""The fine-tune, start to end: labelled data -> split -> subsample -> windows -> fit -> checkpoint.

``finetune`` is what ``ecgfm-ked finetune`` runs (app/training/command.py) and what tests call;
it returns the JSON summary the command prints.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import InvalidInput

Log = Callable[[str], None]


def label_inputs(text_model_dir: Path, texts: list[str]) -> tuple[Any, Any]:
    """Token ids and attention mask of ``texts`` exactly as the bundle's tokenizer makes them."""
    import torch

    from app.serving.tokenizer import build_tokenizer, encode

    encoded = encode(build_tokenizer(Path(text_model_dir) / "vocab.txt"), texts)
    return torch.from_numpy(encoded.input_ids), torch.from_numpy(encoded.attention_mask)


def finetune(checkpoint: Path, text_model_dir: Path, data_dir: Path, label_set: Any, recipe: Any, out: Path, *,
             truth_csv: Path | None = None, device: str = "auto", log: Log = lambda _m: None,
             progress: bool | None = False) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on the labelled records of ``data_dir`` for ``label_set``
    (a ``LabelSet``: labels with name, codes, ``text_for_encoder``); write ``out`` and its history."""
    import torch

    from app.build.checkpoint import build_ecg_encoder, build_text_encoder, build_tqn, read_checkpoint
    from app.evaluation.truth import data_fingerprint, load_labelled
    from app.training import data as D
    from app.training.loop import Models, fit, resolve_device
    from app.training.output import history_path, write_checkpoint, write_history
    from app.training.text import LabelTexts

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    dev = resolve_device(device)
    labels = list(label_set.labels)
    labelled = load_labelled(data_dir, labels, truth_csv=truth_csv)
    names = labelled.label_names
    records = labelled.records
    log(f"{len(records)} labelled records ({len(labelled.unreadable)} without usable truth) for "
        f"{len(names)} labels of {label_set.name!r}")
    train_idx, val_idx = D.split_by_patient(records, names, val_fraction=recipe.val_fraction, seed=recipe.seed)
    train_pool = [records[i] for i in train_idx]
    chosen = [train_pool[i] for i in D.subsample(train_pool, names, fraction=recipe.fraction, seed=recipe.seed)]
    val_records = [records[i] for i in val_idx]
    train = D.load_windows(chosen, names)
    val = D.load_windows(val_records, names)
    for s in train.skipped + val.skipped:
        log(f"skipping {s.record_id}: {s.reason}")
    if len(val) == 0:
        raise InvalidInput("no validation window: every validation record was unreadable or too short")
    log(f"training on {len(train.records)} records ({len(train)} windows; fraction {recipe.fraction} of "
        f"{len(train_pool)}), validating on {len(val.records)} records of other patients")

    base = read_checkpoint(checkpoint)
    text = build_text_encoder(base, text_model_dir)
    ids, mask = label_inputs(text_model_dir, [label.text_for_encoder for label in labels])
    models = Models(build_ecg_encoder(base), build_tqn(base), LabelTexts(text, ids, mask))
    result = fit(models, train, val, names, recipe, dev, log=log, progress=progress)

    best = result.history[result.best_epoch]["validation"]
    used = train.records + val.records
    positives = labelled.positives_count()
    finetuned: dict[str, Any] = {
        "base_checkpoint": {"file": base.path.name, "sha256": base.sha256, "epoch": base.epoch},
        "recipe": recipe.as_dict(),
        "loss_terms": recipe.loss_terms,
        "trainable": "ECG encoder, TQN (not logit_scale), BERT's last layer, pooler, mlp_embed",
        "fraction": recipe.fraction,
        "seed": recipe.seed,
        "label_set": {"name": label_set.name, "version": getattr(label_set, "version", None), "labels": names},
        "data": {
            "folder": str(data_dir),
            "truth": labelled.truth_source,
            "fingerprint": data_fingerprint(labelled, used),
            "train_fingerprint": data_fingerprint(labelled, train.records),
            "records_labelled": len(records),
            "records_without_truth": len(labelled.unreadable),
            "train_pool_records": len(train_pool),
            "train_records": len(train.records),
            "train_windows": len(train),
            "validation_records": len(val.records),
            "validation_windows": len(val),
            "skipped": [{"record_id": s.record_id, "reason": s.reason} for s in train.skipped + val.skipped],
            "patients_known": labelled.patients_known,
            "positives": positives,
        },
        "validation": {"criterion": result.criterion, "best_epoch": result.best_epoch, "loss": best["loss"],
                       "macro_auroc": best["macro_auroc"], "labels_evaluated": best["labels_evaluated"],
                       "auroc": best["auroc"], "before": result.history[0]["validation"]},
        "device": str(dev),
        "steps": result.steps,
        "tools": {"python": platform.python_version(), "torch": str(torch.__version__)},
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    last_lr = result.history[-1].get("lr_last")
    write_checkpoint(out, base, result.best_state, finetuned=finetuned, epoch=result.best_epoch,
                     optimizer_summary={"last_lr": last_lr, "param_groups": [
                         {"lr": recipe.lr, "weight_decay": recipe.weight_decay},
                         {"lr": recipe.lr, "weight_decay": 0.0}]})
    write_history(out, {"finetuned": finetuned, "history": result.history})
    log(f"wrote {out} (best epoch {result.best_epoch}) and {history_path(out).name}")
    return {"checkpoint": str(out), "history": str(history_path(out)), "best_epoch": result.best_epoch,
            "criterion": result.criterion, "validation_macro_auroc": best["macro_auroc"],
            "validation_loss": best["loss"], "base_macro_auroc": result.history[0]["validation"]["macro_auroc"],
            "train_records": len(train.records), "validation_records": len(val.records), "steps": result.steps,
            "device": str(dev)}
