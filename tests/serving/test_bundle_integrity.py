"""Model files are trusted only after they are checked (app/serving/bundle.py, app/serving/runtime.py).

Every graph the manifest lists, the int8 / fp16 variants and the tokenizer are hashed when the
bundle opens and compared with what export recorded; the optimised-graph cache is keyed by the
source graph's sha256 and each cached graph carries its own, so a damaged or truncated one is
rebuilt from the verified source. Real bundles, real ONNX sessions, real files damaged on disk;
the served app and the ``ecgfm-ked serve`` process are real too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from app.api.main import create_app
from app.errors import BundleError
from app.ops.settings import Settings
from app.serving import bundle as B
from app.serving.runtime import CPU, RuntimeOptions, load_runtime

REPO = Path(__file__).resolve().parents[2]


def linked_copy(small_bundle: Path, root: Path, *, copied: tuple[str, ...] = ()) -> Path:
    """A bundle whose files link to the small bundle's, except ``copied`` (real copies, to damage)."""
    root.mkdir()
    (root / "tokenizer").mkdir()
    (root / "text_model").mkdir()
    for item in small_bundle.rglob("*"):
        rel = item.relative_to(small_bundle)
        if not item.is_file() or rel.parts[0] == "optimized":
            continue
        target = root / rel
        if str(rel) in copied or rel.name == B.MANIFEST:
            target.write_bytes(item.read_bytes())
        else:
            target.symlink_to(item)
    return root


def flip(path: Path, *, at: float = 0.5, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``path`` (weights: the graph still parses)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))


def options(cache: Path) -> RuntimeOptions:
    return RuntimeOptions(provider="cpu", intra_op_threads=1, optimized_model_dir=cache)


def cached(cache: Path, graph: str) -> Path:
    (path,) = cache.glob(f"{Path(graph).stem}.*.{CPU}.ort{ort.__version__}.onnx")
    return path


LABELS = np.random.default_rng(3).standard_normal((6, 768)).astype(np.float32)


# --- the bundle's own files ----------------------------------------------------------------


def test_an_intact_bundle_opens_with_every_listed_file_verified(small_bundle) -> None:
    bundle = B.open_bundle(small_bundle)
    manifest = json.loads((small_bundle / B.MANIFEST).read_text())
    assert set(manifest["graphs"]) <= set(bundle.digests)
    for name, digest in manifest["graphs"].items():
        assert bundle.digests[name] == digest == B.sha256_file(small_bundle / name)
    assert bundle.digests[B.TOKENIZER_JSON] == B.sha256_file(small_bundle / B.TOKENIZER_JSON)


@pytest.mark.parametrize("name", [B.ECG_TQN_PREPARED, B.ECG_ENCODER, B.TEXT_ENCODER, B.LABEL_STATE, B.ECG_TQN,
                                  B.TOKENIZER_JSON])
def test_a_damaged_file_is_refused_naming_it(small_bundle, tmp_path, name) -> None:
    root = linked_copy(small_bundle, tmp_path / "b", copied=(name,))
    flip(root / name, count=8)
    with pytest.raises(BundleError, match="does not match the sha256 its manifest records") as err:
        B.open_bundle(root)
    assert err.value.details["file"] == name and f": {name} does not match" in err.value.message
    assert err.value.details["found_sha256"] == B.sha256_file(root / name)
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_runtime(root, options(tmp_path / "opt"))
    assert not (tmp_path / "opt").exists()  # nothing was built from it


def test_a_truncated_graph_is_refused(small_bundle, tmp_path) -> None:
    root = linked_copy(small_bundle, tmp_path / "b", copied=(B.ECG_ENCODER,))
    data = (root / B.ECG_ENCODER).read_bytes()
    (root / B.ECG_ENCODER).write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match=f"{B.ECG_ENCODER} does not match"):
        B.open_bundle(root)


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda m: m.pop("graphs"), "records no graph hashes"),
    (lambda m: m["graphs"].pop(B.ECG_ENCODER), f"records no sha256 for {B.ECG_ENCODER}"),
    (lambda m: m["graphs"].update({B.TEXT_ENCODER: "not-a-hash"}), "is not a hash"),
    (lambda m: m["graphs"].update({"../../etc/passwd": "0" * 64}), "is not a hash of a file in the bundle"),
    (lambda m: m["graphs"].update({B.ECG_ENCODER: m["graphs"][B.ECG_ENCODER][:16]}), "is not a hash"),
    (lambda m: m.update(text_encoder_id="x"), "tokenizer cannot be checked"),
    (lambda m: m.update(text_encoder_id="0" * 16 + m["text_encoder_id"][16:]), "does not name the text_encoder"),
])
def test_a_manifest_that_cannot_be_checked_is_refused(small_bundle, tmp_path, edit, needle) -> None:
    root = linked_copy(small_bundle, tmp_path / "b")
    manifest = json.loads((root / B.MANIFEST).read_text())
    edit(manifest)
    (root / B.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=needle):
        B.open_bundle(root)


def test_a_precision_variant_is_checked_and_an_unrecorded_one_is_not_loaded(small_bundle, tmp_path) -> None:
    root = linked_copy(small_bundle, tmp_path / "b")
    variant = root / B.ECG_TQN_INT8
    variant.write_bytes((small_bundle / B.ECG_TQN).read_bytes())  # stands in for an int8 file
    with pytest.raises(BundleError, match=f"records no sha256 for {B.ECG_TQN_INT8}"):
        load_runtime(root, RuntimeOptions(provider="cpu", precision="int8", optimized_model_dir=tmp_path / "o"))
    manifest = json.loads((root / B.MANIFEST).read_text())
    manifest["precision_variants"] = {"int8": {"file": B.ECG_TQN_INT8, "sha256": B.sha256_file(variant)}}
    (root / B.MANIFEST).write_text(json.dumps(manifest))
    assert B.open_bundle(root).digests[B.ECG_TQN_INT8] == B.sha256_file(variant)
    flip(variant, count=8)
    with pytest.raises(BundleError, match=f"{B.ECG_TQN_INT8} does not match"):
        B.open_bundle(root)


