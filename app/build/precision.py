"""Reduced-precision variants of ``ecg_tqn.onnx``, offered only where fidelity holds.

A variant is measured against the fp32 graph of the same bundle on real ECG windows and the
bundle's own label vectors: the largest |difference| of any probability, and how often the
three most probable labels of a window are the same set. It is written into the bundle only
when both stay inside the bounds the caller gives (default :data:`DEFAULT_BOUNDS`), and its
measured fidelity is recorded in ``manifest.json`` under ``precision_variants``.

Variants (all from ONNX Runtime's own tools):

* ``int8`` dynamic: MatMuls with a constant weight become int8 (weights per output channel,
  activations quantised per call). The graph is constant-folded first (the attention in-proj
  weights are slices of one packed parameter, which the quantiser would not otherwise see as
  weights); attention-score MatMuls (activation x activation) stay fp32. Groups of MatMuls
  that matter most (the classifier head, the last decoder layer, ...) can be kept in fp32.
* ``qdq-conv`` static: the ECG encoder's convolutions quantised with QDQ, calibrated on
  sample records.
* ``fp16``: for the CUDA provider only (``ecg_tqn.fp16.onnx``; ONNX Runtime's CPU kernels are
  mostly fp32 and would insert casts). :mod:`app.serving.runtime` uses it only on CUDA.

The measured numbers for a randomly initialised demo model may be more pessimistic than for
the trained checkpoint (random decoders amplify rounding); re-run ``ecgfm-ked quantize`` on
a bundle exported from the real weights before relying on a variant.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.build.progress import Log, Progress
from app.errors import ServiceError
from app.serving import bundle as B

INT8_FILE = B.ECG_TQN_INT8
FP16_FILE = B.ECG_TQN_FP16
PRECISION_FILES = B.PRECISION_FILES
MANIFEST_KEY = "precision_variants"
MATMULS_PER_LAYER = 14  # self-attn q,k,v,scores,context,out; cross-attn the same six; ffn 2



class PrecisionRejected(ServiceError):
    code = "precision_rejected"


@dataclass(frozen=True)
class Bounds:
    max_abs_diff: float = 0.02
    min_top3_agreement: float = 0.95
    min_speedup: float | None = None  # None: fidelity alone decides whether a variant is written

    def violations(self, fidelity: Fidelity, speedup: float | None = None) -> list[str]:
        out = []
        if fidelity.max_abs_diff > self.max_abs_diff:
            out.append(f"max |diff| {fidelity.max_abs_diff:.4f} > {self.max_abs_diff}")
        if fidelity.top3_agreement < self.min_top3_agreement:
            out.append(f"top-3 agreement {fidelity.top3_agreement:.3f} < {self.min_top3_agreement}")
        if self.min_speedup is not None and (speedup is None or speedup < self.min_speedup):
            out.append(f"speed-up {speedup if speedup is None else round(speedup, 2)} < {self.min_speedup}")
        return out


DEFAULT_BOUNDS = Bounds()


@dataclass(frozen=True)
class Fidelity:
    windows: int
    labels: int
    max_abs_diff: float
    mean_abs_diff: float
    p99_abs_diff: float
    top1_agreement: float
    top3_agreement: float
    attention_max_abs_diff: float
    # How well-separated the fp32 ranking is: on a random-weight demo model the top labels sit on
    # a plateau (3rd vs 4th often < 1e-4 apart), so any rounding reorders them. Reported, not bounded.
    fp32_top3_margin_median: float = 0.0
    top3_agreement_within_0_02: float = 0.0  # variant's top-3 are all within 0.02 of fp32's 3rd best


@dataclass
class VariantReport:
    name: str
    file: str | None
    config: dict[str, Any]
    fidelity: Fidelity | None = None
    fp32_ms: float | None = None
    variant_ms: float | None = None
    speedup: float | None = None
    violations: list[str] = field(default_factory=list)
    accepted: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


# --- graph preparation -------------------------------------------------------------------


def constant_fold(src: Path, dst: Path) -> Path:
    """ONNX Runtime's basic (hardware-independent) optimisations: constant folding, mainly."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst


