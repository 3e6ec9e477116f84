"""``ecgfm-ked``: fetch weights, export bundles, diagnose records, serve the API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from app import __version__
from app.errors import ServiceError

if TYPE_CHECKING:
    import numpy as np

    from app.ops.settings import Settings

EXIT_RUNTIME_ERROR = 1  # missing bundle, unreadable file, unknown label set, ...
EXIT_USAGE_ERROR = 2  # argparse's own status for bad or conflicting options


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def _probability(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {number}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {number}")
    return number


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

        export_bundle(fetched.checkpoint, fetched.text_model_dir, Path(args.export_to), log=_log,
                      progress=False if args.quiet else None, overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.build.export import export_bundle

    windows = _parity_windows(args.parity_records) if args.parity_records else None
    result = export_bundle(Path(args.checkpoint), Path(args.text_model), Path(args.out), parity_windows=windows,
                           log=_log, progress=None, overwrite=args.overwrite)  # bar on a terminal, steps timed
    print(json.dumps({"bundle": str(result.bundle_dir), "model_version": result.manifest["model_version"],
                      "parity_worst": result.manifest["parity"]["worst"]}, indent=2))
    return 0


def _parity_windows(records: list[str]) -> np.ndarray:
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
                            log=_log, progress=None, overwrite=args.overwrite)  # bar on a terminal, steps timed
    print(json.dumps({"bundle": str(out), "untrained": True}, indent=2))
    return 0


def _diagnose_settings(args: argparse.Namespace) -> Settings:
    from app.ops.settings import Settings

    overrides = {k: v for k, v in {"bundle_dir": args.bundle, "database_url": args.database_url,
                                   "provider": args.provider}.items() if v is not None}
    return Settings(**overrides)


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Score records with the service's own diagnose use-case; print the API's JSON (or FHIR)."""
    from app.ecg.readers.base import ReadHints
    from app.service import open_offline_scorer
    from app.usecases.diagnose import DiagnoseOptions
    from app.usecases.label_files import read_label_file
    from app.usecases.offline import read_records

    adhoc = read_label_file(Path(args.labels_file)) if args.labels_file else []
    options = DiagnoseOptions(
        label_set=args.label_set, labels=tuple(args.label or (d.name for d in adhoc)), top_k=args.top_k,
        threshold=args.threshold, pad=args.pad, aggregation=args.aggregation, include_windows=args.include_windows,
        explain_leads=args.explain == "leads",
    )
    hints = ReadHints(sampling_rate=args.sampling_rate, units=args.units,
                      lead_names=tuple(n.strip() for n in args.lead_names.split(",")) if args.lead_names else None)
    sources = read_records([Path(p) for p in args.paths], hints)  # unreadable input fails before the model loads
    with open_offline_scorer(_diagnose_settings(args), adhoc_labels=adhoc) as scorer:
        result = scorer.diagnose_sources(sources, options)
    if args.format == "fhir":
        from app.api.fhir import to_fhir_bundle

        document: Any = to_fhir_bundle(result)
    else:
        from app.api.schemas import DiagnoseResponse

        document = DiagnoseResponse.from_result(result).model_dump(mode="json")
    print(json.dumps(document, indent=2, ensure_ascii=False))
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

    from app.build import precision as P
    from app.build.progress import Progress
    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any
    from app.knowledge.builtin import load_builtin_sets
    from app.serving.bundle import open_bundle
    from app.serving.runtime import ModelRuntime, RuntimeOptions

    runtime = ModelRuntime(open_bundle(Path(args.bundle)), RuntimeOptions(provider="cpu"))
    windows = []
    with Progress(1, "records", _log, bar=None) as steps, steps.step("read and preprocess the records"):
        for path in _record_paths(args.records, args.max_records):
            try:  # cut to the bundle's own contract
                windows.append(preprocess(read_any(path), contract=runtime.contract).windows[:1])
            except ServiceError as exc:
                steps.log(f"skipping {path}: {exc.message}")
    if len(windows) < args.min_records:
        raise ServiceError(f"{len(windows)} usable records; fidelity needs at least {args.min_records} (--records)")
    sets = {s.name: s for s in load_builtin_sets()}
    if args.label_set not in sets:
        raise ServiceError(f"unknown built-in label set {args.label_set!r}; known: {sorted(sets)}")
    texts = [d.name if d.encode_text == "name" else d.description for d in sets[args.label_set].labels]
    vectors = runtime.embed_texts(texts)
    bounds = P.Bounds(max_abs_diff=args.max_abs_diff, min_top3_agreement=args.min_top3, min_speedup=args.min_speedup)
    candidates = {k: P.INT8_CANDIDATES[k] for k in args.candidates} if args.candidates else None
    report = P.produce_int8(Path(args.bundle), np.concatenate(windows), vectors, bounds=bounds, candidates=candidates,
                            repeats=args.repeats, log=_log, progress=None)
    print(json.dumps({"written": str(Path(args.bundle) / P.INT8_FILE), "variant": report.as_dict(),
                      "use_with": "ECGFM_PRECISION=int8"}, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.api.server import serve
    from app.ops.settings import Settings

    overrides = {k: v for k, v in {"bundle_dir": args.bundle, "database_url": args.database_url, "host": args.host,
                                   "port": args.port, "workers": args.workers}.items() if v is not None}
    return serve(Settings(**overrides))


def _key_store(args: argparse.Namespace) -> Any:
    """The service's key store (ECGFM_DATABASE_URL / ECGFM_DATA_DIR, or --database-url); no model is loaded."""
    from app.access.keys import KeyStore
    from app.knowledge.db import create_schema, make_engine
    from app.ops.settings import Settings
    from app.service import database_options

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url, database_options(settings))
    create_schema(engine)
    return KeyStore(engine)


def cmd_keys(args: argparse.Namespace) -> int:
    from app.access.keys import parse_scope
    from app.access.scopes import COMMAND_LINE

    store = _key_store(args)
    if args.keys_command == "create":
        key, secret = store.create(args.name, parse_scope(args.scope), actor=COMMAND_LINE)
        print(secret)  # alone on stdout, so KEY=$(ecgfm-ked keys create ...) works
        _log(f"created API key {key.name!r} (scope {key.scope.value}, {key.prefix}...): it is shown this once; "
             "send it as 'Authorization: Bearer KEY'")
    elif args.keys_command == "list":
        keys = store.list()
        if args.active_only:
            keys = [k for k in keys if k.active]
        for k in keys:
            state = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}Z"
            print(f"{k.name}\t{k.scope.value}\t{k.prefix}...\t{state}\tcreated {k.created_at:%Y-%m-%d %H:%M:%S}Z "
                  f"by {k.created_by}")
    else:
        key = store.revoke(args.name, actor=COMMAND_LINE)
        _log(f"revoked API key {key.name!r}: other running processes stop accepting it within ECGFM_KEY_CACHE_S")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecgfm-ked", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fetch",
                       help="download the checkpoint (Zenodo) and Bio_ClinicalBERT tokenizer/config (Hugging Face)")
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

    g = sub.add_parser(
        "diagnose", help="score ECG records with the service's diagnose use-case (prints the API's JSON)",
        description="Score ECG records exactly as POST /diagnose does and print its JSON (or a FHIR Bundle). "
        "Labels: a label set by name (default: the service's default set), registered labels by name, or a "
        "label file scored ad hoc without being stored. The database is the service's "
        "(ECGFM_DATABASE_URL / ECGFM_DATA_DIR, or --database-url).")
    g.add_argument("--bundle", help="model bundle directory (default: ECGFM_BUNDLE_DIR or model_store/bundle)")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--label-set", help="label set name (default: ECGFM_DEFAULT_LABEL_SET or 'default')")
    which.add_argument("--label", action="append", metavar="NAME",
                       help="a registered label's name (repeatable; scored together in this order)")
    which.add_argument("--labels-file", metavar="FILE",
                       help="JSON or CSV of name + description [+ codes]: scored together, in file order, in a "
                       "private temporary database (not stored; the service's database is not opened)")
    g.add_argument("--database-url", help="SQLAlchemy URL of the label database (default: the service's)")
    g.add_argument("--top-k", type=_non_negative_int, default=5, help="labels returned per ECG; 0 = all (default 5)")
    g.add_argument("--threshold", type=_probability, default=0.0, help="omit labels below this probability")
    g.add_argument("--pad", action="store_true", help="zero-pad records of 2-10 s instead of refusing them")
    g.add_argument("--aggregation", choices=["max", "mean"], default="max",
                   help="how window probabilities combine for records longer than 10 s")
    g.add_argument("--include-windows", action="store_true", help="each label's per-window probabilities too")
    g.add_argument("--explain", choices=["none", "leads"], default="none",
                   help="leads: lead-level evidence per diagnosis (each lead masked in turn; 12 extra model passes "
                   "per window)")
    g.add_argument("--sampling-rate", type=_positive_float, help="Hz, for formats without a rate (CSV, NPY)")
    g.add_argument("--units", help="mV, uV or V, for formats without units (CSV, NPY)")
    g.add_argument("--lead-names", help="comma-separated lead names for NPY arrays")
    g.add_argument("--format", choices=["json", "fhir"], default="json",
                   help="json: the API's response; fhir: a FHIR R4 Bundle (as Accept: application/fhir+json)")
    g.add_argument("--provider", choices=["auto", "cpu", "cuda"], help="ONNX Runtime execution provider")
    g.add_argument("paths", nargs="+", metavar="PATH",
                   help="ECG file in any supported format (detected from content; WFDB: the .hea, or the record "
                   "name without extension) or a folder (every record below it)")
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
    q.add_argument("--candidates", nargs="*",
                   choices=["int8-all", "int8-keep-head", "int8-keep-head-last", "int8-keep-head-last-ffn"],
                   help="int8 candidates to try (default: all)")
    q.add_argument("--repeats", type=int, default=5)
    q.set_defaults(func=cmd_quantize)

    k = sub.add_parser("keys", help="API keys: create (shown once), list, revoke",
                       description="API keys in the service's database (ECGFM_DATABASE_URL / ECGFM_DATA_DIR, or "
                       "--database-url). Scopes: diagnose (score and read), labels (also change labels and label "
                       "sets), admin (also manage keys, read the audit trail).")
    database_help = "SQLAlchemy URL of the service's database (default: the service's)"
    k.add_argument("--database-url", help=database_help)
    # also after the subcommand (``keys list --database-url URL``); not given there, the one before it stands
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", default=argparse.SUPPRESS, help=database_help)
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", parents=[database], help="make a key and print it (only the key, on stdout)")
    kc.add_argument("--name", required=True, help="who holds it; recorded in the audit trail")
    kc.add_argument("--scope", required=True, choices=["diagnose", "labels", "admin"])
    kl = ksub.add_parser("list", parents=[database], help="every key: name, scope, prefix, state (never the keys)")
    kl.add_argument("--active-only", action="store_true", help="only keys not revoked")
    kr = ksub.add_parser("revoke", parents=[database], help="revoke a key by name")
    kr.add_argument("--name", required=True)
    k.set_defaults(func=cmd_keys)

    from app.training.command import add_finetune_parser  # numpy/argparse only; torch when it runs

    add_finetune_parser(sub)

    from app.evaluation.command import add_evaluate_parser  # argparse only; scikit-learn when it runs

    add_evaluate_parser(sub)

    s = sub.add_parser("serve", help="run the HTTP service")
    s.add_argument("--bundle")
    s.add_argument("--database-url")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_serve)
    return p


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option conflicts argparse cannot express; ``parser.error`` exits with status 2."""
    if args.command == "diagnose" and args.labels_file and args.database_url:
        parser.error("--labels-file is scored in a private database; it cannot be combined with --database-url")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 runtime error, 2 usage error; errors are one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_combinations(parser, args)
    try:
        return int(args.func(args) or 0)
    except ServiceError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    except ValidationError as exc:  # settings from the environment (ECGFM_*) that do not validate
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error [invalid_setting]: {problems}", file=sys.stderr)
        return EXIT_USAGE_ERROR
    except OSError as exc:
        print(f"error [os_error]: {exc}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR


if __name__ == "__main__":
    sys.exit(main())
