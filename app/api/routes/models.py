"""The model repository over HTTP: list the versions (``GET /models``) and switch the active one
(``POST /models/{version}/activate``, admin scope). ``GET /model`` (app/api/routes/health.py)
stays the active version's full manifest."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from app.api.auth import AdminActor, DiagnoseActor, KeyFirstRoute
from app.api.errors import request_id_of
from app.api.openapi import error_responses
from app.api.schemas import NO_CONTROL_PATTERN, ActivationOut, ModelsOut, ModelState, ModelVersionOut
from app.api.state import StateDep, publish_model_info
from app.evaluation.summary import read_summary
from app.serving.repository import BundleEntry

router = APIRouter(route_class=KeyFirstRoute, tags=["models"], responses=error_responses(401, 403, 503))
Version = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_CONTROL_PATTERN,
                              description="a model version (GET /models)")]


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def version_out(entry: BundleEntry, state: ModelState) -> ModelVersionOut:
    m = entry.manifest
    config = _dict_or_none(m.get("config")) or {}
    return ModelVersionOut(
        version=entry.version, bundle=entry.root.name, state="unusable" if entry.problem else state,
        problem=entry.problem, untrained=entry.untrained, source_checkpoint_sha256=entry.source_checkpoint_sha256,
        exported_at=m.get("exported_at") if isinstance(m.get("exported_at"), str) else None,
        parity=_dict_or_none(m.get("parity")),
        finetuned=_dict_or_none(m.get("finetuned")) or _dict_or_none(config.get("finetuned")),
        evaluation=read_summary(entry.root),
    )


@router.get("/models", operation_id="listModels", response_model=ModelsOut,
            summary="the model versions in the store: which is active, which are loaded, their evaluations")
def list_models(state: StateDep, _actor: DiagnoseActor) -> ModelsOut:
    loaded = state.models.loaded_versions()
    recorded = state.active_models.get()
    entries = state.models.entries()
    return ModelsOut(
        active=state.models.active_version,
        recorded_active=None if recorded is None else recorded.version,
        models=[version_out(e, loaded.get(e.version, "available")) for e in entries],  # type: ignore[arg-type]
    )


@router.post(
    "/models/{version}/activate", operation_id="activateModel", response_model=ActivationOut,
    summary="load, warm up and switch to a model version; every worker and replica follows",
    description="Loads the version's sessions and warms them up while the current version keeps answering, "
                "records the switch in the database (audited as `model.activate`), then switches: requests that "
                "arrive afterwards get the new version, requests in flight finish on the old one, which is then "
                "released. Other workers and replicas follow within ECGFM_MODEL_POLL_S plus their load time.",
    responses=error_responses(404, 409, 422),
)
async def activate_model(version: Version, request: Request, state: StateDep, actor: AdminActor) -> ActivationOut:
    request_id = request_id_of(request)
    recorded: list[Any] = []

    async def record() -> None:
        recorded.append(await asyncio.to_thread(state.active_models.set, version, actor=actor.name,
                                                request_id=request_id))

    switch = await state.models.switch_to(version, before_switch=record)
    publish_model_info(state.runtime.info)
    (active,) = recorded
    return ActivationOut(active=switch.active, previous=switch.previous, switched=switch.switched,
                         load_s=round(switch.load_s, 3), activated_by=active.activated_by,
                         activated_at=active.activated_at)
