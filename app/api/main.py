"""The FastAPI application: lifespan (load model, open database, start the batcher),
metrics middleware, error mapping, routers and the (offline) API documentation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import errors, openapi
from app.api.middleware import RequestObserver
from app.api.routes import audit, diagnose, embeddings, health, keys, labels, models, page
from app.api.server import on_shutdown_signal
from app.api.state import ServiceState, build_state, follow_model_switches
from app.errors import ServiceError
from app.ops import metrics
from app.ops.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """Zero-shot 12-lead ECG diagnosis with ECGFM-KED (Tian et al., Cell Reports Medicine 2024).

**Intended use:** decision support for qualified clinicians, not a diagnosis. Probabilities are
uncalibrated model outputs; this service has not measured their accuracy on your population.

Every error answers `{"error": {"code", "message", "details"}, "request_id"}` (schema `ErrorBody`; the
`code` values are listed in `ErrorCode`).
"""
TAGS = [
    {"name": "diagnose", "description": "score ECGs against a label set; the ECG encoder's features"},
    {"name": "models", "description": "the model repository: versions, evaluation summaries, the active one"},
    {"name": "labels", "description": "diagnosis labels and versioned label sets"},
    {"name": "access", "description": "API keys and the audit trail (admin scope)"},
    {"name": "operations", "description": "health, readiness, the served model, formats, metrics"},
]


def _start_draining(state: ServiceState) -> None:
    """Shutdown signal (from a signal handler: no I/O here): refuse new /diagnose work, not ready."""
    state.diagnose.start_draining()
    metrics.set_ready(False)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            state = await asyncio.to_thread(build_state, settings)
        except ServiceError as exc:
            # Stay up so /healthz and /readyz can say why; every model route answers 503.
            log.error("service not ready: %s", exc.message)
            app.state.startup_error = exc.message
            metrics.set_ready(False)
            yield
            return
        for model in state.models.all_loaded():
            model.start()
        # bounded work (HTTP only: the offline scorer stays unbounded); a shutdown signal makes new
        # /diagnose requests answer 503 shutting_down
        state.diagnose.configure_overload(max_queued_ecgs=settings.max_queued_ecgs,
                                          retry_after_s=settings.retry_after_s)
        restore_signals = on_shutdown_signal(lambda: _start_draining(state))
        app.state.service = state
        app.state.cold_start_s = time.perf_counter() - started
        metrics.set_ready(True)
        log.info("ready in %.1f s: model %s on %s", app.state.cold_start_s, state.runtime.info.version,
                 state.runtime.info.provider)
        follower = (asyncio.create_task(follow_model_switches(state, settings.model_poll_s))
                    if settings.model_poll_s > 0 else None)
        try:
            yield
        finally:
            restore_signals()
            metrics.set_ready(False)
            if follower is not None:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            await state.models.close(timeout=settings.shutdown_grace_s)
            state.close()

    app = FastAPI(title="ECGFM-KED inference service", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  openapi_tags=TAGS, responses=openapi.error_responses(500),
                  docs_url=None, redoc_url=None)  # FastAPI's pages load their assets from a CDN; ours are local
    app.state.service = None
    app.state.startup_error = None
    errors.install(app)

    app.add_middleware(RequestObserver, settings=settings)
    app.include_router(health.router)
    app.include_router(page.router)  # GET /: the page for a person (public: it holds no data)
    app.include_router(diagnose.router)
    app.include_router(embeddings.router)
    app.include_router(models.router)
    app.include_router(labels.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    openapi.install(app)
    return app
