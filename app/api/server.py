"""Start uvicorn (one or several worker processes) for ``ecgfm-ked serve``."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

from app.errors import BundleError
from app.serving.bundle import open_bundle
from app.ops import metrics
from app.ops.settings import Settings


def app_factory():
    """Import string target for uvicorn workers: settings come from the environment."""
    from app.api.main import create_app

    return create_app(Settings())


def serve(settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        open_bundle(settings.bundle_dir)
    except BundleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
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
                    workers=settings.workers, log_level="info", access_log=False)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0
