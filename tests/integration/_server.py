"""Run ``ecgfm-ked serve`` as a real uvicorn subprocess on 127.0.0.1 and stop it.

Nothing here is mocked: the process is ``python -m app.cli serve`` with its settings in
ECGFM_* environment variables, exactly as an operator would start it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
ECG_DIR = REPO / "tests" / "data" / "ecg"
READY_TIMEOUT_S = 90.0  # a loaded 2-core machine; cold start is a few seconds when idle
STOP_TIMEOUT_S = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any ECGFM_* / Prometheus settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ECGFM_") and k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["ECGFM_PROVIDER"] = "cpu"  # no CUDA probing: deterministic on machines with or without a GPU
    env.update(extra)
    return env


def e07500_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    """The real WFDB record E07500 (500 Hz, 10 s) as multipart ``files`` fields."""
    return [
        ("files", (name, (ECG_DIR / name).read_bytes(), "application/octet-stream"))
        for name in ("E07500.hea", "E07500.mat")
    ]


@dataclass
class Server:
    """One ``ecgfm-ked serve`` process."""

    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    started_at: float  # time.perf_counter() just before Popen
    cold_start_s: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, **kwargs)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll /readyz until 200; returns (and stores) seconds from process start to ready."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.url, timeout=2.0) as c:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"server {self.name} exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
                try:
                    r = c.get("/readyz")
                    if r.status_code == 200:
                        self.cold_start_s = time.perf_counter() - self.started_at
                        return self.cold_start_s
                    last = f"{r.status_code} {r.text[:300]}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"server {self.name} not ready after {timeout} s (last: {last}):\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait for exit; returns the exit status (kills the group if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"server {self.name} ignored SIGTERM for {timeout} s:\n{self.log_tail()}")
        return self.proc.returncode

    def assert_clean_exit(self) -> None:
        """Stopped by SIGTERM after a graceful shutdown: the lifespan's shutdown ran and
        uvicorn reported the process finished. uvicorn (>= 0.29) re-raises the SIGTERM it
        caught once shutdown is done, so the status is -SIGTERM (143 in a shell) or 0."""
        rc = self.stop()
        log = self.log_tail(50000)
        assert rc in (0, -signal.SIGTERM), f"exit status {rc}:\n{log[-4000:]}"
        assert "Application shutdown complete" in log, log[-4000:]
        assert "Finished server process" in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]

    def kill(self) -> None:
        """Last resort (finalizers): kill this server's own process group."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


class ServerFactory:
    """Starts servers; ``close()`` stops every one it started (fixture finalizer)."""

    def __init__(self, bundle: Path, workdir: Path) -> None:
        self.bundle = bundle
        self.workdir = workdir
        self.servers: list[Server] = []

    def start(self, name: str, *, data_dir: Path | None = None, database_url: str | None = None,
              workers: int = 1, env: dict[str, str] | None = None, wait: bool = True) -> Server:
        from tests.ops.conftest import free_port

        port = free_port()
        # keys off unless the test turns them on (ECGFM_AUTH=required): these servers test other things;
        # tests/api/test_auth.py checks keys on a real server too
        extra = {"ECGFM_AUTH": "disabled", **(env or {})}
        extra["ECGFM_DATA_DIR"] = str(data_dir or (self.workdir / f"data-{name}"))
        if database_url:
            extra["ECGFM_DATABASE_URL"] = database_url
        cmd = [sys.executable, "-m", "app.cli", "serve", "--bundle", str(self.bundle), "--host", "127.0.0.1",
               "--port", str(port)]
        if workers != 1:
            cmd += ["--workers", str(workers)]
        log_path = self.workdir / f"server-{name}-{len(self.servers)}.log"
        with log_path.open("wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(**extra), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        server = Server(name, port, proc, log_path, started)
        self.servers.append(server)
        if wait:
            server.wait_ready()
        return server

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop(timeout=15)
            except AssertionError:
                pass
            finally:
                server.kill()
