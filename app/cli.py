"""``ecgfm-ked``: fetch weights, export bundles, diagnose records, serve the API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.errors import ServiceError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _builtin_texts() -> list[str]:
    from app.knowledge.builtin import load_builtin_sets

    texts: list[str] = []
    for s in load_builtin_sets():
        for label in s.labels:
            texts.extend([label.name, label.description])
    return texts


def cmd_fetch(args: argparse.Namespace) -> int:
    from app.build.fetch import fetch_model

    fetched = fetch_model(
        Path(args.cache_dir) if args.cache_dir else None,
        zenodo_url=args.zenodo_url,
        hf_endpoint=args.hf_endpoint,
        progress=not args.quiet,
    )
    print(json.dumps({"checkpoint": str(fetched.checkpoint), "text_model": str(fetched.text_model_dir),
                      "checkpoint_sha256": fetched.checkpoint_sha256}, indent=2))
    if args.export_to:
        from app.build.export import export_bundle

        export_bundle(fetched.checkpoint, fetched.text_model_dir, Path(args.export_to), log=_log, overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.build.export import export_bundle

    windows = _parity_windows(args.parity_records) if args.parity_records else None
    result = export_bundle(Path(args.checkpoint), Path(args.text_model), Path(args.out), parity_windows=windows,
                           log=_log, overwrite=args.overwrite)
    print(json.dumps({"bundle": str(result.bundle_dir), "model_version": result.manifest["model_version"],
                      "parity_worst": result.manifest["parity"]["worst"]}, indent=2))
    return 0


def _parity_windows(records: list[str]):
    import numpy as np

    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any

    windows = []
    for r in records:
        path = Path(r)
        path = path if path.suffix else path.with_suffix(".hea")
        windows.append(preprocess(read_any(path)).windows)
    return np.concatenate(windows)


def cmd_demo_bundle(args: argparse.Namespace) -> int:
    from app.build.demo import build_demo_bundle

    out = build_demo_bundle(Path(args.out), corpus=_builtin_texts(), full_size_text=args.full_size,
                            log=_log, overwrite=args.overwrite)
    print(json.dumps({"bundle": str(out), "untrained": True}, indent=2))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import numpy as np

    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any
    from app.serving.runtime import RuntimeOptions, load_runtime
    from app.usecases.explain import INTENDED_USE, Panel, PanelLabel, RankOptions, rank_diagnoses, warnings_json

    labels = list(args.label or [])
    if args.labels_file:
        labels += [ln.strip() for ln in Path(args.labels_file).read_text().splitlines() if ln.strip()]
    if not labels:
        raise ServiceError("give at least one --label or a --labels-file")
    runtime = load_runtime(Path(args.bundle), RuntimeOptions(provider=args.provider))
    vectors = runtime.embed_texts(labels)
    panel = Panel(name="command-line", version="adhoc", labels=tuple(PanelLabel(t, t) for t in labels), vectors=vectors)
    results = []
    for record in args.records:
        path = Path(record)
        path = path if path.suffix else path.with_suffix(".hea")
        model_input = preprocess(read_any(path), pad=args.pad)
        probs, attention = runtime.score(model_input.windows, vectors)
        diagnoses = rank_diagnoses(model_input, probs, attention, panel, RankOptions(top_k=args.top_k, include_windows=True))
        for d in diagnoses:
            c = labels.index(d["label"])
            w = int(np.argmax(probs[:, c]))
            d["attention"] = [round(float(v), 6) for v in attention[w, c]]
        results.append({"record": record, "windows": len(model_input.windows),
                        "window_starts_s": model_input.window_starts_s, "diagnoses": diagnoses,
                        "warnings": warnings_json(model_input)})
    print(json.dumps({"model": runtime.info.as_dict(), "intended_use": INTENDED_USE, "results": results}, indent=2))
    return 0


def _record_paths(items: list[str], limit: int) -> list[Path]:
    """Record paths from files or directories (every *.hea below a directory), at most ``limit``."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths.extend(sorted(p.rglob("*.hea")))
        else:
            paths.append(p if p.suffix else p.with_suffix(".hea"))
    return paths[:limit]