def weight_matmuls(model_path: Path) -> list[str]:
    """Names of MatMul nodes whose second input is a constant (initializer), in graph order."""
    import onnx

    model = onnx.load(str(model_path))
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def matmul_groups(model_path: Path) -> dict[str, list[str]]:
    """Weight MatMuls grouped as ``layer0`` .. ``layerN-1`` and ``head`` (graph order).

    Each decoder layer has 10 weight MatMuls (self- and cross-attention q/k/v/out, FFN x2),
    the head 2, and the ECG encoder none (its convolutions are ``Conv``).
    """
    names = weight_matmuls(model_path)
    groups: dict[str, list[str]] = {"head": names[-2:]}
    body = names[:-2]
    per_layer = MATMULS_PER_LAYER - 4  # the 4 attention-score MatMuls have no constant input
    if body and len(body) % per_layer == 0:
        for i in range(len(body) // per_layer):
            layer = body[i * per_layer : (i + 1) * per_layer]
            groups[f"layer{i}"] = layer
            groups[f"layer{i}.ffn"] = layer[-2:]
            groups[f"layer{i}.self_attn"] = layer[:4]
            groups[f"layer{i}.cross_attn"] = layer[4:8]
    else:
        groups["decoder"] = body
    return groups


def resolve_excluded(groups: dict[str, list[str]], keep_fp32: Iterable[str]) -> list[str]:
    out: list[str] = []
    n_layers = sum(1 for k in groups if k.startswith("layer") and "." not in k)
    for g in keep_fp32:
        key = g
        if g.startswith("last") and n_layers:  # "last", "last.ffn"
            key = f"layer{n_layers - 1}" + g[len("last"):]
        if key not in groups:
            raise ValueError(f"unknown MatMul group {g!r}; known: {sorted(groups)}")
        out.extend(n for n in groups[key] if n not in out)
    return out


def quantize_int8_dynamic(folded: Path, dst: Path, *, keep_fp32: Sequence[str] = (),
                          per_channel: bool = True) -> dict[str, Any]:
    """Dynamic int8 of every constant-weight MatMul except the groups in ``keep_fp32``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = resolve_excluded(matmul_groups(folded), keep_fp32)
    quantize_dynamic(
        folded,
        dst,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=per_channel,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},
    )
    return {"method": "dynamic int8 (MatMulInteger), weights per channel" if per_channel else "dynamic int8",
            "keep_fp32": list(keep_fp32), "excluded_nodes": len(excluded)}


class _Reader:
    def __init__(self, windows: np.ndarray, vectors: np.ndarray, batch: int = 8) -> None:
        self._batches = [windows[i : i + batch] for i in range(0, len(windows), batch)]
        self._vectors = vectors.astype(np.float32)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if not self._batches:
            return None
        return {"ecg": self._batches.pop(0).astype(np.float32), "label_features": self._vectors}

    def rewind(self) -> None:  # pragma: no cover - not used by the calibrators we call
        pass


def quantize_qdq_conv(folded: Path, dst: Path, calib_windows: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
    """Static QDQ int8 of the ECG encoder's convolutions, calibrated on real windows."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        folded,
        dst,
        _Reader(calib_windows, vectors),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return {"method": "static QDQ int8 of Conv (ECG encoder)", "calibration_windows": len(calib_windows)}


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp16 weights and arithmetic with fp32 inputs/outputs (for the CUDA provider)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # Softmax and LayerNorm stay fp32: the probabilities come out of a 2-way softmax.
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=["Softmax", "LayerNormalization"])
    onnx.save(half, str(dst))
    return {"method": "fp16 (CUDA only), Softmax and LayerNormalization kept fp32"}


# --- measurement -------------------------------------------------------------------------


def cpu_session(path: Path, *, intra_op_threads: int = 0) -> Any:  # an onnxruntime.InferenceSession (untyped)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_batches(session: Any, windows: np.ndarray, vectors: np.ndarray,
                batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    probs, attn = [], []
    for i in range(0, len(windows), batch):
        p, a = session.run(None, {"ecg": windows[i : i + batch], "label_features": vectors})
        probs.append(p)
        attn.append(a)
    return np.concatenate(probs), np.concatenate(attn)


