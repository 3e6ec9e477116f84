"""A model switch under load on real ``ecgfm-ked serve`` processes sharing one database and one
model store: no request fails during the switch, answers carry the new version after it, the
other server (another worker or replica) follows within its poll interval plus its load time,
and the switched server's memory comes back down once the old version is released."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.models import bundle_version

from ._server import ServerFactory, e07500_files

POLL_S = 1.0
FOLLOW_BOUND_S = 30.0  # POLL_S + loading and warming up the small bundle on a busy 2-core machine


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def store(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    bundle_version(bundle_dir, root, "switch-v2")
    return root


def test_switch_under_load_loses_no_request_and_every_server_follows(servers: ServerFactory, store: Path,
                                                                     tmp_path: Path) -> None:
    env = {"ECGFM_MODEL_STORE_DIR": str(store), "ECGFM_MODEL_POLL_S": str(POLL_S), "ECGFM_PARSE_WORKERS": "0"}
    data = tmp_path / "shared-data"  # one SQLite database for both servers
    a = servers.start("switch-a", data_dir=data, env=env)
    b = servers.start("switch-b", data_dir=data, env=env)
    files = e07500_files()
    with a.client() as ca, b.client() as cb:
        first = ca.post("/diagnose", files=files).json()["model"]["version"]
        assert first != "switch-v2" and cb.post("/diagnose", files=files).json()["model"]["version"] == first
        before_mb = rss_mb(a.proc.pid)

        failures: list[str] = []
        versions: list[tuple[float, str]] = []
        stop = threading.Event()

        def load(url: str) -> None:
            import httpx

            with httpx.Client(base_url=url, timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/diagnose", files=files)
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions.append((time.monotonic(), r.json()["model"]["version"]))

        peak = [before_mb]

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(a.proc.pid))
                time.sleep(0.05)

        threads = [threading.Thread(target=load, args=(s.url,)) for s in (a, a, b)]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            switched_at = time.monotonic()
            answer = ca.post("/models/switch-v2/activate")
            assert answer.status_code == 200, answer.text
            assert answer.json()["previous"] == first
            after_switch = time.monotonic()
            deadline = after_switch + FOLLOW_BOUND_S
            while cb.get("/model").json()["model"]["version"] != "switch-v2":
                assert time.monotonic() < deadline, f"server b did not follow within {FOLLOW_BOUND_S} s:\n" \
                                                    f"{b.log_tail()}"
                time.sleep(0.2)
            followed_s = time.monotonic() - after_switch
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)

        assert failures == [], failures
        assert len(versions) > 5
        assert ca.post("/diagnose", files=files).json()["model"]["version"] == "switch-v2"
        assert cb.post("/diagnose", files=files).json()["model"]["version"] == "switch-v2"
        assert ca.get("/models").json()["recorded_active"] == "switch-v2"
        late = [v for t, v in versions if t > after_switch + followed_s + 0.5]
        assert late and set(late) == {"switch-v2"}, set(late)
        assert switched_at < after_switch

        # the old version is released once its last request has ended: memory back to one model's worth
        deadline = time.monotonic() + 30
        while {m["state"] for m in ca.get("/models").json()["models"] if m["version"] == first} != {"available"}:
            assert time.monotonic() < deadline, ca.get("/models").json()
            time.sleep(0.2)
        after_mb = rss_mb(a.proc.pid)
        print(f"server a RSS: {before_mb:.0f} MB before, {peak[0]:.0f} MB at most during, {after_mb:.0f} MB after "
              f"the switch; b followed in {followed_s:.1f} s; {len(versions)} requests, 0 failed")
        # the allocator keeps some freed pages; most of the second model's memory must be gone
        assert after_mb - before_mb < 0.5 * (peak[0] - before_mb) or after_mb < before_mb * 1.1, \
            (before_mb, peak[0], after_mb)
