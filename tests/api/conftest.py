"""Fixtures for the HTTP tests: the real app (lifespan, ONNX sessions, database) behind
``fastapi.testclient.TestClient``, on the session's small exported bundle (``small_bundle``
from tests/fixtures/models.py).

* ``client``: one app per test module, keys required, sending an admin key, on a fresh SQLite
  file (starting the app loads three
  ONNX sessions and seeds the built-in knowledge, so modules share it; tests that change
  knowledge use names of their own).
* ``app_settings``: Settings for apps a test starts itself (restarts, other databases,
  batching, a missing bundle).
* ``upload_tmp``: points the process temp dir (where uploads are unpacked) at an empty
  folder of the test and checks that it is empty again when the test ends.
* ``postgres_url``: the fresh PostgreSQL database of tests/knowledge/conftest.py.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.access.scopes import COMMAND_LINE, Scope
from app.api.main import create_app
from app.ecg.parse_pool import start_fork_server
from app.ops.settings import Settings
from tests.knowledge.conftest import _empty_postgres, postgres_url  # noqa: F401 - fixture re-used here

UPLOAD_PREFIX = "ecg-upload-"


def make_settings(bundle_dir: Path, data_dir: Path, **overrides) -> Settings:
    """Settings for an app a test starts itself. Authentication is off unless the test asks for it
    (``auth="required"``): these apps test other things; the ``client`` fixture, tests/api/test_auth.py
    and the schemathesis run use the default, keys required."""
    values = {"bundle_dir": bundle_dir, "data_dir": data_dir, "database_url": None, "provider": "cpu",
              "intra_op_threads": 2, "auth": "disabled"}
    values.update(overrides)
    return Settings(**values)


MakeSettings = Callable[..., Settings]


@pytest.fixture
def app_settings(small_bundle: Path, tmp_path: Path) -> MakeSettings:
    """``app_settings(**overrides)`` -> Settings on the small bundle and a data dir of this test.

    Start the app with ``with TestClient(create_app(settings)) as client:`` (runs the lifespan).
    """

    def make(**overrides) -> Settings:
        overrides.setdefault("bundle_dir", small_bundle)
        overrides.setdefault("data_dir", tmp_path / "data")
        return make_settings(**overrides)

    return make


@pytest.fixture(scope="module")
def client(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("api-data")
    app = create_app(make_settings(small_bundle, data_dir, auth="required"))
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {make_key(c, 'tests-admin', Scope.admin)}"
        yield c


def make_key(client: TestClient, name: str, scope: Scope) -> str:
    """A new key of ``scope`` in the started app's database (as ``ecgfm-ked keys create`` would)."""
    _key, secret = client.app.state.service.keys.store.create(name, scope, actor=COMMAND_LINE)  # type: ignore[attr-defined]
    return secret


@pytest.fixture
def pg_database(postgres_url: str) -> str:  # noqa: F811 - the imported fixture
    """The session's PostgreSQL database, emptied for this test."""
    _empty_postgres(postgres_url)
    return postgres_url


def leftover_uploads(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.fixture
def upload_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The folder the service unpacks uploads into during this test (the process temp dir)."""
    parent = tmp_path / "tmp"
    parent.mkdir()
    # the parse pool's fork server keeps a socket folder in the temp dir for the life of the
    # process: made in the real one, before the patch, it is no upload left behind
    start_fork_server()
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    # The service makes its upload folders with tempfile's default parent: prove it is this one.
    from app.ecg.uploads import unpacked_upload

    with unpacked_upload([("probe.txt", b"x")]) as probe:
        assert probe.parent.parent == parent and probe.parent.name.startswith(UPLOAD_PREFIX)
    assert leftover_uploads(parent) == []
    yield parent
    assert leftover_uploads(parent) == [], "upload folders were left behind"
