"""What the running service holds (built once in the lifespan) and the typed dependencies
routes ask for."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, text

from app.ecg.uploads import UploadLimits
from app.errors import ModelNotReady
from app.knowledge.builtin import seed_builtin
from app.knowledge.db import create_schema, make_engine
from app.knowledge.embedding_cache import EmbeddingCache, LabelSetVectors
from app.knowledge.store import KnowledgeStore
from app.serving.runtime import ModelRuntime, RuntimeOptions, load_runtime
from app.ops import metrics
from app.ops.settings import Settings
from app.usecases.diagnose import DiagnoseService
from app.usecases.scoring import RuntimeEmbedder, Scorer

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    store: KnowledgeStore
    cache: EmbeddingCache
    runtime: ModelRuntime
    embedder: RuntimeEmbedder
    scorer: Scorer
    diagnose: DiagnoseService
    limits: UploadLimits

    def database_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not reachable"
            return False


def build_state(settings: Settings) -> ServiceState:
    """Load the model and open the database; raises BundleError with how-to text if no bundle."""
    runtime = load_runtime(settings.bundle_dir, RuntimeOptions(provider=settings.provider,
                                                              intra_op_threads=settings.intra_op_threads,
                                                              lanes=settings.inference_lanes,
                                                              precision=settings.precision))
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    create_schema(engine)
    store = KnowledgeStore(engine)
    report = seed_builtin(store)
    log.info("built-in knowledge: %d labels and %d label sets added", len(report.labels_added), len(report.label_sets_added))
    cache = EmbeddingCache(engine)
    embedder = RuntimeEmbedder(runtime)
    scorer = Scorer(runtime, max_batch_size=settings.max_batch_size, max_wait_s=settings.max_batch_wait_ms / 1000)
    diagnose = DiagnoseService(
        store=store, vectors=LabelSetVectors(cache), embedder=embedder, scorer=scorer, model_info=runtime.info,
        default_label_set=settings.default_label_set, max_labels=settings.max_labels_per_request,
        max_duration_s=settings.max_duration_s, request_threads=settings.request_threads,
    )
    mb = 1024 * 1024
    limits = UploadLimits(
        max_upload_bytes=int(settings.max_upload_mb * mb), max_files=settings.max_files,
        max_archive_members=settings.max_archive_members, max_unpacked_bytes=int(settings.max_unpacked_mb * mb),
    )
    info = runtime.info
    metrics.set_model_info(model_name=info.name, model_version=info.version, provider=info.provider,
                           precision=info.precision, untrained=info.untrained)
    return ServiceState(settings, engine, store, cache, runtime, embedder, scorer, diagnose, limits)


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise ModelNotReady("the service is starting or its model failed to load")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
