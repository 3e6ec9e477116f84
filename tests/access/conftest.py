"""The access tests run on SQLite and PostgreSQL, with the knowledge tests' database fixtures."""

from tests.knowledge.conftest import db_url, engine_factory, postgres_url  # noqa: F401 - fixtures re-used here
