"""The HTTP side of the running service: the ``Service`` the lifespan builds (composed in
``app.service``, shared with the command line) and the typed dependencies routes ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import ModelNotReady
from app.ops import metrics
from app.ops.settings import Settings
from app.service import Service, build_service

# Routes and the lifespan know the service by this name.
ServiceState = Service


def build_state(settings: Settings) -> ServiceState:
    """Load the model and open the database (``app.service.build_service``) and publish the
    model's identity as metrics; raises BundleError with how-to text if there is no bundle."""
    state = build_service(settings)
    info = state.runtime.info
    metrics.set_model_info(model_name=info.name, model_version=info.version, provider=info.provider,
                           precision=info.precision, untrained=info.untrained)
    return state


def get_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise ModelNotReady("the service is starting or its model failed to load")
    assert isinstance(state, Service)
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
