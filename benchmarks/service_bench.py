"""End-to-end service benchmark against the ONNX Runtime floor and the eager PyTorch pipeline.

    python benchmarks/service_bench.py --quick                # short run, builds a demo bundle
    python benchmarks/service_bench.py --bundle DIR [--checkpoint CKPT]

Steps (one process, one report):

1. a FULL-SIZE bundle in the real format (``--bundle``, or ``ecgfm-ked demo-bundle`` into a temp dir);
2. ``python -m app.cli serve`` as a subprocess on 127.0.0.1 and a free port, with its own temp data
   dir; cold start = process start to the first 200 from /readyz;
3. POST /diagnose (multipart .hea + .mat of real 10 s records, built-in ``default`` set, 71 labels) at
   concurrency 1, 4 and 16, a bounded number of requests each: throughput, latency p50/p95/p99, the
   stage breakdown from ``timings_ms``, the server's peak RSS (/proc VmHWM); the server is stopped;
4. the floor: raw ONNX Runtime on the bundle's ecg_tqn graph at batch 1 and 16, and the project's
   PyTorch modules in eager mode (from ``--checkpoint`` or a demo checkpoint built here);
5. ONNX Runtime tuning (threads, execution mode, IOBinding) and reduced-precision variants
   (``app.build.precision``) with their fidelity against fp32 on the sample records.

Results: a table on stdout and ``benchmarks/results/service_bench.json``. Timings depend on the
machine; on a shared machine they are noisy (run it on a quiet one for numbers to quote).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import socket
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
SAMPLES = ROOT.parent / "shared" / "ecg-samples"
FALLBACK_SAMPLES = ROOT / "tests" / "data" / "ecg"
RESULTS = ROOT / "benchmarks" / "results" / "service_bench.json"
LABEL_SET = "default"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- inputs ------------------------------------------------------------------------------


def sample_records(samples: Path, limit: int) -> list[Path]:
    """10 s, 12-lead WFDB records (header paths), distinct, from index.csv or the folder."""
    index = samples / "index.csv"
    if index.is_file():
        rows = [r for r in csv.DictReader(index.open()) if r.get("n_leads") == "12"
                and abs(float(r.get("duration_s") or 0) - 10.0) < 0.01 and not r.get("duplicate_of")]
        paths = [samples / (r["record"] + ".hea") for r in rows]
    else:
        paths = sorted(samples.rglob("*.hea"))
    return [p for p in paths if p.is_file()][:limit]


def record_files(hea: Path) -> list[tuple[str, bytes]]:
    files = [(hea.name, hea.read_bytes())]
    for ext in (".mat", ".dat"):
        if hea.with_suffix(ext).is_file():
            files.append((hea.with_suffix(ext).name, hea.with_suffix(ext).read_bytes()))
    return files


def record_windows(paths: list[Path]) -> np.ndarray:
    from app.ecg.preprocess import preprocess
    from app.ecg.readers import read_any

    out = []
    for p in paths:
        try:
            out.append(preprocess(read_any(p)).windows[:1])
        except Exception as exc:  # noqa: BLE001 - a record the reader refuses is skipped, not fatal
            log(f"skipping {p.name}: {exc}")
    return np.concatenate(out).astype(np.float32)


def label_texts(set_name: str = LABEL_SET) -> list[str]:
    from app.knowledge.builtin import load_builtin_sets

    (s,) = [s for s in load_builtin_sets() if s.name == set_name]
    return [l.name if l.encode_text == "name" else l.description for l in s.labels]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --- the service -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> dict[str, float]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"peak_rss_mb": round(out.get("VmHWM", float("nan")), 1), "rss_mb": round(out.get("VmRSS", float("nan")), 1)}


async def drive(base: str, records: list[list[tuple[str, bytes]]], concurrency: int, n_requests: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors: list[str] = []
    counter = iter(range(n_requests))

    # Multipart bodies are encoded once, up front: the load generator shares the 2 cores with
    # the server, so its own per-request work is kept to sending bytes and reading the answer.
    bodies = []
    for rec in records:
        req = httpx.Request("POST", f"{base}/diagnose",
                            files=[("files", (name, data, "application/octet-stream")) for name, data in rec])
        bodies.append((req.read(), req.headers["content-type"]))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            body, content_type = bodies[i % len(bodies)]
            t = time.perf_counter()
            r = await client.post(f"{base}/diagnose", params={"label_set": LABEL_SET, "top_k": 5}, content=body,
                                  headers={"content-type": content_type})
            latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                errors.append(f"{r.status_code}: {r.text[:200]}")
                continue
            for k, v in r.json().get("timings_ms", {}).items():
                stages.setdefault(k, []).append(float(v))

    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers=AUTH_HEADERS) as client:
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall, client_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    ok = n_requests - len(errors)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": round(wall, 3),
        "client_cpu_s": round(client_cpu, 3),  # the load generator's own CPU on the shared cores
        "ecgs_per_s": round(ok / wall, 3),
        "latency_ms": {"p50": round(pct(latencies, 50), 1), "p95": round(pct(latencies, 95), 1),
                       "p99": round(pct(latencies, 99), 1), "mean": round(statistics.fmean(latencies), 1)},
        "stages_ms_mean": {k: round(statistics.fmean(v), 2) for k, v in stages.items()},
        "stages_ms_p50": {k: round(pct(v, 50), 2) for k, v in stages.items()},
    }


def requests_for(concurrency: int, fixed: int | None, quick: bool) -> int:
    """Enough requests that the ramp-up and the last partial round do not dominate."""
    if fixed:
        return fixed
    return max(16, 4 * concurrency) if quick else max(64, 16 * concurrency)


def scrape_model_calls(base: str) -> dict[str, float]:
    """The server's model-call counters (batch size sum/count, calls by cores) from /metrics."""
    import httpx

    wanted = ("ecgfm_inference_batch_size_sum", "ecgfm_inference_batch_size_count", "ecgfm_inference_calls_total")
    out: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(wanted):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def calls_between(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = d.get("ecgfm_inference_batch_size_count", 0.0)
    return {
        "model_calls": int(count),
        "mean_batch": round(d.get("ecgfm_inference_batch_size_sum", 0.0) / count, 2) if count else None,
        "calls_all_cores": int(d.get('ecgfm_inference_calls_total{cores="all"}', 0.0)),
        "calls_shared": int(d.get('ecgfm_inference_calls_total{cores="shared"}', 0.0)),
    }


# The server requires API keys (the default): a diagnose-scope key made in its database before it starts,
# sent by every client of the benchmarks (so the measured path includes the key check, as in production).
AUTH_HEADERS: dict[str, str] = {}


def make_bench_key(env: dict[str, str]) -> None:
    secret = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--name", f"bench-{os.getpid()}",
                             "--scope", "diagnose"], cwd=ROOT, env=env, check=True, capture_output=True,
                            text=True).stdout.strip()
    AUTH_HEADERS["Authorization"] = f"Bearer {secret}"