def compare(ref: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray]) -> Fidelity:
    p0, a0 = ref
    p1, a1 = cand
    diff = np.abs(p1.astype(np.float64) - p0)
    top3_0 = np.argsort(-p0, axis=1)[:, :3]
    top3_1 = np.argsort(-p1, axis=1)[:, :3]
    agree3 = np.mean([set(x) == set(y) for x, y in zip(top3_0, top3_1, strict=True)])
    agree1 = np.mean(top3_0[:, 0] == top3_1[:, 0])
    ranked = -np.sort(-p0, axis=1)
    third = ranked[:, min(2, p0.shape[1] - 1)]
    near = [bool(np.all(p0[i, top3_1[i]] >= third[i] - 0.02)) for i in range(len(p0))]
    return Fidelity(
        windows=int(p0.shape[0]),
        labels=int(p0.shape[1]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        p99_abs_diff=float(np.quantile(diff, 0.99)),
        top1_agreement=float(agree1),
        top3_agreement=float(agree3),
        attention_max_abs_diff=float(np.abs(a1 - a0).max()),
        fp32_top3_margin_median=float(np.median(ranked[:, 2] - ranked[:, 3])) if p0.shape[1] > 3 else 0.0,
        top3_agreement_within_0_02=float(np.mean(near)),
    )


def time_sessions(sessions: dict[str, Any], windows: np.ndarray, vectors: np.ndarray, *, batch: int = 16,
                  repeats: int = 5) -> dict[str, float]:
    """Median ms per batch for each session, runs interleaved so machine noise hits all alike."""
    x = np.ascontiguousarray(_tile(windows, batch), dtype=np.float32)
    feeds = {"ecg": x, "label_features": vectors}
    for s in sessions.values():  # warm-up
        s.run(None, feeds)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            samples[k].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def _tile(windows: np.ndarray, n: int) -> np.ndarray:
    reps = int(np.ceil(n / len(windows)))
    return np.concatenate([windows] * reps)[:n]


# --- the whole study / the CLI's job ------------------------------------------------------

INT8_CANDIDATES: dict[str, tuple[str, ...]] = {
    "int8-all": (),
    "int8-keep-head": ("head",),
    "int8-keep-head-last": ("head", "last"),
    "int8-keep-head-last-ffn": ("head", "last.ffn"),
}


def study(bundle_dir: Path, windows: np.ndarray, vectors: np.ndarray, *,
          candidates: dict[str, tuple[str, ...]] | None = None,
          qdq_conv: bool = True, fp16: bool = False, sensitivity: bool = False, bounds: Bounds = DEFAULT_BOUNDS,
          repeats: int = 5, work_dir: Path | None = None, log: Log = lambda _m: None,
          progress: bool | None = False) -> dict[str, Any]:
    """Build and measure every candidate; return reports (files stay in ``work_dir``).

    ``log``: a line per step with its duration; ``progress``: a tqdm bar on stderr (None: only
    when stderr is a terminal)."""
    bundle_dir = Path(bundle_dir)
    src = bundle_dir / B.ECG_TQN
    work = Path(work_dir or tempfile.mkdtemp(prefix="ecgfm-precision-"))
    work.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    cands = dict(INT8_CANDIDATES if candidates is None else candidates)
    with Progress(1 + int(sensitivity) + len(cands) + int(qdq_conv) + int(fp16), "quantize", log,
                  bar=progress) as steps:
        return _study(src, work, windows, vectors, cands, qdq_conv=qdq_conv, fp16=fp16, sensitivity=sensitivity,
                      bounds=bounds, repeats=repeats, steps=steps)


def _study(src: Path, work: Path, windows: np.ndarray, vectors: np.ndarray, cands: dict[str, tuple[str, ...]], *,
           qdq_conv: bool, fp16: bool, sensitivity: bool, bounds: Bounds, repeats: int,
           steps: Progress) -> dict[str, Any]:
    log = steps.log
    folded = work / "ecg_tqn.folded.onnx"
    with steps.step("constant-fold ecg_tqn.onnx and score it in fp32"):
        constant_fold(src, folded)
        fp32 = cpu_session(src)
        ref = run_batches(fp32, windows, vectors)
    reports: list[VariantReport] = []
    sensitivity_table: dict[str, float] = {}

    if sensitivity:
        with steps.step("sensitivity of each matmul group"):
            # quantise one group at a time (everything else fp32): which groups move the output most
            plain = [g for g in matmul_groups(folded) if "." not in g]
            for g in plain:
                path = work / f"sens_{g}.onnx"
                quantize_int8_dynamic(folded, path, keep_fp32=[o for o in plain if o != g])
                sensitivity_table[g] = compare(ref, run_batches(cpu_session(path), windows, vectors)).max_abs_diff
                path.unlink()
                log(f"sensitivity {g}: max|diff| {sensitivity_table[g]:.4f}")

    def measure(name: str, path: Path, config: dict[str, Any]) -> VariantReport:
        sess = cpu_session(path)
        fid = compare(ref, run_batches(sess, windows, vectors))
        times = time_sessions({"fp32": fp32, name: sess}, windows, vectors, repeats=repeats)
        speed = times["fp32"] / times[name]
        rep = VariantReport(name, path.name, config, fid, round(times["fp32"], 1), round(times[name], 1),
                            round(speed, 3))
        rep.violations = bounds.violations(fid, speed)
        rep.accepted = not rep.violations
        log(f"{name}: {speed:.2f}x fp32, max|diff| {fid.max_abs_diff:.4f}, top-3 {fid.top3_agreement:.3f}"
            + ("" if rep.accepted else f"  REJECTED ({'; '.join(rep.violations)})"))
        return rep

    for name, keep in cands.items():
        path = work / f"{name}.onnx"
        with steps.step(f"quantise and measure {name} (fp32 kept: {', '.join(keep) or 'none'})"):
            reports.append(measure(name, path, quantize_int8_dynamic(folded, path, keep_fp32=keep)))
    if qdq_conv:
        path = work / "qdq-conv.onnx"
        with steps.step("static QDQ of the convolutions"):
            calib = windows[: min(len(windows), 32)]
            reports.append(measure("qdq-conv", path, quantize_qdq_conv(folded, path, calib, vectors)))
    if fp16:
        path = work / "fp16.onnx"
        with steps.step("fp16 conversion"):
            cfg = convert_fp16(src, path)
        reports.append(VariantReport("fp16", path.name, cfg, note="CUDA only; not timed on CPU"))
    return {"work_dir": str(work), "bounds": asdict(bounds), "reports": reports, "sensitivity": sensitivity_table,
            "windows": len(windows), "labels": len(vectors)}


def best_accepted(reports: list[VariantReport]) -> VariantReport | None:
    timed = [(r.speedup, r) for r in reports if r.accepted and r.name.startswith("int8") and r.speedup is not None]
    return max(timed, key=lambda pair: pair[0])[1] if timed else None


def install_variant(bundle_dir: Path, report: VariantReport, built: Path, *, precision: str = "int8") -> Path:
    """Copy a measured variant into the bundle and record it (with its fidelity) in the manifest."""
    bundle_dir = Path(bundle_dir)
    target = bundle_dir / PRECISION_FILES[precision]
    shutil.copyfile(built, target)
    manifest = json.loads((bundle_dir / B.MANIFEST).read_text())
    variants = dict(manifest.get(MANIFEST_KEY, {}))
    variants[precision] = {
        "file": target.name,
        "sha256": B.sha256_file(target),
        "variant": report.name,
        "config": report.config,
        "fidelity": asdict(report.fidelity) if report.fidelity else None,
        "speedup_vs_fp32": report.speedup,
        "fp32_ms_batch16": report.fp32_ms,
        "variant_ms_batch16": report.variant_ms,
        "source_sha256": B.sha256_file(bundle_dir / B.ECG_TQN),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "measured on this bundle's weights; random-weight demo models may be more sensitive than the "
                "trained one",
    }
    manifest[MANIFEST_KEY] = variants
    B.write_manifest(bundle_dir, manifest)
    return target


def produce_int8(bundle_dir: Path, windows: np.ndarray, vectors: np.ndarray, *, bounds: Bounds = DEFAULT_BOUNDS,
                 candidates: dict[str, tuple[str, ...]] | None = None, repeats: int = 5,
                 log: Log = lambda _m: None, progress: bool | None = False) -> VariantReport:
    """Build the int8 candidates, install the fastest one inside ``bounds``; else raise PrecisionRejected."""
    with tempfile.TemporaryDirectory(prefix="ecgfm-quantize-") as tmp:
        result = study(bundle_dir, windows, vectors, candidates=candidates, qdq_conv=False, bounds=bounds,
                       repeats=repeats, work_dir=Path(tmp), log=log, progress=progress)
        best = best_accepted(result["reports"])
        if best is None or best.file is None:
            raise PrecisionRejected(
                "no int8 variant stays inside the fidelity bounds; nothing was written",
                details={"bounds": asdict(bounds), "variants": [r.as_dict() for r in result["reports"]]},
            )
        install_variant(bundle_dir, best, Path(tmp) / best.file)
        return best


def recorded_variant(manifest: dict[str, Any], precision: str) -> dict[str, Any] | None:
    return (manifest.get(MANIFEST_KEY) or {}).get(precision)
