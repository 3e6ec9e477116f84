"""Model threads at a lower CPU priority than the event loop.

On a machine whose cores the model keeps busy (ONNX Runtime's intra-op threads compute, then spin
waiting for the next run), the thread that answers ``/healthz``, refuses overload with 503 and reads
requests must still be scheduled at once. Linux keeps a nice value per thread and a new thread
inherits its creator's, so: the ONNX Runtime sessions (whose intra-op thread pools are created with
the session) are created on a short-lived thread whose nice value is raised by ``increment``, and
the batcher's lane threads (which run ``session.run`` and compute too) raise their own when they
start. The event loop's thread keeps the process's priority. Raising a nice value needs no
privilege. Elsewhere than Linux (no per-thread nice), nothing changes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def lower_this_thread(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (Linux; elsewhere a no-op)."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError as exc:  # e.g. a seccomp profile that forbids it: keep running, at normal priority
        log.warning("could not lower the model threads' CPU priority: %s", exc)


def call_at_lower_priority(fn: Callable[[], T], increment: int) -> T:
    """``fn()`` on a new thread whose nice value is ``increment`` higher (threads it starts inherit it)."""
    if increment <= 0:
        return fn()
    box: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        lower_this_thread(increment)
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised on the calling thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="model-loader")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return box["value"]
