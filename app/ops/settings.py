"""All configuration, read once from the environment (prefix ``ECGFM_``) and passed down.

Every variable is listed in README.md ("Configuration"); command-line flags of
``ecgfm-ked serve`` override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECGFM_", extra="ignore")

    # model
    bundle_dir: Path = Field(Path("model_store/bundle"), description="the bundle served until a version is "
                             "activated (POST /models/{version}/activate); part of the model repository")
    # the model repository (app/serving/repository.py): one bundle per folder, each a version
    model_store_dir: Path = Field(Path("model_store"), description="folder whose sub-folders are model bundles "
                                  "(versions) that can be activated or pinned")
    keep_loaded: str = Field("", description="comma-separated model versions kept loaded next to the active one, "
                             "so that requests can pin them with model=")
    model_poll_s: float = Field(5.0, ge=0, description="how often each worker checks the database for a model "
                                "switch made elsewhere and follows it (0 = never)")
    provider: Literal["auto", "cpu", "cuda"] = Field("auto", description="ONNX Runtime execution provider")
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads (0 = one per core, os.cpu_count())"
    )
    inference_lanes: int = Field(
        0, ge=0, description="model calls that may run at once under load, each on intra_op_threads / lanes threads; "
        "a call with nothing else to do uses them all (0 = auto: 2 on a CPU with >= 2 cores, 1 on CUDA)")
    model_thread_nice: int = Field(
        5, ge=0, le=19, description="how much lower (nice) than the event loop the model's threads run (Linux), "
        "so /healthz, 503s and request reading are scheduled at once while the model keeps the cores busy")
    precision: Literal["fp32", "int8", "fp16"] = Field(
        "fp32",
        description="ecg_tqn arithmetic: int8 needs ecg_tqn.int8.onnx from `ecgfm-ked quantize`; fp16 only on CUDA",
    )

    # storage
    data_dir: Path = Field(Path("data"), description="where the default SQLite database lives")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/ecgfm-ked.sqlite3")
    # degrade, don't fail, when the database does (app/knowledge/db.py, app/knowledge/guard.py)
    database_connect_timeout_s: int = Field(3, ge=1, description="PostgreSQL connect_timeout (whole seconds)")
    database_statement_timeout_s: float = Field(5.0, gt=0, description="PostgreSQL statement_timeout")
    database_call_timeout_s: float = Field(
        8.0, gt=0, description="longest a request waits for one knowledge-database call on PostgreSQL, also when "
        "the server is frozen (also bounds waiting for a pooled connection); past it 503 database_unavailable")
    database_busy_timeout_s: float = Field(30.0, gt=0, description="SQLite: longest wait for another writer's lock")
    database_retry_after_s: int = Field(5, ge=1, description="Retry-After (seconds) sent with 503 "
                                        "database_unavailable")
    database_fallback_timeout_s: float = Field(
        1.0, gt=0, description="how long /diagnose waits for the database before serving a label set it has "
        "already used from memory (with the knowledge_from_cache warning)")
    readiness_timeout_s: float = Field(1.0, gt=0, description="longest /readyz waits for the database")

    # logs: a level, or a level and logger=level pairs (app/ops/logging.py), e.g. INFO,app.access=WARNING
    log_level: str = Field("INFO", description="log levels, e.g. INFO or INFO,app.access=WARNING")

    # access (app/access, app/api/auth.py): API keys with scopes, required unless turned off explicitly
    auth: Literal["required", "disabled"] = Field(
        "required", description="`required`: every route but health, metrics and the API documents needs "
        "`Authorization: Bearer KEY`; `disabled`: anyone may do anything (logged loudly at start)")
    key_cache_s: float = Field(
        30.0, ge=0, description="how long a verified key is trusted before the database is asked again: the "
        "bound on a revocation reaching other processes (a revocation through this process applies at once)")

    # serving
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    default_label_set: str = Field("default", description="label set used when a request names none")

    # batching
    max_batch_size: int = Field(16, ge=1, description="most ECG windows in one inference call")
    # 0: a request runs at once when the model is idle; while it is busy, arriving requests
    # queue and form the next batch (measured: waiting 5 ms only added latency on 2 cores)
    max_batch_wait_ms: float = Field(0.0, ge=0, description="longest a request waits for others to join its batch")

    # bounded work overall. ~25 ECG/s on 2 cores (benchmarks/service_bench.py): 64 admitted ECGs is
    # about 2.5 s of work, so an accepted request answers well inside the deadline
    max_queued_ecgs: int = Field(64, ge=1, description="ECGs admitted to /diagnose at once (being read, queued or "
                                 "scored); past it a request gets 503 overloaded with Retry-After")
    request_deadline_s: float = Field(30.0, gt=0, description="a /diagnose request not scored this many seconds "
                                      "after it arrived gets 503 deadline_exceeded and is never scored")
    retry_after_s: int = Field(2, ge=1, description="Retry-After (seconds) sent with 503 overloaded / "
                               "deadline_exceeded / shutting_down")
    shutdown_grace_s: float = Field(30.0, ge=0, description="after SIGTERM, how long in-flight requests may take "
                                    "to finish before they are cancelled (uvicorn timeout_graceful_shutdown)")

    # threads that read and preprocess uploads: this work holds the GIL, so more threads only
    # contend for it (measured: one halved the CPU per request at concurrency 16 on 2 cores)
    request_threads: int = Field(1, ge=1, description="threads for reading and preprocessing uploads")

    # parsing uploads in worker processes (app/ecg/parse_pool.py): one bad file cannot stall or sink
    # the others. Measured on the 2-core reference machine (shared), benchmarks/parse_pool_bench.py:
    # the slowest valid upload, a 50 MB CSV, reads in about 13 s; the largest accepted recording
    # (12 x 600 s x 10 kHz, 576 MB as float64) in 1-3.5 s (WFDB, NPY), needing up to 3.2 times its
    # size in address space above a worker's baseline of about 250 MB.
    parse_workers: int = Field(
        2, ge=0, description="worker processes that read uploaded files, each under parse_timeout_s and "
        "parse_memory_mb (0 = read in the server process, on the request thread)")
    parse_timeout_s: float = Field(
        20.0, gt=0, description="longest one file (or finding the records in an upload) may take to read; past it "
        "the worker is killed and replaced, and the request gets 413 upload_too_large")
    parse_memory_mb: int = Field(
        2560, ge=128, description="address-space limit (RLIMIT_AS, MiB) of each parse worker: its baseline "
        "(about 250 MB) + 4 x the largest accepted recording (576 MB); past it 413 upload_too_large")
    parse_nice: int = Field(5, ge=0, le=19, description="how much lower (Linux nice) than the server the parse "
                            "workers run, so the event loop is scheduled first")

    # input limits
    max_upload_mb: float = Field(50.0, gt=0)
    max_files: int = Field(64, ge=1)
    max_archive_members: int = Field(256, ge=1)
    max_unpacked_mb: float = Field(200.0, gt=0)
    max_duration_s: float = Field(600.0, gt=0, description="longest record accepted")
    max_request_mb: float = Field(100.0, gt=0, description="largest request body (Content-Length) accepted")
    # the whole body must arrive within this many seconds of its first read (else 408)
    body_read_timeout_s: float = Field(60.0, gt=0, description="longest time a request body may take to arrive")
    max_ecgs_per_request: int = Field(32, ge=1)
    max_labels_per_request: int = Field(500, ge=1)

    # FHIR answers (app/api/fhir.py)
    recorder_timezone: str | None = Field(
        None, description="IANA time zone (e.g. Europe/Berlin) of the ECG recorders whose files give a local time "
        "without a zone (WFDB, MUSE, Sierra, most DICOM): their FHIR effectiveDateTime is placed in it; unset, "
        "such a time is given as its date only (FHIR requires a zone on a time)")
    fhir_positive_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Observation.interpretation in FHIR answers is POS at or above this "
        "probability (NEG below), and DiagnosticReport.conclusionCode lists the POS ones, unless the request "
        "gives a threshold above 0; the probabilities are uncalibrated")
    fhir_performer: str | None = Field(
        None, pattern=r"^(Organization|Practitioner|PractitionerRole|CareTeam)/[A-Za-z0-9\-.]{1,64}$",
        description="FHIR reference put in DiagnosticReport.performer and Observation.performer (e.g. the "
        "Organization that runs this service); unset: no performer (R4 allows no Device there)")

    @field_validator("recorder_timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Berlin, UTC)") from None
        return value.strip()

    @property
    def recorder_tzinfo(self) -> ZoneInfo | None:
        return ZoneInfo(self.recorder_timezone) if self.recorder_timezone else None

    @property
    def keep_loaded_versions(self) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.keep_loaded.split(",") if v.strip())

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ecgfm-ked.sqlite3').resolve()}"
