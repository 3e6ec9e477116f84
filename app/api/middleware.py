"""What the service notes about every HTTP request, as one plain ASGI middleware: its request
id, one access-log line, and the request metrics.

* Request id: the caller's ``X-Request-ID`` when it is 1-128 characters of ``[A-Za-z0-9._:-]``,
  else a new uuid4 (hex). Stored in ``scope["state"]["request_id"]`` (routes and error handlers
  read ``request.state.request_id``) and echoed in the response's ``X-Request-ID`` header.
* Access log: one line on the ``app.access`` logger (app/ops/logging.py) with the method, the
  route template (``/labels/{label_id}``, never the filled-in path; ``<unmatched>`` for paths
  that matched no route), the status, the duration, the request id and, for a call made with an
  API key, the key's name (``actor="ward-3"``, JSON-quoted; set by app/api/auth.py in
  ``scope["state"]["actor"]``; never the key). Never query strings,
  headers, bodies, file names or anything else a caller sent: those can carry patient
  identifiers. Probes and scrapes (``/healthz``, ``/readyz``, ``/metrics``) log at DEBUG.
* Metrics: counted and timed by route template, method and status (``app.ops.metrics``).
* Request body guard (``receive`` wrapped with a byte counter and a deadline), for every route,
  chunked or not: a body that declares (Content-Length) or reaches more than ``max_request_mb``
  is refused with 413 as soon as the limit is passed, before the rest is read or written
  anywhere; a body that has not fully arrived ``body_read_timeout_s`` after its first read is
  refused with 408; a client that disconnects mid-body ends the request as 499 (client closed
  request: an access line and a metric, never a 500). 408 and 413 close the connection. The
  limits come from the ``settings`` given to the middleware (the app's own, in ``create_app``).

Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs every request through
an extra task and memory streams; measured on the 2-core reference machine it cost about
2 ms of CPU per /diagnose call, which under load is time taken from the model. This one
only wraps ``send`` to note the status code and add the header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access.scopes import Actor
from app.ops import metrics
from app.ops.logging import ACCESS_LOGGER
from app.ops.settings import Settings

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


CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away before the answer"
CLOSE = {"Connection": "close"}  # the rest of the body is not read: the connection cannot be reused


class BodyTooLarge(HTTPException):
    """The request body passed ``max_request_mb`` (declared or counted while it streams)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail, headers=CLOSE)


class BodyReadTimeout(HTTPException):
    """The request body did not arrive in time (a slow or stalled upload)."""

    def __init__(self, detail: str) -> None:
        super().__init__(408, detail, headers=CLOSE)


class ClientDisconnected(HTTPException):
    """The client went away before its body had arrived; nobody reads the answer."""

    def __init__(self) -> None:
        super().__init__(CLIENT_CLOSED_REQUEST, "the client disconnected before sending the whole request body")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def guarded_receive(receive: Receive, max_bytes: int, timeout_s: float, declared: int | None) -> Receive:
    """``receive`` that refuses a body over ``max_bytes`` (BodyTooLarge), one that is not complete
    ``timeout_s`` after its first read (BodyReadTimeout) and a disconnect mid-body (ClientDisconnected).
    Once the body is complete, messages pass through untouched (e.g. a later wait for disconnect)."""
    received = 0
    complete = False
    deadline: float | None = None

    async def receive_guarded() -> Message:
        nonlocal received, complete, deadline
        if complete:
            return await receive()
        if declared is not None and declared > max_bytes:
            raise BodyTooLarge(f"request body is {declared} bytes; the limit is {max_bytes} (ECGFM_MAX_REQUEST_MB)")
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout_s
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
        except TimeoutError:
            raise BodyReadTimeout(f"the request body did not arrive within {timeout_s:g} s "
                                  f"(ECGFM_BODY_READ_TIMEOUT_S); {received} bytes were received") from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise BodyTooLarge(f"request body is more than {max_bytes} bytes, the limit (ECGFM_MAX_REQUEST_MB)")
            complete = not message.get("more_body", False)
        return message

    return receive_guarded


def endpoint_of(scope: Scope) -> str:
    """The matched route's template (the router puts the route into the shared scope)."""
    return str(getattr(scope.get("route"), "path", None) or metrics.UNMATCHED_ENDPOINT)


def _key_name(scope: Scope) -> str | None:
    """The name of the API key the request was made with (app/api/auth.py), None without one
    (public routes, refused keys, ``ECGFM_AUTH=disabled``)."""
    actor = scope.get("state", {}).get("actor")
    return actor.name if isinstance(actor, Actor) and actor.authenticated else None


class RequestObserver:
    """Request id, access-log line and metrics for every HTTP request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body_bytes = int(settings.max_request_mb * 1024 * 1024)
        self.body_read_timeout_s = float(settings.body_read_timeout_s)

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

        receive = guarded_receive(receive, self.max_body_bytes, self.body_read_timeout_s, _declared_length(scope))
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            seconds = time.perf_counter() - started
            endpoint = endpoint_of(scope)
            if endpoint not in NOT_RECORDED:
                metrics.record_http_request(endpoint, scope["method"], status, seconds)
            actor = _key_name(scope)
            access_log.log(logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO,
                           "method=%s path=%s status=%d duration_ms=%.1f request_id=%s%s",
                           scope["method"], endpoint, status, seconds * 1000, request_id,
                           "" if actor is None else f" actor={json.dumps(actor, ensure_ascii=False)}",
                           extra={"method": scope["method"], "endpoint": endpoint, "status": status,
                                  "duration_ms": round(seconds * 1000, 1), "request_id": request_id,
                                  "actor": actor})
