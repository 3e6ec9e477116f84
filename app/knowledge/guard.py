"""Bounded database calls, and what this process last saw of the database's health.

A PostgreSQL server that is stopped refuses connections at once; one that is frozen (a
stopped host, a full disk, a ``SIGSTOP``) accepts them and never answers, and neither the
connect timeout (only the connection's start) nor the statement timeout (the server's own
clock) bounds a call on a connection already open to it. So every call of the knowledge
store on a network database runs on a daemon thread and the caller waits for it at most
``deadline_s``: past that it gets :class:`DatabaseUnavailable` (a 503 with ``Retry-After``)
while the stuck thread ends by itself when the server answers or the pool's checkout
timeout expires (at most the pool's size of them are ever stuck on a frozen server).

The guard also remembers whether the last call reached the database, so readers that have
an answer in memory (``LabelSetReader``) can use it at once while the database is down, and
try the database again after ``probe_interval_s``: recovery needs no restart.

A call that times out may still commit when the server wakes up; the 503's message says so.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_local = threading.local()


@dataclass(frozen=True)
class DatabaseHealth:
    """What the guard last saw: ``ok`` and, when not, the problem and since when (monotonic)."""

    ok: bool
    problem: str | None = None
    down_since: float | None = None


class DatabaseGuard:
    """Runs database calls under a deadline and tracks whether the database answers."""

    def __init__(self, *, deadline_s: float | None = None, retry_after_s: int = 5,
                 probe_interval_s: float = 1.0) -> None:
        """``deadline_s``: the longest a caller waits for one call (None: no bound, the call runs
        on the caller's thread; right for SQLite, whose own busy timeout bounds it)."""
        self.deadline_s = deadline_s
        self.retry_after_s = retry_after_s
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._health = DatabaseHealth(ok=True)
        self._last_failure = 0.0

    # --- health ------------------------------------------------------------------------------

    @property
    def health(self) -> DatabaseHealth:
        with self._lock:
            return self._health

    def recently_down(self) -> bool:
        """True while the last call failed less than ``probe_interval_s`` ago."""
        with self._lock:
            return not self._health.ok and time.monotonic() - self._last_failure < self.probe_interval_s

    def _mark_ok(self) -> None:
        with self._lock:
            if not self._health.ok:
                log.warning("knowledge database reachable again after %.1f s",
                            time.monotonic() - (self._health.down_since or time.monotonic()))
            self._health = DatabaseHealth(ok=True)

    def _mark_down(self, problem: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._last_failure = now
            if self._health.ok:
                log.warning("knowledge database unavailable: %s", problem)
                self._health = DatabaseHealth(ok=False, problem=problem, down_since=now)
            else:
                self._health = DatabaseHealth(ok=False, problem=problem, down_since=self._health.down_since)

    # --- calls -------------------------------------------------------------------------------

    def unavailable(self, message: str) -> DatabaseUnavailable:
        return DatabaseUnavailable(message, retry_after_s=self.retry_after_s,
                                   details={"retry_after_s": self.retry_after_s})

    def call(self, fn: Callable[[], T], *, deadline_s: float | None = None) -> T:
        """``fn()``, waited for at most ``deadline_s`` (default: the guard's own).

        Calls made from inside a guarded call run directly (one deadline for the whole call)."""
        if getattr(_local, "inside", False):
            return fn()
        deadline = deadline_s if deadline_s is not None else self.deadline_s
        if deadline is None:
            return self._observed(fn)
        box: list[T] = []
        failure: list[BaseException] = []
        context = contextvars.copy_context()

        def run() -> None:
            _local.inside = True
            try:
                box.append(context.run(self._observed, fn))
            except BaseException as exc:  # handed to the waiting caller
                failure.append(exc)

        worker = threading.Thread(target=run, name="knowledge-db-call", daemon=True)
        worker.start()
        worker.join(deadline)
        if worker.is_alive():
            problem = f"the knowledge database did not answer within {deadline:g} s"
            self._mark_down(problem)
            raise self.unavailable(f"{problem}; a change sent now may still be applied when it answers, "
                                   "so read it back before retrying")
        if failure:
            raise failure[0]
        return box[0]

    def _observed(self, fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except DatabaseUnavailable as exc:
            self._mark_down(exc.message)
            raise self.unavailable(exc.message) from exc
        except Exception:
            self._mark_ok()  # the database answered (with a refusal: conflict, not found, ...)
            raise
        self._mark_ok()
        return result
