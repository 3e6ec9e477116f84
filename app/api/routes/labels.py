"""Diagnosis labels and label sets (named panels): thin routes over the labels use-case
(app/usecases/labels.py). Sync routes: FastAPI runs them in its thread pool, so database calls
and text embedding never block the event loop.

Concurrency: every label and set has a ``revision``, sent as its ``ETag`` (``"3"``). A replace
(PUT) must send it back as ``If-Match`` (428 ``precondition_required`` without one; ``*`` says
"whatever it is now"); a delete may. A revision that is no longer current gets 409
``version_conflict`` with the current one, and nothing changes (RFC 9110 would say 412; the
API answers 409 so that every "someone else changed it" is one status with one error body).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from app.api.auth import DiagnoseActor, KeyFirstRoute, LabelsActor
from app.api.errors import request_id_of
from app.api.openapi import error_responses
from app.api.schemas import (
    LABEL_ID_MAX,
    NAME_MAX,
    NO_CONTROL_PATTERN,
    LabelIn,
    LabelOut,
    LabelReplace,
    LabelSetIn,
    LabelSetOut,
    LabelSetReplace,
)
from app.api.state import StateDep
from app.errors import InvalidInput, PreconditionRequired
from app.knowledge.store import etag
from app.knowledge.types import LabelSet
from app.usecases.labels import Change, LabelsService, LabelView

log = logging.getLogger(__name__)
# Every route needs the loaded service (503 while it is not); the rest is declared per route.
router = APIRouter(route_class=KeyFirstRoute, tags=["labels"], responses=error_responses(401, 403, 503))
# Bounds the databases can hold (an id past 2^31 - 1 would be a database error, not a 404) and
# no control characters (PostgreSQL refuses NUL): refused with 422 before any query, and declared.
LabelId = Annotated[int, Path(ge=1, le=LABEL_ID_MAX, description="the label's id")]
SetName = Annotated[str, Path(min_length=1, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN,
                              description="the label set's name")]
IncludeDeleted = Annotated[bool, Query(description="also deleted built-in ones (restorable)")]
IF_MATCH_HELP = ("the ETag of the revision this change replaces (`\"3\"`, from the last read); `*` for whatever "
                 "it is now. A revision that is no longer current: 409 version_conflict, nothing changed")
IfMatchRequired = Annotated[str | None, Header(alias="If-Match", max_length=NAME_MAX,
                                               description="required: " + IF_MATCH_HELP + "; without it: 428")]
IfMatchOptional = Annotated[str | None, Header(alias="If-Match", max_length=NAME_MAX,
                                               description="optional: " + IF_MATCH_HELP)]


def labels_service(state: StateDep) -> LabelsService:
    return LabelsService(state.store, state.cache, state.embedder)


Labels = Annotated[LabelsService, Depends(labels_service)]


def expected_revision(if_match: str | None, *, required: bool, what: str) -> int | None:
    """The revision an ``If-Match`` names (None for ``*``, or for none when not ``required``).
    A weak tag (``W/"3"``) is taken as its revision: a proxy may have weakened it."""
    if if_match is None or not if_match.strip():
        if required:
            raise PreconditionRequired(
                f"replacing {what} needs the revision it replaces: send `If-Match` with the ETag of your last read "
                "(or `If-Match: *` to replace whatever it is now)")
        return None
    value = if_match.strip()
    if value == "*":
        return None
    tag = value.removeprefix("W/").strip()
    inner = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else tag
    if not inner.isdigit() or int(inner) < 1:
        raise InvalidInput(f"If-Match must be one ETag as this API sends it (e.g. \"3\") or *, not {value[:40]!r}",
                           details={"if_match": value[:40]})
    return int(inner)


def _change(request: Request, actor: DiagnoseActor | LabelsActor) -> Change:
    return Change(actor, request_id_of(request))


def _label_out(view: LabelView, response: Response | None = None) -> LabelOut:
    if response is not None:
        response.headers["ETag"] = etag(view.label.revision)
    return LabelOut.of(view.label, label_sets=list(view.label_sets), embedded=view.embedded)


def _set_out(label_set: LabelSet, response: Response | None = None) -> LabelSetOut:
    if response is not None:
        response.headers["ETag"] = etag(label_set.revision)
    return LabelSetOut.of(label_set)


# --- labels ----------------------------------------------------------------------------------


@router.get("/labels", operation_id="listLabels", response_model=list[LabelOut], summary="all registered labels")
def list_labels(labels: Labels, _actor: DiagnoseActor, include_deleted: IncludeDeleted = False) -> list[LabelOut]:
    return [_label_out(view) for view in labels.list_labels(include_deleted=include_deleted)]


@router.post("/labels", operation_id="createLabel", response_model=LabelOut, status_code=status.HTTP_201_CREATED,
             summary="register a diagnosis; its text vector is computed once and cached",
             responses=error_responses(400, 404, 409, 422))
def create_label(body: LabelIn, request: Request, response: Response, labels: Labels,
                 actor: LabelsActor) -> LabelOut:
    view = labels.create_label(body.draft(), _change(request, actor))
    log.info("label created id=%s", view.label.id)
    return _label_out(view, response)


@router.get("/labels/{label_id}", operation_id="getLabel", response_model=LabelOut, summary="one label",
            responses=error_responses(404, 422))
def get_label(label_id: LabelId, response: Response, labels: Labels, _actor: DiagnoseActor,
              include_deleted: IncludeDeleted = False) -> LabelOut:
    return _label_out(labels.get_label(label_id, include_deleted=include_deleted), response)


@router.put("/labels/{label_id}", operation_id="updateLabel", response_model=LabelOut,
            summary="replace a label: every field, with If-Match (its sets get new versions)",
            responses=error_responses(400, 404, 409, 422, 428))
def update_label(label_id: LabelId, body: LabelReplace, request: Request, response: Response, labels: Labels,
                 actor: LabelsActor, if_match: IfMatchRequired = None) -> LabelOut:
    expected = expected_revision(if_match, required=True, what=f"label {label_id}")
    view = labels.replace_label(label_id, body.draft(), _change(request, actor), expected_revision=expected)
    log.info("label updated id=%s revision=%s", label_id, view.label.revision)
    return _label_out(view, response)


@router.delete("/labels/{label_id}", operation_id="deleteLabel", status_code=status.HTTP_204_NO_CONTENT,
               summary="delete a label (a built-in one can be restored); refused (409) while it belongs to a set "
               "unless force=true", responses=error_responses(400, 404, 409, 422))
def delete_label(label_id: LabelId, request: Request, labels: Labels, actor: LabelsActor,
                 force: bool = Query(False, description="also remove it from the sets it is in"),
                 if_match: IfMatchOptional = None) -> Response:
    expected = expected_revision(if_match, required=False, what=f"label {label_id}")
    labels.delete_label(label_id, _change(request, actor), force=force, expected_revision=expected)
    log.info("label deleted id=%s force=%s", label_id, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/labels/{label_id}/restore", operation_id="restoreLabel", response_model=LabelOut,
             summary="undo the deletion of a built-in label (back into its sets, at its place)",
             responses=error_responses(404, 409, 422))
def restore_label(label_id: LabelId, request: Request, response: Response, labels: Labels,
                  actor: LabelsActor) -> LabelOut:
    view = labels.restore_label(label_id, _change(request, actor))
    log.info("label restored id=%s", label_id)
    return _label_out(view, response)


# --- label sets ------------------------------------------------------------------------------


@router.get("/label-sets", operation_id="listLabelSets", response_model=list[LabelSetOut],
            summary="all label sets with their versions")
def list_label_sets(labels: Labels, _actor: DiagnoseActor,
                    include_deleted: IncludeDeleted = False) -> list[LabelSetOut]:
    return [_set_out(s) for s in labels.list_label_sets(include_deleted=include_deleted)]


@router.post("/label-sets", operation_id="createLabelSet", response_model=LabelSetOut,
             status_code=status.HTTP_201_CREATED, summary="create a named label set (its labels in order)",
             responses=error_responses(400, 404, 409, 422))
def create_label_set(body: LabelSetIn, request: Request, response: Response, labels: Labels,
                     actor: LabelsActor) -> LabelSetOut:
    return _set_out(labels.create_label_set(body.draft(), _change(request, actor)), response)


@router.get("/label-sets/{name}", operation_id="getLabelSet", response_model=LabelSetOut,
            summary="a label set, now or at an earlier version", responses=error_responses(404, 422))
def get_label_set(name: SetName, response: Response, labels: Labels, _actor: DiagnoseActor,
                  version: str | None = Query(None, max_length=NAME_MAX, pattern=NO_CONTROL_PATTERN,
                                              description="an earlier version"),
                  include_deleted: IncludeDeleted = False) -> LabelSetOut:
    label_set = labels.get_label_set(name, version=version, include_deleted=include_deleted)
    return _set_out(label_set, None if version else response)


@router.put("/label-sets/{name}", operation_id="updateLabelSet", response_model=LabelSetOut,
            summary="replace a set: name, description and members, with If-Match (new version)",
            responses=error_responses(400, 404, 409, 422, 428))
def update_label_set(name: SetName, body: LabelSetReplace, request: Request, response: Response, labels: Labels,
                     actor: LabelsActor, if_match: IfMatchRequired = None) -> LabelSetOut:
    expected = expected_revision(if_match, required=True, what=f"label set {name!r}")
    return _set_out(labels.replace_label_set(name, body.draft(), _change(request, actor), expected_revision=expected),
                    response)


@router.delete("/label-sets/{name}", operation_id="deleteLabelSet", status_code=status.HTTP_204_NO_CONTENT,
               summary="delete a set (a built-in one can be restored; labels and version snapshots stay)",
               responses=error_responses(400, 404, 409, 422))  # 400: an If-Match that is no ETag
def delete_label_set(name: SetName, request: Request, labels: Labels, actor: LabelsActor,
                     if_match: IfMatchOptional = None) -> Response:
    expected = expected_revision(if_match, required=False, what=f"label set {name!r}")
    labels.delete_label_set(name, _change(request, actor), expected_revision=expected)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/label-sets/{name}/restore", operation_id="restoreLabelSet", response_model=LabelSetOut,
             summary="undo the deletion of a built-in label set", responses=error_responses(404, 409, 422))
def restore_label_set(name: SetName, request: Request, response: Response, labels: Labels,
                      actor: LabelsActor) -> LabelSetOut:
    return _set_out(labels.restore_label_set(name, _change(request, actor)), response)
