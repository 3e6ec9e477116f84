"""Overload benchmark: the service offered four times what it can score.

    python benchmarks/overload_bench.py --bundle model_store/bundle      # a full-size bundle
    python benchmarks/overload_bench.py                                  # builds a demo bundle first (~3 min)

1. starts ``python -m app.cli serve`` (one worker, its own temp data dir) on the bundle;
2. measures the saturation point: ``--concurrency`` closed loops of POST /diagnose (one real 10 s
   record each) for ``--saturate-s`` seconds -> ECGs/s;
3. offers ``--factor`` (4) times that rate for ``--seconds`` as an open loop (each request sent on
   its schedule, whether or not earlier ones have answered), while probing ``/healthz`` every
   50 ms on its own connection and sampling the server's RSS every 0.5 s.

Reported: answers by status (every 503 checked for ``Retry-After`` and an ``overloaded`` /
``deadline_exceeded`` code; anything else counts as an error), accepted requests' latency
p50/p99/max (bounded by ``ECGFM_REQUEST_DEADLINE_S``), ``/healthz`` p50/p99, RSS at start, peak
and end, and the server's shed counters. A table on stdout, everything in
``benchmarks/results/overload_bench.json``. A script, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from service_bench import (  # noqa: E402  (the service benchmark's helpers: records, ports, RSS)
    AUTH_HEADERS,
    FALLBACK_SAMPLES,
    ROOT,
    SAMPLES,
    build_bundle,
    free_port,
    log,
    make_bench_key,
    record_files,
    sample_records,
)

RESULTS = HERE / "results" / "overload_bench.json"


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def shed_counters(base: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        if family.name == "ecgfm_diagnose_shed":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["reason"]] = s.value
    return out


async def saturate(base: str, payloads: list[list[tuple[str, bytes]]], concurrency: int, seconds: float) -> float:
    """ECGs/s with ``concurrency`` closed loops (only 200s count)."""
    import httpx

    done = 0
    until = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient, k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < until:
            files = [("files", (n, d, "application/octet-stream")) for n, d in payloads[i % len(payloads)]]
            r = await client.post("/diagnose", files=files)
            if r.status_code == 200:
                done += 1
            i += concurrency

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=AUTH_HEADERS) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(client, k) for k in range(concurrency)))
        return done / (time.perf_counter() - t0)


async def offer(base: str, payloads: list[list[tuple[str, bytes]]], rate: float, seconds: float,
                pid: int) -> dict[str, Any]:
    """An open loop at ``rate`` requests/s for ``seconds``, with /healthz probes and RSS samples."""
    import httpx

    statuses: dict[str, int] = {}
    accepted: list[float] = []
    refused_ok = refused_bad = 0
    errors: list[str] = []
    health: list[float] = []
    rss: list[float] = []
    stop = asyncio.Event()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal refused_ok, refused_bad
        files = [("files", (n, d, "application/octet-stream")) for n, d in payloads[i % len(payloads)]]
        t = time.perf_counter()
        try:
            r = await client.post("/diagnose", files=files)
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
            return
        statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
        if r.status_code == 200:
            accepted.append(time.perf_counter() - t)
        elif r.status_code == 503:
            code = r.json().get("error", {}).get("code")
            if r.headers.get("retry-after") and code in ("overloaded", "deadline_exceeded"):
                refused_ok += 1
            else:
                refused_bad += 1

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            await c.get("/healthz")
            while not stop.is_set():
                t = time.perf_counter()
                r = await c.get("/healthz")
                if r.status_code == 200:
                    health.append(time.perf_counter() - t)
                await asyncio.sleep(0.05)

    async def sample() -> None:
        while not stop.is_set():
            value = rss_mb(pid)
            if value is not None:
                rss.append(value)
            await asyncio.sleep(0.5)

    n = int(rate * seconds)
    limits = httpx.Limits(max_connections=max(64, int(rate * 4)), max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=AUTH_HEADERS) as client:
        side = [asyncio.ensure_future(probe()), asyncio.ensure_future(sample())]
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(client, i)))
        await asyncio.gather(*tasks)
        stop.set()
        await asyncio.gather(*side)
    other = sum(v for k, v in statuses.items() if k not in ("200", "503"))
    return {
        "offered_rps": round(rate, 2), "requests": n, "statuses": statuses,
        "503_with_retry_after": refused_ok, "503_without": refused_bad, "other_status": other,
        "transport_errors": len(errors),
        "accepted_ms": {"p50": pct(accepted, 50), "p99": pct(accepted, 99),
                        "max": round(max(accepted) * 1000, 1) if accepted else None},
        "healthz_ms": {"p50": pct(health, 50), "p99": pct(health, 99), "probes": len(health)},
        "rss_mb": {"start": round(rss[0], 1) if rss else None, "peak": round(max(rss), 1) if rss else None,
                   "end": round(rss[-1], 1) if rss else None},
    }


def table(result: dict[str, Any]) -> str:
    o = result["overload"]
    rows = [
        ("saturation (ECG/s)", f"{result['saturation_ecg_per_s']:.1f}"),
        ("offered (req/s, 1 ECG each)",
         f"{o['offered_rps']:.1f} for {result['seconds']:.0f} s ({o['requests']} requests)"),
        ("answers", ", ".join(f"{k}: {v}" for k, v in sorted(o["statuses"].items()))),
        ("503 with Retry-After / without", f"{o['503_with_retry_after']} / {o['503_without']}"),
        ("other statuses / transport errors", f"{o['other_status']} / {o['transport_errors']}"),
        ("accepted p50 / p99 / max (ms)", f"{o['accepted_ms']['p50']} / {o['accepted_ms']['p99']} / "
                                          f"{o['accepted_ms']['max']}  (deadline {result['deadline_s'] * 1000:.0f})"),
        ("/healthz p50 / p99 (ms)", f"{o['healthz_ms']['p50']} / {o['healthz_ms']['p99']} "
                                    f"({o['healthz_ms']['probes']} probes)"),
        ("server RSS start / peak / end (MB)",
         f"{o['rss_mb']['start']} / {o['rss_mb']['peak']} / {o['rss_mb']['end']}"),
        ("shed counters", json.dumps(result["shed"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="full-size bundle (default: build a demo bundle in a temp dir)")
    p.add_argument("--samples", type=Path, default=SAMPLES if (SAMPLES / "index.csv").is_file() else FALLBACK_SAMPLES)
    p.add_argument("--factor", type=float, default=4.0, help="offered load / saturation throughput")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the overload is offered")
    p.add_argument("--saturate-s", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=16, help="closed loops for the saturation point")
    p.add_argument("--env", nargs="*", default=[], metavar="ECGFM_X=V", help="extra server settings")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import httpx

    with tempfile.TemporaryDirectory(prefix="ecgfm-overload-") as tmp:
        bundle = args.bundle or build_bundle(Path(tmp))
        payloads = [record_files(h) for h in sample_records(args.samples, 32)]
        if not payloads:
            log(f"no 10 s 12-lead records under {args.samples}")
            return 1
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        extra = dict(kv.split("=", 1) for kv in args.env)
        env = {**os.environ, "ECGFM_DATA_DIR": str(Path(tmp) / "data"), **extra}
        env.pop("ECGFM_DATABASE_URL", None)
        make_bench_key(env)
        with open(Path(tmp) / "server.log", "wb") as server_log:
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--bundle", str(bundle),
                                     "--host", "127.0.0.1", "--port", str(port)],
                                    cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log((Path(tmp) / "server.log").read_text()[-3000:])
                    return 1
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            settings = httpx.get(f"{base}/formats", timeout=10, headers=AUTH_HEADERS).json()
            # keep the records the service scores (a sample folder may hold some it refuses, e.g. short ones)
            payloads = [pl for pl in payloads if httpx.post(
                f"{base}/diagnose", files=[("files", (n, d, "application/octet-stream")) for n, d in pl],
                timeout=120, headers=AUTH_HEADERS).status_code == 200]
            if not payloads:
                log("the service scored none of the sample records")
                return 1
            log("measuring the saturation point")
            sat = asyncio.run(saturate(base, payloads, args.concurrency, args.saturate_s))
            log(f"saturation {sat:.1f} ECG/s; offering {args.factor:g}x for {args.seconds:g} s")
            over = asyncio.run(offer(base, payloads, sat * args.factor, args.seconds, proc.pid))
            shed = shed_counters(base)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    from app.ops.settings import Settings

    s = Settings(**{k[len("ECGFM_"):].lower(): v for k, v in extra.items() if k.startswith("ECGFM_")})
    result = {
        "bundle": str(bundle) if args.bundle else "demo bundle (full size, random weights)",
        "cpu_count": os.cpu_count(), "factor": args.factor, "seconds": args.seconds,
        "deadline_s": s.request_deadline_s, "max_queued_ecgs": s.max_queued_ecgs,
        "saturation_ecg_per_s": round(sat, 2), "overload": over, "shed": shed, "formats_limits": settings.get("limits"),
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
