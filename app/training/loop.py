"""The training loop: epochs of shuffled batches, validation after each, the best epoch kept.

Deterministic for a seed: ``torch.manual_seed`` and a private ``torch.Generator`` for the
shuffling (cuDNN in deterministic mode on CUDA). Every window is used in every epoch; the last
partial batch is kept. Validation scores each record as the service does by default (the
maximum of its windows' probabilities) and computes per-label AUROC (scikit-learn) for every
label with both positive and negative validation records; the macro AUROC is their mean. The
best epoch is the one with the highest validation macro AUROC (the earlier on a tie); where no
label has both classes in validation the lowest validation cross-entropy decides instead, and
the history says which criterion was used. The base model is validated too (epoch 0), for
comparison; it is not a candidate.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from app.build.ecg_encoder import EcgEncoder
from app.build.tqn import TQN
from app.training.data import Windows
from app.training.losses import ecg_cross_entropy, ecg_label_contrastive, tqn_logits
from app.training.recipe import Recipe, learning_rate, optimizer, set_learning_rate, set_trainable, warmup_steps
from app.training.text import LabelTexts

Log = Callable[[str], None]
State = dict[str, dict[str, torch.Tensor]]
EVAL_BATCH = 32


@dataclass
class Models:
    ecg: EcgEncoder
    tqn: TQN
    labels: LabelTexts

    def modules(self) -> list[nn.Module]:
        return [self.ecg, self.tqn, self.labels]

    def to(self, device: torch.device) -> Models:
        for m in self.modules():
            m.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        for m in self.modules():
            m.train(mode)

    def state(self) -> State:
        """CPU copies of the three sections; tensors that alias each other still do."""
        copies: dict[tuple[Any, ...], torch.Tensor] = {}

        def copy(t: torch.Tensor) -> torch.Tensor:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if key not in copies:
                copies[key] = t.detach().to("cpu", copy=True)
            return copies[key]

        return {
            "ecg_model": {k: copy(v) for k, v in self.ecg.state_dict().items()},
            "model": {k: copy(v) for k, v in self.tqn.state_dict().items()},
            "text_encoder": {k: copy(v) for k, v in self.labels.text.state_dict().items()},
        }


@dataclass
class FitResult:
    best_epoch: int
    best_state: State
    criterion: str
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)


def resolve_device(choice: str) -> torch.device:
    from app.errors import InvalidInput

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda: no CUDA device is available to torch here (use --device auto or cpu)")
    return torch.device(choice)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def train_step(models: Models, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               recipe: Recipe) -> dict[str, float]:
    """One optimizer step on a batch; the losses before the step."""
    models.train()
    features = models.ecg(x)  # (B, D, S)
    label_features = models.labels()  # (C, D)
    logits, _ = tqn_logits(models.tqn, features, label_features)
    ce = ecg_cross_entropy(logits, y)
    loss = recipe.ce_weight * ce
    contrastive = torch.zeros((), device=x.device)
    if recipe.contrastive_weight:
        contrastive = ecg_label_contrastive(features.mean(dim=-1), label_features, y, recipe.temperature)
        loss = loss + recipe.contrastive_weight * contrastive
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return {"loss": float(loss.detach()), "ce": float(ce.detach()), "contrastive": float(contrastive.detach())}


def predict(models: Models, x: np.ndarray, device: torch.device,
            batch: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) probabilities and (M, C, 2) logits of windows, in eval mode."""
    models.train(False)
    probs: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    with torch.no_grad():
        label_features = models.labels()
        for start in range(0, len(x), batch):
            xb = torch.from_numpy(x[start : start + batch]).to(device)
            lg, p = tqn_logits(models.tqn, models.ecg(xb), label_features)
            probs.append(p.cpu().numpy())
            logits.append(lg.cpu().numpy())
    n_labels = int(models.labels.input_ids.shape[0])
    if not probs:
        return np.zeros((0, n_labels), np.float32), np.zeros((0, n_labels, 2), np.float32)
    return np.concatenate(probs), np.concatenate(logits)


def evaluable_labels(windows: Windows) -> np.ndarray:
    """Labels with both positive and negative records in ``windows``: AUROC is defined for them."""
    positives = windows.record_targets.sum(axis=0)
    result: np.ndarray = (positives > 0) & (positives < windows.record_targets.shape[0])
    return result


