"""Start uvicorn (one or several worker processes) for ``ecgfm-ked serve``.

Logging is the service's own (app/ops/logging.py, levels from ``ECGFM_LOG_LEVEL``), set up here
and again in each worker process; uvicorn's logging config and access log are off (the request
middleware writes the access lines).

Graceful shutdown: on SIGTERM (or SIGINT) uvicorn stops accepting connections and waits up to
``ECGFM_SHUTDOWN_GRACE_S`` (``timeout_graceful_shutdown``) for the requests in flight, then
cancels what is left; the lifespan's shutdown then drains the batcher. ``on_shutdown_signal``
lets the app hear the signal first, so that a request still arriving meanwhile gets 503
``shutting_down`` and /readyz stops saying ready.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from app.errors import BundleError
from app.ops import metrics
from app.ops.logging import configure_logging
from app.ops.settings import Settings
from app.serving.bundle import open_bundle

if TYPE_CHECKING:
    from fastapi import FastAPI


SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` when a shutdown signal arrives, then the handler that was there (uvicorn's).

    Only where a Python handler is installed already (a server that shuts down gracefully on
    it); elsewhere (tests, the main thread not ours) nothing changes. Returns a function that
    puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed: dict[int, Callable[[int, FrameType | None], object]] = {}
    previous: dict[int, Callable[[int, FrameType | None], object]] = {}
    for sig in SHUTDOWN_SIGNALS:
        prev = signal.getsignal(sig)
        if not callable(prev):
            continue

        def handler(signum: int, frame: FrameType | None,
                    prev: Callable[[int, FrameType | None], object] = prev) -> None:
            try:
                callback()
            finally:
                prev(signum, frame)

        previous[sig] = prev
        installed[sig] = handler
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, handler in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous[sig])

    return restore


def app_factory() -> FastAPI:
    """Import string target for uvicorn workers: settings come from the environment."""
    from app.api.main import create_app

    settings = Settings()
    configure_logging(settings.log_level)  # a worker process starts with none
    return create_app(settings)


def serve(settings: Settings) -> int:
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        sys.stderr.write(f"error [invalid_setting]: {exc}\n")
        return 2
    try:
        open_bundle(settings.bundle_dir)
    except BundleError as exc:
        sys.stderr.write(f"error [{exc.code}]: {exc.message}\n")
        return 1  # a runtime error (usage errors are 2)
    import uvicorn

    # Worker processes read settings from the environment: pass the resolved values down.
    for field, value in settings.model_dump().items():
        if value is not None:
            os.environ[f"ECGFM_{field.upper()}"] = str(value)
    own_dir = None
    if settings.workers > 1:
        if not metrics.multiprocess_enabled():
            # Without a shared directory every worker would expose only its own counters and
            # /metrics would answer with whichever worker took the scrape.
            own_dir = tempfile.mkdtemp(prefix="ecgfm-metrics-")
            os.environ[metrics.MULTIPROC_ENV] = own_dir
            logging.getLogger(__name__).warning(
                "%s is not set; using %s for the %d workers' metrics", metrics.MULTIPROC_ENV, own_dir, settings.workers)
        metrics.prepare_multiproc_dir()
    try:
        uvicorn.run("app.api.server:app_factory", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_config=None, log_level=None, access_log=False,
                    timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s))
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0
