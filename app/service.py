"""The composition root: the model repository, one database and the use-cases wired together.

``build_service(settings)`` is what every entry point runs: the HTTP lifespan
(``app.api.state``) and the offline scorer (``open_offline_scorer``: the command line,
``evaluate``) get the same model repository (the active version's runtime and batched
scorer), knowledge store (seeded with the built-in label sets), embedding cache and
``DiagnoseService``, so a record scored from the command line and through ``POST /diagnose``
goes through the same code.

The first active version is the one the database records (``POST /models/{version}/activate``
on any worker or replica), else the configured bundle (``ECGFM_BUNDLE_DIR``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine, text

from app.access.keys import KeyStore, KeyVerifier
from app.access.scopes import COMMAND_LINE
from app.ecg.parse_pool import ParsePool, ParsePoolOptions
from app.ecg.uploads import UploadLimits
from app.errors import DatabaseUnavailable
from app.knowledge import db
from app.knowledge.builtin import seed_builtin
from app.knowledge.db import DatabaseOptions, create_schema, make_engine
from app.knowledge.embedding_cache import EmbeddingCache, LabelSetVectors
from app.knowledge.guard import DatabaseGuard
from app.knowledge.model_state import ActiveModelStore
from app.knowledge.store import KnowledgeStore, LabelSetReader
from app.knowledge.types import LabelDraft
from app.ops import metrics
from app.ops.settings import Settings
from app.serving.repository import BundleEntry, ModelRepository
from app.serving.runtime import ModelRuntime, RuntimeOptions, load_runtime
from app.usecases.diagnose import DiagnoseService
from app.usecases.offline import OfflineScorer
from app.usecases.scoring import RuntimeEmbedder, Scorer, ServedModel

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass
class Service:
    """Everything a running service holds; built once, closed once."""

    settings: Settings
    engine: Engine
    store: KnowledgeStore
    cache: EmbeddingCache
    models: ModelRepository[ServedModel]
    active_models: ActiveModelStore  # the active version as the database records it
    diagnose: DiagnoseService
    limits: UploadLimits
    keys: KeyVerifier
    parse_pool: ParsePool | None = None  # None: uploads are read in this process (parse_workers = 0)

    # the active version's parts (a request that must not see a switch midway leases one instead)
    @property
    def model(self) -> ServedModel:
        return self.models.active

    @property
    def runtime(self) -> ModelRuntime:
        return self.model.runtime

    @property
    def embedder(self) -> RuntimeEmbedder:
        return self.model.embedder

    @property
    def scorer(self) -> Scorer:
        return self.model.scorer

    def database_ok(self) -> bool:
        return self.database_problem() is None

    def database_problem(self) -> str | None:
        """None when the database answers ``SELECT 1`` within ``readiness_timeout_s``, else what is wrong."""

        def probe() -> None:
            with db.read_tx(self.engine) as conn:
                conn.execute(text("SELECT 1"))

        try:
            self.store.guard.call(probe, deadline_s=self.settings.readiness_timeout_s)
        except DatabaseUnavailable as exc:
            return exc.message.split(";")[0]
        except Exception as exc:  # any other failure of the probe also means "not usable"
            return f"the knowledge database check failed ({type(exc).__name__})"
        return None

    def close(self) -> None:
        """Stop the request-work thread and the parse workers (no process is left behind) and release
        the database and the models' sessions (their scorers are stopped by the owner)."""
        self.diagnose.close()
        if self.parse_pool is not None:
            self.parse_pool.close()
        self.models.close_unstarted()  # whatever the owner did not stop and release already
        self.engine.dispose()


def upload_limits(settings: Settings) -> UploadLimits:
    return UploadLimits(
        max_upload_bytes=int(settings.max_upload_mb * MiB), max_files=settings.max_files,
        max_archive_members=settings.max_archive_members, max_unpacked_bytes=int(settings.max_unpacked_mb * MiB),
    )


def parse_pool_options(settings: Settings) -> ParsePoolOptions:
    return ParsePoolOptions(workers=settings.parse_workers, timeout_s=settings.parse_timeout_s,
                            memory_bytes=settings.parse_memory_mb * MiB, nice=settings.parse_nice)


def start_parse_pool(settings: Settings) -> ParsePool | None:
    """The started (warm) parse pool ``settings`` ask for, or None for ``parse_workers = 0``."""
    if settings.parse_workers == 0:
        return None
    return ParsePool(parse_pool_options(settings), on_failure=metrics.record_parse_failure,
                     on_busy=metrics.set_parse_workers_busy).start()


def runtime_options(settings: Settings) -> RuntimeOptions:
    return RuntimeOptions(provider=settings.provider, intra_op_threads=settings.intra_op_threads,
                          lanes=settings.inference_lanes, precision=settings.precision,
                          thread_nice=settings.model_thread_nice)


def load_model(settings: Settings, bundle_dir: Path | None = None) -> ModelRuntime:
    """The ONNX runtime of ``bundle_dir`` (default: the configured bundle); raises BundleError
    with how-to text when there is no bundle."""
    return load_runtime(bundle_dir or settings.bundle_dir, runtime_options(settings))


def served_model(settings: Settings, runtime: ModelRuntime) -> ServedModel:
    model = ServedModel(runtime, max_batch_size=settings.max_batch_size,
                        max_wait_s=settings.max_batch_wait_ms / 1000)
    model.scorer.retry_after_s = settings.retry_after_s
    return model


def model_loader(settings: Settings) -> Callable[[BundleEntry], ServedModel]:
    """What the model repository calls to load a version: sessions created, then warmed up."""
    def load(entry: BundleEntry) -> ServedModel:
        model = served_model(settings, load_model(settings, entry.root))
        model.warm_up()
        return model

    return load


