"""Prometheus metrics for the service, correct under several uvicorn/gunicorn workers.

Every metric is prefixed ``ecgfm_``. Labels never carry patient data or free text:
``endpoint`` is the *route template* (``"/labels/{label_id}"``, never the concrete path),
``code`` is a machine-readable error code, ``source_format`` a reader id, and label values
are checked against a conservative character set (anything else becomes ``"other"``).

Callers use the small functions below rather than the metric objects:

    from app.ops import metrics
    with metrics.time_stage("preprocess"):
        ...
    metrics.observe_inference_batch(windows.shape[0])
    metrics.record_http_request("/labels/{label_id}", "GET", 200, elapsed)
    body, content_type = metrics.render_latest()       # for GET /metrics

Multiprocess mode
-----------------
When the environment variable ``PROMETHEUS_MULTIPROC_DIR`` is set *before*
``prometheus_client`` is first imported, each process writes its values to mmap files in
that directory and :func:`render_latest` aggregates all of them with a
``MultiProcessCollector``. Without it, the default in-process registry is rendered.

The process supervisor (``ecgfm-ked serve`` before it spawns workers, or the container
entrypoint) owns the directory: it must exist and be emptied at start
(:func:`prepare_multiproc_dir` does both) so that counters of a previous run do not leak
into the new one. Gauge aggregation across processes:

* ``ecgfm_batch_queue_depth`` -- ``livesum``: total queued windows of the live workers.
* ``ecgfm_parse_workers_busy`` -- ``livesum``: parse processes reading a file, all server workers.
* ``ecgfm_model_info`` -- ``livemax``: one series per distinct label set, value 1.
* ``ecgfm_ready`` -- ``livemax``: 1 when at least one live worker is ready. (``livemin``
  would be stricter, but any process that merely imports this module -- the supervisor,
  a CLI command -- contributes a 0 and would pin it to 0 forever.) Per-worker readiness
  is what ``/readyz`` answers.

"live" gauge modes drop a process only when told it died. Call :func:`mark_process_dead`
with the worker's pid from the supervisor when a worker exits, e.g. in gunicorn::

    # gunicorn.conf.py
    def child_exit(server, worker):
        from app.ops.metrics import mark_process_dead
        mark_process_dead(worker.pid)

(uvicorn's own ``--workers`` supervisor has no such hook; there stale gauge files of a
crashed worker remain until the next start cleans the directory. Counters and histograms
are unaffected: a dead worker's totals are correctly kept.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

log = logging.getLogger(__name__)

# No ``*_created`` series: they double the series count for no dashboard use, and
# multiprocess mode never emits them, so both modes now expose the same series.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- vocabularies -----------------------------------------------------------------------

STAGES: tuple[str, ...] = ("parse", "preprocess", "queue", "inference", "embed", "total")
CACHE_RESULTS: tuple[str, ...] = ("hit", "miss")
HTTP_METHODS: frozenset[str] = frozenset(
    {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
)
UNMATCHED_ENDPOINT = "<unmatched>"  # requests that matched no route (404s on random paths)
OTHER = "other"

# Buckets ---------------------------------------------------------------------------------
# Stage timings span a cached label lookup (~1 ms) to a large batch on CPU (tens of s).
STAGE_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
)
HTTP_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
REQUEST_ECGS_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LABEL_COUNT_BUCKETS: tuple[float, ...] = (1, 5, 10, 26, 50, 71, 100, 200, 500)

# --- metrics ------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "ecgfm_http_requests_total",
    "HTTP requests handled, by route template, method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "ecgfm_http_request_duration_seconds",
    "HTTP request duration in seconds, by route template and method.",
    ["endpoint", "method"],
    buckets=HTTP_BUCKETS,
)
STAGE_DURATION = Histogram(
    "ecgfm_stage_duration_seconds",
    "Duration of one processing stage in seconds "
    "(parse, preprocess, queue, inference, embed, total).",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
INFERENCE_BATCH_SIZE = Histogram(
    "ecgfm_inference_batch_size",
    "ECG windows per inference batch sent to the model.",
    buckets=BATCH_SIZE_BUCKETS,
)
INFERENCE_CALLS = Counter(
    "ecgfm_inference_calls",
    "Model calls, by cores: 'all' (ran alone on every core) or 'shared' (one lane of several, under load).",
    ["cores"],
)
REQUEST_ECGS = Histogram(
    "ecgfm_request_ecgs",
    "ECG recordings per /diagnose call.",
    buckets=REQUEST_ECGS_BUCKETS,
)
LABEL_COUNT = Histogram(
    "ecgfm_label_count",
    "Labels scored per request.",
    buckets=LABEL_COUNT_BUCKETS,
)
EMBEDDING_CACHE = Counter(
    "ecgfm_embedding_cache_total",
    "Text-embedding cache lookups, by result (hit or miss).",
    ["result"],
)
ERRORS = Counter(
    "ecgfm_errors_total",
    "Errors reported to callers, by machine-readable error code.",
    ["code"],
)
ECGS = Counter(
    "ecgfm_ecgs_total",
    "ECG recordings read, by source format.",
    ["source_format"],
)
QUEUE_DEPTH = Gauge(
    "ecgfm_batch_queue_depth",
    "ECG windows waiting in the inference batch queue (summed over live workers).",
    multiprocess_mode="livesum",
)
MODEL_INFO = Gauge(
    "ecgfm_model_info",
    "The model being served; value 1 for the current one.",
    ["model_name", "model_version", "provider", "precision", "untrained"],
    multiprocess_mode="livemax",
)
SHED = Counter(  # bounded work overall
    "ecgfm_diagnose_shed",
    "/diagnose requests not scored, by reason: rejected (queue full), expired (past the request deadline), "
    "abandoned (client disconnected), draining (shutting down).",
    ["reason"],
)
ADMITTED_ECGS = Gauge(
    "ecgfm_admitted_ecgs",
    "ECGs in /diagnose requests admitted and not yet answered (bounded by ECGFM_MAX_QUEUED_ECGS).",
    multiprocess_mode="livesum",
)
PARSE_FAILURES = Counter(  # bounded work per upload (app/ecg/parse_pool.py)
    "ecgfm_parse_failures",
    "Uploaded files whose reading was stopped, by reason: timeout (past ECGFM_PARSE_TIMEOUT_S, worker killed), "
    "memory (past ECGFM_PARSE_MEMORY_MB), crashed (the reader process ended); the worker is replaced each time.",
    ["reason"],
)
PARSE_WORKERS_BUSY = Gauge(
    "ecgfm_parse_workers_busy",
    "Parse worker processes reading a file now (of ECGFM_PARSE_WORKERS per server process).",
    multiprocess_mode="livesum",
)
READY = Gauge(
    "ecgfm_ready",
    "1 when the model is loaded and the database is reachable.",
    multiprocess_mode="livemax",
)

# Names of every metric family defined here (without _total/_bucket/... suffixes).
METRIC_NAMES: frozenset[str] = frozenset(
    {
        "ecgfm_http_requests",
        "ecgfm_http_request_duration_seconds",
        "ecgfm_stage_duration_seconds",
        "ecgfm_inference_batch_size",
        "ecgfm_inference_calls",
        "ecgfm_request_ecgs",
        "ecgfm_label_count",
        "ecgfm_embedding_cache",
        "ecgfm_errors",
        "ecgfm_ecgs",
        "ecgfm_batch_queue_depth",
        "ecgfm_model_info",
        "ecgfm_ready",
        "ecgfm_diagnose_shed",
        "ecgfm_admitted_ecgs",
        "ecgfm_parse_failures",
        "ecgfm_parse_workers_busy",
    }
)


# --- mode ---------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    """The multiprocess directory from the environment, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def multiprocess_enabled() -> bool:
    return multiprocess_dir() is not None


