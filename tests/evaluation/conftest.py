"""Fixtures of the evaluation tests: the shared samples, a bundle, the cinc2021 labels."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.knowledge.builtin import load_builtin_sets
from app.knowledge.types import LabelDraft


@pytest.fixture(scope="session")
def bundle_dir(request: pytest.FixtureRequest) -> Path:
    """The session's small (untrained) bundle, or ``ECGFM_TEST_BUNDLE`` (only read) to iterate faster."""
    override = os.environ.get("ECGFM_TEST_BUNDLE")
    if override:
        assert (Path(override) / "manifest.json").is_file(), override
        return Path(override)
    path: Path = request.getfixturevalue("small_bundle")
    return path


@pytest.fixture(scope="session")
def cinc2021_labels() -> tuple[LabelDraft, ...]:
    return {s.name: s for s in load_builtin_sets()}["cinc2021"].labels
