"""Export to an ONNX bundle (app/build/export.py): manifest, parity with PyTorch on real
record windows at several batch and label counts, dynamic axes, refusal to clobber.

The bundle is the session's ``small_bundle`` (full-size ECG encoder, 2-layer TQN, small BERT)
and the PyTorch side is rebuilt here from the same checkpoint file. One slow test exports the
full-size demo checkpoint (163.7 M parameters, Bio_ClinicalBERT configuration).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tokenizers
import torch
import transformers

from app.build.checkpoint import build_ecg_encoder, build_text_encoder, build_tqn, file_sha256, read_checkpoint
from app.build.export import OPSET, export_bundle
from app.contract import PRETRAINING, read_contract
from app.errors import CheckpointError
from app.serving import bundle as B
from app.serving.tokenizer import encode, load_tokenizer

BATCHES = (1, 2, 16)
LABELS = (1, 5, 71)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x] * int(np.ceil(n / len(x))))[:n]


@pytest.fixture(scope="module")
def torch_side(small_checkpoint):
    ckpt = read_checkpoint(small_checkpoint.path)
    return build_ecg_encoder(ckpt), build_tqn(ckpt), build_text_encoder(ckpt, small_checkpoint.text_dir)


@pytest.fixture(scope="module")
def label_features(small_bundle, torch_side, label_texts) -> np.ndarray:
    """PyTorch text features of the 71 built-in descriptions, spread out so labels differ.

    The demo BERT maps all texts to nearly one vector; adding seeded noise of the same scale
    keeps the vectors realistic in size while making the label axis matter."""
    tok = load_tokenizer(small_bundle / B.TOKENIZER_JSON)
    enc = encode(tok, label_texts)
    with torch.no_grad():
        feats = torch_side[2](torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)).numpy()
    noise = np.random.default_rng(3).standard_normal(feats.shape).astype(np.float32)
    return feats + noise * feats.std()


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / B.MANIFEST).read_text())


def test_manifest_records_source_tools_contract_and_parity(small_bundle, small_checkpoint) -> None:
    m = manifest(small_bundle)
    assert m["format_version"] == B.FORMAT_VERSION
    assert m["source_checkpoint"]["sha256"] == file_sha256(small_checkpoint.path)
    assert m["source_checkpoint"]["file"] == small_checkpoint.path.name and m["source_checkpoint"]["epoch"] == 3
    assert m["config"]["tqn_model_layers"] == 2 and m["untrained"] is True
    assert m["opset"] == OPSET
    for name in (B.ECG_TQN, *B.PREPARED_GRAPHS, B.ECG_ENCODER, B.TEXT_ENCODER):
        model = onnx.load(str(small_bundle / name), load_external_data=False)
        assert {o.domain: o.version for o in model.opset_import}[""] == m["opset"], name
        assert m["graphs"][name] == B.sha256_file(small_bundle / name)
    assert m["tools"] == {
        "python": m["tools"]["python"], "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": ort.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
    }
    # the contract, written from the contract object: the pretraining window, the checkpoint's width,
    # the segments the encoder produces; it reads back as the same contract
    assert m["preprocessing"] == PRETRAINING.manifest_preprocessing()
    assert m["preprocessing"]["feature_width"] == 768 and m["preprocessing"]["segments"] == 32
    assert read_contract(m).contract == PRETRAINING == B.open_bundle(small_bundle).contract
    assert m["preprocessing"]["sampling_rate_hz"] == 100 and m["preprocessing"]["window_samples"] == 1000
    assert m["preprocessing"]["lead_order"][:3] == ["I", "II", "III"] and m["preprocessing"]["units"] == "mV"
    assert m["tokenizer"]["lowercase"] is True and m["tokenizer"]["max_tokens"] == 256
    p = m["parity"]
    assert p["passed"] is True and p["inputs"] == "caller-supplied ECG windows"
    assert p["batches"] == list(BATCHES) and p["label_counts"] == list(LABELS)
    figures = [*p["probabilities_max_abs_diff"].values(), *p["attention_max_abs_diff"].values(),
               *p["prepared_max_abs_diff"].values(), *p["text_features_max_abs_diff"].values()]
    assert len(figures) == 9 + 9 + 9 + 3
    assert all(0 <= v <= 1e-4 for v in figures), figures
    assert p["worst"] <= p["tolerance"] == 1e-4
    # the ECG features are not normalised (values up to ~6): their figure is absolute, ~1e-4 relative
    assert all(v <= 5e-3 for v in p["ecg_features_max_abs_diff"].values())
    assert B.open_bundle(small_bundle).text_encoder_id == m["text_encoder_id"]


def test_ecg_tqn_graph_matches_pytorch_on_real_windows(small_bundle, torch_side, real_windows, label_features) -> None:
    ecg, tqn, _ = torch_side
    s = session(small_bundle / B.ECG_TQN)
    worst_p = worst_a = 0.0
    for b in BATCHES:
        x = tile(real_windows, b)
        with torch.no_grad():
            feats = ecg(torch.from_numpy(x))
        for c in LABELS:
            lf = label_features[:c]
            with torch.no_grad():
                ref_p, ref_a = (t.numpy() for t in tqn(feats, torch.from_numpy(lf)))
            p, a = s.run(None, {"ecg": x, "label_features": lf})
            assert p.shape == (b, c) and a.shape == (b, c, 32), (b, c)
            worst_p = max(worst_p, float(np.abs(p - ref_p).max()))
            worst_a = max(worst_a, float(np.abs(a - ref_a).max()))
            assert np.allclose(a.sum(-1), 1, atol=1e-5)
    assert worst_p <= 1e-4 and worst_a <= 1e-4, (worst_p, worst_a)
    # the comparison is not vacuous: records and labels change the output
    p, _ = s.run(None, {"ecg": real_windows, "label_features": label_features})
    assert np.abs(p[0] - p[5]).max() > 1e-2  # CPSC vs PTB record
    assert p.max() - p.min() > 0.1


def test_prepared_label_state_gives_the_same_answer_in_pytorch(torch_side, real_windows, label_features) -> None:
    """TQN.forward_prepared(label_state(...)) is forward with the label-only work done once."""
    ecg, tqn, _ = torch_side
    with torch.no_grad():
        feats = ecg(torch.from_numpy(real_windows[:3]))
        for c in LABELS:
            lf = torch.from_numpy(label_features[:c])
            ref_p, ref_a = tqn(feats, lf)
            p, a = tqn.forward_prepared(feats, *tqn.label_state(lf))
            assert (p - ref_p).abs().max() <= 1e-6 and (a - ref_a).abs().max() <= 1e-6


def test_ecg_encoder_graph_gives_b_32_768(small_bundle, torch_side, real_windows) -> None:
    s = session(small_bundle / B.ECG_ENCODER)
    for b in BATCHES:
        x = tile(real_windows, b)
        (out,) = s.run(None, {"ecg": x})
        assert out.shape == (b, 32, 768)
        with torch.no_grad():
            ref = torch_side[0](torch.from_numpy(x)).transpose(1, 2).numpy()
        # fp32 rounding through 33 blocks: both ORT and PyTorch sit ~5e-4 from a float64 run
        assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max(), np.abs(out - ref).max()


def test_text_encoder_graph_has_dynamic_count_and_length(small_bundle, torch_side, label_texts) -> None:
    s = session(small_bundle / B.TEXT_ENCODER)
    tok = load_tokenizer(small_bundle / B.TOKENIZER_JSON)
    seen = set()
    for texts, pad_to in ((["qt"], None), (label_texts[:3], None), (label_texts[:3], 256), (label_texts, None),
                          ([" ".join(label_texts[:10])], None)):
        enc = encode(tok, texts, pad_to=pad_to)
        (out,) = s.run(None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
        with torch.no_grad():
            ref = torch_side[2](torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask)).numpy()
        assert out.shape == (len(texts), 768)
        assert np.abs(out - ref).max() <= 1e-5
        seen.add(enc.input_ids.shape)
    assert len({n for n, _ in seen}) >= 3 and len({length for _, length in seen}) >= 4, seen


def test_export_into_a_non_empty_directory_is_refused(small_checkpoint, tmp_path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="is not empty"):
        export_bundle(small_checkpoint.path, small_checkpoint.text_dir, out)
    assert time.perf_counter() - started < 5  # refused before any work
    assert (out / "keep.txt").read_text() == "user data" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not (tmp_path / "bundle.partial").exists()


@pytest.mark.slow
def test_full_size_demo_checkpoint_exports_with_parity(tmp_path, real_windows, label_texts) -> None:
    """163.7 M parameters (Bio_ClinicalBERT config, 7-layer TQN): export time and peak RSS."""
    from app.build import demo

    started = time.perf_counter()
    vocab = demo.train_demo_vocab(label_texts)
    text_dir = demo.write_text_model_dir(tmp_path / "text_model", dict(demo.BIO_CLINICAL_BERT_CONFIG), vocab)
    ckpt_path = demo.build_demo_checkpoint(tmp_path / "full.pt", text_dir, sizes=demo.DemoSizes(tqn_layers=7))
    built = time.perf_counter() - started
    ckpt = read_checkpoint(ckpt_path)
    ecg, tqn, text = build_ecg_encoder(ckpt), build_tqn(ckpt), build_text_encoder(ckpt, text_dir)
    total = sum(p.numel() for m in (ecg, tqn, text) for p in m.parameters())
    assert total == 7_865_984 + 45_708_547 + 110_082_049 == 163_656_580
    result = export_bundle(ckpt_path, text_dir, tmp_path / "bundle", parity_windows=real_windows,
                           parity_texts=label_texts)
    exported = time.perf_counter() - started
    p = result.manifest["parity"]
    assert p["passed"] and p["worst"] <= 1e-4
    assert all(v <= 1e-4 for v in p["text_features_max_abs_diff"].values())
    # independent check at B = 2, C = 71 on real windows with the real text graph's features
    tok = load_tokenizer(result.bundle_dir / B.TOKENIZER_JSON)
    enc = encode(tok, label_texts)
    (lf,) = session(result.bundle_dir / B.TEXT_ENCODER).run(None, {"input_ids": enc.input_ids,
                                                                    "attention_mask": enc.attention_mask})
    x = real_windows[[0, 5]]
    probs, attn = session(result.bundle_dir / B.ECG_TQN).run(None, {"ecg": x, "label_features": lf})
    with torch.no_grad():
        ref_p, ref_a = tqn(ecg(torch.from_numpy(x)), torch.from_numpy(lf))
    assert probs.shape == (2, 71) and np.abs(probs - ref_p.numpy()).max() <= 1e-4
    assert np.abs(attn - ref_a.numpy()).max() <= 1e-4
    queries, cross = session(result.bundle_dir / B.LABEL_STATE).run(None, {"label_features": lf})
    probs2, attn2 = session(result.bundle_dir / B.ECG_TQN_PREPARED).run(
        None, {"ecg": x, "label_queries": queries, "label_cross_queries": cross})
    assert np.abs(probs2 - ref_p.numpy()).max() <= 1e-4 and np.abs(attn2 - ref_a.numpy()).max() <= 1e-4
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nfull-size export: checkpoint built in {built:.0f} s, total {exported:.0f} s, "
          f"export_seconds {result.manifest['export_seconds']}, peak RSS {peak_rss_mb:.0f} MiB, "
          f"checkpoint {ckpt_path.stat().st_size / 1e6:.0f} MB, worst parity {p['worst']:.1e}")
    assert exported < 360


EXPORTER_NOISE = ("torchvision is not installed", "will not be used, since it shares the same shape constraints",
                  "isinstance(treespec, LeafSpec)", "FutureWarning", "UserWarning")


def test_cli_export_prints_the_summary_on_stdout_and_timed_steps_without_exporter_noise(small_checkpoint, tmp_path,
                                                                                      real_windows) -> None:
    """``ecgfm-ked export`` as an operator runs it (its own process: torch logs through handlers of its
    own): stdout is the JSON summary only, stderr a line per step with its duration and none of the
    exporter's notes that mean nothing to a user (torchvision missing, merged axis names, a
    deprecated pytree check), which it printed 20-odd lines of before."""
    out = tmp_path / "bundle"
    done = subprocess.run([sys.executable, "-m", "app.cli", "export", "--checkpoint", str(small_checkpoint.path),
                           "--text-model", str(small_checkpoint.text_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["bundle"] == str(out) and summary["parity_worst"] <= 1e-4
    for noise in EXPORTER_NOISE:
        assert noise not in done.stderr, done.stderr
    steps = [f"read {small_checkpoint.path.name}", f"export {B.ECG_TQN}",
             f"export {B.LABEL_STATE} and {B.ECG_TQN_PREPARED}", f"export {B.ECG_ENCODER}", f"export {B.TEXT_ENCODER}",
             "parity against PyTorch", "manifest", "export done in"]
    lines = done.stderr.splitlines()
    for step in steps:
        timed = [line for line in lines if line.startswith(f"{step}") and line.endswith(" s")]
        assert len(timed) == 1, (step, done.stderr)
        assert float(timed[0].rsplit(" ", 2)[-2]) >= 0
    assert "\r" not in done.stderr  # no progress bar drawn into a pipe
    assert read_contract(manifest(out)).contract == PRETRAINING