if multiprocess_enabled() and not getattr(values.ValueClass, "_multiprocess", False):
    log.warning(
        "%s is set but prometheus_client was imported before it was: this process's "
        "metrics are not written to the multiprocess directory",
        MULTIPROC_ENV,
    )


def prepare_multiproc_dir(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Create the multiprocess directory and remove stale ``*.db`` files from a previous run.

    For the process supervisor, before any worker starts. Returns the directory, or None
    when not in multiprocess mode and no path was given.
    """
    raw = path if path is not None else multiprocess_dir()
    if raw is None:
        return None
    directory = Path(raw)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
    return directory


def mark_process_dead(pid: int) -> None:
    """Tell the multiprocess collector that worker ``pid`` exited (drops its live gauges).

    Call from the supervisor's worker-exit hook (gunicorn ``child_exit``). A no-op in
    single-process mode.
    """
    path = multiprocess_dir()
    if path is None:
        return
    multiprocess.mark_process_dead(pid, path)


def render_latest() -> tuple[bytes, str]:
    """The exposition body and its content type, for ``GET /metrics``.

    Aggregates every process's files with a ``MultiProcessCollector`` in multiprocess mode,
    renders the default registry otherwise.
    """
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir())
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- label hygiene ------------------------------------------------------------------------

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_ENDPOINT = re.compile(r"^/[A-Za-z0-9_\-./{}:]{0,127}$")


def _token(value: object) -> str:
    """A short lowercase identifier (error code, format id), or ``"other"``."""
    text = str(value).strip().lower()
    return text if _TOKEN.match(text) else OTHER


def _endpoint(value: str) -> str:
    if value == UNMATCHED_ENDPOINT:
        return value
    return value if _ENDPOINT.match(value) else OTHER


def _method(value: str) -> str:
    method = value.upper()
    return method if method in HTTP_METHODS else OTHER.upper()


def _status(value: int | str) -> str:
    try:
        code = int(value)
    except (TypeError, ValueError):
        return OTHER
    return str(code) if 100 <= code <= 599 else OTHER


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage


def _count(n: int | float, what: str) -> float:
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return float(n)


# --- recording ------------------------------------------------------------------------------


def record_http_request(endpoint: str, method: str, status: int | str, seconds: float) -> None:
    """One finished HTTP request. ``endpoint`` must be the route template
    (``request.scope["route"].path``), or :data:`UNMATCHED_ENDPOINT`."""
    ep, m = _endpoint(endpoint), _method(method)
    HTTP_REQUESTS.labels(endpoint=ep, method=m, status=_status(status)).inc()
    HTTP_DURATION.labels(endpoint=ep, method=m).observe(max(0.0, seconds))


def observe_stage(stage: str, seconds: float) -> None:
    """Duration of one stage: parse, preprocess, queue, inference, embed or total."""
    STAGE_DURATION.labels(stage=_check_stage(stage)).observe(max(0.0, seconds))


@contextmanager
def time_stage(stage: str) -> Iterator[None]:
    """Time the body as ``stage`` (observed also when the body raises)."""
    _check_stage(stage)
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(stage, time.perf_counter() - start)


def observe_inference_batch(windows: int, *, alone: bool = True) -> None:
    """ECG windows in one batch sent to the model, and whether the call had every core."""
    INFERENCE_BATCH_SIZE.observe(_count(windows, "windows"))
    INFERENCE_CALLS.labels(cores="all" if alone else "shared").inc()


def observe_request_ecgs(n: int) -> None:
    """ECG recordings in one /diagnose call."""
    REQUEST_ECGS.observe(_count(n, "ECG count"))


def observe_label_count(n: int) -> None:
    """Labels scored for one request."""
    LABEL_COUNT.observe(_count(n, "label count"))


def record_embedding_cache(hits: int = 0, misses: int = 0) -> None:
    """Embedding-cache lookups: ``hits`` found, ``misses`` computed."""
    if hits:
        EMBEDDING_CACHE.labels(result="hit").inc(_count(hits, "hits"))
    if misses:
        EMBEDDING_CACHE.labels(result="miss").inc(_count(misses, "misses"))


def record_error(code: str) -> None:
    """An error reported to a caller, by its machine-readable code (``ServiceError.code``)."""
    ERRORS.labels(code=_token(code)).inc()


def record_ecgs(source_format: str, n: int = 1) -> None:
    """``n`` ECG recordings read in ``source_format`` (the reader id, e.g. ``"wfdb"``)."""
    if n:
        ECGS.labels(source_format=_token(source_format)).inc(_count(n, "ECG count"))


def set_queue_depth(depth: int) -> None:
    """Windows currently waiting in this process's batch queue."""
    QUEUE_DEPTH.set(_count(depth, "queue depth"))


_model_info_labels: dict[str, str] | None = None


def set_model_info(
    *,
    model_name: str,
    model_version: str,
    provider: str,
    precision: str,
    untrained: bool,
) -> None:
    """Publish the model being served (replaces what was published before)."""
    global _model_info_labels
    labels = {
        "model_name": str(model_name)[:128],
        "model_version": str(model_version)[:128],
        "provider": str(provider)[:128],
        "precision": str(precision)[:32],
        "untrained": "true" if untrained else "false",
    }
    previous = _model_info_labels
    if previous is not None and previous != labels:
        # In multiprocess mode the old value stays in the mmap file after remove(); set it
        # to 0 first so the old series reads 0 rather than a stale 1.
        MODEL_INFO.labels(**previous).set(0)
        MODEL_INFO.remove(*previous.values())
    MODEL_INFO.labels(**labels).set(1)
    _model_info_labels = labels


SHED_REASONS: tuple[str, ...] = ("rejected", "expired", "abandoned", "draining")
for _reason in SHED_REASONS:  # exported at 0 from the start, so rate() and alerts see every reason
    SHED.labels(reason=_reason)


def record_shed(reason: str) -> None:
    """A /diagnose request that was not scored (one of ``SHED_REASONS``)."""
    if reason not in SHED_REASONS:
        raise ValueError(f"unknown shed reason {reason!r}; expected one of {SHED_REASONS}")
    SHED.labels(reason=reason).inc()


def set_admitted_ecgs(n: int) -> None:
    """ECGs admitted to /diagnose and not yet answered, in this process."""
    ADMITTED_ECGS.set(_count(n, "admitted ECGs"))


PARSE_FAILURE_REASONS: tuple[str, ...] = ("timeout", "memory", "crashed")
for _reason in PARSE_FAILURE_REASONS:  # exported at 0 from the start, like the shed reasons
    PARSE_FAILURES.labels(reason=_reason)


def record_parse_failure(reason: str) -> None:
    """A file whose reading was stopped (one of ``PARSE_FAILURE_REASONS``)."""
    if reason not in PARSE_FAILURE_REASONS:
        raise ValueError(f"unknown parse failure reason {reason!r}; expected one of {PARSE_FAILURE_REASONS}")
    PARSE_FAILURES.labels(reason=reason).inc()


def set_parse_workers_busy(n: int) -> None:
    """Parse workers holding a job now, in this server process."""
    PARSE_WORKERS_BUSY.set(_count(n, "busy parse workers"))


def set_ready(ready: bool) -> None:
    """1 when the model is loaded and the database is reachable, else 0."""
    READY.set(1 if ready else 0)


__all__ = [
    "CACHE_RESULTS",
    "METRIC_NAMES",
    "STAGES",
    "UNMATCHED_ENDPOINT",
    "mark_process_dead",
    "multiprocess_enabled",
    "observe_inference_batch",
    "observe_label_count",
    "observe_request_ecgs",
    "observe_stage",
    "prepare_multiproc_dir",
    "record_ecgs",
    "record_embedding_cache",
    "record_error",
    "record_http_request",
    "record_parse_failure",
    "record_shed",
    "render_latest",
    "set_admitted_ecgs",
    "set_model_info",
    "set_parse_workers_busy",
    "set_queue_depth",
    "set_ready",
    "time_stage",
]
