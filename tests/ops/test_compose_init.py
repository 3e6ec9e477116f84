"""The init path of docker-compose.yml, run locally: the `ecgfm-ked-init` service's command and
environment, with its container paths (/models, /input, /cache) mapped to temporary folders and
`ecgfm-init-bundle` to scripts/init-bundle.sh (what docker/Dockerfile.export installs under that
name). The bundles are built by the real `ecgfm-ked` CLI of this venv (the [export] install the
init image has). "No network" is real too: the download URLs point at a closed port on 127.0.0.1,
so `fetch` fails the way it does offline. No Docker engine runs here; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.models import CheckpointFiles
from tests.ops.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPO / "scripts" / "init-bundle.sh"
SERVICE = "ecgfm-ked-init"

pytestmark = pytest.mark.timeout(1200)


def compose_init() -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return services[SERVICE]


def test_export_image_installs_the_script_under_the_command_name() -> None:
    text = (REPO / "docker" / "Dockerfile.export").read_text()
    assert "COPY scripts/init-bundle.sh /usr/local/bin/ecgfm-init-bundle" in text
    assert compose_init()["command"][0] == "ecgfm-init-bundle"
    assert INIT_SCRIPT.stat().st_mode & 0o111


class InitRun:
    """The compose init service's command, run on this machine with container paths mapped."""

    def __init__(self, root: Path) -> None:
        self.models = root / "models"      # the ecgfm-models volume
        self.input = root / "input"        # ./model_store, mounted read-only
        self.cache = root / "cache"        # the ecgfm-cache volume
        for d in (self.models, self.input, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        self.mapping = {"/models": self.models, "/input": self.input, "/cache": self.cache}

    def _map(self, value: str) -> str:
        for container, local in self.mapping.items():
            if value == container or value.startswith(container + "/"):
                return str(local) + value[len(container):]
        return value

    @property
    def bundle(self) -> Path:
        return Path(self._map(compose_init()["command"][1]))

    def __call__(self, **env_overrides: str) -> subprocess.CompletedProcess[str]:
        service = compose_init()
        command = [str(INIT_SCRIPT), *(self._map(arg) for arg in service["command"][1:])]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ECGFM_")}
        for key, value in service["environment"].items():
            # ${VAR:-default} as compose resolves it with VAR unset
            value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
            env[key] = self._map(value)
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: fetch fails as offline
        env.update(ECGFM_CLI=str(Path(sys.executable).parent / "ecgfm-ked"), PYTHON=sys.executable,
                   ECGFM_ZENODO_URL=closed, ECGFM_HF_ENDPOINT=closed, ECGFM_PROVIDER="cpu")
        env.update(env_overrides)
        return subprocess.run(command, cwd=self.models.parent, env=env, capture_output=True, text=True, timeout=1100)


def manifest(bundle: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return data


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def copy_bundle(source: Path, target: Path, *, untrained: bool) -> Path:
    """A copy of a test bundle; untrained=False stands for a real exported bundle (same files,
    manifest flag off), since the real checkpoint cannot be downloaded here."""
    shutil.copytree(source, target)
    data = manifest(target)
    data["untrained"] = untrained
    (target / "manifest.json").write_text(json.dumps(data, indent=2))
    return target


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[InitRun, subprocess.CompletedProcess[str]]:
    """Empty volume, nothing in ./model_store, no network: the init command once."""
    run = InitRun(tmp_path_factory.mktemp("compose-init-demo"))
    return run, run()


def test_empty_volume_without_network_gets_a_loud_demo_bundle(
    demo_run: tuple[InitRun, subprocess.CompletedProcess[str]],
) -> None:
    from app.serving.bundle import open_bundle

    run, proc = demo_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Could not fetch the real weights" in proc.stderr
    assert "UNTRAINED DEMO bundle" in proc.stderr and '"untrained": true' in proc.stderr
    bundle = open_bundle(run.bundle)
    assert bundle.untrained
    assert manifest(run.bundle)["untrained"] is True
    assert {"ecg_encoder.onnx", "text_encoder.onnx", "manifest.json"} <= {p.name for p in run.bundle.iterdir()}
    # built aside and renamed into place: nothing half-written is left in the volume
    assert sorted(p.name for p in run.models.iterdir()) == ["bundle"]


def test_second_run_leaves_the_demo_bundle_untouched_and_still_warns(
    demo_run: tuple[InitRun, subprocess.CompletedProcess[str]],
) -> None:
    run, first = demo_run
    assert first.returncode == 0, first.stderr
    before = snapshot(run.models)
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr and "UNTRAINED DEMO bundle" in proc.stderr
    assert "fetch" not in proc.stderr.split("nothing to do")[0].lower()  # no download attempted
    assert snapshot(run.models) == before


def test_a_real_bundle_present_is_left_untouched(small_bundle: Path, tmp_path: Path) -> None:
    run = InitRun(tmp_path)
    copy_bundle(small_bundle, run.bundle, untrained=False)
    copy_bundle(small_bundle, run.input / "bundle", untrained=False)  # even with another one offered
    before = snapshot(run.models)
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert "bundle already in" in proc.stderr and "UNTRAINED" not in proc.stderr
    assert snapshot(run.models) == before


def test_a_bundle_in_model_store_is_copied_into_the_volume(small_bundle: Path, tmp_path: Path) -> None:
    run = InitRun(tmp_path)
    copy_bundle(small_bundle, run.input / "bundle", untrained=False)
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert manifest(run.bundle) == manifest(run.input / "bundle")
    assert (run.bundle / "ecg_encoder.onnx").read_bytes() == (small_bundle / "ecg_encoder.onnx").read_bytes()


def test_a_mounted_checkpoint_replaces_a_demo_bundle(
    small_checkpoint: CheckpointFiles, small_bundle: Path, tmp_path: Path,
) -> None:
    run = InitRun(tmp_path)
    copy_bundle(small_bundle, run.bundle, untrained=True)  # what an earlier run without files left
    shutil.copy2(small_checkpoint.path, run.input / "checkpoint.pt")
    shutil.copytree(small_checkpoint.text_dir, run.input / "text_model")
    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replacing the UNTRAINED demo bundle" in proc.stderr
    exported = manifest(run.bundle)
    assert not exported.get("untrained", False)  # a plain export of a checkpoint is not flagged
    assert exported["parity"]["worst"] is not None
    assert sorted(p.name for p in run.models.iterdir()) == ["bundle"]


def test_a_folder_that_is_not_a_bundle_is_refused_untouched(tmp_path: Path) -> None:
    run = InitRun(tmp_path)
    run.bundle.mkdir()
    (run.bundle / "notes.txt").write_text("mine")
    proc = run()
    assert proc.returncode == 1
    assert "not a bundle" in proc.stderr
    assert [p.name for p in run.bundle.iterdir()] == ["notes.txt"]


def test_demo_can_be_forbidden(tmp_path: Path) -> None:
    run = InitRun(tmp_path)
    proc = run(ECGFM_INIT_DEMO="0")
    assert proc.returncode == 1
    assert "ECGFM_INIT_DEMO=0" in proc.stderr
    assert not run.bundle.exists()
    assert list(run.models.iterdir()) == []
