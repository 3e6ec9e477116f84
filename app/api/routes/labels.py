"""Diagnosis labels and label sets (named panels). Sync routes: FastAPI runs them in its
thread pool, so database calls and text embedding never block the event loop."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.auth import DiagnoseActor, KeyFirstRoute, LabelsActor
from app.api.openapi import error_responses
from app.api.schemas import (
    LABEL_ID_MAX,
    NAME_MAX,
    NO_CONTROL_PATTERN,
    LabelIn,
    LabelOut,
    LabelSetIn,
    LabelSetOut,
)
from app.api.state import ServiceState, StateDep
from app.knowledge.types import Label
from app.ops import metrics

log = logging.getLogger(__name__)
# Every route needs the loaded service (503 while it is not); the rest is declared per route.
router = APIRouter(route_class=KeyFirstRoute, tags=["labels"], responses=error_responses(401, 403, 503))
# Bounds the databases can hold (an id past 2^31 - 1 would be a database error, not a 404) and
# no control characters (PostgreSQL refuses NUL): refused with 422 before any query, and declared.
LabelId = Annotated[int, Path(ge=1, le=LABEL_ID_MAX, description="the label's id")]
SetName = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN,
                              description="the label set's name")]


def _embed(state: ServiceState, label: Label) -> bool:
    """Compute (or find) the label's text vector now, so diagnose never waits for it."""
    _vectors, stats = state.cache.vectors_for([label.text_for_encoder], state.embedder)
    metrics.record_embedding_cache(hits=stats.hits, misses=stats.misses)
    return True


def _out(state: ServiceState, label: Label, *, embedded: bool = False) -> LabelOut:
    return LabelOut.of(label, label_sets=state.store.label_sets_of(label.id), embedded=embedded)


@router.get("/labels", operation_id="listLabels", response_model=list[LabelOut], summary="all registered labels")
def list_labels(state: StateDep, _actor: DiagnoseActor) -> list[LabelOut]:
    sets: dict[int, list[str]] = {}
    for s in state.store.list_label_sets():
        for label in s.labels:
            sets.setdefault(label.id, []).append(s.name)
    return [LabelOut.of(label, label_sets=sets.get(label.id, [])) for label in state.store.list_labels()]


@router.post("/labels", operation_id="createLabel", response_model=LabelOut, status_code=status.HTTP_201_CREATED,
             summary="register a diagnosis; its text vector is computed once and cached",
             responses=error_responses(400, 404, 409, 422))
def create_label(body: LabelIn, state: StateDep, _actor: LabelsActor) -> LabelOut:
    label = state.store.create_label(body.draft())
    log.info("label created id=%s", label.id)
    return _out(state, label, embedded=_embed(state, label))


@router.get("/labels/{label_id}", operation_id="getLabel", response_model=LabelOut, summary="one label",
            responses=error_responses(404, 422))
def get_label(label_id: LabelId, state: StateDep, _actor: DiagnoseActor) -> LabelOut:
    return _out(state, state.store.get_label(label_id))


@router.put("/labels/{label_id}", operation_id="updateLabel", response_model=LabelOut,
            summary="replace a label (its sets get new versions)", responses=error_responses(400, 404, 409, 422))
def update_label(label_id: LabelId, body: LabelIn, state: StateDep, _actor: LabelsActor) -> LabelOut:
    label = state.store.update_label(label_id, body.draft())
    log.info("label updated id=%s", label.id)
    return _out(state, label, embedded=_embed(state, label))


@router.delete("/labels/{label_id}", operation_id="deleteLabel", status_code=status.HTTP_204_NO_CONTENT,
               summary="delete a label; refused (409) while it belongs to a set unless force=true",
               responses=error_responses(404, 409, 422))
def delete_label(label_id: LabelId, state: StateDep, _actor: LabelsActor, force: bool = Query(False)) -> Response:
    state.store.delete_label(label_id, force=force)
    log.info("label deleted id=%s force=%s", label_id, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/label-sets", operation_id="listLabelSets", response_model=list[LabelSetOut],
            summary="all label sets with their versions")
def list_label_sets(state: StateDep, _actor: DiagnoseActor) -> list[LabelSetOut]:
    return [LabelSetOut.of(s) for s in state.store.list_label_sets()]


@router.post("/label-sets", operation_id="createLabelSet", response_model=LabelSetOut,
             status_code=status.HTTP_201_CREATED, summary="create a named label set (its labels in order)",
             responses=error_responses(400, 404, 409, 422))
def create_label_set(body: LabelSetIn, state: StateDep, _actor: LabelsActor) -> LabelSetOut:
    return LabelSetOut.of(state.store.create_label_set(body.draft()))


@router.get("/label-sets/{name}", operation_id="getLabelSet", response_model=LabelSetOut,
            summary="a label set, now or at an earlier version", responses=error_responses(404, 422))
def get_label_set(name: SetName, state: StateDep, _actor: DiagnoseActor,
                  version: str | None = Query(None, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN,
                                              description="an earlier version")) -> LabelSetOut:
    s = state.store.get_label_set_version(name, version) if version else state.store.get_label_set(name)
    return LabelSetOut.of(s)


@router.put("/label-sets/{name}", operation_id="updateLabelSet", response_model=LabelSetOut,
            summary="replace a set's members (new version)", responses=error_responses(400, 404, 409, 422))
def update_label_set(name: SetName, body: LabelSetIn, state: StateDep, _actor: LabelsActor) -> LabelSetOut:
    return LabelSetOut.of(state.store.update_label_set(name, body.draft()))


@router.delete("/label-sets/{name}", operation_id="deleteLabelSet", status_code=status.HTTP_204_NO_CONTENT,
               summary="delete a set (its labels and version snapshots stay)",
               responses=error_responses(404, 422))
def delete_label_set(name: SetName, state: StateDep, _actor: LabelsActor) -> Response:
    state.store.delete_label_set(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
