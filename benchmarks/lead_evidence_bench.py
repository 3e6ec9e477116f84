"""What lead-level evidence (``explain=leads``) costs: the diagnose use-case per 10 s record, with
and without it.

    python benchmarks/lead_evidence_bench.py                      # builds the tests' small bundle (~2 min)
    python benchmarks/lead_evidence_bench.py --bundle DIR         # a bundle you have
    python benchmarks/lead_evidence_bench.py --demo               # builds a full-size demo bundle (~3 min)

The diagnose use-case (``DiagnoseService.diagnose`` through ``OfflineScorer``, as ``ecgfm-ked
diagnose`` and ``POST /diagnose`` run it, without HTTP) scores one 10 s 12-lead record
(tests/data/ecg E07500, WFDB at 500 Hz, already read) against the built-in ``default`` label set
(71 labels, vectors cached after the warm-up), ``--repeats`` times each way, alternating, after
``--warmup`` runs of each. Reported: median and p90 per record (ms), the ratio, the response's
``inference`` and ``lead_masking`` stages (medians), and the floor: one ONNX Runtime call of the
scoring graph on 1 and on 13 windows (``ModelRuntime.score_prepared``, the same prepared labels).

Bundles: by default the small bundle the tests build (tests/fixtures/models.py: full-size ECG
encoder, 2-layer TQN, small BERT); ``--demo`` builds the full-size demo bundle (``ecgfm-ked
demo-bundle``: full-size ECG encoder, 7-layer TQN, random weights) into a temp dir. Results: a
table on stdout and ``benchmarks/results/lead_evidence_bench.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "lead_evidence_bench.json"
RECORD = ROOT / "tests" / "data" / "ecg" / "E07500.hea"
LABEL_SET = "default"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


def build_small_bundle(tmp: Path) -> Path:
    """The bundle the tests use (tests/fixtures/models.py ``small_bundle``)."""
    from tests.fixtures.models import build_small_checkpoint, builtin_label_texts, load_real_windows

    from app.build.demo import UNTRAINED_NOTE
    from app.build.export import export_bundle

    log("building the tests' small bundle (about 2 min)")
    checkpoint = build_small_checkpoint(tmp / "checkpoint")
    return export_bundle(checkpoint.path, checkpoint.text_dir, tmp / "bundle", parity_windows=load_real_windows(),
                         parity_texts=builtin_label_texts(),
                         extra_manifest={"untrained": True, "untrained_note": UNTRAINED_NOTE,
                                         "model_version": "test-small"}).bundle_dir


def build_demo_bundle(tmp: Path) -> Path:
    out = tmp / "bundle"
    log("building a full-size demo bundle (ecgfm-ked demo-bundle; a few minutes)")
    subprocess.run([sys.executable, "-m", "app.cli", "demo-bundle", "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return out


def bench(bundle: Path, data_dir: Path, repeats: int, warmup: int) -> dict[str, Any]:
    from app.ecg.readers import read_any
    from app.ops.settings import Settings
    from app.service import build_service
    from app.usecases.diagnose import DiagnoseOptions, EcgSource, Timings
    from app.usecases.offline import OfflineScorer

    settings = Settings(bundle_dir=bundle, data_dir=data_dir, database_url=None, provider="cpu")
    service = build_service(settings)
    source = EcgSource(read_any(RECORD), filename=RECORD.name)
    plain = DiagnoseOptions(label_set=LABEL_SET, top_k=5)
    modes = {"without": plain, "explain_leads": dataclasses.replace(plain, explain_leads=True)}
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    try:
        with OfflineScorer(service.diagnose, service.model, service.limits) as scorer:
            for i in range(warmup + repeats):
                for mode, options in modes.items():  # alternating: without, then with
                    t = time.perf_counter()
                    result = scorer.diagnose_sources([source], options, request_id=f"bench-{i}")
                    wall = (time.perf_counter() - t) * 1000
                    if i >= warmup:
                        runs[mode].append({"wall_ms": wall, **result.timings_ms})
            check = scorer.diagnose_sources([source], modes["explain_leads"])
            effects = check.results[0].diagnoses[0].lead_effects
            assert effects is not None and len(effects) == 12
            floor = raw_floor(service, source, repeats, Timings)
            windows = check.results[0].source.windows
            labels = len(service.diagnose.label_set_for(plain).labels)
            threads = service.model.runtime.options.intra_op_threads or os.cpu_count()
    finally:
        service.close()
    out: dict[str, Any] = {"bundle": str(bundle), "record": RECORD.name, "windows": windows, "labels": labels,
                           "repeats": repeats, "warmup": warmup, "intra_op_threads": threads}
    for mode, rows in runs.items():
        wall = [r["wall_ms"] for r in rows]
        out[mode] = {
            "median_ms": round(statistics.median(wall), 1), "p90_ms": pct(wall, 90),
            "min_ms": round(min(wall), 1), "max_ms": round(max(wall), 1),
            "inference_median_ms": round(statistics.median(r["inference"] for r in rows), 1),
            "lead_masking_median_ms": (round(statistics.median(r["lead_masking"] for r in rows), 2)
                                       if "lead_masking" in rows[0] else None),
            "all_ms": [round(w, 2) for w in wall],
        }
    out["ratio_median"] = round(out["explain_leads"]["median_ms"] / out["without"]["median_ms"], 2)
    # each timed run with explain follows one without: the median of those pairs' ratios is what a
    # busy machine (slow minutes hit both runs of a pair) disturbs least
    pairs = [e["wall_ms"] / w["wall_ms"] for e, w in zip(runs["explain_leads"], runs["without"], strict=True)]
    out["ratio_paired_median"] = round(statistics.median(pairs), 2)
    out["onnx_floor"] = floor
    return out


def raw_floor(service: Any, source: Any, repeats: int, timings_cls: Any) -> dict[str, float]:
    """One ONNX Runtime call of the scoring graph on the record's window, and on it with its 12
    masked variants (13 windows), with every core (``alone``), as the lone request runs."""
    from app.usecases.diagnose import DiagnoseOptions
    from app.usecases.explain import LeadMasking

    runtime = service.model.runtime
    diagnose = service.diagnose
    [model_input] = diagnose.model_inputs([source], False, runtime.contract, timings_cls())
    label_set = diagnose.label_set_for(DiagnoseOptions(label_set=LABEL_SET))
    labels = runtime.prepare_labels(diagnose.panel_for(label_set, service.model.embedder).vectors)
    calls = {"one_window_ms": model_input.windows,
             "thirteen_windows_ms": LeadMasking.of(model_input.windows).windows}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats + 1):  # alternating, so that a busy moment of the machine hits both; first: warm-up
        for name, windows in calls.items():
            t = time.perf_counter()
            runtime.score_prepared(windows, labels)
            if i:
                times[name].append((time.perf_counter() - t) * 1000)
    out = {name: round(statistics.median(values), 1) for name, values in times.items()}
    out["ratio"] = round(out["thirteen_windows_ms"] / out["one_window_ms"], 2)
    return out


def table(r: dict[str, Any]) -> str:
    lines = [f"bundle {r['bundle']} ({r['bundle_kind']}); {r['record']}: {r['windows']} window, {r['labels']} labels, "
             f"{r['repeats']} runs each after {r['warmup']} warm-up, {r['intra_op_threads']} intra-op threads",
             "", f"{'diagnose use-case, per 10 s record':36} {'median':>9} {'p90':>9} {'inference':>10} "
             f"{'masking':>8}"]
    for mode in ("without", "explain_leads"):
        m = r[mode]
        masking = "-" if m["lead_masking_median_ms"] is None else f"{m['lead_masking_median_ms']:.2f}"
        lines.append(f"{mode:36} {m['median_ms']:>6.1f} ms {m['p90_ms']:>6.1f} ms {m['inference_median_ms']:>7.1f} ms "
                     f"{masking:>5} ms")
    f = r["onnx_floor"]
    lines += [f"explain_leads / without: {r['ratio_median']}x (medians), {r['ratio_paired_median']}x (median of "
              "paired runs)",
              f"ONNX Runtime floor: 1 window {f['one_window_ms']} ms, 13 windows {f['thirteen_windows_ms']} ms "
              f"({f['ratio']}x)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bundle", type=Path, help="model bundle (default: build the tests' small bundle)")
    which.add_argument("--demo", action="store_true", help="build and use a full-size demo bundle (ecgfm-ked "
                       "demo-bundle)")
    parser.add_argument("--repeats", type=int, default=20, help="runs per mode (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="runs per mode before timing (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                          "load_avg_at_start": os.getloadavg()},
                              "command": " ".join(["python", "benchmarks/lead_evidence_bench.py",
                                                   *(argv if argv is not None else sys.argv[1:])])}
    with tempfile.TemporaryDirectory(prefix="ecgfm-lead-bench-") as scratch:
        tmp = Path(scratch)
        if args.bundle:
            bundle, kind = args.bundle, "given"
        elif args.demo:
            bundle, kind = build_demo_bundle(tmp), "full-size demo (7-layer TQN)"
        else:
            bundle, kind = build_small_bundle(tmp), "tests' small bundle (2-layer TQN)"
        result.update(bench(bundle, tmp / "data", args.repeats, args.warmup))
        result["bundle_kind"] = kind
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