def cmd_quantize(args: argparse.Namespace) -> int:
    import numpy as np

    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any
    from app.knowledge.builtin import load_builtin_sets
    from app.build import precision as P
    from app.serving.runtime import RuntimeOptions, load_runtime

    windows = []
    for path in _record_paths(args.records, args.max_records):
        try:
            windows.append(preprocess(read_any(path)).windows[:1])
        except ServiceError as exc:
            _log(f"skipping {path}: {exc.message}")
    if len(windows) < args.min_records:
        raise ServiceError(f"{len(windows)} usable records; fidelity needs at least {args.min_records} (--records)")
    sets = {s.name: s for s in load_builtin_sets()}
    if args.label_set not in sets:
        raise ServiceError(f"unknown built-in label set {args.label_set!r}; known: {sorted(sets)}")
    texts = [l.name if l.encode_text == "name" else l.description for l in sets[args.label_set].labels]
    vectors = load_runtime(Path(args.bundle), RuntimeOptions(provider="cpu")).embed_texts(texts)
    bounds = P.Bounds(max_abs_diff=args.max_abs_diff, min_top3_agreement=args.min_top3, min_speedup=args.min_speedup)
    candidates = {k: P.INT8_CANDIDATES[k] for k in args.candidates} if args.candidates else None
    report = P.produce_int8(Path(args.bundle), np.concatenate(windows), vectors, bounds=bounds, candidates=candidates,
                            repeats=args.repeats, log=_log)
    print(json.dumps({"written": str(Path(args.bundle) / P.INT8_FILE), "variant": report.as_dict(),
                      "use_with": "ECGFM_PRECISION=int8"}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.ops.settings import Settings
    from app.api.server import serve

    overrides = {k: v for k, v in {"bundle_dir": args.bundle, "database_url": args.database_url, "host": args.host,
                                   "port": args.port, "workers": args.workers}.items() if v is not None}
    return serve(Settings(**overrides))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecgfm-ked", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch", help="download the checkpoint (Zenodo) and Bio_ClinicalBERT tokenizer/config (Hugging Face)")
    f.add_argument("--cache-dir", help="default $ECGFM_CACHE_DIR or ~/.cache/ecgfm-ked")
    f.add_argument("--zenodo-url")
    f.add_argument("--hf-endpoint")
    f.add_argument("--export-to", help="also export a bundle into this directory")
    f.add_argument("--overwrite", action="store_true")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fetch)

    e = sub.add_parser("export", help="export a checkpoint to an ONNX model bundle")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--text-model", required=True, help="directory with the text model's config.json and vocab.txt")
    e.add_argument("--out", required=True)
    e.add_argument("--parity-records", nargs="*", help="ECG records whose windows the parity check uses")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)

    d = sub.add_parser("demo-bundle", help="build an UNTRAINED bundle from random weights in the real format")
    d.add_argument("--out", required=True)
    d.add_argument("--full-size", action="store_true", help="full-size Bio_ClinicalBERT-shaped text encoder (slow)")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo_bundle)

    g = sub.add_parser("diagnose", help="score ECG records against labels taken together as one label set")
    g.add_argument("--bundle", required=True)
    g.add_argument("--label", action="append", help="a label text (repeatable, order kept)")
    g.add_argument("--labels-file", help="one label text per line")
    g.add_argument("--top-k", type=int, default=0, help="0 = all labels")
    g.add_argument("--pad", action="store_true", help="zero-pad records shorter than 10 s")
    g.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("records", nargs="+", help="record path (WFDB without extension, or any supported file)")
    g.set_defaults(func=cmd_diagnose)

    q = sub.add_parser("quantize", help="build the int8 ecg_tqn variant; written only if it meets the fidelity bounds")
    q.add_argument("--bundle", required=True)
    q.add_argument("--records", nargs="+", required=True, help="WFDB records or directories (first window of each)")
    q.add_argument("--max-records", type=int, default=64)
    q.add_argument("--min-records", type=int, default=32)
    q.add_argument("--label-set", default="default", help="built-in label set whose texts give the label vectors")
    q.add_argument("--max-abs-diff", type=float, default=0.02, help="largest |probability difference| vs fp32")
    q.add_argument("--min-top3", type=float, default=0.95, help="least top-3 agreement with fp32")
    q.add_argument("--min-speedup", type=float, default=None, help="least batch-16 speed-up vs fp32 (default: none)")
    q.add_argument("--candidates", nargs="*", choices=["int8-all", "int8-keep-head", "int8-keep-head-last", "int8-keep-head-last-ffn"],
                   help="int8 candidates to try (default: all)")
    q.add_argument("--repeats", type=int, default=5)
    q.set_defaults(func=cmd_quantize)

    s = sub.add_parser("serve", help="run the HTTP service")
    s.add_argument("--bundle")
    s.add_argument("--database-url")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ServiceError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
