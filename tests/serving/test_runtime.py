"""ONNX Runtime sessions over a real bundle (app/serving/runtime.py)."""

from __future__ import annotations

import ctypes.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from app.errors import BundleError, InvalidInput
from app.serving import bundle as B
from app.serving.runtime import (
    CPU,
    CUDA,
    ModelRuntime,
    RuntimeOptions,
    load_runtime,
    nvidia_driver_present,
    resolve_lanes,
)


def cuda_usable() -> bool:
    """A real NVIDIA driver on this machine (not merely onnxruntime-gpu installed)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


@pytest.fixture(scope="module")
def runtime(small_bundle, tmp_path_factory) -> ModelRuntime:
    options = RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path_factory.mktemp("opt"))
    return load_runtime(small_bundle, options)


def test_provider_in_use_is_read_from_the_sessions(runtime) -> None:
    in_use = {s.get_providers()[0] for s in runtime._sessions.values()}
    assert in_use == {CPU} and runtime.info.provider == CPU
    assert runtime.info.as_dict()["provider"] == CPU and runtime.info.untrained is True


def test_driver_detection_needs_the_kernel_driver() -> None:
    if not Path("/proc/driver/nvidia/version").exists():
        assert nvidia_driver_present() is False
    else:  # with the kernel driver, the answer is whether libcuda loads
        assert nvidia_driver_present() == (ctypes.util.find_library("cuda") is not None)


def test_auto_reports_what_onnx_runtime_actually_uses(small_bundle, tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="app.serving.runtime"):
        rt = load_runtime(small_bundle, RuntimeOptions(provider="auto", optimized_model_dir=tmp_path / "opt"))
    assert rt.info.provider == rt._sessions[B.ECG_TQN_PREPARED].get_providers()[0]
    if not nvidia_driver_present():
        assert rt.info.provider == CPU
        assert "CUDA execution provider unavailable" not in caplog.text  # CUDA was not even tried
        if CUDA in ort.get_available_providers():  # onnxruntime-gpu installed, no driver
            assert "no NVIDIA driver on this machine; using the CPU execution provider" in caplog.text


STARTS_ON_AUTO = """
import sys
from pathlib import Path
from app.serving.runtime import RuntimeOptions, load_runtime
rt = load_runtime(Path(sys.argv[1]), RuntimeOptions(provider="auto", optimized_model_dir=Path(sys.argv[2])))
print(rt.info.provider)
"""


@pytest.mark.skipif(cuda_usable(), reason="checks the start on a machine without an NVIDIA driver")
def test_start_without_a_driver_prints_no_onnx_runtime_errors(small_bundle, tmp_path) -> None:
    """ONNX Runtime writes from C++ straight to fd 2, so the start runs in a process of its own and
    its whole stderr is read. With onnxruntime-gpu installed and no driver, trying CUDA printed a
    red "Failed to load library ... libcublasLt.so.13" and a "Failed to create CUDAExecutionProvider"
    warning at every start; the first start also warned about saving optimised graphs."""
    done = subprocess.run([sys.executable, "-c", STARTS_ON_AUTO, str(small_bundle), str(tmp_path / "opt")],
                          capture_output=True, text=True, timeout=300, check=True, cwd=Path(__file__).parents[2])
    assert done.stdout.strip() == CPU
    for noise in ("libcublas", "CUDAExecutionProvider", "[E:onnxruntime", "[W:onnxruntime", "Traceback"):
        assert noise not in done.stderr, done.stderr


def test_explicit_cuda_without_a_usable_gpu_is_an_error(small_bundle, tmp_path) -> None:
    if cuda_usable():
        rt = load_runtime(small_bundle, RuntimeOptions(provider="cuda", optimized_model_dir=tmp_path / "opt"))
        assert rt.info.provider == CUDA
        return
    expected = ("no NVIDIA driver" if CUDA in ort.get_available_providers()
                else "the installed onnxruntime has none")
    with pytest.raises(BundleError, match=f"CUDA execution provider was requested but .*{expected}"):
        load_runtime(small_bundle, RuntimeOptions(provider="cuda", optimized_model_dir=tmp_path / "opt"))


def test_optimised_graphs_are_cached_and_reused(small_bundle, tmp_path, real_windows) -> None:
    cache = tmp_path / "opt"
    first = load_runtime(small_bundle, RuntimeOptions(provider="cpu", optimized_model_dir=cache))
    files = sorted(cache.glob("*.onnx"))
    loaded = (B.ECG_TQN_PREPARED, B.LABEL_STATE, B.ECG_ENCODER, B.TEXT_ENCODER)  # ecg_tqn itself is not needed
    digests = B.open_bundle(small_bundle).digests
    assert [f.name for f in files] == sorted(f"{Path(n).stem}.{digests[n][:16]}.{CPU}.ort{ort.__version__}.onnx"
                                             for n in loaded)
    for f in files:  # each with the sha256 it had when written
        assert (cache / (f.name + ".sha256")).read_text().strip() == B.sha256_file(f)
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    second = load_runtime(small_bundle, RuntimeOptions(provider="cpu", optimized_model_dir=cache))
    assert {f.name: f.stat().st_mtime_ns for f in cache.glob("*.onnx")} == stamps  # not rewritten
    for name, s in second._sessions.items():
        assert Path(s._model_path).parent == cache, name  # loaded from the cache
        assert Path(first._sessions[name]._model_path).parent == small_bundle
    labels = np.random.default_rng(0).standard_normal((5, 768)).astype(np.float32)
    p1, a1 = first.score(real_windows[:3], labels)
    p2, a2 = second.score(real_windows[:3], labels)
    assert np.allclose(p1, p2, atol=1e-6) and np.allclose(a1, a2, atol=1e-6)
    assert np.allclose(first.embed_texts(["sinus rhythm"]), second.embed_texts(["sinus rhythm"]), atol=1e-6)


def test_embed_texts_returns_input_order(runtime, label_texts) -> None:
    texts = [label_texts[0], "qt", label_texts[1] + " " + label_texts[2], "sinus rhythm", label_texts[5], "st"]
    lengths = [len(runtime.tokenizer.encode(t).ids) for t in texts]
    assert lengths != sorted(lengths)  # the runtime has to reorder
    one_by_one = np.stack([runtime.embed_texts([t])[0] for t in texts])
    for batch_size in (2, 32):
        got = runtime.embed_texts(texts, batch_size=batch_size)
        assert got.shape == (6, 768) and got.dtype == np.float32
        assert np.abs(got - one_by_one).max() <= 1e-5
    assert np.abs(runtime.embed_texts(texts, pad_to=256) - one_by_one).max() <= 1e-5
    # rows differ, so a permutation would be caught (even with the demo's near-constant BERT)
    assert min(np.abs(one_by_one[i] - one_by_one[j]).max() for i in range(6) for j in range(i)) > 1e-6
    assert runtime.embed_texts([]).shape == (0, 768)


def test_score_and_encode_shapes(runtime, real_windows) -> None:
    labels = np.random.default_rng(1).standard_normal((7, 768))  # float64 is accepted and converted
    probs, attention = runtime.score(real_windows[:4], labels)
    assert probs.shape == (4, 7) and attention.shape == (4, 7, 32)
    assert ((probs > 0) & (probs < 1)).all() and np.allclose(attention.sum(-1), 1, atol=1e-5)
    assert runtime.encode_ecg(real_windows[:2]).shape == (2, 32, 768)


@pytest.mark.parametrize(
    ("windows_shape", "labels_shape"),
    [((12, 1000), (3, 768)), ((1, 12, 500), (3, 768)), ((1, 8, 1000), (3, 768)), ((1, 1000, 12), (3, 768)),
     ((1, 12, 1000), (768,)), ((1, 12, 1000), (0, 768)), ((1, 12, 1000), (3, 512))],
)
def test_score_rejects_wrong_shapes(runtime, windows_shape, labels_shape) -> None:
    with pytest.raises(InvalidInput):
        runtime.score(np.zeros(windows_shape, np.float32), np.zeros(labels_shape, np.float32))


def test_encode_ecg_rejects_wrong_shapes(runtime) -> None:
    with pytest.raises(InvalidInput, match=r"must be \(B, 12, 1000\), got \(2, 12, 999\)"):
        runtime.encode_ecg(np.zeros((2, 12, 999), np.float32))


def test_missing_or_incomplete_bundle_says_how_to_get_one(small_bundle, tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist") as err:
        load_runtime(tmp_path / "nowhere")
    assert B.HOW_TO_GET_ONE in err.value.message
    partial = tmp_path / "partial"
    shutil.copytree(small_bundle, partial, ignore=shutil.ignore_patterns("ecg_encoder.onnx", "optimized"))
    with pytest.raises(BundleError, match=r"incomplete, missing \['ecg_encoder.onnx'\]") as err:
        B.open_bundle(partial)
    assert B.HOW_TO_GET_ONE in err.value.message
    shutil.copyfile(small_bundle / B.ECG_ENCODER, partial / B.ECG_ENCODER)
    assert B.open_bundle(partial).version == "test-small"
    (partial / B.MANIFEST).write_text('{"format_version": 99, "text_encoder_id": "x"}')
    with pytest.raises(BundleError, match="format_version 99"):
        B.open_bundle(partial)
    (partial / B.MANIFEST).write_text("{broken")
    with pytest.raises(BundleError, match="cannot read"):
        B.open_bundle(partial)
    # a graph that is not ONNX, with a manifest that records its hash (so it passes the check)
    (partial / B.ECG_TQN_PREPARED).write_bytes(b"not an onnx graph")
    manifest = json.loads((small_bundle / B.MANIFEST).read_text())
    manifest["graphs"][B.ECG_TQN_PREPARED] = B.sha256_file(partial / B.ECG_TQN_PREPARED)
    (partial / B.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"cannot load ecg_tqn_prepared\.onnx"):
        load_runtime(partial, RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path / "opt"))
    (partial / B.ECG_TQN_PREPARED).unlink()  # an older bundle: scores through ecg_tqn, which is broken
    (partial / B.ECG_TQN).write_bytes(b"not an onnx graph")
    manifest["graphs"][B.ECG_TQN] = B.sha256_file(partial / B.ECG_TQN)
    (partial / B.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"cannot load ecg_tqn\.onnx"):
        load_runtime(partial, RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path / "opt"))


def test_shared_lane_session_scores_like_the_full_one(small_bundle, tmp_path, real_windows) -> None:
    rt = load_runtime(small_bundle, RuntimeOptions(provider="cpu", intra_op_threads=2, lanes=2,
                                                   optimized_model_dir=tmp_path / "opt"))
    assert rt.lanes == 2 and rt._shared_scoring is not rt._sessions[B.ECG_TQN_PREPARED]
    assert rt._sessions[B.ECG_TQN_PREPARED].get_session_options().intra_op_num_threads == 2
    assert rt._shared_scoring.get_session_options().intra_op_num_threads == 1  # 2 threads over 2 lanes
    labels = np.random.default_rng(2).standard_normal((9, 768)).astype(np.float32)
    p_all, a_all = rt.score(real_windows[:3], labels, alone=True)
    p_shared, a_shared = rt.score(real_windows[:3], labels, alone=False)
    assert np.abs(p_all - p_shared).max() <= 1e-6 and np.abs(a_all - a_shared).max() <= 1e-6
    one = load_runtime(small_bundle, RuntimeOptions(provider="cpu", intra_op_threads=2, lanes=1,
                                                    optimized_model_dir=tmp_path / "opt"))
    assert one.lanes == 1 and one._shared_scoring is one._sessions[B.ECG_TQN_PREPARED]


@pytest.mark.parametrize(("lanes", "provider", "threads", "expected"), [
    (0, CPU, 2, 2), (0, CPU, 16, 2), (0, CPU, 1, 1), (0, CUDA, 16, 1),  # auto
    (3, CPU, 2, 2),  # never more lanes than threads on a CPU
    (1, CPU, 8, 1), (2, CUDA, 4, 2),  # as asked
])
def test_lanes_resolution(lanes, provider, threads, expected) -> None:
    assert resolve_lanes(lanes, provider, threads) == expected


def test_prepared_labels_score_like_the_reference_graph(small_bundle, tmp_path, real_windows) -> None:
    """label_state + ecg_tqn_prepared give ecg_tqn's answer; a bundle without them still works."""
    import onnxruntime as ort

    rt = load_runtime(small_bundle, RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path / "opt"))
    assert rt.prepared and rt._scoring_name == B.ECG_TQN_PREPARED
    labels = np.random.default_rng(4).standard_normal((11, 768)).astype(np.float32)
    prepared = rt.prepare_labels(labels)
    assert prepared.queries.shape == prepared.cross_queries.shape == (11, 768)
    reference = ort.InferenceSession(str(small_bundle / B.ECG_TQN), providers=[CPU])
    for n in (1, 5):
        ref_p, ref_a = reference.run(None, {"ecg": real_windows[:n], "label_features": labels})
        p, a = rt.score_prepared(real_windows[:n], prepared)
        assert np.abs(p - ref_p).max() <= 1e-5 and np.abs(a - ref_a).max() <= 1e-5
        p2, _ = rt.score(real_windows[:n], labels)  # prepares on the fly
        assert np.abs(p2 - p).max() <= 1e-6

    older = tmp_path / "older-bundle"  # exported before the prepared graphs existed
    shutil.copytree(small_bundle, older, ignore=shutil.ignore_patterns("optimized", *B.PREPARED_GRAPHS))
    old_rt = load_runtime(older, RuntimeOptions(provider="cpu", optimized_model_dir=tmp_path / "opt-old"))
    assert not old_rt.prepared and old_rt._scoring_name == B.ECG_TQN
    assert old_rt.prepare_labels(labels).queries is None
    p_old, a_old = old_rt.score(real_windows[:3], labels)
    p_new, a_new = rt.score(real_windows[:3], labels)
    assert np.abs(p_old - p_new).max() <= 1e-5 and np.abs(a_old - a_new).max() <= 1e-5
