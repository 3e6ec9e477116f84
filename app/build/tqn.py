"""The TQN decoder: label-text queries attend to ECG features; a head scores each query.

Written from the published description (shared/model-spec): pre-norm transformer decoder
layers without positional encodings, one shared LayerNorm (``decoder_norm``) applied to the
memory, to the queries and to the decoder output, and a two-layer GELU head whose softmax
index 1 is the probability that the label applies.

Attention is implemented here (not ``nn.MultiheadAttention``) with the same parameter names
and arithmetic, so that the ONNX export has fully dynamic batch and label axes and the
last layer's head-averaged cross-attention weights are a plain output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


class MultiheadAttention(nn.Module):
    """Parameter-compatible with ``nn.MultiheadAttention`` (packed in_proj, out_proj)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by {n_heads} heads")
        self.d_model = d_model
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, D) -> (B, H, L, D/H)
        b, length, _ = x.shape
        return x.reshape(b, length, self.n_heads, self.d_model // self.n_heads).transpose(1, 2)

    def project_query(self, query: torch.Tensor) -> torch.Tensor:
        d = self.d_model
        return F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d])

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-first (B, L, D) inputs; returns (B, Lq, D) and weights averaged over heads (B, Lq, Lk)."""
        return self.attend(self.project_query(query), key, value)

    def attend(self, projected_query: torch.Tensor, key: torch.Tensor,
               value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with the query already through ``project_query``."""
        d = self.d_model
        w_k, w_v = self.in_proj_weight[d : 2 * d], self.in_proj_weight[2 * d :]
        b_k, b_v = self.in_proj_bias[d : 2 * d], self.in_proj_bias[2 * d :]
        q = self._heads(projected_query)
        k = self._heads(F.linear(key, w_k, b_k))
        v = self._heads(F.linear(value, w_v, b_v))
        scale = 1.0 / math.sqrt(d // self.n_heads)
        weights = torch.softmax(torch.matmul(q * scale, k.transpose(-2, -1)), dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2)
        out = out.reshape(out.shape[0], out.shape[1], d)
        return self.out_proj(out), weights.mean(dim=1)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, n_heads)
        self.multihead_attn = MultiheadAttention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, q: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.self_attend(q)
        return self.attend_memory(q, self.cross_query(q), memory)

    # The steps of forward, separately: the first layer's self-attention and cross-attention
    # query depend on the label queries only, so they can be computed once per label set.
    def self_attend(self, q: torch.Tensor) -> torch.Tensor:
        h = self.norm1(q)
        return q + self.self_attn(h, h, h)[0]

    def cross_query(self, q: torch.Tensor) -> torch.Tensor:
        return self.multihead_attn.project_query(self.norm2(q))

    def attend_memory(self, q: torch.Tensor, cross_query: torch.Tensor,
                      memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.multihead_attn.attend(cross_query, memory, memory)
        q = q + attended
        q = q + self.linear2(F.relu(self.linear1(self.norm3(q))))
        return q, weights


class Decoder(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm = norm  # the same module as TQN.decoder_norm (the checkpoint aliases it)

    @property
    def typed_layers(self) -> list[DecoderLayer]:
        """``layers`` with their type (a ModuleList only knows it holds modules)."""
        return [cast(DecoderLayer, layer) for layer in self.layers]


@dataclass(frozen=True)
class TqnSpec:
    n_layers: int = 7
    d_model: int = 768
    n_heads: int = 4
    d_ff: int = 1024
    head_hidden: int = 2048

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], *, n_layers: int, n_heads: int = 4) -> TqnSpec:
        d = cls()
        norm = sd.get("decoder_norm.weight")
        ff = sd.get("decoder.layers.0.linear1.weight")
        head = sd.get("mlp_head.0.weight")
        return cls(
            n_layers=n_layers,
            d_model=int(norm.shape[0]) if norm is not None else d.d_model,
            n_heads=n_heads,
            d_ff=int(ff.shape[0]) if ff is not None else d.d_ff,
            head_hidden=int(head.shape[0]) if head is not None else d.head_hidden,
        )


class TQN(nn.Module):
    """(B, D, S) ECG features + (C, D) label features -> (B, C) probabilities, (B, C, S) attention."""

    def __init__(self, spec: TqnSpec = TqnSpec()) -> None:
        super().__init__()
        self.spec = spec
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # unused at inference
        self.decoder_norm = nn.LayerNorm(spec.d_model)
        self.decoder = Decoder(spec.n_layers, spec.d_model, spec.n_heads, spec.d_ff, self.decoder_norm)
        self.mlp_head = nn.Sequential(
            nn.Linear(spec.d_model, spec.head_hidden), nn.GELU(), nn.Linear(spec.head_hidden, 2)
        )

    def forward(self, ecg_features: torch.Tensor, label_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.decoder_norm(ecg_features.transpose(1, 2))  # (B, S, D)
        queries = self.decoder_norm(label_features)  # (C, D)
        q = queries.unsqueeze(0).expand(memory.shape[0], -1, -1)  # (B, C, D)
        weights = memory.new_zeros(())
        for layer in self.decoder.layers:
            q, weights = layer(q, memory)
        return self._head(q, weights)

    def label_state(self, label_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, D) label features -> the first layer's work that does not depend on the ECG:
        queries after self-attention (C, D) and their cross-attention projection (C, D)."""
        first = self.decoder.typed_layers[0]
        q = first.self_attend(self.decoder_norm(label_features).unsqueeze(0))  # (1, C, D)
        return q[0], first.cross_query(q)[0]

    def forward_prepared(self, ecg_features: torch.Tensor, label_queries: torch.Tensor,
                         label_cross_queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` from ``label_state``'s outputs: the same result, less work per ECG."""
        memory = self.decoder_norm(ecg_features.transpose(1, 2))
        b = memory.shape[0]
        layers = self.decoder.typed_layers
        q, weights = layers[0].attend_memory(label_queries.unsqueeze(0).expand(b, -1, -1),
                                             label_cross_queries.unsqueeze(0).expand(b, -1, -1), memory)
        for layer in layers[1:]:
            q, weights = layer(q, memory)
        return self._head(q, weights)

    def _head(self, q: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.decoder.norm(q)
        logits = self.mlp_head(out)
        probs = torch.softmax(logits, dim=-1)[..., 1]
        return probs, weights
