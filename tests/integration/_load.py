"""Load generator, run as its own process so that it does not share a GIL with the probes:

    python -m tests.integration._load URL SECONDS CONCURRENCY [STOP_FILE]

``CONCURRENCY`` loops each POST E07500 to /diagnose back to back for ``SECONDS`` (or until
``STOP_FILE`` exists); prints one
JSON line: {"statuses": {code: n}, "done": [[start, end], ...] (time.time()), "errors": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from tests.integration._server import e07500_files


async def _loop(client: httpx.AsyncClient, until: float, files, out: dict, stop: Path | None) -> None:
    while time.time() < until and not (stop and stop.exists()):
        started = time.time()
        try:
            r = await client.post("/diagnose", files=files)
            out["statuses"][str(r.status_code)] = out["statuses"].get(str(r.status_code), 0) + 1
            out["done"].append([started, time.time()])
        except httpx.HTTPError as exc:
            out["errors"].append(repr(exc))


async def main(url: str, seconds: float, concurrency: int, stop: Path | None = None) -> dict:
    out: dict = {"statuses": {}, "done": [], "errors": []}
    files = e07500_files()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        until = time.time() + seconds
        await asyncio.gather(*(_loop(client, until, files, out, stop) for _ in range(concurrency)))
    return out


if __name__ == "__main__":
    stop_file = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    print(json.dumps(asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), stop_file))), flush=True)