def open_models(settings: Settings, active: ActiveModelStore, runtime: ModelRuntime | None) -> ModelRepository[
        ServedModel]:
    """The model repository with its first active version loaded (see the module docstring)."""
    repo = ModelRepository(store_dir=settings.model_store_dir, default_bundle=settings.bundle_dir,
                           load=model_loader(settings), keep_loaded=settings.keep_loaded_versions,
                           drain_timeout_s=settings.shutdown_grace_s)
    if runtime is not None:
        repo.adopt(served_model(settings, runtime))
        return repo
    recorded = active.get()
    if recorded is not None and any(e.version == recorded.version and e.problem is None for e in repo.entries()):
        repo.load_initial(recorded.version)
    else:
        if recorded is not None:
            log.error("the active model recorded in the database is %r, which this model store (%s) does not "
                      "hold or cannot serve; serving the configured bundle %s", recorded.version,
                      settings.model_store_dir, settings.bundle_dir)
        repo.load_initial(None)
    return repo


def build_service(settings: Settings, *, runtime: ModelRuntime | None = None, seed_builtins: bool = True,
                  parse_in_process: bool = False) -> Service:
    """Load the model (unless ``runtime`` is given) and open the database named by ``settings``.

    ``seed_builtins`` adds the built-in labels and label sets that are not there yet (never
    overwriting edits); off only for a private database that must hold nothing else.
    ``parse_in_process``: read uploads in this process whatever ``parse_workers`` says (the
    command line reads the operator's own files; it needs no worker processes).
    """
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    engine = make_engine(url, database_options(settings))
    create_schema(engine)
    guard = DatabaseGuard(deadline_s=None if db.is_sqlite(url) else settings.database_call_timeout_s,
                          retry_after_s=settings.database_retry_after_s)
    active_models = ActiveModelStore(engine, guard=guard)
    try:
        models = open_models(settings, active_models, runtime)
    except BaseException:
        engine.dispose()
        raise
    store = KnowledgeStore(engine, guard=guard)
    parse_pool: ParsePool | None = None
    try:
        if seed_builtins:
            report = seed_builtin(store)
            log.info("built-in knowledge: %d labels and %d label sets added", len(report.labels_added),
                     len(report.label_sets_added))
        cache = EmbeddingCache(engine, guard=guard)
        # started (warm) after the model and the database: a missing bundle starts no process
        parse_pool = None if parse_in_process else start_parse_pool(settings)
        diagnose = DiagnoseService(
            store=store, vectors=LabelSetVectors(cache), default_label_set=settings.default_label_set,
            max_labels=settings.max_labels_per_request, max_duration_s=settings.max_duration_s,
            request_threads=settings.request_threads,
            label_sets=LabelSetReader(store, fallback_deadline_s=settings.database_fallback_timeout_s),
            parse_pool=parse_pool,
        )
        keys = KeyVerifier(KeyStore(engine, guard=guard), cache_s=settings.key_cache_s)
    except BaseException:
        if parse_pool is not None:
            parse_pool.close()
        models.close_unstarted()
        engine.dispose()
        raise
    if settings.auth == "disabled":
        log.warning("AUTHENTICATION IS DISABLED (ECGFM_AUTH=disabled): anyone who can reach this service may "
                    "score, change every label and label set, and manage keys. Never run it like this where "
                    "clinicians rely on the answers.")
    return Service(settings, engine, store, cache, models, active_models, diagnose, upload_limits(settings),
                   keys, parse_pool)


def database_options(settings: Settings) -> DatabaseOptions:
    return DatabaseOptions(
        connect_timeout_s=settings.database_connect_timeout_s,
        statement_timeout_s=settings.database_statement_timeout_s,
        pool_timeout_s=settings.database_call_timeout_s,
        sqlite_busy_timeout_s=settings.database_busy_timeout_s,
    )


@contextmanager
def open_offline_scorer(settings: Settings, *, adhoc_labels: Sequence[LabelDraft] = ()) -> Iterator[OfflineScorer]:
    """An ``OfflineScorer`` over the service that ``settings`` describe, closed on exit.

    With ``adhoc_labels`` the site's database is not opened: the labels are registered in a
    private SQLite database in a temporary directory (removed on exit, also on error) that
    holds only them, so they are scored exactly as registered labels are (``DiagnoseOptions(
    labels=<their names>)``: knowledge, codes, versioned ad-hoc set) without being stored
    anywhere. Their vectors are computed for this run only.
    """
    if not adhoc_labels:
        service = build_service(settings, parse_in_process=True)
        try:
            with OfflineScorer(service.diagnose, service.model, service.limits) as scorer:
                yield scorer
        finally:
            service.close()
        return
    drafts = [d.validated() for d in adhoc_labels]
    runtime = load_model(settings)  # first: a missing bundle is reported before anything is written
    with tempfile.TemporaryDirectory(prefix="ecgfm-adhoc-") as scratch:
        private = replace_database(settings, Path(scratch) / "adhoc.sqlite3")
        service = build_service(private, runtime=runtime, seed_builtins=False, parse_in_process=True)
        try:
            for draft in drafts:
                service.store.create_label(replace(draft, label_sets=()), actor=COMMAND_LINE.name)
            with OfflineScorer(service.diagnose, service.model, service.limits) as scorer:
                yield scorer
        finally:
            service.close()


def replace_database(settings: Settings, sqlite_file: Path) -> Settings:
    """A copy of ``settings`` whose database is the SQLite file ``sqlite_file``."""
    return settings.model_copy(update={"database_url": f"sqlite:///{sqlite_file.resolve()}"})
