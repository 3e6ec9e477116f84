"""Export a checkpoint to a model bundle and measure ONNX-vs-PyTorch parity while doing it.

Five graphs (see app/serving/bundle.py), each with dynamic batch (and label / token) axes,
checked at several sizes after export because exporters have been seen to freeze an axis
at its example size. The manifest's ``preprocessing`` section is written from the model
contract (app/contract.py): the pretraining window, the checkpoint's feature width and the
segments the ECG encoder really produces for that window.

The exporter's notes that mean nothing to a user (torchvision not installed, axis names
merged, a deprecated pytree check) are filtered out by message; every other warning shows.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.build.checkpoint import Checkpoint, build_ecg_encoder, build_text_encoder, build_tqn, read_checkpoint
from app.build.ecg_encoder import EcgEncoder
from app.build.progress import Progress
from app.build.tqn import TQN
from app.contract import PRETRAINING, ModelContract
from app.errors import CheckpointError
from app.serving import bundle as B
from app.serving.tokenizer import build_tokenizer, encode

OPSET = 18
PARITY_BATCHES = (1, 2, 16)
PARITY_LABELS = (1, 5, 71)
PARITY_TOLERANCE = 1e-4

Log = Callable[[str], None]

# Exporter output that is no news to a user: (logger, message start) and (category, message regex).
EXPORTER_LOG_NOISE = (("torch.onnx._internal.exporter._registration", "torchvision is not installed"),)
EXPORTER_WARNING_NOISE: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
)


class _DropMessages(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@contextmanager
def exporter_noise_filtered() -> Iterator[None]:
    """Drop the exporter's known meaningless warnings (and only those) while the block runs."""
    filters = [(logging.getLogger(name), _DropMessages(start)) for name, start in EXPORTER_LOG_NOISE]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for category, message in EXPORTER_WARNING_NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


