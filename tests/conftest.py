"""Shared pytest fixtures."""

from __future__ import annotations

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.pg_cluster", "tests.fixtures.browser"]

from pathlib import Path

import pytest

# --- ECG sample data (app/ecg tests) --------------------------------------------------

ECG_DATA_DIR = Path(__file__).parent / "data" / "ecg"
SHARED_SAMPLES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "ecg-samples"


@pytest.fixture(scope="session")
def ecg_data_dir() -> Path:
    """Real records copied into the project (tests/data/ecg, see SOURCE.txt there)."""
    return ECG_DATA_DIR


@pytest.fixture(scope="session")
def shared_samples_dir() -> Path:
    """The read-only sample folder ../shared/ecg-samples; skips the test where it is absent."""
    if not (SHARED_SAMPLES_DIR / "index.csv").is_file():
        pytest.skip(f"shared ECG samples not found at {SHARED_SAMPLES_DIR}")
    return SHARED_SAMPLES_DIR
