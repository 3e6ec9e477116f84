"""A client generated from the service's own /openapi.json (openapi-python-client, as an
integrator would make one) uploads a real WFDB record to a started server and gets ranked
diagnoses: the document declares POST /diagnose's multipart body well enough to be used
without reading the code.
"""

from __future__ import annotations

import importlib
import inspect
import io
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from ._server import ECG_DIR, ServerFactory

PACKAGE = "ecgfm_generated_client"
GENERATOR_CONFIG = f"package_name_override: {PACKAGE}\nproject_name_override: ecgfm-generated-client\npost_hooks: []\n"
GENERATE_TIMEOUT_S = 120


def _generator() -> str:
    beside_python = Path(sys.executable).with_name("openapi-python-client")
    found = str(beside_python) if beside_python.exists() else shutil.which("openapi-python-client")
    if not found:
        pytest.skip("openapi-python-client is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="module")
def server(servers: ServerFactory) -> Any:
    return servers.start("generated-client")


@pytest.fixture(scope="module")
def generated(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from the running server's document, importable."""
    work = tmp_path_factory.mktemp("generated-client")
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).raise_for_status().text
    (work / "openapi.json").write_text(document)
    (work / "config.yml").write_text(GENERATOR_CONFIG)
    done = subprocess.run(
        [_generator(), "generate", "--path", "openapi.json", "--config", "config.yml", "--meta", "none",
         "--output-path", PACKAGE], cwd=work, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S)
    assert done.returncode == 0, f"generation failed:\n{done.stdout}\n{done.stderr}"
    # The generator says so (and still writes a package) when it must skip part of a document.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _operation_module(package: ModuleType, method: str, path: str) -> ModuleType:
    """The generated module of one operation (found by the URL and method it requests)."""
    api = Path(package.__file__).parent / "api"
    for source in sorted(api.glob("*/*.py")):
        text = source.read_text()
        if f'"method": "{method}"' in text and f'"url": "{path}"' in text:
            return importlib.import_module(f"{package.__name__}.api.{source.parent.name}.{source.stem}")
    raise AssertionError(f"the generated client has no function for {method.upper()} {path}")


def _multipart_body_class(function: Any) -> type:
    """The body model the generated function sends as multipart/form-data."""
    hints = typing.get_type_hints(function)
    assert "body" in hints, "POST /diagnose has no body parameter: its request body is not declared"
    candidates = [t for t in typing.get_args(hints["body"]) or (hints["body"],) if hasattr(t, "to_multipart")]
    assert candidates, f"no multipart body among {hints['body']}"
    return candidates[0]


def test_generated_client_uploads_a_wfdb_record_and_gets_ranked_diagnoses(generated: ModuleType,
                                                                            server: Any) -> None:
    diagnose = _operation_module(generated, "post", "/diagnose")
    body_class = _multipart_body_class(diagnose.sync_detailed)
    file_type = importlib.import_module(f"{generated.__name__}.types").File
    files = [file_type(payload=io.BytesIO((ECG_DIR / name).read_bytes()), file_name=name,
                       mime_type="application/octet-stream") for name in ("E07500.hea", "E07500.mat")]
    assert "files" in inspect.signature(body_class).parameters

    with generated.Client(base_url=server.url, timeout=httpx.Timeout(120.0)) as client:
        response = diagnose.sync_detailed(client=client, body=body_class(files=files), label_set="cinc2021",
                                          top_k=5)

    assert response.status_code == 200, response.content[:500]
    parsed = response.parsed
    assert type(parsed).__name__ == "DiagnoseResponse", (type(parsed), response.content[:300])
    assert parsed.label_set.name == "cinc2021" and parsed.model.untrained is True
    [result] = parsed.results
    source = result.source.to_dict()  # the generator renames fields that shadow builtins (format -> format_)
    assert source["format"] == "wfdb" and source["fs"] == 500.0
    ranks = [d.rank for d in result.diagnoses]
    probabilities = [d.probability for d in result.diagnoses]
    assert ranks == [1, 2, 3, 4, 5]
    assert probabilities == sorted(probabilities, reverse=True) and all(0.0 <= p <= 1.0 for p in probabilities)
    labels = httpx.get(f"{server.url}/label-sets/cinc2021", timeout=30).json()["labels"]
    assert {d.label for d in result.diagnoses} <= set(labels)


def test_generated_client_parses_the_error_body(generated: ModuleType, server: Any) -> None:
    get_label_set = _operation_module(generated, "get", "/label-sets/{name}")
    with generated.Client(base_url=server.url, timeout=httpx.Timeout(30.0)) as client:
        response = get_label_set.sync_detailed("no-such-set", client=client)
    assert response.status_code == 404
    error = response.parsed
    assert type(error).__name__ == "ErrorBody"
    assert error.error.code.value == "not_found" and "no-such-set" in error.error.message
