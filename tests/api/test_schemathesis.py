"""Schemathesis against the real app: every operation of /openapi.json, generated requests
(valid ones and ones the schema refuses), checked for no 5xx, declared status codes, declared
content types and bodies valid against the declared schemas (issue 10, "How it is checked").

The app is the real one (lifespan, ONNX sessions on the session's small bundle, a fresh SQLite
file, the built-in knowledge), its own instance (the run creates, changes and deletes labels and
sets, so it does not share the module-wide ``client``), called in-process through schemathesis'
ASGI transport. Generation is deterministic (``derandomize``: the same cases on every run, so a
failure is reproduced by running the test again) and bounded per operation (``MAX_EXAMPLES``
fuzzed cases, plus the deterministic cases of schemathesis' examples and coverage phases): about
a minute of requests on two cores, once the session's small bundle is built (two more minutes
when this module runs alone).

Keys are required (the default) and every request sends an admin key, so every operation is
reached; a second, small run sends no valid key (none, or a generated one) and every guarded
operation must answer 401, whatever else the request gets wrong.

The cases are generated from the document the app serves. It depends neither on the settings nor
on the model, so it is read at collection from an app that is never started (schemathesis'
lazy ``from_fixture`` loader does not work with pytest 9.2), and each started app is checked
to serve the same document.

Uploaded files (``files`` of ``POST /diagnose``, declared ``application/octet-stream``) are
drawn from real WFDB records zipped (``E07500``, ``A0001`` from tests/data/ecg, one or both in
one archive) or random bytes, so the scoring path and its 200 answer are exercised as well as
the refusals.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.access.scopes import Scope
from app.api.main import create_app
from app.ops.settings import Settings

from .conftest import make_key, make_settings
from .helpers import record_files

# Fuzzed cases per operation (the examples and coverage phases add their own, deterministic ones).
MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # a fixed seed
    database=None,  # no .hypothesis/ folder in the checkout
    deadline=None,  # /diagnose scores on the CPU; the time is bounded by MAX_EXAMPLES, not per case
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def _zip(*records: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for record in records:
            for path in record_files(record):
                # a fixed date: the same bytes on every run (writestr(name) would stamp the time now)
                zf.writestr(zipfile.ZipInfo(path.name, date_time=(2020, 1, 1, 0, 0, 0)), path.read_bytes(),
                            compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


# A list of file contents: schemathesis names each part after its detected type ("files.zip").
# The registration is process-wide (schemathesis keeps one table of media-type strategies); no
# other test uses schemathesis.
REAL_ECG_UPLOADS = st.sampled_from([_zip("E07500"), _zip("A0001"), _zip("E07500", "A0001")]).map(lambda z: [z])
OTHER_UPLOADS = st.lists(st.binary(max_size=4096), min_size=1, max_size=3)
schemathesis.openapi.media_type("application/octet-stream", st.one_of(REAL_ECG_UPLOADS, OTHER_UPLOADS))


def _document() -> dict[str, Any]:
    never_started = create_app(Settings(bundle_dir=Path("/nonexistent"), database_url=None))
    return never_started.openapi()


DOCUMENT = _document()
OPERATIONS = {f"{method.upper()} {path}": operation for path, item in DOCUMENT["paths"].items()
              for method, operation in item.items()}
schema = schemathesis.openapi.from_dict(DOCUMENT)

# operation -> status -> how often it was answered (read by test_the_run_reached_the_successes)
ANSWERED: dict[str, dict[int, int]] = {}
ADMIN_KEY_NAME = "schemathesis admin"  # a name the generated requests to DELETE /keys/{name} do not hit


def _guarded(case: schemathesis.Case) -> bool:
    """Whether the operation needs a key (schemathesis also sends methods a path does not serve)."""
    return bool(OPERATIONS.get(f"{case.method.upper()} {case.path}", {}).get("security"))


@dataclass
class Started:
    app: FastAPI
    admin: dict[str, str]  # the headers that send an admin key


@pytest.fixture(scope="module")
def started(small_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """The app with keys required (the default), and an admin key.

    Its lifespan is schemathesis' (a TestClient's would be a second one beside it): its pytest
    plugin ends the lifespan after every test item and its ASGI transport starts it again on the
    next request, so the app restarts for each operation (about 0.4 s) on the same database,
    which keeps the admin key and what earlier operations changed."""
    app = create_app(make_settings(small_bundle, tmp_path_factory.mktemp("schemathesis"), auth="required"))
    try:
        with get_client(app) as client:  # the lifespan: model loaded, database seeded
            assert client.get("/openapi.json").json() == DOCUMENT
            admin = {"Authorization": f"Bearer {make_key(client, ADMIN_KEY_NAME, Scope.admin)}"}  # type: ignore[arg-type]
        yield Started(app, admin)
    finally:
        shutdown_lifespans()  # the app's shutdown: batcher stopped, database closed


@schema.parametrize()
@HYPOTHESIS
def test_every_operation_keeps_its_contract(case: schemathesis.Case, started: Started) -> None:
    response = case.call_and_validate(checks=CHECKS, app=started.app, headers=started.admin)
    counts = ANSWERED.setdefault(f"{case.method} {case.path}", {})
    counts[response.status_code] = counts.get(response.status_code, 0) + 1


@schema.parametrize()
@settings(HYPOTHESIS, max_examples=5)
def test_without_a_key_guarded_operations_answer_401(case: schemathesis.Case, started: Started) -> None:
    """Whatever else a request without a valid key gets wrong, a guarded operation answers 401
    (and still keeps the contract); the public ones (health, readiness, metrics) answer as usual."""
    response = case.call_and_validate(checks=CHECKS, app=started.app)
    if _guarded(case):
        assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:300])
        assert response.json()["error"]["code"] == "unauthenticated"
        assert response.headers["www-authenticate"][0].startswith("Bearer")


# Operations whose success does not hang on state a generated request cannot know (an id that
# exists now, the current ETag for If-Match): every read, scoring, and creating.
MUST_SUCCEED = {op for op in OPERATIONS if op.startswith("GET ")} | (
    {"POST /diagnose", "POST /labels", "POST /label-sets", "POST /keys"} & OPERATIONS.keys())


def test_the_run_reached_the_successes() -> None:
    """A run whose every answer is a refusal would pass the checks while proving little: each of
    MUST_SUCCEED answered 2xx at least once (POST /diagnose scored the real ECGs)."""
    if not ANSWERED.keys() >= MUST_SUCCEED:
        pytest.skip("the generated run was not (entirely) selected")
    missing = {op: ANSWERED[op] for op in sorted(MUST_SUCCEED) if not any(200 <= s < 300 for s in ANSWERED[op])}
    assert not missing, f"operations that never succeeded (status -> count): {missing}"


def test_every_operation_with_a_body_declares_what_any_body_can_get() -> None:
    """An unparsable body (400), one that stalls (408) or one past the size limit (413) is answered
    before the route runs, whatever the route: declared on each operation with a request body."""
    for name, operation in OPERATIONS.items():
        if "requestBody" in operation:
            assert {"400", "408", "413"} <= operation["responses"].keys(), name
            for status in ("400", "408", "413"):
                assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"}, (name, status)
