"""Parsing uploads in the parse pool (app/ecg/parse_pool.py) against parsing in the server process.

    python benchmarks/parse_pool_bench.py                     # builds a demo bundle for part 2
    python benchmarks/parse_pool_bench.py --bundle DIR [--skip isolation]

1. **Cost per upload** (no server): ``read_uploaded_ecgs`` in-process vs through a started pool
   (median of ``--repeats``) for a normal upload (a 10 s 12-lead WFDB record, .hea + .mat), a large
   one (WFDB, 12 x 500 s at 2 kHz, 24 MB) and the slowest valid upload (a 50 MB CSV, 12 x 580 s at
   1 kHz); and the largest accepted recording (12 x 600 s x 10 kHz, 576 MB as float64; its 144 MB
   file is over the upload limit, so it is read from a folder). Also: the pool's start, a worker's
   address space at start (baseline) and its peak after the largest recording (``VmPeak``), which
   the default ``ECGFM_PARSE_MEMORY_MB`` and ``ECGFM_PARSE_TIMEOUT_S`` are set from.
2. **Isolation** (a real ``python -m app.cli serve`` on 127.0.0.1, ``ECGFM_AUTH=disabled``):
   latency of normal uploads (sequential) alone, then for ``--during-s`` while another client keeps
   sending the 50 MB CSV, with ``ECGFM_PARSE_WORKERS=0`` (in the server, on its one request thread)
   and ``=2``.
   Every loop is bounded in count and time.

Results: a table on stdout and ``benchmarks/results/parse_pool_bench.json``. Timings depend on the
machine; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "parse_pool_bench.json"
ECG_DIR = ROOT / "tests" / "data" / "ecg"
MiB = 1 << 20
CSV_ROWS, CSV_FS = 580_000, 1000.0  # 49.8 MB, 580 s: under the 50 MB upload and 600 s duration limits


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def normal_upload() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in (ECG_DIR / "E07500.hea", ECG_DIR / "E07500.mat")]


def folder_upload(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


# --- 1. cost per upload ---------------------------------------------------------------------


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 1)


def bench_costs(tmp: Path, repeats: int) -> dict[str, Any]:
    from tests.fixtures.large_records import write_csv, write_wfdb

    from app.ecg.parse_pool import ParsePool, ParsePoolOptions
    from app.ecg.readers import discover
    from app.ecg.readers._limits import MAX_SAMPLES_PER_LEAD
    from app.ecg.readers.base import ReadHints
    from app.ecg.uploads import UploadLimits
    from app.ops.settings import Settings
    from app.usecases.diagnose import read_uploaded_ecgs

    settings = Settings()
    limits = UploadLimits(max_upload_bytes=50 * MiB, max_unpacked_bytes=200 * MiB)
    large = folder_upload(Path(write_wfdb(tmp / "large", "large", 1_000_000, 2000.0)[0]).parent)
    csv = [("slow.csv", write_csv(tmp / "slow.csv", CSV_ROWS, CSV_FS).read_bytes())]
    largest = tmp / "largest"
    write_wfdb(largest, "largest", MAX_SAMPLES_PER_LEAD, 10_000.0)
    cases = [("normal: WFDB 12 x 10 s at 500 Hz", normal_upload(), ReadHints(), repeats),
             ("large: WFDB 12 x 500 s at 2 kHz (24 MB)", large, ReadHints(), max(3, repeats // 4)),
             ("slowest valid upload: CSV 12 x 580 s at 1 kHz (50 MB)", csv, ReadHints(sampling_rate=CSV_FS), 1)]
    out: dict[str, Any] = {"settings": {"parse_timeout_s": settings.parse_timeout_s,
                                        "parse_memory_mb": settings.parse_memory_mb, "parse_nice": settings.parse_nice},
                           "uploads": []}
    t = time.perf_counter()
    pool = ParsePool(ParsePoolOptions(workers=1, timeout_s=300)).start()
    out["pool_start_s"] = round(time.perf_counter() - t, 2)
    try:
        (pid,) = pool.worker_pids()
        out["worker_baseline_vsz_mb"] = round(pool.baseline_bytes() / MiB, 1)
        for name, files, hints, n in cases:
            log(f"cost: {name}")
            read_uploaded_ecgs(files, limits, hints, pool)  # warm both paths once
            row = {"upload": name, "bytes": sum(len(b) for _n, b in files), "repeats": n,
                   "in_process_ms": _median_ms(lambda f=files, h=hints: read_uploaded_ecgs(f, limits, h), n),
                   "pool_ms": _median_ms(lambda f=files, h=hints: read_uploaded_ecgs(f, limits, h, pool), n)}
            row["pool_overhead_ms"] = round(row["pool_ms"] - row["in_process_ms"], 1)
            out["uploads"].append(row)
        log("cost: the largest accepted recording")

        def in_process() -> None:
            for reader, path in discover(largest):
                reader.read(path, ReadHints())

        n = max(2, repeats // 8)
        out["largest"] = {"recording": "WFDB 12 x 600 s at 10 kHz (144 MB file, 576 MB as float64), from a folder",
                          "repeats": n, "in_process_ms": _median_ms(in_process, n),
                          "pool_ms": _median_ms(lambda: pool.read_records(largest, ReadHints()), n),
                          "worker_peak_vsz_mb": vm(pid, "VmPeak")}
        out["largest"]["worker_peak_above_baseline_mb"] = round(
            out["largest"]["worker_peak_vsz_mb"] - out["worker_baseline_vsz_mb"], 1)
    finally:
        pool.close()
    return out


# --- 2. isolation -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(client: Any, base: str, files: list[tuple[str, bytes]], params: dict[str, Any]) -> tuple[int, float]:
    t = time.perf_counter()
    resp = client.post(f"{base}/diagnose", files=[("files", (n, b, "application/octet-stream")) for n, b in files],
                       params=params, timeout=300)
    return resp.status_code, (time.perf_counter() - t) * 1000


def _series(client: Any, base: str, n: int, budget_s: float) -> dict[str, Any]:
    """Normal uploads one after another: ``n`` of them, or as many as ``budget_s`` allows."""
    latencies, statuses = [], []
    end = time.monotonic() + budget_s
    while len(latencies) < n and time.monotonic() < end:
        status, ms = _post(client, base, normal_upload(), {"top_k": 5})
        latencies.append(ms)
        statuses.append(status)
    return {"requests": len(latencies), "statuses": sorted(set(statuses)), "p50_ms": pct(latencies, 50),
            "p95_ms": pct(latencies, 95), "max_ms": round(max(latencies), 1) if latencies else float("nan"),
            "over_1s": sum(ms > 1000 for ms in latencies)}


def bench_isolation(bundle: Path, tmp: Path, workers: int, n: int, budget_s: float,
                    during_s: float) -> dict[str, Any]:
    """``n`` normal uploads alone; then, for ``during_s``, normal uploads while another client sends
    the 50 MB CSV again and again (at most 20 times)."""
    import httpx
    from tests.fixtures.large_records import write_csv

    csv_path = tmp / "slow-upload.csv"
    if not csv_path.exists():
        write_csv(csv_path, CSV_ROWS, CSV_FS)
    csv = [("slow.csv", csv_path.read_bytes())]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-data-") as data_dir:
        env = {**os.environ, "ECGFM_DATA_DIR": data_dir, "ECGFM_AUTH": "disabled",
               "ECGFM_PARSE_WORKERS": str(workers), "ECGFM_LOG_LEVEL": "WARNING"}
        env.pop("ECGFM_DATABASE_URL", None)
        cmd = [sys.executable, "-m", "app.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
        with open(Path(data_dir) / "server.log", "wb") as server_log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError((Path(data_dir) / "server.log").read_text()[-3000:])
            with httpx.Client() as client:
                _series(client, base, 3, 120)  # warm: label vectors, first batches
                alone = _series(client, base, n, budget_s)
                stop = threading.Event()
                slow: list[tuple[int, float]] = []

                def hostile() -> None:
                    with httpx.Client() as other:
                        while not stop.is_set() and len(slow) < 20:
                            slow.append(_post(other, base, csv, {"sampling_rate": CSV_FS}))

                thread = threading.Thread(target=hostile, daemon=True)
                thread.start()
                time.sleep(1.0)  # the CSV is being read
                during = _series(client, base, 10_000, during_s)
                stop.set()
                thread.join(300)
            return {"parse_workers": workers, "alone": alone, "while_slow_csv": during,
                    "slow_csv_requests": [{"status": s, "ms": round(ms, 1)} for s, ms in slow],
                    "server_peak_rss_mb": vm(proc.pid, "VmHWM")}
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def build_bundle(tmp: Path) -> Path:
    out = tmp / "bundle"
    log("building a demo bundle (ecgfm-ked demo-bundle; a few minutes)")
    subprocess.run([sys.executable, "-m", "app.cli", "demo-bundle", "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return out


# --- report -------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    lines = []
    costs = result.get("costs")
    if costs:
        lines += [f"pool start {costs['pool_start_s']} s; worker baseline {costs['worker_baseline_vsz_mb']} MB "
                  f"address space; budget {costs['settings']['parse_memory_mb']} MB, deadline "
                  f"{costs['settings']['parse_timeout_s']} s", "",
                  f"{'upload':58} {'in-process':>11} {'pool':>9} {'overhead':>9}"]
        for row in costs["uploads"]:
            lines.append(f"{row['upload']:58} {row['in_process_ms']:>8.1f} ms {row['pool_ms']:>6.1f} ms "
                         f"{row['pool_overhead_ms']:>6.1f} ms")
        big = costs["largest"]
        lines.append(f"{'largest accepted recording (576 MB as float64)':58} {big['in_process_ms']:>8.1f} ms "
                     f"{big['pool_ms']:>6.1f} ms {big['pool_ms'] - big['in_process_ms']:>6.1f} ms")
        lines.append(f"worker peak address space after it: {big['worker_peak_vsz_mb']} MB "
                     f"({big['worker_peak_above_baseline_mb']} MB above baseline)")
    for run in result.get("isolation", []):
        a, d = run["alone"], run["while_slow_csv"]
        slow = ", ".join(f"{s['status']} in {s['ms'] / 1000:.1f} s" for s in run["slow_csv_requests"])
        lines += ["", f"ECGFM_PARSE_WORKERS={run['parse_workers']}: normal upload p50/p95/max "
                  f"{a['p50_ms']}/{a['p95_ms']}/{a['max_ms']} ms alone ({a['requests']} requests), "
                  f"{d['p50_ms']}/{d['p95_ms']}/{d['max_ms']} ms while a client sends 50 MB CSVs "
                  f"({d['requests']} requests, {d['over_1s']} over 1 s, statuses {d['statuses']}); "
                  f"CSV answers: {slow}; "
                  f"server peak RSS {run['server_peak_rss_mb']} MB"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, help="model bundle for the isolation part (default: build a demo one)")
    parser.add_argument("--repeats", type=int, default=20, help="runs per upload for the medians (default 20)")
    parser.add_argument("--requests", type=int, default=20, help="normal uploads per isolation series (default 20)")
    parser.add_argument("--series-budget-s", type=float, default=120.0, help="longest the series alone may take")
    parser.add_argument("--during-s", type=float, default=45.0,
                        help="how long normal uploads are sent while the CSVs are (default 45 s: about 3 CSVs)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["costs", "isolation"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                          "load_avg_at_start": os.getloadavg()},
                              "command": " ".join(["python", "benchmarks/parse_pool_bench.py",
                                                   *(argv or sys.argv[1:])])}
    with tempfile.TemporaryDirectory(prefix="ecgfm-parse-bench-") as scratch:
        tmp = Path(scratch)
        if "costs" not in args.skip:
            result["costs"] = bench_costs(tmp, args.repeats)
        if "isolation" not in args.skip:
            bundle = args.bundle or build_bundle(tmp)
            result["isolation"] = []
            for workers in (0, 2):
                log(f"isolation: ECGFM_PARSE_WORKERS={workers}")
                result["isolation"].append(bench_isolation(bundle, tmp, workers, args.requests, args.series_budget_s,
                                                           args.during_s))
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
