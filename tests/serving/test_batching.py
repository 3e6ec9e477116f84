"""Tests for app.serving.batching.DynamicBatcher with real asyncio loops and real threads.

Nothing is mocked: ``fn`` is a plain function run in the batcher's worker thread (some
use ``time.sleep`` to stand in for model time). Each test runs its own event loop via
``asyncio.run`` and bounds every await with a timeout, so a hang fails instead of stalling.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.errors import DeadlineExceeded, ModelNotReady, Overloaded
from app.serving.batching import AdmissionLimit, BatchError, BatchStats, DynamicBatcher, IncomingWork

LIMIT = 10.0  # upper bound for any await in a test


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIMIT))


class Recorder:
    """A fn that records its calls (thread, key, items) and echoes item * 10."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[tuple[object, list]] = []
        self.threads: set[str] = set()
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, key, items, alone=True):
        with self.lock:
            self.calls.append((key, list(items)))
            self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        return [i * 10 for i in items]


def test_concurrent_submits_are_combined_up_to_max_size():
    fn = Recorder()
    stats: list[BatchStats] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.2,
                                  on_batch=stats.append) as b:
            results = await asyncio.gather(*(b.submit("v1", i) for i in range(10)))
            return results

    results = run(main())
    assert results == [i * 10 for i in range(10)]
    assert [items for _, items in fn.calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(t.startswith("batcher-worker") for t in fn.threads)
    assert threading.current_thread().name not in fn.threads
    assert [(s.size, s.items, s.key, s.failed) for s in stats] == [
        (4, 4, "v1", False), (4, 4, "v1", False), (2, 2, "v1", False)]
    # the first two batches were full: cut at once, not after max_wait_s
    assert stats[0].wait_s < 0.15


def test_lone_submit_returns_after_about_max_wait():
    fn = Recorder()

    async def main():
        async with DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.1) as b:
            t0 = time.perf_counter()
            r = await b.submit("k", 3)
            return r, time.perf_counter() - t0

    r, elapsed = run(main())
    assert r == 30
    assert 0.09 <= elapsed < 0.4, elapsed


def test_different_keys_never_share_a_call():
    fn = Recorder()

    async def main():
        async with DynamicBatcher(fn, max_batch_size=16, max_wait_s=0.05) as b:
            keys = ["a", "b", "a", "c", "b", "a"]
            return await asyncio.gather(*(b.submit(k, i) for i, k in enumerate(keys)))

    assert run(main()) == [0, 10, 20, 30, 40, 50]
    assert sorted(fn.calls) == [("a", [0, 2, 5]), ("b", [1, 4]), ("c", [3])]


def test_exception_in_fn_reaches_every_caller_and_batcher_keeps_serving():
    def fn(key, items, alone=True):
        if key == "bad":
            raise ValueError("model exploded")
        return [i + 1 for i in items]

    async def main():
        async with DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.05) as b:
            bad = await asyncio.gather(*(b.submit("bad", i) for i in range(3)),
                                       return_exceptions=True)
            good = await asyncio.gather(*(b.submit("ok", i) for i in range(3)))
            return bad, good

    bad, good = run(main())
    assert all(isinstance(e, ValueError) and str(e) == "model exploded" for e in bad), bad
    assert good == [1, 2, 3]


def test_wrong_result_count_fails_that_batch_with_clear_error():
    def fn(key, items, alone=True):
        return [0] * (len(items) - 1) if key == "short" else list(items)

    stats: list[BatchStats] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.05,
                                  on_batch=stats.append) as b:
            errs = await asyncio.gather(*(b.submit("short", i) for i in range(3)),
                                        return_exceptions=True)
            after = await b.submit("fine", 7)
            return errs, after

    errs, after = run(main())
    assert all(isinstance(e, BatchError) for e in errs), errs
    assert "returned 2 results for a batch of 3 items" in errs[0].message
    assert after == 7
    assert [s.failed for s in stats] == [True, False]


