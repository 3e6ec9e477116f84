"""Write the fine-tuned model as a checkpoint in the published format.

The same top-level keys as the base file (``ecg_model``, ``model``, ``text_encoder``,
``config``, ``epoch``, and ``optimizer`` / ``lr_scheduler`` where the base had them) and, in
the three sections, exactly the base's keys, shapes and dtypes (checked before writing; a
difference is a ``CheckpointError``). Aliased entries (the ECG encoder's ``convs`` /
``convpath``, ``decoder.norm`` / ``decoder_norm``) stay one tensor, saved once, and
``bert_model.embeddings.position_ids`` is carried over from the base where it had one, so
``read_checkpoint`` + ``build_*`` load the result strictly, as they load the published file.
``optimizer`` and ``lr_scheduler`` describe this fine-tune (groups, last learning rate); they
hold no optimizer state and cannot resume training.

``config`` is the base's with a ``finetuned`` block: the base checkpoint (file, sha256, epoch),
the recipe (every hyper-parameter and loss term), fraction, seed, label set, data fingerprint
and counts, and the validation metrics of the chosen epoch. The per-epoch history is written
beside the checkpoint as ``<out>.history.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from app.build.checkpoint import SECTIONS, Checkpoint
from app.errors import CheckpointError

State = dict[str, dict[str, torch.Tensor]]


def history_path(out: Path) -> Path:
    return out.with_name(out.name + ".history.json")


def _complete(section: str, state: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the base's keys: keys the module no longer has (position_ids) come from
    the base; then every key, shape and dtype must match the base."""
    out = {k: state[k] for k in base if k in state}
    for k in base:
        if k not in out:
            out[k] = base[k].clone()
    extra = sorted(set(state) - set(base))
    wrong = sorted(k for k in base if tuple(out[k].shape) != tuple(base[k].shape) or out[k].dtype != base[k].dtype)
    if extra or wrong:
        raise CheckpointError(f"fine-tuned section {section!r} differs from the base checkpoint: "
                              f"unexpected keys {extra[:8]}, wrong shape or dtype {wrong[:8]}")
    return out


def write_checkpoint(out: Path, base: Checkpoint, state: State, *, finetuned: dict[str, Any], epoch: int,
                     optimizer_summary: dict[str, Any]) -> Path:
    """Write atomically (a temporary file renamed into place); returns ``out``."""
    out = Path(out)
    sections = {name: _complete(name, state[name], getattr(base, name)) for name in SECTIONS}
    config = dict(base.config)
    previous = config.get("finetuned")
    config["finetuned"] = {**finetuned, **({"previous": previous} if previous is not None else {})}
    checkpoint: dict[str, Any] = {**sections, "config": config, "epoch": epoch}
    if "optimizer" in base.extra_keys:
        checkpoint["optimizer"] = {"state": {}, "param_groups": optimizer_summary.get("param_groups", [])}
    if "lr_scheduler" in base.extra_keys:
        checkpoint["lr_scheduler"] = {"last_epoch": epoch, "last_lr": optimizer_summary.get("last_lr")}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, out)
    return out


def write_history(out: Path, document: dict[str, Any]) -> Path:
    path = history_path(out)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return path
