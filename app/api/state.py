"""The HTTP side of the running service: the ``Service`` the lifespan builds (composed in
``app.service``, shared with the command line), the typed dependencies routes ask for, and the
task that makes this worker follow a model switch made on another one."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import Depends, Request

from app.errors import DatabaseUnavailable, ModelNotReady
from app.ops import metrics
from app.ops.settings import Settings
from app.service import Service, build_service
from app.serving.runtime import ModelInfo

log = logging.getLogger(__name__)

# Routes and the lifespan know the service by this name.
ServiceState = Service


def publish_model_info(info: ModelInfo) -> None:
    metrics.set_model_info(model_name=info.name, model_version=info.version, provider=info.provider,
                           precision=info.precision, untrained=info.untrained)


def build_state(settings: Settings) -> ServiceState:
    """Load the model and open the database (``app.service.build_service``) and publish the
    model's identity as metrics; raises BundleError with how-to text if there is no bundle."""
    state = build_service(settings)
    publish_model_info(state.runtime.info)
    return state


async def follow_model_switches(state: ServiceState, every_s: float) -> None:
    """Every ``every_s`` seconds: if the database records another active version than this
    worker serves, switch to it (the bound on a switch reaching every worker and replica is
    ``every_s`` plus the time to load and warm up the new version). Never raises: a database
    that cannot be reached is tried again at the next tick."""
    while True:
        await asyncio.sleep(every_s)
        try:
            recorded = await asyncio.to_thread(state.active_models.get)
            switch = await state.models.follow(None if recorded is None else recorded.version)
            if switch is not None and switch.switched:
                publish_model_info(state.runtime.info)
        except DatabaseUnavailable:
            continue
        except asyncio.CancelledError:
            raise
        except Exception:  # a follower that dies would leave this worker on the old version silently
            log.exception("following the active model recorded in the database failed; trying again")


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise ModelNotReady("the service is starting or its model failed to load")
    assert isinstance(state, Service)
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
