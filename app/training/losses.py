"""The fine-tuning losses.

* ``ecg_cross_entropy``: the TQN head gives each (ECG, label) pair two logits and the service
  serves ``softmax(logits)[..., 1]`` (app/build/tqn.py); the loss is the 2-way cross-entropy of
  those logits against the record's 0/1 target, averaged over every pair of the batch.
  ``tqn_logits`` takes the logits from the served ``TQN.forward`` itself (a forward hook on
  ``mlp_head``), so training and serving cannot drift apart.
* ``ecg_label_contrastive``: a UniCL-style term between the ECG's global feature (the mean of
  its segment features) and the label-text features, L2-normalised, temperature 0.1. Labels
  are the "text" side: every positive label of an ECG is a positive pair, so an ECG may have
  several and a label several ECGs in the batch (UniCL's unified image-label-text loss); the
  loss is the mean of the ECG->labels and labels->ECGs cross-entropies over the soft targets.
  ECGs with no positive label and labels with no positive ECG in the batch contribute nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from app.build.tqn import TQN


@contextmanager
def _head_output(tqn: TQN) -> Iterator[list[torch.Tensor]]:
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        seen.append(output)

    handle = tqn.mlp_head.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def tqn_logits(tqn: TQN, ecg_features: torch.Tensor, label_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, 2) logits of the head and the (B, C) probabilities the service would serve."""
    with _head_output(tqn) as seen:
        probabilities, _attention = tqn(ecg_features, label_features)
    if len(seen) != 1:
        raise RuntimeError(f"the TQN head ran {len(seen)} times in one forward; expected once")
    return seen[0], probabilities


def ecg_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean 2-way cross-entropy; ``logits`` (B, C, 2), ``targets`` (B, C) of 0/1."""
    return F.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1).long())


def ecg_label_contrastive(ecg_global: torch.Tensor, label_features: torch.Tensor, targets: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """UniCL-style loss; ``ecg_global`` (B, D), ``label_features`` (C, D), ``targets`` (B, C) 0/1."""
    e = F.normalize(ecg_global, dim=-1)
    t = F.normalize(label_features, dim=-1)
    sim = e @ t.T / temperature  # (B, C)
    pos = targets.float()
    rows, cols = pos.sum(dim=1) > 0, pos.sum(dim=0) > 0
    if not bool(rows.any()):
        return sim.sum() * 0.0  # no positive pair in the batch: nothing to pull together
    ecg_to_label = -(F.log_softmax(sim[rows], dim=1) * pos[rows]).sum(1) / pos[rows].sum(1)
    label_to_ecg = -(F.log_softmax(sim[:, cols], dim=0) * pos[:, cols]).sum(0) / pos[:, cols].sum(0)
    return 0.5 * (ecg_to_label.mean() + label_to_ecg.mean())
