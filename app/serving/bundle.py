"""The model bundle: a directory with the ONNX graphs, the tokenizer and a manifest.

```
BUNDLE/
  manifest.json            what was exported, from what, how well it matched PyTorch
  ecg_tqn.onnx             ECG (B, 12, 1000) + label features (C, 768) -> probabilities (B, C), attention (B, C, 32)
  label_state.onnx         label features (C, 768) -> the TQN's first-layer work that does not depend on the
                           ECG: queries after self-attention (C, 768), their cross-attention projection (C, 768)
  ecg_tqn_prepared.onnx    ECG (B, 12, 1000) + label_state's outputs -> probabilities, attention (as ecg_tqn)
  ecg_encoder.onnx         ECG (B, 12, 1000) -> features (B, 32, 768)
  text_encoder.onnx        token ids, mask (N, L) -> label features (N, 768)
  tokenizer/tokenizer.json WordPiece, lower-casing forced, [CLS] .. [SEP], 256 tokens
  tokenizer/vocab.txt
  text_model/config.json   the BERT config the text encoder was built from
```
The sizes above are the published model's; a bundle's own are its model contract
(``manifest.preprocessing``, app/contract.py), read and checked when the bundle opens.
Bundles are built (``ecgfm-ked export`` / ``demo-bundle``), never committed. The two
``label_state`` / ``ecg_tqn_prepared`` graphs are optional (bundles exported before they
existed score through ``ecg_tqn``); ``ecg_tqn`` stays the reference graph (precision variants,
benchmark floors).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.contract import ManifestContract, ModelContract, read_contract
from app.errors import BundleError

MANIFEST = "manifest.json"
ECG_TQN = "ecg_tqn.onnx"
ECG_ENCODER = "ecg_encoder.onnx"
TEXT_ENCODER = "text_encoder.onnx"
LABEL_STATE = "label_state.onnx"
ECG_TQN_PREPARED = "ecg_tqn_prepared.onnx"
PREPARED_GRAPHS = (LABEL_STATE, ECG_TQN_PREPARED)
# ecg_tqn variants written by `ecgfm-ked quantize` (app.build.precision), by precision
ECG_TQN_INT8 = "ecg_tqn.int8.onnx"
ECG_TQN_FP16 = "ecg_tqn.fp16.onnx"
PRECISION_FILES = {"fp32": ECG_TQN, "int8": ECG_TQN_INT8, "fp16": ECG_TQN_FP16}
TOKENIZER_JSON = "tokenizer/tokenizer.json"
VOCAB = "tokenizer/vocab.txt"
TEXT_CONFIG = "text_model/config.json"
REQUIRED = (MANIFEST, ECG_TQN, ECG_ENCODER, TEXT_ENCODER, TOKENIZER_JSON)
FORMAT_VERSION = 1

HOW_TO_GET_ONE = (
    "Build a bundle with `ecgfm-ked fetch` then `ecgfm-ked export --checkpoint CKPT --text-model DIR --out DIR` "
    "(real weights, Zenodo record 14881564), or `ecgfm-ked demo-bundle --out DIR` for an untrained demo bundle."
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    stated_contract: ManifestContract  # as the manifest states it; the runtime checks it against the graphs

    @property
    def contract(self) -> ModelContract:
        """The model contract from the manifest (fields older manifests lack: the pretraining values
        until ``ModelRuntime`` reads them from the graphs; ``ModelRuntime.contract`` is the checked one)."""
        return self.stated_contract.contract

    def path(self, name: str) -> Path:
        return self.root / name

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    @property
    def version(self) -> str:
        return str(self.manifest.get("model_version", "unknown"))

    @property
    def untrained(self) -> bool:
        return bool(self.manifest.get("untrained", False))

    @property
    def text_encoder_id(self) -> str:
        """Identity of the text path (graph + tokenizer): keys the embedding cache."""
        return str(self.manifest["text_encoder_id"])


def open_bundle(root: Path) -> Bundle:
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"model bundle {root} does not exist. {HOW_TO_GET_ONE}")
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise BundleError(f"model bundle {root} is incomplete, missing {missing}. {HOW_TO_GET_ONE}")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {root / MANIFEST}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{root / MANIFEST} is not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {root} has format_version {manifest.get('format_version')!r}; this service reads {FORMAT_VERSION}"
        )
    if "text_encoder_id" not in manifest:
        raise BundleError(f"bundle manifest {root / MANIFEST} has no text_encoder_id")
    stated = read_contract(manifest, source=str(root / MANIFEST))
    return Bundle(root=root, manifest=manifest, stated_contract=stated)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / MANIFEST)
