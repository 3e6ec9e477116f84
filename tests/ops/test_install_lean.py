"""The serving install: ``pip install .`` into a fresh virtualenv gives a service that serves
``POST /diagnose`` on CPU and has no torch at all (so the started server cannot have imported it).

Real throughout: a new venv, pip resolving the project's base dependencies from PyPI (through
pip's cache, so a second run takes seconds), the installed ``ecgfm-ked serve`` as a subprocess
started outside the repository, a real WFDB upload. Skipped, with the reason, where PyPI cannot
be reached. Takes a minute or two on a cold cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration._server import Server, e07500_files
from tests.ops.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
PYPI_PROBE = "https://pypi.org/simple/pip/"
# What only the [export] extra may bring: none of it may be in the serving install.
BUILD_ONLY = ("torch", "transformers", "onnx", "onnxscript", "sympy", "onnxruntime-gpu")

pytestmark = pytest.mark.timeout(900)


def _pypi_reachable() -> str | None:
    try:
        with urllib.request.urlopen(PYPI_PROBE, timeout=10) as response:
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        return f"PyPI not reachable ({exc}); the fresh-venv install test needs it"
    return None


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}"
    return proc


def _outside_env(**extra: str) -> dict[str, str]:
    """This process's environment without the repository on the path or any ECGFM_* setting."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ECGFM_") and k not in {"PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR", "VIRTUAL_ENV"}}
    env.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``pip install .`` (from a copy of the source: nothing written into the repo)."""
    reason = _pypi_reachable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("lean-install")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    env = _outside_env()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env, timeout=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)], cwd=root, env=env, timeout=800)
    return venv


def test_serving_install_has_onnxruntime_and_nothing_of_the_build(lean_venv: Path, tmp_path: Path) -> None:
    python = str(lean_venv / "bin" / "python")
    env = _outside_env()
    listed = _run([python, "-m", "pip", "list", "--format=freeze"], cwd=tmp_path, env=env, timeout=120).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}
    assert "onnxruntime" in names, listed
    assert not names & set(BUILD_ONLY), f"build-only packages in the serving install: {names & set(BUILD_ONLY)}"
    probe = subprocess.run([python, "-c", "import torch"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    # the installed package is the one that runs, not the repository's source tree
    where = _run([python, "-c", "import app; print(app.__file__)"], cwd=tmp_path, env=env, timeout=60).stdout
    assert Path(where.strip()).is_relative_to(lean_venv), where


@pytest.fixture()
def lean_server(lean_venv: Path, small_bundle: Path, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log_path = tmp_path / "server.log"
    cmd = [str(lean_venv / "bin" / "ecgfm-ked"), "serve", "--bundle", str(small_bundle), "--host", "127.0.0.1",
           "--port", str(port)]
    env = _outside_env(ECGFM_DATA_DIR=str(tmp_path / "data"), ECGFM_PROVIDER="cpu")
    # keys are required: the lean install's own command line makes one, as an operator would
    key = subprocess.run([str(lean_venv / "bin" / "ecgfm-ked"), "keys", "create", "--name", "lean-test", "--scope",
                          "diagnose"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.strip()
    with log_path.open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server("lean", port, proc, log_path, started)
    server.key = key  # type: ignore[attr-defined]
    try:
        server.wait_ready(timeout=180)
        yield server
    finally:
        try:
            server.stop(timeout=15)
        finally:
            server.kill()


def test_serving_install_serves_diagnose_on_cpu(lean_server: Server) -> None:
    with lean_server.client(timeout=120.0, headers={"Authorization": f"Bearer {lean_server.key}"}) as client:
        assert client.post("/diagnose", headers={"Authorization": ""}).status_code == 401
        response = client.post("/diagnose", params={"label_set": "cinc2021", "top_k": 3}, files=e07500_files())
        assert response.status_code == 200, response.text
        body = response.json()
    assert body["model"]["provider"] == "CPUExecutionProvider"
    (result,) = body["results"]
    assert result["source"]["format"] == "wfdb"
    diagnoses = result["diagnoses"]
    assert [d["rank"] for d in diagnoses] == [1, 2, 3]
    assert all(0.0 <= d["probability"] <= 1.0 for d in diagnoses)
    assert "Traceback" not in lean_server.log_tail(50000)
