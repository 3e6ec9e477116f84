"""The text encoder: a BERT (built by transformers from the text model's config.json) whose
pooled output goes through a Linear-GELU-Linear-GELU-Linear projection (``mlp_embed``).

No L2 normalisation: the TQN takes the projected vectors as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.errors import CheckpointError


def load_bert_config(text_model_dir: Path) -> Any:
    """Read ``config.json`` of the text model (Bio_ClinicalBERT or a test's small BERT)."""
    from transformers import BertConfig

    path = Path(text_model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"text model directory {text_model_dir} has no config.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    config = BertConfig(**{k: v for k, v in data.items() if k not in ("architectures", "transformers_version")})
    # eager attention: exact arithmetic and a clean ONNX export
    config._attn_implementation = "eager"
    return config


class TextEncoder(nn.Module):
    def __init__(self, bert_config: Any, embed_dim: int = 768) -> None:
        from transformers import BertModel

        super().__init__()
        self.bert_model = BertModel(bert_config, add_pooling_layer=True)
        hidden = int(bert_config.hidden_size)
        self.mlp_embed = nn.Sequential(
            nn.Linear(hidden, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim), nn.GELU(),
            nn.Linear(embed_dim, embed_dim),
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # unused at inference

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.bert_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        )
        return self.mlp_embed(out.pooler_output)
