"""The ECG encoder: a 1-D bottleneck ResNet (an xresnet1d101 with narrowed widths).

Written from the published description of the checkpoint (shared/model-spec): a plain
``nn.Sequential`` whose state_dict keys are ``0.`` .. ``7.``:

* ``0``-``2``: stem ConvLayers (conv k -> BatchNorm -> ReLU), the first with stride 2;
* ``3``: MaxPool1d(3, stride 2, padding 1);
* ``4``-``7``: stages of bottleneck blocks.

The architecture (stem widths, kernel size, blocks per stage, widths) is read from the
checkpoint's tensor shapes by :func:`EcgEncoderSpec.from_state_dict`, so nothing here
hard-codes the published sizes except as defaults for building fresh models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


class ConvLayer(nn.Sequential):
    """conv (no bias) -> BatchNorm -> optional ReLU; keys ``0.weight`` and ``1.*``."""

    def __init__(self, n_in: int, n_out: int, kernel: int, *, stride: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv1d(n_in, n_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(n_out),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """1x1 -> k (strided) -> 1x1 conv path plus a shortcut, then ReLU.

    The checkpoint stores the conv path twice, as ``convs.*`` and ``convpath.0.*``: the
    same module is registered under both names so a strict load sees both key sets.
    """

    def __init__(self, n_in: int, width: int, n_out: int, *, kernel: int, stride: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvLayer(n_in, width, 1),
            ConvLayer(width, width, kernel, stride=stride),
            ConvLayer(width, n_out, 1, act=False),
        )
        self.convpath = nn.Sequential(self.convs)
        shortcut: list[nn.Module] = []
        if stride != 1:
            # ceil_mode: a lone last sample is averaged alone
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if n_in != n_out:
            shortcut.append(ConvLayer(n_in, n_out, 1, act=False))
        self.idpath = nn.Sequential(*shortcut)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.idpath(x))


@dataclass(frozen=True)
class EcgEncoderSpec:
    in_channels: int = 12
    stem_widths: tuple[int, int, int] = (32, 32, 64)
    kernel: int = 5
    blocks: tuple[int, ...] = (3, 4, 23, 3)
    widths: tuple[int, ...] = (64, 128, 128, 192)
    expansion: int = 4

    @property
    def out_features(self) -> int:
        return self.widths[-1] * self.expansion

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> EcgEncoderSpec:
        """Read the architecture off the tensor shapes; missing keys fall back to defaults
        (the strict load that follows then names them)."""
        d = cls()

        def shape(key: str) -> tuple[int, ...] | None:
            t = sd.get(key)
            return tuple(t.shape) if t is not None else None

        s0, s1, s2 = shape("0.0.weight"), shape("1.0.weight"), shape("2.0.weight")
        in_channels = s0[1] if s0 else d.in_channels
        kernel = s0[2] if s0 else d.kernel
        stem = (s0[0] if s0 else d.stem_widths[0], s1[0] if s1 else d.stem_widths[1], s2[0] if s2 else d.stem_widths[2])
        blocks: list[int] = []
        widths: list[int] = []
        expansion = d.expansion
        pat = re.compile(r"^(\d+)\.(\d+)\.convs\.")
        stage_blocks: dict[int, set[int]] = {}
        for key in sd:
            m = pat.match(key)
            if m and int(m.group(1)) >= 4:
                stage_blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        for i, stage in enumerate(sorted(stage_blocks)):
            blocks.append(max(stage_blocks[stage]) + 1)
            w = shape(f"{stage}.0.convs.0.0.weight")
            o = shape(f"{stage}.0.convs.2.0.weight")
            widths.append(w[0] if w else d.widths[min(i, len(d.widths) - 1)])
            if w and o:
                expansion = o[0] // w[0]
        if not blocks:
            return cls(in_channels=in_channels, stem_widths=stem, kernel=kernel)
        return cls(
            in_channels=in_channels,
            stem_widths=stem,
            kernel=kernel,
            blocks=tuple(blocks),
            widths=tuple(widths),
            expansion=expansion,
        )


class EcgEncoder(nn.Sequential):
    """(B, 12, T) millivolts at 100 Hz -> (B, 768, T/31.25) features (32 for T = 1000)."""

    def __init__(self, spec: EcgEncoderSpec = EcgEncoderSpec()) -> None:
        a, b, c = spec.stem_widths
        layers: list[nn.Module] = [
            ConvLayer(spec.in_channels, a, spec.kernel, stride=2),
            ConvLayer(a, b, spec.kernel),
            ConvLayer(b, c, spec.kernel),
            nn.MaxPool1d(3, stride=2, padding=1),
        ]
        n_in = c
        for i, (n_blocks, width) in enumerate(zip(spec.blocks, spec.widths, strict=True)):
            n_out = width * spec.expansion
            stage = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(Bottleneck(n_in, width, n_out, kernel=spec.kernel, stride=stride))
                n_in = n_out
            layers.append(nn.Sequential(*stage))
        super().__init__(*layers)
        self.spec = spec
