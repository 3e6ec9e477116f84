"""Seconds per fine-tuning step of the full-size ECGFM-KED model (``app/training``).

The full-size model with random weights in the published shapes: the ECG encoder
(xresnet1d101, 7.9 M parameters), the TQN with the published 7 layers (``tqn_model_layers: 7``
in the released config, shared/model-spec), and a BERT of Bio_ClinicalBERT's size
(``app.build.demo.BIO_CLINICAL_BERT_CONFIG``, 110 M). One step = ``app.training.loop.train_step``
(ECG encoder + label texts through BERT's trainable last layer + TQN, cross-entropy and the
contrastive term, backward, AdamW) at batch 16 of 10 s windows, for the label texts of the
built-in ``cinc2021`` (26 labels) and ``default`` (71) sets as the service encodes them. The
median of ``--steps`` steps after one warm-up step; on CPU, and on CUDA when torch sees a GPU.

    .venv/bin/python benchmarks/finetune_bench.py [--steps 3] [--batch 16]
        [--out benchmarks/results/finetune_bench.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def label_texts(set_name: str) -> list[str]:
    from app.knowledge.builtin import load_builtin_sets

    (s,) = [s for s in load_builtin_sets() if s.name == set_name]
    return [d.name if d.encode_text == "name" else d.description for d in s.labels]


def bench(device: torch.device, texts: list[str], text_dir: Path, batch: int, steps: int) -> dict[str, float]:
    from app.build import demo
    from app.build.ecg_encoder import EcgEncoder
    from app.build.text_encoder import TextEncoder, load_bert_config
    from app.build.tqn import TQN, TqnSpec
    from app.training.loop import Models, seed_everything, train_step
    from app.training.recipe import Recipe, optimizer, set_trainable
    from app.training.run import label_inputs
    from app.training.text import LabelTexts

    seed_everything(0)
    gen = torch.Generator().manual_seed(0)
    ecg = EcgEncoder()
    demo.randomise_batchnorm(ecg, gen)
    tqn = TQN(TqnSpec(n_layers=7))
    text = TextEncoder(load_bert_config(text_dir))
    ids, mask = label_inputs(text_dir, texts)
    models = Models(ecg, tqn, LabelTexts(text, ids, mask)).to(device)
    recipe = Recipe(batch_size=batch)
    opt = optimizer(set_trainable(models.ecg, models.tqn, models.labels.text), recipe)
    walk = np.random.default_rng(0).standard_normal((batch, 12, 1000)).cumsum(-1) * 0.05
    x = torch.from_numpy((walk - walk.mean(-1, keepdims=True)).astype(np.float32)).to(device)
    y = (torch.rand(batch, len(texts), generator=gen) < 0.1).float().to(device)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_step(models, x, y, opt, recipe)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first step (warm-up; it also caches the frozen BERT prefix) is not counted
            times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "steps": steps,
            "windows_per_s": round(batch / statistics.median(times), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sets", nargs="*", default=["cinc2021", "default"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune_bench.json")
    args = ap.parse_args(argv)

    from app.build import demo

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as tmp:
        corpus = [t for name in args.sets for t in label_texts(name)]
        vocab = demo.train_demo_vocab(corpus, vocab_size=4000)  # ids < 4000: valid for the 28,996-row table
        text_dir = demo.write_text_model_dir(Path(tmp) / "text_model", dict(demo.BIO_CLINICAL_BERT_CONFIG), vocab)
        for device in devices:
            for set_name in args.sets:
                texts = label_texts(set_name)
                result = bench(device, texts, text_dir, args.batch, args.steps)
                rows.append({"device": str(device), "label_set": set_name, "labels": len(texts),
                             "batch": args.batch, **result})
                print(f"{device!s:5} {set_name:9} C={len(texts):3} B={args.batch}: "
                      f"{result['median_s']:.2f} s/step (min {result['min_s']:.2f}, max {result['max_s']:.2f}), "
                      f"{result['windows_per_s']:.1f} windows/s", flush=True)
    result_doc = {
        "benchmark": "finetune_bench",
        "model": "full-size: ECG encoder (xresnet1d101) + 7-layer TQN + Bio_ClinicalBERT-size BERT, random weights",
        "step": "app.training.loop.train_step: forward, cross-entropy + contrastive, backward, AdamW",
        "results": rows,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print("\n| device | label set | labels | batch | s/step (median) | windows/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['label_set']} | {r['labels']} | {r['batch']} | {r['median_s']:.2f} | "
              f"{r['windows_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result_doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
