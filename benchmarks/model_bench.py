"""Eager PyTorch vs ONNX Runtime (CPU) for the full-size ECGFM-KED model.

Measures, as the median of N runs after warm-up:
  * ECG encoder + TQN at batch 1 and 16 with C = 71 labels: the project's PyTorch modules
    (eager, no grad), the exported ``ecg_tqn.onnx`` (one ONNX Runtime session), and what the
    service runs: ``label_state.onnx`` once per label set, then ``ecg_tqn_prepared.onnx``
    (``ModelRuntime.score_prepared``);
  * text features of the 71 built-in label descriptions (~50 words each): ``embed_texts``
    padded to 256 tokens vs dynamically padded (and eager PyTorch padded to 256).

Without ``--checkpoint`` it builds the full-size demo checkpoint (random weights in the
published format, Bio_ClinicalBERT configuration, 7-layer TQN: 163.7 M parameters) and
exports it; ``--bundle`` reuses an exported bundle of the same checkpoint.

    .venv/bin/python benchmarks/model_bench.py --out benchmarks/results/model_bench.json
    .venv/bin/python benchmarks/model_bench.py --quick            # fewer repeats
    .venv/bin/python benchmarks/model_bench.py --checkpoint CKPT --text-model DIR [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

LABELS = 71


def label_texts() -> list[str]:
    data = json.loads((ROOT / "app" / "knowledge" / "builtin" / "default.json").read_text("utf-8"))
    return [label["description"] for label in data["labels"]][:LABELS]


def real_windows() -> np.ndarray:
    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any

    files = sorted((ROOT / "tests" / "data" / "ecg").glob("*.hea"))
    return np.concatenate([preprocess(read_any(p)).windows for p in files]).astype(np.float32)


def tile(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x] * int(np.ceil(n / len(x))))[:n]


def timed(fn, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return {"median_ms": round(statistics.median(runs) * 1000, 1), "min_ms": round(min(runs) * 1000, 1),
            "runs": repeats, "warmup": warmup}


def timed_abba(a, b, warmup: int, repeats: int) -> tuple[dict, dict]:
    """``timed`` in the order A B B A, the faster block of each kept, so that drifts in machine
    speed hit both alike."""
    a1, b1 = timed(a, warmup, repeats), timed(b, warmup, repeats)
    b2, a2 = timed(b, warmup, repeats), timed(a, warmup, repeats)
    return min(a1, a2, key=lambda r: r["median_ms"]), min(b1, b2, key=lambda r: r["median_ms"])


def reference_session(runtime):
    """``ecg_tqn.onnx`` on its own, with the runtime's thread settings."""
    import onnxruntime as ort

    from app.serving import bundle as B

    so = ort.SessionOptions()
    so.intra_op_num_threads = runtime.options.intra_op_threads or (os.cpu_count() or 1)
    return ort.InferenceSession(str(runtime.bundle.path(B.ECG_TQN)), so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="checkpoint .pt (default: build the full-size demo one)")
    ap.add_argument("--text-model", type=Path, help="text model dir (config.json + vocab.txt) for --checkpoint")
    ap.add_argument("--bundle", type=Path, help="exported bundle of the same checkpoint (default: export it)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "model_bench.json")
    ap.add_argument("--quick", action="store_true", help="1 warm-up and 3 runs (text: 1 run) instead of 2 and 10")
    ap.add_argument("--threads", type=int, default=0, help="PyTorch and ONNX Runtime intra-op threads (0: all cores)")
    args = ap.parse_args(argv)
    if (args.checkpoint is None) != (args.text_model is None):
        ap.error("--checkpoint and --text-model go together")
    if args.bundle is not None and args.checkpoint is None:
        ap.error("--bundle needs the --checkpoint it was exported from (for the eager PyTorch side)")

    from app.build import demo
    from app.build.checkpoint import build_ecg_encoder, build_text_encoder, build_tqn, read_checkpoint
    from app.build.export import export_bundle
    from app.serving.runtime import RuntimeOptions, load_runtime
    from app.serving.tokenizer import encode

    warmup, repeats, text_repeats = (1, 3, 1) if args.quick else (2, 10, 3)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    texts = label_texts()
    windows = real_windows()
    setup: dict = {}
    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        if args.checkpoint is None:
            vocab = demo.train_demo_vocab(texts)
            text_dir = demo.write_text_model_dir(tmp / "text_model", dict(demo.BIO_CLINICAL_BERT_CONFIG), vocab)
            ckpt_path = demo.build_demo_checkpoint(tmp / "demo_full.pt", text_dir, sizes=demo.DemoSizes(tqn_layers=7))
            setup["checkpoint"] = "full-size demo (random weights, published format)"
            setup["build_checkpoint_s"] = round(time.perf_counter() - started, 1)
        else:
            ckpt_path, text_dir = args.checkpoint, args.text_model
            setup["checkpoint"] = str(ckpt_path)
        bundle_dir = args.bundle
        if bundle_dir is None:
            t = time.perf_counter()
            bundle_dir = export_bundle(ckpt_path, text_dir, tmp / "bundle", parity_windows=windows,
                                       parity_texts=texts, log=lambda m: print("  " + m, flush=True)).bundle_dir
            setup["export_s"] = round(time.perf_counter() - t, 1)
        ckpt = read_checkpoint(ckpt_path)
        ecg, tqn, text = build_ecg_encoder(ckpt), build_tqn(ckpt), build_text_encoder(ckpt, text_dir)
        setup["parameters"] = sum(p.numel() for m in (ecg, tqn, text) for p in m.parameters())
        runtime = load_runtime(bundle_dir, RuntimeOptions(provider="cpu", intra_op_threads=args.threads,
                                                          optimized_model_dir=tmp / "optimized"))
        labels = runtime.embed_texts(texts)
        rows: list[dict] = []

        def add(step: str, batch: int | str, engine: str, result: dict) -> None:
            rows.append({"step": step, "batch": batch, "engine": engine, **result})
            print(f"  {step:<44} {batch!s:>5} {engine:<22} {result['median_ms']:>10.1f} ms", flush=True)

        print("measuring ...", flush=True)
        lf = torch.from_numpy(labels)
        prepared = runtime.prepare_labels(labels)
        reference = reference_session(runtime)
        for b in (1, 16):
            x = tile(windows, b)
            xt = torch.from_numpy(x)

            def eager(xt=xt):
                with torch.inference_mode():
                    return tqn(ecg(xt), lf)

            def eager_ecg(xt=xt):
                with torch.inference_mode():
                    return ecg(xt)

            add(f"ECG encoder + TQN (C={LABELS})", b, "PyTorch eager", timed(eager, warmup, repeats))
            ref, prep = timed_abba(lambda x=x: reference.run(None, {"ecg": x, "label_features": labels}),
                                   lambda x=x: runtime.score_prepared(x, prepared), warmup, repeats)
            add(f"ECG encoder + TQN (C={LABELS})", b, "ONNX Runtime CPU", ref)
            add(f"ECG encoder + TQN (C={LABELS}), label state prepared once", b, "ONNX Runtime CPU", prep)
            add("ECG encoder alone", b, "PyTorch eager", timed(eager_ecg, warmup, repeats))
            add("ECG encoder alone", b, "ONNX Runtime CPU", timed(lambda x=x: runtime.encode_ecg(x), warmup, repeats))
        add(f"text features, {LABELS} descriptions, padded to 256", LABELS, "ONNX Runtime CPU",
            timed(lambda: runtime.embed_texts(texts, pad_to=256), 1, text_repeats))
        add(f"text features, {LABELS} descriptions, dynamic padding", LABELS, "ONNX Runtime CPU",
            timed(lambda: runtime.embed_texts(texts), 1, text_repeats))
        enc = encode(runtime.tokenizer, texts, pad_to=256)

        def eager_text():
            with torch.inference_mode():
                return text(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))

        add(f"text features, {LABELS} descriptions, padded to 256", LABELS, "PyTorch eager",
            timed(eager_text, 0, 1))
        token_counts = [len(e.ids) for e in runtime.tokenizer.encode_batch(texts)]
        manifest = runtime.bundle.manifest

    result = {
        "benchmark": "model_bench",
        "quick": args.quick,
        "labels": LABELS,
        "tokens_per_description": {"min": min(token_counts), "median": statistics.median(token_counts),
                                   "max": max(token_counts)},
        "setup": setup,
        "parity_worst": manifest.get("parity", {}).get("worst"),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": __import__("onnxruntime").__version__, "cpu_count": os.cpu_count(),
                        "threads": threads, "machine": platform.machine(),
                        "load_average": list(os.getloadavg())},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'step':<46}{'batch':>6}  {'engine':<20}{'median ms':>11}{'min ms':>10}")
    for r in rows:
        print(f"{r['step']:<46}{r['batch']!s:>6}  {r['engine']:<20}{r['median_ms']:>11.1f}{r['min_ms']:>10.1f}")
    print(f"\nsetup: {setup}; peak RSS {result['peak_rss_mib']} MiB; load average {result['environment']['load_average']}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
