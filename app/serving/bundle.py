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

Nothing in a bundle is trusted before it is checked: :func:`open_bundle` computes the sha256 of
every graph the manifest lists (``graphs``, written at export; ``precision_variants`` for the
int8 / fp16 files) and of ``tokenizer/tokenizer.json`` (whose hash prefix is the second half of
``text_encoder_id``) and refuses the bundle, naming the file, when one differs. The graphs
themselves are the only files whose bytes decide a diagnosis (``vocab.txt`` and
``text_model/config.json`` are kept for re-export, never read when serving).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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


GRAPHS_KEY = "graphs"  # manifest: graph file -> sha256, written at export
VARIANTS_KEY = "precision_variants"  # manifest: precision -> {"file", "sha256", ...} (app.build.precision)
TEXT_ENCODER_ID = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})$")  # sha256[:16] of text_encoder.onnx, tokenizer.json


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# Hashes already computed in this process, keyed by what a change to the file changes (device,
# inode, size, modification and status-change times): `ecgfm-ked serve` checks the bundle before
# it starts the server, which checks it again when it loads; the second check costs nothing.
# A file changed less than RACY_S before it was hashed is not remembered (timestamps have a
# coarse granularity, so a later write in the same tick could leave them unchanged).
_HASHED: dict[tuple[str, int, int, int, int, int], str] = {}
_HASHED_LOCK = threading.Lock()
_HASHED_MAX = 256
RACY_S = 2.0


def verified_sha256(path: Path) -> str:
    """sha256 of ``path`` (OSError if it cannot be read), remembered while the file is unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _HASHED_LOCK:
        known = _HASHED.get(key)
    if known is not None:
        return known
    digest = sha256_file(path)
    if time.time() - max(st.st_mtime, st.st_ctime) > RACY_S:
        with _HASHED_LOCK:
            if len(_HASHED) >= _HASHED_MAX:
                _HASHED.clear()
            _HASHED[key] = digest
    return digest


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    stated_contract: ManifestContract  # as the manifest states it; the runtime checks it against the graphs
    # file (relative to root) -> sha256, checked against the manifest when the bundle was opened
    digests: Mapping[str, str] = field(default_factory=dict)

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

    def verified_digest(self, name: str) -> str:
        """The sha256 of ``name`` checked against the manifest when the bundle was opened;
        BundleError if the manifest records none for it (such a file is never loaded)."""
        digest = self.digests.get(name)
        if digest is None:
            raise BundleError(f"model bundle {self.root}: its manifest records no sha256 for {name}, so it cannot be "
                              "checked and is not loaded; re-export the bundle (or rebuild the variant with "
                              "`ecgfm-ked quantize`)", details={"file": name})
        return digest

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
    return Bundle(root=root, manifest=manifest, stated_contract=stated, digests=verify_files(root, manifest))


def recorded_hashes(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """File -> the sha256 (or, for the tokenizer, the sha256 prefix) the manifest records for it."""
    graphs = manifest.get(GRAPHS_KEY)
    if not isinstance(graphs, dict) or not graphs:
        raise BundleError(f"bundle manifest {root / MANIFEST} records no graph hashes ({GRAPHS_KEY!r}), so its graphs "
                          f"cannot be checked; re-export the bundle. {HOW_TO_GET_ONE}")
    recorded: dict[str, Any] = {}
    for name, digest in graphs.items():
        recorded[str(name)] = digest
    variants = manifest.get(VARIANTS_KEY) or {}
    if isinstance(variants, dict):
        for entry in variants.values():
            if isinstance(entry, dict) and "file" in entry:
                recorded[str(entry["file"])] = entry.get("sha256")
    text_id = TEXT_ENCODER_ID.match(str(manifest.get("text_encoder_id", "")))
    if text_id is None:
        raise BundleError(f"bundle manifest {root / MANIFEST}: text_encoder_id {manifest.get('text_encoder_id')!r} "
                          "is not the form export writes (sha256[:16] of text_encoder.onnx '-' sha256[:16] of "
                          "tokenizer.json), so the tokenizer cannot be checked; re-export the bundle")
    recorded[TOKENIZER_JSON] = text_id.group(2)
    for name in REQUIRED[1:]:
        if name not in recorded:
            raise BundleError(f"bundle manifest {root / MANIFEST} records no sha256 for {name}; re-export the bundle",
                              details={"file": name})
    return recorded


def verify_files(root: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Hash every file the manifest records a hash for (those present: optional graphs may be
    absent) and compare; BundleError naming the first file that differs. Returns file -> sha256."""
    digests: dict[str, str] = {}
    for name, expected in recorded_hashes(root, manifest).items():
        form = r"[0-9a-f]{16}" if name == TOKENIZER_JSON else r"[0-9a-f]{64}"  # the tokenizer: a prefix
        if (not isinstance(expected, str) or not re.fullmatch(form, expected)
                or Path(name).is_absolute() or ".." in Path(name).parts):
            raise BundleError(f"bundle manifest {root / MANIFEST}: the recorded sha256 of {name!r} is not a hash of a "
                              "file in the bundle; re-export the bundle", details={"file": name})
        path = root / name
        if not path.is_file():
            continue  # a required file is missing: named above; an optional graph absent: not loaded
        try:
            found = verified_sha256(path)
        except OSError as exc:
            raise BundleError(f"model bundle {root}: cannot read {name} ({exc.strerror})",
                              details={"file": name}) from exc
        if not found.startswith(expected):
            raise BundleError(
                f"model bundle {root}: {name} does not match the sha256 its manifest records (expected "
                f"{expected[:16]}, found {found[:16]}); the file is damaged or was replaced, so the bundle is refused. "
                "Copy or export the bundle again.",
                details={"file": name, "expected_sha256": expected, "found_sha256": found},
            )
        digests[name] = found
    if not digests[TEXT_ENCODER].startswith(str(manifest["text_encoder_id"])[:16]):
        raise BundleError(f"bundle manifest {root / MANIFEST}: text_encoder_id {manifest['text_encoder_id']!r} does "
                          f"not name the {TEXT_ENCODER} its graphs list; re-export the bundle",
                          details={"file": TEXT_ENCODER})
    return digests


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / MANIFEST)
