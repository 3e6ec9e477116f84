"""Logging for the service, configured once: one stderr handler on the root logger, levels from
``ECGFM_LOG_LEVEL`` (``Settings.log_level``), uvicorn's loggers routed through it and uvicorn's own access log off
(``app.api.middleware`` writes one access line per request instead, on :data:`ACCESS_LOGGER`).

``ECGFM_LOG_LEVEL`` is a level (``INFO``, the default) or a comma-separated list of a level and
``logger=level`` pairs, e.g. ``INFO,app.access=WARNING`` (no access lines) or
``WARNING,app.serving=INFO``.
"""

from __future__ import annotations

import logging
import sys

LOG_LEVEL_ENV = "ECGFM_LOG_LEVEL"
DEFAULT_LEVEL = "INFO"
ACCESS_LOGGER = "app.access"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# uvicorn's loggers: kept, but through our handler (and uvicorn's access log never written)
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
UVICORN_ACCESS = "uvicorn.access"

_HANDLER_NAME = "ecgfm-ked"


def parse_levels(spec: str) -> dict[str, int]:
    """``"INFO,app.access=WARNING"`` -> ``{"": 20, "app.access": 30}`` ("" is the root logger);
    ValueError naming the part it cannot read."""
    levels: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, level = part.rpartition("=")
        level = level.strip().upper()
        if level not in LEVELS:
            raise ValueError(f"{LOG_LEVEL_ENV}: {part!r} is not a level ({', '.join(LEVELS)}) "
                             "or logger=level")
        levels[name.strip()] = logging.getLevelNamesMapping()[level]
    if "" not in levels:
        levels[""] = logging.getLevelNamesMapping()[DEFAULT_LEVEL]
    return levels


def configure_logging(spec: str = DEFAULT_LEVEL) -> None:
    """Install the service's logging; safe to call again (each uvicorn worker process does)."""
    levels = parse_levels(spec.strip() or DEFAULT_LEVEL)
    root = logging.getLogger()
    if not any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger(UVICORN_ACCESS)
    access.handlers.clear()
    access.propagate = False
    access.disabled = True  # ours (ACCESS_LOGGER) replaces it
