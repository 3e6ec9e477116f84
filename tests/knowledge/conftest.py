"""Fixtures for app/knowledge: every store and cache test runs on SQLite and PostgreSQL.

PostgreSQL: a fresh database is created once per test session through a connection to the
database named in ECGFM_TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432/test) with
AUTOCOMMIT, emptied before each test and dropped at the end. If the server cannot be
reached the PostgreSQL variants are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from app.knowledge.db import create_schema, make_engine, metadata
from app.knowledge.store import KnowledgeStore

from .helpers import HashEmbedder

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin_url = os.environ.get("ECGFM_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"ecgfm_knowledge_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {admin_url}: {exc}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty_postgres(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        # a folder that does not exist yet: make_engine must create it
        return f"sqlite:///{tmp_path / 'data' / 'knowledge.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def engine_factory(db_url: str) -> Iterator[Callable[[], Engine]]:
    """Builds engines on the test database, as separate service processes would."""
    engines: list[Engine] = []

    def build() -> Engine:
        engine = make_engine(db_url)
        create_schema(engine)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(engine_factory: Callable[[], Engine]) -> Engine:
    return engine_factory()


@pytest.fixture
def store(engine: Engine) -> KnowledgeStore:
    return KnowledgeStore(engine)


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()
