"""Read the published ECGFM-KED checkpoint safely and build the three modules from it.

The file is a ``torch.save``d dict with sections ``ecg_model``, ``model`` (TQN),
``text_encoder``, ``config`` (the training yaml as a dict), plus training state that
inference ignores. It is read with ``weights_only=True``: only tensors and containers.
Every problem is reported as a :class:`CheckpointError` that names it.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.build.ecg_encoder import EcgEncoder, EcgEncoderSpec
from app.build.text_encoder import TextEncoder, load_bert_config
from app.build.tqn import TQN, TqnSpec
from app.errors import CheckpointError

SECTIONS = ("ecg_model", "model", "text_encoder")
DEFAULT_TQN_LAYERS = 7
SUPPORTED_HEADS = 4
# transformers <= 4.30 saved this buffer; newer BertModels neither save nor expect it.
OPTIONAL_TEXT_KEYS = ("bert_model.embeddings.position_ids", "bert_model.embeddings.token_type_ids")
MAX_LISTED = 12


@dataclass
class Checkpoint:
    """The parts of a checkpoint inference needs."""

    ecg_model: dict[str, torch.Tensor]
    model: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor]
    config: dict[str, Any]
    sha256: str
    path: Path
    epoch: int | None = None
    extra_keys: list[str] = field(default_factory=list)

    @property
    def tqn_layers(self) -> int:
        value = self.config.get("tqn_model_layers", DEFAULT_TQN_LAYERS)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"config tqn_model_layers={value!r} is not a positive integer")
        return value


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and check the top-level structure; module-level checks happen in the builders."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (torch.save zip archive); it may be truncated or another file"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a safe checkpoint): {first}") from exc
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks section(s) {missing}; found {sorted(map(str, raw))}",
            details={"missing_sections": missing},
        )
    sections: dict[str, dict[str, torch.Tensor]] = {}
    for name in SECTIONS:
        sd = raw[name]
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"section {name!r} of {path} is not a state_dict of tensors")
        sections[name] = dict(sd)
    config = raw.get("config") or {}
    if not isinstance(config, Mapping):
        raise CheckpointError(f"config of {path} is a {type(config).__name__}, not a dict")
    epoch = raw.get("epoch")
    return Checkpoint(
        ecg_model=sections["ecg_model"],
        model=sections["model"],
        text_encoder=sections["text_encoder"],
        config=dict(config),
        sha256=file_sha256(path),
        path=path,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        extra_keys=sorted(str(k) for k in raw if k not in SECTIONS),
    )


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > MAX_LISTED else "")


def strict_load(module: nn.Module, sd: Mapping[str, torch.Tensor], section: str) -> None:
    """A strict load whose error lists missing, unexpected and wrongly shaped keys."""
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in sd)
    unexpected = sorted(k for k in sd if k not in expected)
    wrong = sorted(
        f"{k} {list(sd[k].shape)} (expected {list(expected[k].shape)})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_listed(wrong)}")
    if problems:
        raise CheckpointError(
            f"section {section!r} does not match the model: " + "; ".join(problems),
            details={"section": section, "missing": missing, "unexpected": unexpected, "wrong_shapes": wrong},
        )
    module.load_state_dict(dict(sd), strict=True)


def build_ecg_encoder(ckpt: Checkpoint) -> EcgEncoder:
    model = EcgEncoder(EcgEncoderSpec.from_state_dict(ckpt.ecg_model))
    strict_load(model, ckpt.ecg_model, "ecg_model")
    return model.eval()


def build_tqn(ckpt: Checkpoint) -> TQN:
    heads = ckpt.config.get("H", SUPPORTED_HEADS)
    if heads != SUPPORTED_HEADS:
        raise CheckpointError(f"config H={heads!r}: this service supports {SUPPORTED_HEADS}-head TQN decoders only")
    model = TQN(TqnSpec.from_state_dict(ckpt.model, n_layers=ckpt.tqn_layers, n_heads=heads))
    strict_load(model, ckpt.model, "model")
    return model.eval()


def build_text_encoder(ckpt: Checkpoint, text_model_dir: Path) -> TextEncoder:
    config = load_bert_config(text_model_dir)
    sd = dict(ckpt.text_encoder)
    position_ids = sd.get("bert_model.embeddings.position_ids")
    if position_ids is not None and position_ids.shape[-1] != config.max_position_embeddings:
        raise CheckpointError(
            f"text_encoder position_ids has {position_ids.shape[-1]} positions, "
            f"config.json says max_position_embeddings={config.max_position_embeddings}"
        )
    embed = sd.get("mlp_embed.4.weight")
    model = TextEncoder(config, embed_dim=int(embed.shape[0]) if embed is not None else 768)
    expected = model.state_dict()
    for key in OPTIONAL_TEXT_KEYS:
        if key in sd and key not in expected:
            del sd[key]
        elif key in expected and key not in sd:
            sd[key] = expected[key]
    strict_load(model, sd, "text_encoder")
    return model.eval()
