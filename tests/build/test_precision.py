"""int8 variant of ecg_tqn: built from a real bundle, loads, same I/O, fidelity recorded, bounds enforced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.errors import BundleError
from app.serving import bundle as B
from app.build import precision as P
from app.serving.runtime import RuntimeOptions, load_runtime

ONE_CANDIDATE = {"int8-keep-head": ("head",)}


@pytest.fixture(scope="module")
def work_bundle(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the session-wide bundle must not be modified."""
    dst = tmp_path_factory.mktemp("precision") / "bundle"
    shutil.copytree(small_bundle, dst, ignore=shutil.ignore_patterns("optimized"))
    return dst


@pytest.fixture(scope="module")
def inputs(work_bundle: Path, real_windows: np.ndarray, label_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vectors = load_runtime(work_bundle, RuntimeOptions(provider="cpu")).embed_texts(label_texts[:12])
    windows = np.concatenate([real_windows] * int(np.ceil(8 / len(real_windows))))[:8]
    return windows, vectors


def test_bounds_name_each_violation() -> None:
    fid = P.Fidelity(windows=32, labels=71, max_abs_diff=0.05, mean_abs_diff=0.01, p99_abs_diff=0.04,
                     top1_agreement=0.9, top3_agreement=0.5, attention_max_abs_diff=0.01)
    assert P.Bounds().violations(fid) == ["max |diff| 0.0500 > 0.02", "top-3 agreement 0.500 < 0.95"]
    assert P.Bounds(max_abs_diff=0.1, min_top3_agreement=0.5).violations(fid) == []
    assert P.Bounds(max_abs_diff=0.1, min_top3_agreement=0.5, min_speedup=1.7).violations(fid, 1.2)


def test_variant_is_refused_when_it_breaks_the_bounds(work_bundle: Path, inputs) -> None:
    before = (work_bundle / B.MANIFEST).read_text()
    with pytest.raises(P.PrecisionRejected) as info:
        P.produce_int8(work_bundle, *inputs, bounds=P.Bounds(max_abs_diff=1e-12, min_top3_agreement=1.0),
                       candidates=ONE_CANDIDATE, repeats=1)
    (variant,) = info.value.details["variants"]
    assert variant["fidelity"]["max_abs_diff"] > 1e-12
    assert any("max |diff|" in v for v in variant["violations"])
    assert not (work_bundle / P.INT8_FILE).exists()
    assert (work_bundle / B.MANIFEST).read_text() == before
    with pytest.raises(BundleError, match="quantize"):
        load_runtime(work_bundle, RuntimeOptions(provider="cpu", precision="int8"))


def test_accepted_variant_loads_with_same_io_and_recorded_fidelity(work_bundle: Path, inputs) -> None:
    import onnxruntime as ort

    windows, vectors = inputs
    report = P.produce_int8(work_bundle, windows, vectors, bounds=P.Bounds(max_abs_diff=0.5, min_top3_agreement=0.0),
                            candidates=ONE_CANDIDATE, repeats=1)
    int8_path = work_bundle / P.INT8_FILE
    assert int8_path.is_file() and report.accepted

    ref = ort.InferenceSession(str(work_bundle / B.ECG_TQN), providers=["CPUExecutionProvider"])
    var = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    sig = lambda items: [(i.name, i.type, len(i.shape)) for i in items]  # noqa: E731
    assert sig(var.get_inputs()) == sig(ref.get_inputs())
    assert sig(var.get_outputs()) == sig(ref.get_outputs())
    assert any(n.op_type == "MatMulInteger" for n in __import__("onnx").load(str(int8_path)).graph.node)

    recorded = P.recorded_variant(json.loads((work_bundle / B.MANIFEST).read_text()), "int8")
    assert recorded["file"] == P.INT8_FILE and recorded["sha256"] == B.sha256_file(int8_path)
    fid = recorded["fidelity"]
    assert fid["windows"] == len(windows) and fid["labels"] == len(vectors)
    assert 0 < fid["max_abs_diff"] <= 0.5 and 0.0 <= fid["top3_agreement"] <= 1.0
    assert recorded["speedup_vs_fp32"] > 0

    runtime = load_runtime(work_bundle, RuntimeOptions(provider="cpu", precision="int8"))
    assert runtime.info.precision == "int8"
    probs, attention = runtime.score(windows[:3], vectors)
    assert probs.shape == (3, len(vectors)) and attention.shape == (3, len(vectors), 32)
    fp32_probs, _ = load_runtime(work_bundle, RuntimeOptions(provider="cpu")).score(windows[:3], vectors)
    # Dynamic int8 scales activations per batch, so a result depends on its batchmates: the
    # fidelity recorded at batch 16 bounds a batch of 3 only approximately (seen: 1.1x).
    assert np.abs(probs - fp32_probs).max() <= 2 * fid["max_abs_diff"]


def test_fp16_request_falls_back_to_fp32_without_cuda(work_bundle: Path) -> None:
    runtime = load_runtime(work_bundle, RuntimeOptions(provider="cpu", precision="fp16"))
    assert runtime.info.precision == "fp32"
