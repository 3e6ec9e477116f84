"""The service's logging (app/ops/logging.py): levels from ECGFM_LOG_LEVEL, one handler however
often it is configured, uvicorn's access log replaced by ours; and a started ``ecgfm-ked serve``
whose whole output (uvicorn, the app, ONNX Runtime's C++ writes to fd 2) is read back."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ops.logging import ACCESS_LOGGER, LOG_LEVEL_ENV, UVICORN_ACCESS, configure_logging, parse_levels
from app.ops.settings import Settings
from tests.integration._server import ServerFactory


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after the test."""
    root = logging.getLogger()
    names = ("", ACCESS_LOGGER, UVICORN_ACCESS, "uvicorn", "uvicorn.error", "app.serving")
    saved = {n: (logging.getLogger(n or None).level, logging.getLogger(n or None).propagate,
                 logging.getLogger(n or None).disabled, list(logging.getLogger(n or None).handlers)) for n in names}
    yield
    for n, (level, propagate, disabled, handlers) in saved.items():
        logger = logging.getLogger(n or None)
        logger.setLevel(level)
        logger.propagate, logger.disabled, logger.handlers = propagate, disabled, handlers
    assert logging.getLogger() is root


@pytest.mark.parametrize(("spec", "levels"), [
    ("INFO", {"": logging.INFO}),
    ("debug", {"": logging.DEBUG}),
    ("WARNING,app.access=INFO", {"": logging.WARNING, "app.access": logging.INFO}),
    (" app.access = warning , app.serving=DEBUG ", {"": logging.INFO, "app.access": logging.WARNING,
                                                    "app.serving": logging.DEBUG}),
])
def test_levels_are_read_from_the_spec(spec, levels) -> None:
    assert parse_levels(spec) == levels


@pytest.mark.parametrize("spec", ["LOUD", "app.access=", "INFO,app.access=VERBOSE", "20"])
def test_an_unreadable_spec_is_refused_naming_the_part(spec) -> None:
    with pytest.raises(ValueError, match=f"{LOG_LEVEL_ENV}: .* is not a level"):
        parse_levels(spec)


def test_configuring_twice_installs_one_handler_and_silences_uvicorns_access_log(restored_logging,
                                                                               monkeypatch) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "WARNING,app.access=INFO")
    before = len(logging.getLogger().handlers)
    spec = Settings().log_level  # read from the environment, as serve and each worker do
    configure_logging(spec)
    configure_logging(spec)
    assert len(logging.getLogger().handlers) == before + 1
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger(ACCESS_LOGGER).getEffectiveLevel() == logging.INFO
    assert logging.getLogger(UVICORN_ACCESS).disabled
    assert logging.getLogger("uvicorn.error").propagate and not logging.getLogger("uvicorn.error").handlers


def test_serve_refuses_an_unreadable_level(small_bundle, monkeypatch, capsys) -> None:
    from app.api.server import serve
    from app.ops.settings import Settings

    monkeypatch.setenv(LOG_LEVEL_ENV, "CHATTY")
    assert serve(Settings(bundle_dir=small_bundle)) == 2
    assert "error [invalid_setting]: ECGFM_LOG_LEVEL: 'CHATTY' is not a level" in capsys.readouterr().err


ACCESS_LINE = re.compile(r"^\S+ \S+ INFO app\.access: method=(\w+) path=(\S+) status=(\d+) duration_ms=[\d.]+ "
                         r"request_id=(\S+)$", re.M)


def test_a_started_service_writes_our_access_lines_and_no_cuda_noise(small_bundle: Path, tmp_path: Path) -> None:
    """``ecgfm-ked serve`` with provider auto (the default) as an operator starts it: its whole
    stdout+stderr (fd level: ONNX Runtime's C++ log included) holds our access lines, uvicorn's
    start/stop lines in our format, and neither uvicorn's access lines nor ONNX Runtime's CUDA
    errors (on a machine without an NVIDIA driver)."""
    from app.serving.runtime import nvidia_driver_present

    factory = ServerFactory(small_bundle, tmp_path)
    try:
        server = factory.start("logs", env={"ECGFM_PROVIDER": "auto", "ECGFM_INTRA_OP_THREADS": "1"})
        with server.client() as client:
            assert client.get("/labels", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
            assert client.get("/labels/123456789?secret=DOE").status_code == 404
        server.assert_clean_exit()
    finally:
        factory.close()
    log = server.log_tail(200_000)
    lines = ACCESS_LINE.findall(log)
    assert ("GET", "/labels", "200", "trace-42") in lines, log[-4000:]
    assert any(m == "GET" and p == "/labels/{label_id}" and s == "404" for m, p, s, _ in lines), log[-4000:]
    assert "DOE" not in log and "secret" not in log
    assert '"GET /labels HTTP/1.1" 200' not in log  # uvicorn's own access line
    assert re.search(r"^\S+ \S+ INFO uvicorn\.error: Application startup complete\.$", log, re.M), log[-4000:]
    if not nvidia_driver_present():
        for noise in ("libcublas", "CUDAExecutionProvider", "[E:onnxruntime", "[W:onnxruntime"):
            assert noise not in log, log[-4000:]
