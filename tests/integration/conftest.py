"""Fixtures for the end-to-end tests: real ``ecgfm-ked serve`` processes over real HTTP.

The model is the session's ``small_bundle`` (tests/fixtures/models.py: random weights in the
real format, marked untrained). To iterate on these tests without rebuilding it, point
``ECGFM_TEST_BUNDLE`` at an existing bundle directory (e.g. one made by
``ecgfm-ked demo-bundle``); it is only read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import ServerFactory

# PostgreSQL: a fresh database per session, shared with the knowledge tests' fixture.
from tests.knowledge.conftest import postgres_url  # noqa: F401  (pytest fixture)


@pytest.fixture(scope="session")
def bundle_dir(request: pytest.FixtureRequest) -> Path:
    override = os.environ.get("ECGFM_TEST_BUNDLE")
    if override:
        path = Path(override)
        assert (path / "manifest.json").is_file(), f"ECGFM_TEST_BUNDLE={override} is not a bundle directory"
        return path
    return request.getfixturevalue("small_bundle")


@pytest.fixture(scope="module")
def servers(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start servers with ``servers.start(name, ...)``; all are stopped when the module ends."""
    factory = ServerFactory(bundle_dir, tmp_path_factory.mktemp("servers"))
    try:
        yield factory
    finally:
        factory.close()