def validate(models: Models, val: Windows, label_names: list[str], device: torch.device) -> dict[str, Any]:
    """Validation cross-entropy (per window) and per-record AUROC per label, macro-averaged."""
    from sklearn.metrics import roc_auc_score

    probs, logits = predict(models, val.x, device)
    loss = float(F.cross_entropy(torch.from_numpy(logits).reshape(-1, 2),
                                 torch.from_numpy(val.y).reshape(-1).long())) if len(val) else math.nan
    record_probs = np.zeros(val.record_targets.shape, dtype=np.float64)
    for r in range(len(val.records)):  # the service's default aggregation: max over windows
        record_probs[r] = probs[val.owner == r].max(axis=0)
    per_label: dict[str, float] = {}
    for c in np.flatnonzero(evaluable_labels(val)):
        per_label[label_names[c]] = float(roc_auc_score(val.record_targets[:, c], record_probs[:, c]))
    macro = float(np.mean(list(per_label.values()))) if per_label else None
    return {"loss": loss, "macro_auroc": macro, "labels_evaluated": len(per_label), "auroc": per_label}


def _better(metrics: dict[str, Any], best: dict[str, Any] | None, criterion: str) -> bool:
    if best is None:
        return True
    if criterion == "macro_auroc":
        return bool(metrics["macro_auroc"] > best["macro_auroc"])
    return bool(metrics["loss"] < best["loss"])


def fit(models: Models, train: Windows, val: Windows, label_names: list[str], recipe: Recipe,
        device: torch.device, *, log: Log = lambda _m: None, progress: bool | None = False) -> FitResult:
    """Train ``models`` in place; the best epoch's state (CPU copies) and the history."""
    from tqdm import tqdm

    if len(train) == 0:
        from app.errors import InvalidInput

        raise InvalidInput("no training window: every training record was unreadable or too short")
    generator = seed_everything(recipe.seed)
    models.to(device)
    trainable = set_trainable(models.ecg, models.tqn, models.labels.text)
    opt = optimizer(trainable, recipe)
    n = len(train)
    steps_per_epoch = n // recipe.batch_size if recipe.drop_last else math.ceil(n / recipe.batch_size)
    steps_per_epoch = max(steps_per_epoch, 1)
    total = recipe.epochs * steps_per_epoch
    warmup = warmup_steps(recipe, steps_per_epoch)
    criterion = "macro_auroc" if evaluable_labels(val).any() else "validation_loss"
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)

    before = validate(models, val, label_names, device)
    history: list[dict[str, Any]] = [{"epoch": 0, "note": "base checkpoint, before fine-tuning",
                                      "validation": before}]
    log(f"epoch 0 (base checkpoint): {_describe(before)}")
    result = FitResult(best_epoch=0, best_state={}, criterion=criterion, history=history)
    best: dict[str, Any] | None = None
    step = 0
    lr = recipe.lr
    bar = tqdm(total=total, desc="finetune", unit="step", file=sys.stderr, leave=False,
               disable=None if progress is None else not progress, dynamic_ncols=True)
    try:
        for epoch in range(1, recipe.epochs + 1):
            started = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            sums = {"loss": 0.0, "ce": 0.0, "contrastive": 0.0}
            seen = 0
            for b in range(steps_per_epoch):
                idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
                lr = learning_rate(step, total_steps=total, warmup=warmup, recipe=recipe)
                set_learning_rate(opt, lr)
                t0 = time.perf_counter()
                losses = train_step(models, x_all[idx].to(device), y_all[idx].to(device), opt, recipe)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                result.step_seconds.append(time.perf_counter() - t0)
                for k in sums:
                    sums[k] += losses[k] * len(idx)
                seen += len(idx)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{losses['loss']:.4f}", lr=f"{lr:.2e}")
            metrics = validate(models, val, label_names, device)
            entry: dict[str, Any] = {"epoch": epoch, "steps": steps_per_epoch, "lr_last": lr,
                     "train": {k: v / max(seen, 1) for k, v in sums.items()}, "validation": metrics,
                     "seconds": round(time.perf_counter() - started, 2)}
            history.append(entry)
            improved = _better(metrics, best, criterion)
            if improved:
                best = metrics
                result.best_epoch = epoch
                result.best_state = models.state()
            with tqdm.external_write_mode(file=sys.stderr):
                log(f"epoch {epoch}/{recipe.epochs}: train loss {entry['train']['loss']:.4f} "
                    f"(ce {entry['train']['ce']:.4f}, contrastive {entry['train']['contrastive']:.4f}), "
                    f"{_describe(metrics)}, {entry['seconds']:.1f} s" + (" *best*" if improved else ""))
    finally:
        bar.close()
    result.steps = step
    return result


def _describe(metrics: dict[str, Any]) -> str:
    auroc = metrics["macro_auroc"]
    text = f"validation loss {metrics['loss']:.4f}"
    if auroc is None:
        return text + ", macro AUROC undefined (no label has both classes in validation)"
    return text + f", macro AUROC {auroc:.4f} over {metrics['labels_evaluated']} labels"