def test_event_loop_stays_responsive_while_fn_runs():
    fn = Recorder(delay=0.3)

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.0) as b:
            lags: list[float] = []
            job = asyncio.ensure_future(asyncio.gather(*(b.submit("k", i) for i in range(4))))
            loop = asyncio.get_running_loop()
            while not job.done():
                t = loop.time()
                await asyncio.sleep(0.01)
                lags.append(loop.time() - t - 0.01)
            return await job, lags

    results, lags = run(main())
    assert results == [0, 10, 20, 30]
    assert len(lags) >= 15  # the ticker really ran during the 0.3 s call
    assert max(lags) < 0.05, max(lags)


def test_stop_leaves_no_pending_future_unresolved():
    release = threading.Event()

    def fn(key, items, alone=True):
        release.wait(5)
        return list(items)

    async def main():
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_s=0.0)
        b.start()
        futs = [asyncio.ensure_future(b.submit("k", i)) for i in range(6)]
        await asyncio.sleep(0.05)  # first batch is stuck in fn, the rest queued
        assert b.queue_depth == 4 and b.in_flight == 2
        await b.stop(drain=False)
        release.set()
        done, not_done = await asyncio.wait(futs, timeout=1.0)
        with pytest.raises(ModelNotReady):
            await b.submit("k", 99)
        return futs, not_done

    futs, not_done = run(main())
    assert not not_done
    assert all(isinstance(f.exception(), ModelNotReady) for f in futs)


def test_stop_with_drain_runs_what_is_queued():
    fn = Recorder(delay=0.02)

    async def main():
        b = DynamicBatcher(fn, max_batch_size=2, max_wait_s=1.0)
        b.start()
        futs = [asyncio.ensure_future(b.submit("k", i)) for i in range(5)]
        await asyncio.sleep(0)  # let the submits enqueue
        t0 = time.perf_counter()
        await b.stop()  # does not wait the 1 s max_wait: stopping cuts at once
        return [f.result() for f in futs], time.perf_counter() - t0

    results, elapsed = run(main())
    assert results == [0, 10, 20, 30, 40]
    assert elapsed < 0.8


def test_weight_splits_and_heavy_item_runs_alone():
    fn = Recorder()
    stats: list[BatchStats] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.05,
                                  on_batch=stats.append) as b:
            # 3 then 2 would be 5 > 4: split; 9 > 4 runs alone; 1 + 1 fit together
            subs = [("x", 1, 3), ("x", 2, 2), ("x", 3, 9), ("x", 4, 1), ("x", 5, 1)]
            return await asyncio.gather(*(b.submit(k, i, weight=w) for k, i, w in subs))

    assert run(main()) == [10, 20, 30, 40, 50]
    assert [items for _, items in fn.calls] == [[1], [2], [3], [4, 5]]
    assert [s.size for s in stats] == [3, 2, 9, 2]


def test_cancelled_caller_is_skipped():
    fn = Recorder()

    async def main():
        async with DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.1) as b:
            doomed = asyncio.ensure_future(b.submit("k", 1))
            keep = asyncio.ensure_future(b.submit("k", 2))
            await asyncio.sleep(0.01)
            doomed.cancel()
            return await keep

    assert run(main()) == 20
    assert [items for _, items in fn.calls] == [[2]]


def test_submit_before_start_and_bad_arguments():
    async def main():
        b = DynamicBatcher(Recorder(), max_batch_size=2, max_wait_s=0.01)
        with pytest.raises(ModelNotReady, match="not running"):
            await b.submit("k", 1)
        b.start()
        with pytest.raises(ValueError, match="weight"):
            await b.submit("k", 1, weight=0)
        await b.stop()

    run(main())
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(Recorder(), max_batch_size=0, max_wait_s=0.1)
    with pytest.raises(ValueError, match="lanes"):
        DynamicBatcher(Recorder(), max_batch_size=2, max_wait_s=0.1, lanes=0)


