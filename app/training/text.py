"""The label texts through the text encoder, with only its trainable part run at every step.

Fine-tuning trains BERT's last layer, the pooler and ``mlp_embed``; the embeddings and layers
0..N-2 are frozen. Their output for the fixed label texts is therefore the same at every step:
it is computed once (eval mode, no dropout) and cached, and each step runs only the last layer
(in train mode: its dropout is active), the pooler and ``mlp_embed``. The cached input of the
last layer is captured with a forward pre-hook on that layer during one ordinary forward of the
served ``TextEncoder``, so the attention mask it gets is exactly the one ``BertModel`` builds;
``tests/training`` checks that the split forward equals ``TextEncoder.forward`` in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from app.build.text_encoder import TextEncoder


class LabelTexts(nn.Module):
    """``forward()`` -> (C, D) label features of the fixed label texts, differentiable in the
    trainable part of ``text`` only."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __init__(self, text: TextEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        super().__init__()
        self.text = text
        self.register_buffer("input_ids", input_ids)
        self.register_buffer("attention_mask", attention_mask)
        self._cached: tuple[torch.Tensor, Any] | None = None

    @property
    def last_layer(self) -> nn.Module:
        layers: nn.ModuleList = self.text.bert_model.encoder.layer
        return layers[len(layers) - 1]

    def _frozen_prefix(self) -> tuple[torch.Tensor, Any]:
        """The last layer's inputs (hidden states, attention mask as BertModel passes it)."""
        if self._cached is None or self._cached[0].device != self.input_ids.device:  # moved: recompute
            captured: dict[str, Any] = {}

            def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                captured["hidden"] = args[0]
                captured["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")

            handle = self.last_layer.register_forward_pre_hook(hook, with_kwargs=True)
            was_training = self.text.training
            try:
                self.text.eval()
                with torch.no_grad():
                    self.text(self.input_ids, self.attention_mask)
            finally:
                handle.remove()
                self.text.train(was_training)
            mask = captured["mask"]
            self._cached = (captured["hidden"].detach(), mask.detach() if isinstance(mask, torch.Tensor) else mask)
        return self._cached

    def forward(self) -> torch.Tensor:
        hidden, mask = self._frozen_prefix()
        out = self.last_layer(hidden, mask)
        if isinstance(out, tuple):  # older transformers returned (hidden, ...)
            out = out[0]
        pooler = self.text.bert_model.pooler
        if pooler is None:
            raise ValueError("the text encoder's BERT has no pooler")
        pooled = pooler(out)
        features: torch.Tensor = self.text.mlp_embed(pooled)
        return features