def bench_service(bundle: Path, records: list[Path], levels: list[int], n_requests: int | None, quick: bool, rounds: int,
                  warmup: int,
                  env_extra: dict[str, str], ready_timeout: float) -> dict[str, Any]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    payloads = [record_files(p) for p in records]
    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-data-") as data_dir:
        env = {**os.environ, "ECGFM_DATA_DIR": data_dir, "ECGFM_HOST": "127.0.0.1", "ECGFM_PORT": str(port),
               "ECGFM_WORKERS": "1", **env_extra}
        env.pop("ECGFM_DATABASE_URL", None)
        make_bench_key(env)
        cmd = [sys.executable, "-m", "app.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
        server_log = Path(data_dir) / "server.log"
        t0 = time.perf_counter()
        with open(server_log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            cold = None
            deadline = t0 + ready_timeout
            while time.perf_counter() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        cold = time.perf_counter() - t0
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            if cold is None:
                raise RuntimeError(f"service not ready (exit {proc.poll()}); log tail:\n"
                                   + server_log.read_text(errors="replace")[-2000:])
            log(f"service ready in {cold:.1f} s (pid {proc.pid}, port {port})")
            info = httpx.get(f"{base}/model", timeout=10, headers=AUTH_HEADERS).json().get("model", {})
            t = time.perf_counter()
            first = asyncio.run(drive(base, payloads, 1, 1))  # embeds the 71 label texts (cache miss)
            first_ms = (time.perf_counter() - t) * 1000
            if warmup:
                asyncio.run(drive(base, payloads, 1, warmup))
            levels_out = []
            for c in levels:
                # several rounds per level, the median one (by throughput) reported: on a shared
                # 2-core machine a single round can be off by 10 %
                runs = []
                for _ in range(rounds):
                    before = scrape_model_calls(base)
                    r = asyncio.run(drive(base, payloads, c, requests_for(c, n_requests, quick)))
                    r["model_calls"] = calls_between(before, scrape_model_calls(base))
                    runs.append(r)
                r = sorted(runs, key=lambda x: x["ecgs_per_s"])[len(runs) // 2]
                r["rounds_ecgs_per_s"] = [x["ecgs_per_s"] for x in runs]
                r["rounds_p50_ms"] = [x["latency_ms"]["p50"] for x in runs]
                r.update(peak_rss_mb(proc.pid))
                log(f"concurrency {c}: {r['ecgs_per_s']} ECG/s (rounds {r['rounds_ecgs_per_s']}), p50 "
                    f"{r['latency_ms']['p50']} ms, p99 {r['latency_ms']['p99']} ms, errors {r['errors']}")
                levels_out.append(r)
            mem = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    return {"cold_start_s": round(cold, 2), "model": info, "first_request_ms": round(first_ms, 1),
            "first_request_stages_ms": first["stages_ms_mean"], "levels": levels_out, **mem,
            "records": len(records), "label_set": LABEL_SET}


# --- the floors --------------------------------------------------------------------------


def time_fn(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(samples), 2), "min_ms": round(min(samples), 2)}


def time_abba(a, b, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """``time_fn`` for two functions in the order A B B A, the faster block of each kept: drifts in
    machine speed hit both alike. (Finer interleaving measured worse for both: one session's
    ONNX Runtime threads still spin for a while after its run and take a core from the other.)"""
    a1, b1 = time_fn(a, repeats), time_fn(b, repeats)
    b2, a2 = time_fn(b, repeats), time_fn(a, repeats)
    return min(a1, a2, key=lambda r: r["median_ms"]), min(b1, b2, key=lambda r: r["median_ms"])


def tile(windows: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([windows] * int(np.ceil(n / len(windows))))[:n])


def bench_onnx_floor(bundle: Path, windows: np.ndarray, vectors: np.ndarray, repeats: int) -> dict[str, Any]:
    """Raw ONNX Runtime on the graph the service scores with (``label_state`` once, then
    ``ecg_tqn_prepared``): batch 1 and 16 on every core (the issue's floor), and 16 ECGs as two
    concurrent batches of 8 on the one-thread-per-lane session the service uses under load (its
    best raw configuration on 2 cores, so the stricter floor). Also the reference ``ecg_tqn``
    graph at batch 1 and 16: what preparing the label state saves."""
    from concurrent.futures import ThreadPoolExecutor

    import onnxruntime as ort

    from app.serving import bundle as B
    from app.serving.runtime import RuntimeOptions, load_runtime

    rt = load_runtime(bundle, RuntimeOptions(provider="cpu"))
    labels = rt.prepare_labels(vectors)
    out: dict[str, Any] = {"lanes": rt.lanes, "graph": rt._scoring_name}
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    reference = ort.InferenceSession(str(bundle / B.ECG_TQN), so, providers=["CPUExecutionProvider"])
    for b in (1, 16):
        x = tile(windows, b)
        r, ref = time_abba(lambda x=x: rt.score_prepared(x, labels),
                           lambda x=x: reference.run(None, {"ecg": x, "label_features": vectors}), repeats)
        r["ecgs_per_s"] = round(b / (r["median_ms"] / 1000), 2)
        out[f"batch{b}"] = r
        ref["ecgs_per_s"] = round(b / (ref["median_ms"] / 1000), 2)
        out[f"batch{b}_ecg_tqn_graph"] = ref
        log(f"ONNX floor batch {b}: {r['median_ms']} ms ({r['ecgs_per_s']} ECG/s); ecg_tqn.onnx {ref['median_ms']} ms")
    if rt.lanes > 1:
        per_lane = 16 // rt.lanes
        x = tile(windows, per_lane)
        with ThreadPoolExecutor(rt.lanes) as pool:
            def lanes_run() -> None:
                list(pool.map(lambda _i: rt.score_prepared(x, labels, alone=False), range(rt.lanes)))

            r = time_fn(lanes_run, repeats)
        r["ecgs_per_s"] = round(per_lane * rt.lanes / (r["median_ms"] / 1000), 2)
        r["layout"] = f"{rt.lanes} concurrent batches of {per_lane}, one lane each"
        out["batch16_lanes"] = r
        log(f"ONNX floor {r['layout']}: {r['median_ms']} ms ({r['ecgs_per_s']} ECG/s)")
    return out


def bench_eager(checkpoint: Path | None, windows: np.ndarray, vectors: np.ndarray, repeats: int) -> dict[str, Any]:
    import torch

    from app.build import demo
    from app.build.checkpoint import build_ecg_encoder, build_tqn, read_checkpoint
    from app.build.export import EcgTqn

    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-ckpt-") as tmp:
        source = "given checkpoint"
        if checkpoint is None:
            text_dir = demo.write_text_model_dir(Path(tmp) / "text", dict(demo.SMALL_BERT_CONFIG),
                                                 demo.train_demo_vocab([], vocab_size=500))
            checkpoint = demo.build_demo_checkpoint(Path(tmp) / "demo.pt", text_dir)
            source = "demo checkpoint (full-size ECG encoder, 7-layer TQN, random weights)"
        ckpt = read_checkpoint(checkpoint)
        model = EcgTqn(build_ecg_encoder(ckpt), build_tqn(ckpt)).eval()
    lf = torch.from_numpy(vectors)
    out: dict[str, Any] = {"source": source, "torch": torch.__version__, "threads": torch.get_num_threads()}
    for b in (1, 16):
        x = torch.from_numpy(tile(windows, b))

        def run(x=x):
            with torch.inference_mode():
                model(x, lf)

        r = time_fn(run, repeats)
        r["ecgs_per_s"] = round(b / (r["median_ms"] / 1000), 2)
        out[f"batch{b}"] = r
        log(f"eager PyTorch batch {b}: {r['median_ms']} ms ({r['ecgs_per_s']} ECG/s)")
    return out


def best_floor(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration, the fastest of several floor measurements (all kept under ``runs``)."""
    best: dict[str, Any] = {"runs": measured}
    for key, value in measured[0].items():
        if isinstance(value, dict) and "median_ms" in value:
            best[key] = min((m[key] for m in measured), key=lambda v: v["median_ms"])
        else:
            best[key] = value
    return best


def floor_in_fresh_process(kind: str, bundle: Path, checkpoint: Path | None, windows: np.ndarray,
                           vectors: np.ndarray, repeats: int) -> dict[str, Any]:
    """Run a floor (``onnx`` or ``eager``) in its own Python process, as the service runs in its own.

    Measured in this long-lived process (after building inputs, driving the service, ...) the
    same ONNX Runtime calls ran 10-25 % slower than in a fresh one on the reference machine,
    which would flatter the service: a fresh process is the fair comparison.
    """
    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-floor-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, windows=windows, vectors=vectors)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-floor", kind, "--inputs", str(inputs),
               "--bundle", str(bundle), "--repeats", str(repeats)]
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout)


def bench_tuning(bundle: Path, windows: np.ndarray, vectors: np.ndarray, repeats: int) -> dict[str, Any]:
    """intra-op 1 vs 2 threads, sequential vs parallel execution, plain run vs IOBinding."""
    import onnxruntime as ort

    path = bundle / "ecg_tqn.onnx"

    def session(intra: int, parallel: bool):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = intra
        so.inter_op_num_threads = 2 if parallel else 1
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    configs = {"intra1_seq": (1, False), "intra2_seq": (2, False), "intra0_seq(default)": (0, False),
               "intra1_parallel2": (1, True)}
    sessions = {k: session(*v) for k, v in configs.items()}
    out: dict[str, Any] = {"cores": os.cpu_count(), "configs": {}}
    for b in (1, 16):
        x = tile(windows, b)
        feeds = {"ecg": x, "label_features": vectors}
        for s in sessions.values():
            s.run(None, feeds)
        samples: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(repeats):  # interleaved so that machine noise hits every configuration alike
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds)
                samples[k].append((time.perf_counter() - t) * 1000)
        for k, v in samples.items():
            out["configs"].setdefault(k, {})[f"batch{b}_ms"] = round(statistics.median(v), 2)
        # IOBinding: inputs as OrtValues bound once, outputs left to ORT (allocated on CPU)
        s = sessions["intra0_seq(default)"]
        binding = s.io_binding()
        binding.bind_ortvalue_input("ecg", ort.OrtValue.ortvalue_from_numpy(x))
        binding.bind_ortvalue_input("label_features", ort.OrtValue.ortvalue_from_numpy(vectors))
        for o in s.get_outputs():
            binding.bind_output(o.name, "cpu")

        def bound():
            s.run_with_iobinding(binding)
            binding.copy_outputs_to_cpu()

        plain = time_fn(lambda: s.run(None, feeds), repeats)
        iob = time_fn(bound, repeats)
        out.setdefault("iobinding", {})[f"batch{b}"] = {"run_ms": plain["median_ms"], "iobinding_ms": iob["median_ms"]}
        log(f"tuning batch {b}: " + ", ".join(f"{k} {out['configs'][k][f'batch{b}_ms']} ms" for k in sessions)
            + f"; run {plain['median_ms']} ms vs IOBinding {iob['median_ms']} ms")
    return out


def bench_precision(bundle: Path, windows: np.ndarray, vectors: np.ndarray, repeats: int, quick: bool,
                    sensitivity: bool) -> dict[str, Any]:
    from app.build import precision as P

    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-precision-") as tmp:
        cands = {k: P.INT8_CANDIDATES[k] for k in ("int8-all", "int8-keep-head", "int8-keep-head-last")} if quick else None
        result = P.study(bundle, windows, vectors, candidates=cands, qdq_conv=True, fp16=not quick,
                         sensitivity=sensitivity, repeats=repeats, work_dir=Path(tmp), log=log)
    result["reports"] = [r.as_dict() for r in result["reports"]]
    result.pop("work_dir")
    best = [r for r in result["reports"] if r["accepted"] and r["name"].startswith("int8")]
    result["meets_bounds"] = [r["name"] for r in best]
    result["note"] = ("measured on a random-weight demo model: its top labels sit on a plateau (fp32 3rd vs 4th "
                      "probability often < 1e-4 apart), so top-3 agreement is fragile there; the trained model may "
                      "behave differently. Re-run `ecgfm-ked quantize` on the real bundle.")
    return result


# --- report ------------------------------------------------------------------------------


def build_bundle(tmp: Path) -> Path:
    out = tmp / "bundle"
    log("building a full-size demo bundle (ecgfm-ked demo-bundle; a few minutes)")
    subprocess.run([sys.executable, "-m", "app.cli", "demo-bundle", "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return out


def table(result: dict[str, Any]) -> str:
    lines = []
    svc = result.get("service")
    if svc:
        lines.append(f"cold start {svc['cold_start_s']} s; first request (embeds 71 labels) {svc['first_request_ms']} ms; "
                     f"server peak RSS {svc['peak_rss_mb']} MB")
        lines.append(f"{'conc':>4} {'ECG/s':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'parse':>7} {'prep':>7} {'queue':>7} "
                     f"{'infer':>7}  (ms)  {'batch':>5} {'all/shared calls':>16}")
        for r in svc["levels"]:
            s, lat, calls = r["stages_ms_mean"], r["latency_ms"], r.get("model_calls", {})
            lines.append(f"{r['concurrency']:>4} {r['ecgs_per_s']:>7} {lat['p50']:>8} {lat['p95']:>8} {lat['p99']:>8} "
                         f"{s.get('parse', 0):>7} {s.get('preprocess', 0):>7} {s.get('queue', 0):>7} {s.get('inference', 0):>7}"
                         f"       {calls.get('mean_batch')!s:>5} {calls.get('calls_all_cores', '')!s:>8}/{calls.get('calls_shared', '')!s:<7}")
    for key, title in (("onnx_floor", "ONNX Runtime floor"), ("eager", "eager PyTorch")):
        if key in result:
            f = result[key]
            lines.append(f"{title:<20} batch1 {f['batch1']['median_ms']} ms ({f['batch1']['ecgs_per_s']} ECG/s), "
                         f"batch16 {f['batch16']['median_ms']} ms ({f['batch16']['ecgs_per_s']} ECG/s)")
            if "batch16_lanes" in f:
                lanes = f["batch16_lanes"]
                lines.append(f"{'':<20} {lanes['layout']}: {lanes['median_ms']} ms ({lanes['ecgs_per_s']} ECG/s)")
            if "batch16_ecg_tqn_graph" in f:
                lines.append(f"{'':<20} reference ecg_tqn.onnx: batch1 {f['batch1_ecg_tqn_graph']['median_ms']} ms, "
                             f"batch16 {f['batch16_ecg_tqn_graph']['median_ms']} ms "
                             f"({f['batch16_ecg_tqn_graph']['ecgs_per_s']} ECG/s)")
    for k, v in result.get("ratios", {}).items():
        lines.append(f"{k}: {v}")
    if "tuning" in result:
        for k, v in result["tuning"]["configs"].items():
            lines.append(f"ORT {k:<22} batch1 {v['batch1_ms']} ms, batch16 {v['batch16_ms']} ms")
        for b, v in result["tuning"]["iobinding"].items():
            lines.append(f"IOBinding {b}: run {v['run_ms']} ms vs bound {v['iobinding_ms']} ms")
    if "precision" in result:
        lines.append(f"{'variant':<24} {'speed-up':>8} {'max|d|':>8} {'top-3':>6} {'top-3±.02':>9}  verdict")
        for r in result["precision"]["reports"]:
            f = r["fidelity"] or {}
            lines.append(f"{r['name']:<24} {str(r['speedup']):>8} {f.get('max_abs_diff', float('nan')):>8.4f} "
                         f"{f.get('top3_agreement', float('nan')):>6.3f} {f.get('top3_agreement_within_0_02', float('nan')):>9.3f}  "
                         + ("meets bounds" if r["accepted"] else "; ".join(r["violations"]) or r["note"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="full-size bundle (default: build a demo bundle in a temp dir)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint for the eager PyTorch floor (default: a demo one)")
    p.add_argument("--samples", type=Path, default=SAMPLES if (SAMPLES / "index.csv").is_file() else FALLBACK_SAMPLES)
    p.add_argument("--quick", action="store_true", help="short run: fewer requests and repeats, fewer variants")
    p.add_argument("--requests", type=int,
                   help="requests per concurrency level (default max(64, 16 x concurrency); quick max(16, 4 x concurrency))")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=3, help="rounds per concurrency level; the median one is reported")
    p.add_argument("--repeats", type=int, help="timing repeats for the floors (default 10, quick 3)")
    p.add_argument("--fidelity-records", type=int, default=48, help="records for the precision fidelity (>= 32)")
    p.add_argument("--sensitivity", action="store_true", help="also quantise each decoder layer alone (slow)")
    p.add_argument("--skip", nargs="*", default=[], choices=["service", "onnx", "eager", "tuning", "precision"])
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="ECGFM_PRECISION for the server")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--measure-floor", choices=["onnx", "eager"], help=argparse.SUPPRESS)  # internal: one floor,
    p.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)  # in a fresh process, JSON on stdout
    args = p.parse_args(argv)
    if args.measure_floor:
        data = np.load(args.inputs)
        windows, vectors, repeats = data["windows"], data["vectors"], args.repeats or 10
        if args.measure_floor == "onnx":
            floor = bench_onnx_floor(args.bundle, windows, vectors, repeats)
        else:
            floor = bench_eager(args.checkpoint, windows, vectors, repeats)
        print(json.dumps(floor))
        return 0
    n_requests = args.requests
    repeats = args.repeats or (3 if args.quick else 10)

    with tempfile.TemporaryDirectory(prefix="ecgfm-bench-") as tmp:
        bundle = args.bundle or build_bundle(Path(tmp))
        records = sample_records(args.samples, max(args.fidelity_records, 32))
        if not records:
            log(f"no 10 s 12-lead records under {args.samples}")
            return 2
        result: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mode": "quick" if args.quick else "full",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "bundle": {"path": str(bundle), "built_here": args.bundle is None},
            "settings": {"requests_per_level": {c: requests_for(c, n_requests, args.quick) for c in args.concurrency},
                         "rounds": args.rounds, "repeats": repeats, "samples": str(args.samples)},
            "caveat": "timings on a shared machine are noisy; quote numbers from a run on a quiet machine",
        }
        import onnxruntime

        result["machine"]["onnxruntime"] = onnxruntime.__version__
        windows = record_windows(records[: args.fidelity_records])
        from app.serving.runtime import RuntimeOptions, load_runtime

        vectors = load_runtime(bundle, RuntimeOptions(provider="cpu")).embed_texts(label_texts())
        result["inputs"] = {"windows": int(len(windows)), "labels": int(len(vectors))}
        # The floors are measured twice, in fresh processes before and after the service, and the
        # faster of the two is kept: on the reference VM the same 2-thread ONNX Runtime call varied
        # by up to 20 % from one minute to the next, and the best raw figure is the strict target.
        floors: dict[str, list[dict[str, Any]]] = {"onnx": [], "eager": []}

        def measure_floors() -> None:
            for kind in floors:
                if kind not in args.skip:
                    floors[kind].append(floor_in_fresh_process(kind, bundle, args.checkpoint if kind == "eager" else None,
                                                               windows, vectors, repeats))

        measure_floors()
        if "service" not in args.skip:
            result["service"] = bench_service(bundle, records, args.concurrency, n_requests, args.quick, args.rounds,
                                              warmup=2 if args.quick else 8,
                                              env_extra={"ECGFM_PRECISION": args.precision},
                                              ready_timeout=args.ready_timeout)
            measure_floors()
        for kind, key in (("onnx", "onnx_floor"), ("eager", "eager")):
            if floors[kind]:
                result[key] = best_floor(floors[kind])
        if "service" in result:
            best = max(result["service"]["levels"], key=lambda r: r["ecgs_per_s"])
            ratios = {"service_best_ecgs_per_s": best["ecgs_per_s"], "at_concurrency": best["concurrency"]}
            if "onnx_floor" in result:
                floor = result["onnx_floor"]
                ratios["service_over_onnx_floor_b16"] = round(best["ecgs_per_s"] / floor["batch16"]["ecgs_per_s"], 3)
                best_raw = max(floor["batch16"]["ecgs_per_s"], floor.get("batch16_lanes", {}).get("ecgs_per_s", 0))
                ratios["service_over_best_raw_onnx"] = round(best["ecgs_per_s"] / best_raw, 3)
                single = next((r for r in result["service"]["levels"] if r["concurrency"] == 1), None)
                if single is not None:  # target: p50 at concurrency 1 <= raw batch-1 time + 15 ms
                    ratios["c1_p50_over_onnx_b1_ms"] = round(single["latency_ms"]["p50"] - floor["batch1"]["median_ms"], 1)
                    # the same against the model time measured inside the server (the inference stage):
                    # on a VM whose 2-thread speed differs between processes, this is the service's own share
                    ratios["c1_p50_over_own_inference_p50_ms"] = round(
                        single["latency_ms"]["p50"] - single["stages_ms_p50"]["inference"], 1)
            if "eager" in result:
                ratios["service_over_eager_b16"] = round(best["ecgs_per_s"] / result["eager"]["batch16"]["ecgs_per_s"], 3)
            result["ratios"] = ratios
        if "tuning" not in args.skip:
            result["tuning"] = bench_tuning(bundle, windows, vectors, repeats)
        if "precision" not in args.skip:
            result["precision"] = bench_precision(bundle, windows, vectors, repeats, args.quick, args.sensitivity)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(table(result))
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