# --- lanes ----------------------------------------------------------------------------------


class LaneRecorder:
    """A fn that records (items, alone) per call and the most calls that overlapped."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.calls: list[tuple[list, bool]] = []
        self.running = 0
        self.most_running = 0
        self.delay = delay
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, key, items, alone):
        with self.lock:
            self.calls.append((list(items), alone))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        if self.gate is not None:
            self.gate.wait(5)
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            self.running -= 1
        return [i * 10 for i in items]


def test_one_lane_always_runs_alone():
    fn = LaneRecorder()

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.0, upcoming=lambda: 5) as b:
            return await asyncio.gather(*(b.submit("k", i) for i in range(6)))

    assert run(main()) == [i * 10 for i in range(6)]
    assert all(alone for _, alone in fn.calls)


def test_lone_request_with_nothing_announced_takes_every_lane():
    fn = LaneRecorder()
    incoming = IncomingWork()
    stats: list[BatchStats] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=8, max_wait_s=0.0, lanes=2, upcoming=lambda: incoming.count,
                                  on_batch=stats.append) as b:
            first = await b.submit("k", 1)
            with incoming.expect():  # another request is on its way: the lone one shares
                second = await b.submit("k", 2)
            return first, second

    assert run(main()) == (10, 20)
    assert fn.calls == [([1], True), ([2], False)]
    assert [s.alone for s in stats] == [True, False]


def test_lanes_spread_the_queue_and_run_at_once():
    fn = LaneRecorder(delay=0.1)

    async def main():
        async with DynamicBatcher(fn, max_batch_size=16, max_wait_s=0.05, lanes=2, upcoming=lambda: 1) as b:
            return await asyncio.gather(*(b.submit("k", i) for i in range(8)))

    assert run(main()) == [i * 10 for i in range(8)]
    assert sorted(len(items) for items, _ in fn.calls) == [4, 4]  # 8 queued over 2 free lanes
    assert not any(alone for _, alone in fn.calls)
    assert fn.most_running == 2


def test_a_call_running_alone_holds_every_lane():
    gate = threading.Event()
    fn = LaneRecorder(gate=gate)

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.0, lanes=2) as b:
            first = asyncio.ensure_future(b.submit("k", 1))
            await asyncio.sleep(0.05)  # running alone, blocked on the gate
            second = asyncio.ensure_future(b.submit("k", 2))
            await asyncio.sleep(0.05)
            waiting = b.queue_depth  # not started although a lane would otherwise be free
            gate.set()
            return await first, await second, waiting

    first, second, waiting = run(main())
    assert (first, second, waiting) == (10, 20, 1)
    assert fn.most_running == 1
    assert fn.calls[0] == ([1], True)


def test_incoming_work_counts_until_arrival_or_exit():
    incoming = IncomingWork()
    with incoming.expect() as arrived:
        with incoming.expect():
            assert incoming.count == 2
        assert incoming.count == 1
        arrived()
        arrived()  # idempotent
        assert incoming.count == 0
    assert incoming.count == 0
    with pytest.raises(RuntimeError):
        with incoming.expect():
            raise RuntimeError("upload refused")
    assert incoming.count == 0


# --- deadlines and admission (bounded work overall) ------------------------------------------


class Gate:
    """A fn that blocks in its worker thread until ``release()``, recording what it ran."""

    def __init__(self):
        self.calls: list[list] = []
        self.entered = threading.Event()
        self.go = threading.Event()

    def __call__(self, key, items, alone=True):
        self.calls.append(list(items))
        self.entered.set()
        assert self.go.wait(LIMIT)
        return [i * 10 for i in items]

    def release(self):
        self.go.set()


def test_item_queued_past_its_deadline_is_failed_and_never_run():
    fn = Gate()
    expired: list[int] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=1, max_wait_s=0.0, on_expired=expired.append,
                                  retry_after_s=7) as b:
            first = asyncio.ensure_future(b.submit("k", 1))
            await asyncio.get_running_loop().run_in_executor(None, fn.entered.wait, LIMIT)
            # the only lane is busy: this one waits in the queue past its deadline
            late = asyncio.ensure_future(b.submit("k", 2, weight=3, deadline=time.monotonic() + 0.05))
            patient = asyncio.ensure_future(b.submit("k", 3, deadline=time.monotonic() + LIMIT))
            await asyncio.sleep(0.2)
            fn.release()
            results = await asyncio.gather(first, late, patient, return_exceptions=True)
            return results, b.queue_depth, b.queued_weight

    (first, late, patient), depth, weight = run(main())
    assert first == 10 and patient == 30
    assert isinstance(late, DeadlineExceeded) and late.code == "deadline_exceeded"
    assert late.retry_after_s == 7 and "not scored" in late.message
    assert fn.calls == [[1], [3]]  # the expired item never reached fn
    assert expired == [3]  # its weight, once
    assert depth == 0 and weight == 0


def test_submit_already_past_its_deadline_is_refused_at_once():
    fn = Recorder()
    expired: list[int] = []

    async def main():
        async with DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.0, on_expired=expired.append) as b:
            with pytest.raises(DeadlineExceeded):
                await b.submit("k", 1, deadline=time.monotonic() - 0.001)
            return await b.submit("k", 2, deadline=time.monotonic() + LIMIT)

    assert run(main()) == 20
    assert [items for _, items in fn.calls] == [[2]]
    assert expired == [1]


def test_cancelled_while_a_batch_runs_is_skipped_not_run():
    """A caller that goes away (a disconnected client) while queued behind a running batch."""
    fn = Gate()

    async def main():
        async with DynamicBatcher(fn, max_batch_size=1, max_wait_s=0.0) as b:
            first = asyncio.ensure_future(b.submit("k", 1))
            await asyncio.get_running_loop().run_in_executor(None, fn.entered.wait, LIMIT)
            gone = asyncio.ensure_future(b.submit("k", 2))
            await asyncio.sleep(0.01)
            gone.cancel()
            fn.release()
            return await first, await asyncio.gather(gone, return_exceptions=True)

    first, (gone,) = run(main())
    assert first == 10 and isinstance(gone, asyncio.CancelledError)
    assert fn.calls == [[1]]


def test_admission_limit_admits_up_to_the_limit_then_refuses():
    seen: list[int] = []
    limit = AdmissionLimit(4, retry_after_s=3, on_change=seen.append)
    with limit.admit() as resize_a:
        resize_a(3)
        assert limit.admitted == 3
        with limit.admit() as _b:  # 3 + 1 fits
            assert limit.admitted == 4
            with pytest.raises(Overloaded) as refused, limit.admit():
                pass
            assert refused.value.code == "overloaded" and refused.value.retry_after_s == 3
            assert refused.value.details == {"admitted": 4, "limit": 4}
            assert "4 of 4 ECGs" in refused.value.message
        assert limit.admitted == 3
        with limit.admit() as resize_c:  # admitted as 1, but its 2 ECGs do not fit
            with pytest.raises(Overloaded):
                resize_c(2)
            assert limit.admitted == 4  # still holding its 1 until the block ends
        assert limit.admitted == 3
    assert limit.admitted == 0
    assert seen[-1] == 0 and max(seen) == 4


def test_admission_limit_lets_one_oversized_request_run_alone():
    limit = AdmissionLimit(2)
    with limit.admit() as resize:
        resize(10)  # nothing else admitted: allowed (otherwise it could never run)
        assert limit.admitted == 10
        with pytest.raises(Overloaded), limit.admit():
            pass
        resize(1)  # shrinking is always allowed
        assert limit.admitted == 1
    assert limit.admitted == 0
    with pytest.raises(ValueError):
        AdmissionLimit(0)
