"""The fine-tuning recipe: hyper-parameters, which parameters train, optimizer groups, schedule.

Trainable, as published: the whole ECG encoder, the TQN, and of the text encoder BERT's last
layer, its pooler and ``mlp_embed``; BERT's embeddings and layers 0..N-2 are frozen. The two
``logit_scale`` scalars are unused at inference and by these losses (the contrastive
temperature is fixed), so they stay frozen too. AdamW (lr 5e-5, weight decay 0.02 on weight
matrices and conv kernels, none on biases and 1-D parameters: norms, BatchNorm), one
learning-rate value per optimizer step: linear warm-up from ``min_lr`` to ``lr`` over the first
``warmup_epochs`` epochs, then cosine down to ``min_lr`` at the last step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from app.build.ecg_encoder import EcgEncoder
from app.build.text_encoder import TextEncoder
from app.build.tqn import TQN

PUBLISHED_FRACTIONS = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class Recipe:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 5e-5
    min_lr: float = 1e-6
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    temperature: float = 0.1
    ce_weight: float = 1.0
    contrastive_weight: float = 1.0
    val_fraction: float = 0.2
    fraction: float = 1.0
    seed: int = 42
    drop_last: bool = False  # the authors dropped the last partial batch; it is kept here

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def loss_terms(self) -> dict[str, Any]:
        return {
            "ecg_cross_entropy": self.ce_weight,
            "ecg_label_text_contrastive": self.contrastive_weight or None,
            "contrastive_temperature": self.temperature,
            "report_text_cross_entropy": None,  # not implemented: needs report texts (README)
        }


def set_trainable(ecg: EcgEncoder, tqn: TQN, text: TextEncoder) -> list[tuple[str, nn.Parameter]]:
    """Set ``requires_grad`` as the recipe says; the trainable parameters, named by section."""
    layers = text.bert_model.encoder.layer
    last = f"bert_model.encoder.layer.{len(layers) - 1}."
    trainable: list[tuple[str, nn.Parameter]] = []
    for section, module, rule in (
        ("ecg_model", ecg, lambda _n: True),
        ("model", tqn, lambda n: n != "logit_scale"),
        ("text_encoder", text, lambda n: n.startswith((last, "bert_model.pooler.", "mlp_embed."))),
    ):
        for name, p in module.named_parameters():
            p.requires_grad_(bool(rule(name)))
            if p.requires_grad:
                trainable.append((f"{section}.{name}", p))
    return trainable


def optimizer(trainable: list[tuple[str, nn.Parameter]], recipe: Recipe) -> torch.optim.AdamW:
    decay = [p for name, p in trainable if p.ndim >= 2 and not name.endswith(".bias")]
    no_decay = [p for name, p in trainable if not (p.ndim >= 2 and not name.endswith(".bias"))]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr,
    )


def warmup_steps(recipe: Recipe, steps_per_epoch: int) -> int:
    total = recipe.epochs * steps_per_epoch
    return min(max(0, round(recipe.warmup_epochs * steps_per_epoch)), max(total - 1, 0))


def learning_rate(step: int, *, total_steps: int, warmup: int, recipe: Recipe) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    if step < warmup:
        return recipe.min_lr + (recipe.lr - recipe.min_lr) * (step + 1) / warmup
    span = max(total_steps - warmup - 1, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
