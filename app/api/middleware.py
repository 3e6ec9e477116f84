"""What the service notes about every HTTP request, as one plain ASGI middleware: its request
id, one access-log line, and the request metrics.

* Request id: the caller's ``X-Request-ID`` when it is 1-128 characters of ``[A-Za-z0-9._:-]``,
  else a new uuid4 (hex). Stored in ``scope["state"]["request_id"]`` (routes and error handlers
  read ``request.state.request_id``) and echoed in the response's ``X-Request-ID`` header.
* Access log: one line on the ``app.access`` logger (app/ops/logging.py) with the method, the
  route template (``/labels/{label_id}``, never the filled-in path; ``<unmatched>`` for paths
  that matched no route), the status, the duration and the request id. Never query strings,
  headers, bodies, file names or anything else a caller sent: those can carry patient
  identifiers. Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) log at DEBUG.
* Metrics: counted and timed by route template, method and status (``app.ops.metrics``).

Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs every request through
an extra task and memory streams; measured on the 2-core reference machine it cost about
2 ms of CPU per /diagnose call, which under load is time taken from the model. This one
only wraps ``send`` to note the status code and add the header.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.ops import metrics
from app.ops.logging import ACCESS_LOGGER

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
NOT_RECORDED = frozenset({"/metrics"})  # scraping must not count itself
QUIET_ENDPOINTS = frozenset({"/metrics", "/healthz", "/readyz"})  # polled: access lines at DEBUG only

access_log = logging.getLogger(ACCESS_LOGGER)


def request_id_from(scope: Scope) -> str:
    """The caller's X-Request-ID if it is acceptable, else a new id."""
    for name, value in scope.get("headers", ()):
        if name.lower() == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def endpoint_of(scope: Scope) -> str:
    """The matched route's template (the router puts the route into the shared scope)."""
    return str(getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ENDPOINT)


class RequestObserver:
    """Request id, access-log line and metrics for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500  # if the app fails before it starts a response

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER.encode()]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER.encode(), request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            seconds = time.perf_counter() - started
            endpoint = endpoint_of(scope)
            if endpoint not in NOT_RECORDED:
                metrics.record_http_request(endpoint, scope["method"], status, seconds)
            access_log.log(logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO,
                           "method=%s path=%s status=%d duration_ms=%.1f request_id=%s",
                           scope["method"], endpoint, status, seconds * 1000, request_id,
                           extra={"method": scope["method"], "endpoint": endpoint, "status": status,
                                  "duration_ms": round(seconds * 1000, 1), "request_id": request_id})