class EcgTqn(nn.Module):
    def __init__(self, ecg: EcgEncoder, tqn: TQN) -> None:
        super().__init__()
        self.ecg = ecg
        self.tqn = tqn

    def forward(self, ecg: torch.Tensor, label_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities, attention = self.tqn(self.ecg(ecg), label_features)
        return probabilities, attention


class LabelState(nn.Module):
    """(C, 768) label features -> the TQN's first-layer work that does not depend on the ECG."""

    def __init__(self, tqn: TQN) -> None:
        super().__init__()
        self.tqn = tqn

    def forward(self, label_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tqn.label_state(label_features)


class EcgTqnPrepared(nn.Module):
    """EcgTqn from LabelState's outputs: the same probabilities and attention, less work per ECG."""

    def __init__(self, ecg: EcgEncoder, tqn: TQN) -> None:
        super().__init__()
        self.ecg = ecg
        self.tqn = tqn

    def forward(self, ecg: torch.Tensor, label_queries: torch.Tensor,
                label_cross_queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tqn.forward_prepared(self.ecg(ecg), label_queries, label_cross_queries)


class EcgFeatures(nn.Module):
    """(B, leads, samples) -> (B, segments, D); (B, 12, 1000) -> (B, 32, 768), one feature vector
    per ~0.31 s segment, for the published model."""

    def __init__(self, ecg: EcgEncoder) -> None:
        super().__init__()
        self.ecg = ecg

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.ecg(ecg).transpose(1, 2)
        return features


@dataclass
class ExportResult:
    bundle_dir: Path
    manifest: dict[str, Any]


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_names: list[str], dynamic_shapes: dict[str, dict[int, Any]]) -> None:
    program = torch.onnx.export(
        module,
        args,
        dynamo=True,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
        opset_version=OPSET,
        optimize=True,
        verbose=False,
    )
    if program is None:  # only without dynamo=True
        raise CheckpointError(f"torch.onnx.export returned no program for {path.name}")
    program.save(str(path))


def synthetic_windows(n: int, seed: int = 0, contract: ModelContract = PRETRAINING) -> np.ndarray:
    """ECG-like random walks (mV) in the contract's window shape, for parity checks when no real
    records are given."""
    rng = np.random.default_rng(seed)
    walk = rng.standard_normal((n, *contract.window_shape)).cumsum(-1) * 0.05
    centred: np.ndarray = (walk - walk.mean(-1, keepdims=True)).astype(np.float32)
    return centred


def default_parity_texts(n: int) -> list[str]:
    base = ["sinus rhythm", "atrial fibrillation", "left bundle branch block", "inferior myocardial infarction",
            "st segment depression in v4 to v6", "prolonged qt interval", "left ventricular hypertrophy"]
    return [f"{base[i % len(base)]} {i}" if i >= len(base) else base[i] for i in range(n)]


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _tile(windows: np.ndarray, n: int) -> np.ndarray:
    reps = int(np.ceil(n / len(windows)))
    return np.concatenate([windows] * reps)[:n]


def measure_parity(ecg_tqn: EcgTqn, ecg_feat: EcgFeatures, text: nn.Module, tokenizer: Any, bundle_dir: Path,
                   windows: np.ndarray, texts: Sequence[str], log: Log) -> dict[str, Any]:
    """Max |ONNX - PyTorch| for every graph at every size in PARITY_BATCHES x PARITY_LABELS."""
    enc = encode(tokenizer, list(texts))
    with torch.no_grad():
        feats = text(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)).numpy()
    s_text = _ort_session(bundle_dir / B.TEXT_ENCODER)
    text_diffs = {}
    for n in (1, 5, len(texts)):
        sub = encode(tokenizer, list(texts[:n]))
        (onnx_feats,) = s_text.run(None, {"input_ids": sub.input_ids, "attention_mask": sub.attention_mask})
        with torch.no_grad():
            ref = text(torch.from_numpy(sub.input_ids), torch.from_numpy(sub.attention_mask)).numpy()
        text_diffs[str(n)] = float(np.abs(onnx_feats - ref).max())
    s_tqn = _ort_session(bundle_dir / B.ECG_TQN)
    s_feat = _ort_session(bundle_dir / B.ECG_ENCODER)
    s_state = _ort_session(bundle_dir / B.LABEL_STATE)
    s_prepared = _ort_session(bundle_dir / B.ECG_TQN_PREPARED)
    prob_diffs: dict[str, float] = {}
    attn_diffs: dict[str, float] = {}
    feat_diffs: dict[str, float] = {}
    prepared_diffs: dict[str, float] = {}  # label_state + ecg_tqn_prepared against the PyTorch model
    for b in PARITY_BATCHES:
        x = _tile(windows, b)
        with torch.no_grad():
            ref_feat = ecg_feat(torch.from_numpy(x)).numpy()
        (onnx_feat,) = s_feat.run(None, {"ecg": x})
        feat_diffs[str(b)] = float(np.abs(onnx_feat - ref_feat).max())
        for c in PARITY_LABELS:
            lf = _tile(feats, c).astype(np.float32)
            with torch.no_grad():
                ref_p, ref_a = ecg_tqn(torch.from_numpy(x), torch.from_numpy(lf))
            p, a = s_tqn.run(None, {"ecg": x, "label_features": lf})
            if p.shape != (b, c) or a.shape[:2] != (b, c):
                raise CheckpointError(f"exported graph returned shapes {p.shape}/{a.shape} for B={b}, C={c}")
            prob_diffs[f"B{b}_C{c}"] = float(np.abs(p - ref_p.numpy()).max())
            attn_diffs[f"B{b}_C{c}"] = float(np.abs(a - ref_a.numpy()).max())
            queries, cross = s_state.run(None, {"label_features": lf})
            pp, pa = s_prepared.run(None, {"ecg": x, "label_queries": queries, "label_cross_queries": cross})
            prepared_diffs[f"B{b}_C{c}"] = float(max(np.abs(pp - ref_p.numpy()).max(),
                                                     np.abs(pa - ref_a.numpy()).max()))
        worst_b = max(v for k, v in prob_diffs.items() if k.startswith(f"B{b}_"))
        log(f"parity B={b}: probabilities max|diff| {worst_b:.2e}")
    worst = max(max(prob_diffs.values()), max(attn_diffs.values()), max(prepared_diffs.values()))
    return {
        "tolerance": PARITY_TOLERANCE,
        "batches": list(PARITY_BATCHES),
        "label_counts": list(PARITY_LABELS),
        "probabilities_max_abs_diff": prob_diffs,
        "attention_max_abs_diff": attn_diffs,
        "ecg_features_max_abs_diff": feat_diffs,
        "prepared_max_abs_diff": prepared_diffs,
        "text_features_max_abs_diff": text_diffs,
        "worst": worst,
        "passed": worst <= PARITY_TOLERANCE,
    }


def export_bundle(
    checkpoint_path: Path,
    text_model_dir: Path,
    out_dir: Path,
    *,
    parity_windows: np.ndarray | None = None,
    parity_texts: Sequence[str] | None = None,
    extra_manifest: dict[str, Any] | None = None,
    log: Log = lambda _msg: None,
    progress: bool | None = False,
    overwrite: bool = False,
) -> ExportResult:
    """Checkpoint + text model dir -> bundle directory (written to a temp dir, moved at the end).

    ``log`` gets one line per step with its duration; ``progress``: a tqdm bar on stderr
    (None: only when stderr is a terminal).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise CheckpointError(f"output directory {out_dir} is not empty (use --overwrite to replace it)")
    started = time.perf_counter()
    with Progress(7, "export", log, bar=progress) as steps, exporter_noise_filtered():
        with steps.step(f"read {Path(checkpoint_path).name}"):
            ckpt = read_checkpoint(checkpoint_path)
            ecg, tqn, text = build_ecg_encoder(ckpt), build_tqn(ckpt), build_text_encoder(ckpt, text_model_dir)
            tokenizer = build_tokenizer(Path(text_model_dir) / "vocab.txt")
        work = out_dir.with_name(out_dir.name + ".partial")
        contract = _write_graphs(ecg, tqn, text, tokenizer, Path(text_model_dir), work, steps)
        with steps.step("parity against PyTorch"):
            windows = parity_windows if parity_windows is not None else synthetic_windows(4, contract=contract)
            texts = list(parity_texts) if parity_texts else default_parity_texts(max(PARITY_LABELS))
            parity = measure_parity(EcgTqn(ecg, tqn).eval(), EcgFeatures(ecg).eval(), text, tokenizer, work,
                                    windows.astype(np.float32), texts, steps.log)
            parity["inputs"] = ("caller-supplied ECG windows" if parity_windows is not None
                                else "synthetic ECG-like windows")
        if not parity["passed"]:
            raise CheckpointError(f"exported graphs differ from PyTorch by {parity['worst']:.2e} > {PARITY_TOLERANCE}",
                                  details={"parity": parity})
        with steps.step("manifest"):
            manifest = _manifest(ckpt, work, parity, contract, time.perf_counter() - started)
            manifest.update(extra_manifest or {})
            B.write_manifest(work, manifest)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            work.rename(out_dir)
    log(f"bundle written to {out_dir}")
    return ExportResult(out_dir, manifest)


def _write_graphs(ecg: EcgEncoder, tqn: TQN, text: nn.Module, tokenizer: Any, text_model_dir: Path, work: Path,
                  steps: Progress) -> ModelContract:
    """The tokenizer files and the five graphs into ``work``; the contract they implement."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "tokenizer").mkdir(parents=True)
    (work / "text_model").mkdir(parents=True)
    tokenizer.save(str(work / B.TOKENIZER_JSON))
    shutil.copyfile(text_model_dir / "vocab.txt", work / B.VOCAB)
    shutil.copyfile(text_model_dir / "config.json", work / B.TEXT_CONFIG)

    ecg_tqn, ecg_feat = EcgTqn(ecg, tqn).eval(), EcgFeatures(ecg).eval()
    batch, labels, n_texts, length = (torch.export.Dim(n, min=1) for n in ("batch", "labels", "texts", "tokens"))
    x2 = torch.from_numpy(synthetic_windows(2))
    width = tqn.spec.d_model
    with torch.no_grad():
        # the segments are what the encoder produces for the pretraining window, not a number kept here
        contract = replace(PRETRAINING, feature_width=width, segments=int(ecg_feat(x2).shape[1]))
        with steps.step(f"export {B.ECG_TQN}"):
            _export(ecg_tqn, (x2, torch.randn(5, width)), work / B.ECG_TQN, ["ecg", "label_features"],
                    ["probabilities", "attention"], {"ecg": {0: batch}, "label_features": {0: labels}})
        with steps.step(f"export {B.LABEL_STATE} and {B.ECG_TQN_PREPARED}"):
            queries, cross = tqn.label_state(torch.randn(5, width))
            _export(LabelState(tqn).eval(), (torch.randn(5, width),), work / B.LABEL_STATE, ["label_features"],
                    ["label_queries", "label_cross_queries"], {"label_features": {0: labels}})
            _export(EcgTqnPrepared(ecg, tqn).eval(), (x2, queries, cross), work / B.ECG_TQN_PREPARED,
                    ["ecg", "label_queries", "label_cross_queries"], ["probabilities", "attention"],
                    {"ecg": {0: batch}, "label_queries": {0: labels}, "label_cross_queries": {0: labels}})
        with steps.step(f"export {B.ECG_ENCODER}"):
            _export(ecg_feat, (x2,), work / B.ECG_ENCODER, ["ecg"], ["features"], {"ecg": {0: batch}})
        with steps.step(f"export {B.TEXT_ENCODER}"):
            sample = encode(tokenizer, ["sinus rhythm", "atrial fibrillation with rapid ventricular response"])
            _export(text, (torch.from_numpy(sample.input_ids), torch.from_numpy(sample.attention_mask)),
                    work / B.TEXT_ENCODER, ["input_ids", "attention_mask"], ["label_features"],
                    {"input_ids": {0: n_texts, 1: length}, "attention_mask": {0: n_texts, 1: length}})
    return contract


def _manifest(ckpt: Checkpoint, work: Path, parity: dict[str, Any], contract: ModelContract,
              seconds: float) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import tokenizers
    import transformers

    graphs = {name: B.sha256_file(work / name)
              for name in (B.ECG_TQN, *B.PREPARED_GRAPHS, B.ECG_ENCODER, B.TEXT_ENCODER)}
    text_id = B.sha256_file(work / B.TEXT_ENCODER)[:16] + "-" + B.sha256_file(work / B.TOKENIZER_JSON)[:16]
    return {
        "format_version": B.FORMAT_VERSION,
        "model_name": "ECGFM-KED",
        "model_version": f"ecgfm-ked-{ckpt.sha256[:12]}",
        "untrained": False,
        "source_checkpoint": {"file": ckpt.path.name, "sha256": ckpt.sha256, "epoch": ckpt.epoch},
        "config": _jsonable(ckpt.config),
        # a checkpoint written by `ecgfm-ked finetune` (app/training) says so at the top level too
        **({"finetuned": _jsonable(ckpt.config["finetuned"])} if isinstance(ckpt.config.get("finetuned"), dict)
           else {}),
        "opset": OPSET,
        "graphs": graphs,
        "text_encoder_id": text_id,
        "tokenizer": {"lowercase": True, "max_tokens": 256, "padding": "dynamic (longest in batch)"},
        "preprocessing": contract.manifest_preprocessing(),
        "parity": parity,
        "tools": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "export_seconds": round(seconds, 1),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