def test_a_file_changed_after_it_was_hashed_is_hashed_again(small_bundle, tmp_path) -> None:
    root = linked_copy(small_bundle, tmp_path / "b", copied=(B.ECG_ENCODER,))
    old = os.stat(root / B.ECG_ENCODER)
    os.utime(root / B.ECG_ENCODER, ns=(old.st_atime_ns - 10**10, old.st_mtime_ns - 10**10))  # not "racy"
    B.open_bundle(root)  # hashed and remembered
    flip(root / B.ECG_ENCODER, count=8)
    with pytest.raises(BundleError, match=f"{B.ECG_ENCODER} does not match"):
        B.open_bundle(root)


# --- the optimised-graph cache -------------------------------------------------------------


def test_cached_graphs_are_keyed_by_their_source_hash(small_bundle, tmp_path) -> None:
    cache = tmp_path / "opt"
    load_runtime(small_bundle, options(cache))
    digest = B.open_bundle(small_bundle).digests[B.ECG_TQN_PREPARED]
    assert cached(cache, B.ECG_TQN_PREPARED).name.startswith(f"ecg_tqn_prepared.{digest[:16]}.")
    assert not list(cache.glob("*.tmp*"))  # nothing half-written left behind


@pytest.mark.parametrize("damage", ["flip", "truncate", "unrecorded"])
def test_a_damaged_cached_graph_is_rebuilt_from_the_source(small_bundle, tmp_path, real_windows, caplog,
                                                           damage) -> None:
    cache = tmp_path / "opt"
    fresh = load_runtime(small_bundle, options(cache))
    expected, attention = fresh.score(real_windows[:3], LABELS)
    graph = cached(cache, B.ECG_TQN_PREPARED)
    if damage == "flip":
        flip(graph)
    elif damage == "truncate":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    else:
        graph.with_name(graph.name + ".sha256").unlink()
    with caplog.at_level(logging.WARNING, logger="app.serving.runtime"):
        rebuilt = load_runtime(small_bundle, options(cache))
    assert any("rebuilding it" in r.getMessage() and graph.name in r.getMessage() for r in caplog.records)
    # built from the bundle's graph, not from the damaged file
    assert Path(rebuilt._sessions[B.ECG_TQN_PREPARED]._model_path) == small_bundle / B.ECG_TQN_PREPARED
    probs, att = rebuilt.score(real_windows[:3], LABELS)
    assert np.abs(probs - expected).max() <= 1e-6 and np.abs(att - attention).max() <= 1e-6
    # and the cache holds an intact graph again, which the next start uses
    assert graph.with_name(graph.name + ".sha256").read_text().strip() == B.sha256_file(graph)
    again = load_runtime(small_bundle, options(cache))
    assert Path(again._sessions[B.ECG_TQN_PREPARED]._model_path) == graph
    assert np.abs(again.score(real_windows[:3], LABELS)[0] - expected).max() <= 1e-6


def test_flipped_bytes_in_a_cached_graph_would_change_the_answer(small_bundle, tmp_path, real_windows) -> None:
    """The damage the cache check catches is real: the same flipped graph, loaded as is, scores
    differently (so the equality above is not a test that cannot fail)."""
    cache = tmp_path / "opt"
    fresh = load_runtime(small_bundle, options(cache))
    expected, _ = fresh.score(real_windows[:3], LABELS)
    graph = cached(cache, B.ECG_TQN_PREPARED)
    flip(graph, at=0.5, count=4096)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    prepared = fresh.prepare_labels(LABELS)
    try:
        session = ort.InferenceSession(str(graph), so, providers=[CPU])
    except Exception:  # the flip broke the protobuf: damage that would block start-up instead
        return
    probs, _ = session.run(None, {"ecg": real_windows[:3], "label_queries": prepared.queries,
                                  "label_cross_queries": prepared.cross_queries})
    assert not np.allclose(probs, expected, atol=1e-6)


# --- how a refused bundle shows --------------------------------------------------------------


def damaged_bundle(small_bundle: Path, tmp_path: Path) -> Path:
    root = linked_copy(small_bundle, tmp_path / "damaged", copied=(B.ECG_TQN_PREPARED,))
    flip(root / B.ECG_TQN_PREPARED, count=8)
    return root


def test_readyz_says_why_a_damaged_bundle_is_not_served(small_bundle, tmp_path) -> None:
    settings = Settings(bundle_dir=damaged_bundle(small_bundle, tmp_path), data_dir=tmp_path / "data",
                        database_url=None, provider="cpu", intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        body: dict[str, Any] = ready.json()
        assert body["checks"]["model"] is False
        assert "ecg_tqn_prepared.onnx does not match the sha256" in body["reason"]


def test_serve_exits_non_zero_naming_the_damaged_file(small_bundle, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECGFM_")}
    env.update(ECGFM_DATA_DIR=str(tmp_path / "data"), ECGFM_PROVIDER="cpu", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--bundle", str(damaged_bundle(small_bundle,
                          tmp_path)), "--port", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error [bundle_invalid]" in proc.stderr and "ecg_tqn_prepared.onnx does not match the sha256" in proc.stderr
    assert "Traceback" not in proc.stderr
