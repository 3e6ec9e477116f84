"""Dynamic batching of model calls for concurrent requests (asyncio + worker threads).

Callers ``await batcher.submit(key, item, weight=n)``. One background task per batcher
waits for the first pending item, then keeps collecting until the pending weight reaches
``max_batch_size`` or ``max_wait_s`` has passed since that first item arrived. It takes
items from the front of the queue while their summed weight fits the batch limit (at
least one item, so an item heavier than the limit still runs, alone), groups them by
``key`` (only items sharing a key - e.g. a label-set version - go into one call) and runs
``fn(key, items, alone) -> list[result]`` in a ``ThreadPoolExecutor`` so the event loop
never blocks. Every caller's future gets a result or an exception; none is left hanging.

Lanes: up to ``lanes`` calls of ``fn`` run at once. A call runs *alone* (``alone=True``,
holding every lane, so ``fn`` may use all cores for it) when nothing else is running,
nothing else is queued and no more work is announced (``upcoming()``, e.g. requests still
being read); otherwise it takes one lane (``alone=False``: ``fn`` should use its share of
the cores), and the queue is spread over the free lanes. On a CPU this is what keeps a lone
request fast (all cores on one call) while, under load, calls never split the cores between
them (a multi-threaded call whose thread loses its core to other work stalls as a whole).

While every lane is busy the collector does not cut a new batch, so requests that arrive
meanwhile join the next one (larger batches under load).

Deadlines: ``submit(..., deadline=t)`` (``time.monotonic()``) drops an item still queued at ``t``
when a batch is cut: its caller gets :class:`~app.errors.DeadlineExceeded` and ``fn`` never sees
it. An item whose caller was cancelled (e.g. the client disconnected) is skipped the same way.
:class:`AdmissionLimit` bounds the work let in at all (past it, :class:`~app.errors.Overloaded`).

Lifecycle (for a FastAPI lifespan): ``start()`` inside the running loop, ``await stop()``
on shutdown. Nothing is cleaned up in ``__del__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.errors import DeadlineExceeded, ModelNotReady, Overloaded, ServiceError
from app.serving.priority import lower_this_thread

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchError(ServiceError):
    """The batched model call broke its contract (e.g. wrong number of results)."""

    code = "batch_failed"


@dataclass(frozen=True)
class BatchStats:
    """One call of ``fn``: for metrics."""

    size: int        # summed weight of the items in the call (e.g. ECG windows)
    items: int       # number of submits in the call
    wait_s: float    # longest time an item of the call waited in the queue
    run_s: float     # time ``fn`` ran
    key: Hashable
    failed: bool = False
    alone: bool = True  # the call held every lane


@dataclass(eq=False)
class _Pending:
    key: Hashable
    item: Any
    weight: int
    future: asyncio.Future[Any]
    enqueued: float = field(default=0.0)
    deadline: float | None = None  # time.monotonic() after which the item is dropped, not run


class DynamicBatcher(Generic[T, R]):
    """Collects concurrent ``submit`` calls into batched calls of ``fn`` (see module doc)."""

    def __init__(
        self,
        fn: Callable[[Hashable, list[T], bool], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        lanes: int = 1,
        upcoming: Callable[[], int] | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_expired: Callable[[int], None] | None = None,
        retry_after_s: int = 1,
        name: str = "batcher",
        thread_nice: int = 0,
    ) -> None:
        if int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if int(lanes) < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self._fn = fn
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self.lanes = int(lanes)
        self._upcoming = upcoming or (lambda: 0)
        self._on_batch = on_batch
        self._on_expired = on_expired  # called with the weight of each item dropped at its deadline
        self.retry_after_s = int(retry_after_s)
        self.thread_nice = thread_nice  # lane threads run this much lower than the event loop
        self.name = name
        self._pending: deque[_Pending] = deque()
        self._pending_weight = 0
        self._unresolved: set[_Pending] = set()
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_items = 0
        self._running_calls = 0  # batches holding lanes (counted until their lanes are released)
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._collector: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # --- state --------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Items submitted and not yet handed to ``fn``."""
        return len(self._pending)

    @property
    def queued_weight(self) -> int:
        """Summed weight of the items waiting (cancelled ones included until skipped)."""
        return self._pending_weight

    @property
    def in_flight(self) -> int:
        """Items whose ``fn`` call is running now."""
        return self._inflight_items

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._collector.done() and not self._stopping

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the collector task; call from inside the running event loop."""
        if self.running:
            return
        if self._collector is not None and not self._collector.done():
            raise RuntimeError(f"{self.name}: stop() is still in progress")
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.lanes)
        self._executor = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix=f"{self.name}-worker",
                                            initializer=lower_this_thread, initargs=(self.thread_nice,))
        self._stopping = False
        self._collector = self._loop.create_task(self._collect(), name=f"{self.name}-collector")

    async def stop(self, *, drain: bool = True, timeout: float | None = 30.0) -> None:
        """Stop accepting work; finish what is queued (``drain``) or fail it.

        After ``timeout`` seconds of draining, or at once when ``drain`` is false, every
        future still unresolved gets :class:`ModelNotReady`. A ``fn`` call already running
        in a worker thread cannot be interrupted; its result is then discarded.
        """
        if self._collector is None:
            self._fail_all(ModelNotReady(f"{self.name} was stopped before it started"))
            return
        self._stopping = True
        assert self._wakeup is not None
        self._wakeup.set()
        if drain:
            try:
                await asyncio.wait_for(self._drain(), timeout)
            except TimeoutError:
                log.warning("%s: drain did not finish in %.1f s; failing the rest",
                            self.name, timeout)
        collector, self._collector = self._collector, None
        collector.cancel()
        tasks = [collector, *self._inflight]
        for t in self._inflight:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_all(ModelNotReady(f"{self.name} is shutting down; the request was not run"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> DynamicBatcher[T, R]:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _drain(self) -> None:
        while self._pending or self._inflight:
            if self._collector is None or self._collector.done():
                break
            if self._inflight:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0.001)

    def _fail_all(self, exc: BaseException) -> None:
        for rec in list(self._unresolved):
            if not rec.future.done():
                rec.future.set_exception(exc)
        self._unresolved.clear()
        self._pending.clear()
        self._pending_weight = 0

    # --- submitting -------------------------------------------------------------------------

    async def submit(self, key: Hashable, item: T, *, weight: int = 1, deadline: float | None = None) -> R:
        """Queue ``item`` under ``key``; wait for and return its result (or raise).

        ``deadline`` (``time.monotonic()``): if no batch has taken the item by then, it is dropped
        and this raises :class:`DeadlineExceeded`; an item already past it is refused at once."""
        if weight < 1 or int(weight) != weight:
            raise ValueError(f"weight must be a positive integer, got {weight!r}")
        if self._collector is None or self._stopping or self._collector.done():
            raise ModelNotReady(f"{self.name} is not running; the model is not ready")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError(f"{self.name}: submit() from another event loop than start()")
        if deadline is not None and time.monotonic() >= deadline:
            self._expired(int(weight))
            raise self._deadline_error(0.0)
        fut: asyncio.Future[R] = loop.create_future()
        rec = _Pending(key=key, item=item, weight=int(weight), future=fut, enqueued=loop.time(), deadline=deadline)
        self._unresolved.add(rec)

        def resolved(_done: asyncio.Future[R], record: _Pending = rec) -> None:
            self._unresolved.discard(record)

        fut.add_done_callback(resolved)
        self._pending.append(rec)
        self._pending_weight += rec.weight
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await fut
        except asyncio.CancelledError:
            fut.cancel()  # skipped when its batch is cut
            raise

    # --- the collector --------------------------------------------------------------------------

    async def _collect(self) -> None:
        assert self._wakeup is not None and self._slots is not None and self._loop is not None
        loop = self._loop
        while True:
            await self._slots.acquire()
            released = False
            try:
                # wait for a first item
                while not self._pending:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                # wait for the batch to fill or the first item's deadline
                deadline = self._pending[0].enqueued + self.max_wait_s
                while self._pending_weight < self.max_batch_size and not self._stopping:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    except TimeoutError:
                        break
                alone = self._runs_alone()
                batch = self._cut(self.max_batch_size if alone else self._share_limit())
                if not batch:
                    continue  # all cancelled; the finally releases the slot
                if alone:  # nothing is running, so the other lanes are free: take them all
                    for _ in range(self.lanes - 1):
                        await self._slots.acquire()
                self._running_calls += 1
                task = loop.create_task(self._run_batch(batch, alone), name=f"{self.name}-batch")
                self._inflight.add(task)
                self._inflight_items += len(batch)
                task.add_done_callback(self._inflight.discard)
                released = True  # the batch task owns the slot now
            finally:
                if not released:
                    self._slots.release()

    def _runs_alone(self) -> bool:
        """Nothing running, everything queued fits this batch and no more work is announced."""
        if self.lanes == 1:
            return True
        return self._running_calls == 0 and self._pending_weight <= self.max_batch_size and self._upcoming() <= 0

    def _share_limit(self) -> int:
        """The queue spread evenly over the free lanes (this one included)."""
        free = max(1, self.lanes - self._running_calls)
        return max(1, min(self.max_batch_size, -(-self._pending_weight // free)))

    def _deadline_error(self, waited_s: float) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request waited {waited_s:.1f} s in the model queue and passed its deadline; it was not scored "
            "(the service is overloaded: retry later)", retry_after_s=self.retry_after_s)

    def _expired(self, weight: int) -> None:
        if self._on_expired is not None:
            try:
                self._on_expired(weight)
            except Exception:  # metrics must not break serving
                log.exception("%s: on_expired callback failed", self.name)

    def _cut(self, limit: int) -> list[_Pending]:
        """Take items from the front while the summed weight fits ``limit`` (at least one);
        skip items whose caller is gone and fail those past their deadline."""
        batch: list[_Pending] = []
        weight = 0
        now = time.monotonic()
        while self._pending:
            rec = self._pending[0]
            if rec.future.done():  # caller cancelled (or failed elsewhere): skip
                self._pending.popleft()
                self._pending_weight -= rec.weight
                continue
            if rec.deadline is not None and now >= rec.deadline:
                self._pending.popleft()
                self._pending_weight -= rec.weight
                assert self._loop is not None
                rec.future.set_exception(self._deadline_error(self._loop.time() - rec.enqueued))
                self._expired(rec.weight)
                continue
            if batch and weight + rec.weight > limit:
                break
            self._pending.popleft()
            self._pending_weight -= rec.weight
            batch.append(rec)
            weight += rec.weight
            if weight >= limit:
                break
        return batch

    async def _run_batch(self, batch: list[_Pending], alone: bool) -> None:
        assert self._slots is not None
        try:
            groups: dict[Hashable, list[_Pending]] = {}
            for rec in batch:
                groups.setdefault(rec.key, []).append(rec)
            for key, recs in groups.items():
                await self._run_group(key, recs, alone)
        finally:
            self._inflight_items -= len(batch)
            self._running_calls -= 1
            for _ in range(self.lanes if alone else 1):
                self._slots.release()
            err = ModelNotReady(f"{self.name}: the batch was abandoned before it finished")
            for rec in batch:  # never leave a caller hanging (e.g. cancelled by stop())
                if not rec.future.done():
                    rec.future.set_exception(err)

    async def _run_group(self, key: Hashable, recs: list[_Pending], alone: bool) -> None:
        live = [r for r in recs if not r.future.done()]
        if not live:
            return
        assert self._loop is not None and self._executor is not None
        loop = self._loop
        start = loop.time()
        wait_s = max(start - r.enqueued for r in live)
        t0 = time.perf_counter()
        failed = False
        try:
            results = await loop.run_in_executor(
                self._executor, self._fn, key, [r.item for r in live], alone
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reaches every caller of this call
            failed = True
            for r in live:
                if not r.future.done():
                    r.future.set_exception(exc)
        else:
            n = _count(results)
            if n != len(live):
                failed = True
                err = BatchError(
                    f"{self.name}: the model returned {n if n is not None else 'no list of'} "
                    f"results for a batch of {len(live)} items (key {key!r})",
                    details={"expected": len(live), "got": n},
                )
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(err)
            else:
                for r, res in zip(live, results, strict=True):
                    if not r.future.done():
                        r.future.set_result(res)
        run_s = time.perf_counter() - t0
        if self._on_batch is not None:
            stats = BatchStats(size=sum(r.weight for r in live), items=len(live),
                               wait_s=wait_s, run_s=run_s, key=key, failed=failed, alone=alone)
            try:
                self._on_batch(stats)
            except Exception:  # metrics must not break serving
                log.exception("%s: on_batch callback failed", self.name)


class AdmissionLimit:
    """Bounds the work let in at once, e.g. the ECGs of requests between arrival and answer.

    ``with limit.admit(1) as resize: ... resize(n)`` holds one unit from the ``with`` (a request
    whose size is not known yet) and ``n`` after ``resize(n)`` (its ECGs, once read), until the
    block ends. Admitting (or growing to) more than ``limit`` units in all raises
    :class:`Overloaded`, unless nothing else is admitted (so one request larger than the limit
    still runs, alone). Used from the event loop thread only (no locking).
    """

    def __init__(self, limit: int, *, retry_after_s: int = 1,
                 on_change: Callable[[int], None] | None = None) -> None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = int(limit)
        self.retry_after_s = int(retry_after_s)
        self.admitted = 0
        self._on_change = on_change

    def _overloaded(self, weight: int) -> Overloaded:
        return Overloaded(
            f"the service is at capacity ({self.admitted} of {self.limit} ECGs admitted; this request needs "
            f"{weight}); retry after {self.retry_after_s} s",
            retry_after_s=self.retry_after_s, details={"admitted": self.admitted, "limit": self.limit})

    def _set(self, admitted: int) -> None:
        self.admitted = admitted
        if self._on_change is not None:
            self._on_change(admitted)

    @contextmanager
    def admit(self, weight: int = 1) -> Iterator[Callable[[int], None]]:
        weight = int(weight)
        if weight < 1:
            raise ValueError(f"weight must be >= 1, got {weight}")
        if self.admitted > 0 and self.admitted + weight > self.limit:
            raise self._overloaded(weight)
        held = weight
        self._set(self.admitted + weight)

        def resize(n: int) -> None:
            nonlocal held
            n = max(1, int(n))
            others = self.admitted - held
            if n > held and others > 0 and others + n > self.limit:
                raise self._overloaded(n)
            self._set(others + n)
            held = n

        try:
            yield resize
        finally:
            self._set(self.admitted - held)


class IncomingWork:
    """Work on its way to a batcher, e.g. requests whose upload is still being read.

    ``with incoming.expect() as arrived: ... arrived()`` counts one item from the ``with``
    until ``arrived()`` (or the end of the block, whichever is first). Pass ``incoming.count``
    as a batcher's ``upcoming`` so that a batch does not take every lane while more work is
    about to arrive. Used from the event loop thread only (no locking).
    """

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def expect(self) -> Iterator[Callable[[], None]]:
        self.count += 1
        pending = True

        def arrived() -> None:
            nonlocal pending
            if pending:
                pending = False
                self.count -= 1

        try:
            yield arrived
        finally:
            arrived()


def _count(results: Any) -> int | None:
    if isinstance(results, (str, bytes)) or results is None:
        return None
    try:
        return len(results)
    except TypeError:
        return None


__all__ = ["AdmissionLimit", "BatchError", "BatchStats", "DynamicBatcher", "IncomingWork"]
