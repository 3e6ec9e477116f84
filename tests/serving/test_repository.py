"""The model repository on real bundles (the small exported bundle and a second version of
it, app/serving/repository.py): discovery, leases, the atomic switch, retirement."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from app.errors import ModelNotLoaded, ModelUnusable, NotFound
from app.ops.settings import Settings
from app.service import model_loader
from app.serving.repository import ModelRepository, discover_bundles
from tests.fixtures.models import bundle_version


@pytest.fixture(scope="module")
def store(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    bundle_version(small_bundle, root, "test-small-v2")
    return root


def repository(small_bundle: Path, store: Path, **kw) -> ModelRepository:
    settings = Settings(bundle_dir=small_bundle, provider="cpu", intra_op_threads=2)
    return ModelRepository(store_dir=store, default_bundle=small_bundle, load=model_loader(settings), **kw)


def test_discovery_lists_the_store_and_the_configured_bundle_and_flags_what_cannot_be_served(
        small_bundle: Path, store: Path, tmp_path: Path) -> None:
    entries = {e.version: e for e in discover_bundles(store, [small_bundle])}
    assert set(entries) == {"test-small", "test-small-v2"}
    assert all(e.problem is None for e in entries.values())
    assert entries["test-small-v2"].untrained and entries["test-small-v2"].root == store / "test-small-v2"

    broken = tmp_path / "store"
    bundle_version(small_bundle, broken, "twin-a")
    twin = bundle_version(small_bundle, broken, "twin-b")
    (twin / "manifest.json").write_text((broken / "twin-a" / "manifest.json").read_text())  # claims twin-a
    (broken / "damaged").mkdir()
    (broken / "damaged" / "manifest.json").write_text("{not json")
    found = discover_bundles(broken)
    problems = {e.root.name: e.problem for e in found}
    assert "also claimed by" in problems["twin-a"] and "also claimed by" in problems["twin-b"]
    assert "cannot be read" in problems["damaged"]


def test_a_switch_is_atomic_keeps_leased_models_until_released_and_frees_the_old_one(
        small_bundle: Path, store: Path, real_windows: np.ndarray) -> None:
    repo = repository(small_bundle, store, drain_timeout_s=10)
    first = repo.load_initial(None)
    assert repo.active_version == "test-small"

    async def scenario() -> None:
        first.start()
        with repo.lease() as held:  # a request in flight on the old version
            switch = await repo.switch_to("test-small-v2")
            assert switch.switched and switch.previous == "test-small" and switch.active == "test-small-v2"
            assert repo.active_version == "test-small-v2"
            with repo.lease() as new:
                assert new.version == "test-small-v2"
            # the old version still answers the request that holds it
            encoded = await held.scorer.encode(real_windows[:1])
            assert encoded.features.shape[1:] == (32, 768)
            assert repo.loaded_versions() == {"test-small": "draining", "test-small-v2": "active"}
            await asyncio.sleep(0.3)
            assert "test-small" in repo.loaded_versions()  # not freed while leased
        for _ in range(100):  # released once its last lease ended
            if "test-small" not in repo.loaded_versions():
                break
            await asyncio.sleep(0.05)
        assert repo.loaded_versions() == {"test-small-v2": "active"}
        with pytest.raises(KeyError):
            first.runtime.encode_ecg(real_windows[:1])  # its sessions are gone
        again = await repo.switch_to("test-small-v2")
        assert not again.switched
        await repo.close(timeout=5)

    asyncio.run(scenario())


def test_pins_unknown_versions_and_unusable_bundles_are_refused_clearly(
        small_bundle: Path, store: Path, tmp_path: Path) -> None:
    repo = repository(small_bundle, store)
    repo.load_initial(None)
    with pytest.raises(ModelNotLoaded, match="not loaded in this service"):
        with repo.lease("test-small-v2"):
            pass
    with pytest.raises(NotFound, match="there are: test-small, test-small-v2"):
        with repo.lease("no-such-version"):
            pass
    with repo.lease("test-small") as pinned:
        assert pinned.version == "test-small"

    damaged = bundle_version(small_bundle, store, "test-small-damaged")
    try:
        (damaged / "ecg_encoder.onnx").unlink()
        (damaged / "ecg_encoder.onnx").write_bytes(b"not a graph")

        async def activate() -> None:
            with pytest.raises(ModelUnusable, match="cannot be loaded"):
                await repo.switch_to("test-small-damaged")

        asyncio.run(activate())
        assert repo.active_version == "test-small"
    finally:
        for item in damaged.iterdir():
            item.unlink()
        damaged.rmdir()
    repo.close_unstarted()


def test_keep_loaded_versions_are_pinnable_and_survive_a_switch(small_bundle: Path, store: Path) -> None:
    repo = repository(small_bundle, store, keep_loaded=["test-small-v2"])
    repo.load_initial(None)
    assert repo.loaded_versions() == {"test-small": "active", "test-small-v2": "loaded"}
    with repo.lease("test-small-v2") as pinned:
        assert pinned.version == "test-small-v2"
    manifest = json.loads((store / "test-small-v2" / "manifest.json").read_text())
    assert manifest["model_version"] == "test-small-v2"
    repo.close_unstarted()
