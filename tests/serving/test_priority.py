"""The model's threads run at a lower CPU priority than the event loop (app/serving/priority.py).

Real threads, real ONNX Runtime sessions: the nice value of every thread is read from
/proc/self/task/<tid>/stat (Linux only; elsewhere the module does nothing and these tests skip).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from app.serving.batching import DynamicBatcher
from app.serving.bundle import open_bundle
from app.serving.priority import call_at_lower_priority, lower_this_thread
from app.serving.runtime import ModelRuntime, RuntimeOptions

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def nice_of(tid: int) -> int:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])  # field 19 of stat; the split drops pid and comm


def thread_ids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def test_a_thread_lowers_only_itself() -> None:
    base = nice_of(threading.get_native_id())
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = nice_of(threading.get_native_id())

    def work() -> int:
        grandchild = threading.Thread(target=child)
        grandchild.start()
        grandchild.join()
        return nice_of(threading.get_native_id())

    assert call_at_lower_priority(work, 4) == base + 4
    assert seen["child"] == base + 4  # threads it starts inherit it
    assert nice_of(threading.get_native_id()) == base  # the caller is untouched


def test_errors_reach_the_caller() -> None:
    def fail() -> None:
        raise ValueError("from the loader thread")

    with pytest.raises(ValueError, match="loader thread"):
        call_at_lower_priority(fail, 3)


def test_onnx_runtime_threads_inherit_the_lower_priority(small_bundle: Path) -> None:
    base = nice_of(threading.get_native_id())
    before = thread_ids()
    runtime = ModelRuntime(open_bundle(small_bundle), RuntimeOptions(provider="cpu", intra_op_threads=2,
                                                                     thread_nice=5))
    # threads that ended again meanwhile (another test's leftovers winding down) are no ONNX
    # Runtime pool threads: those live as long as the session
    created = {tid for tid in thread_ids() - before if Path(f"/proc/self/task/{tid}").exists()}
    assert created, "ONNX Runtime started no intra-op threads"
    assert {tid: nice_of(tid) for tid in created} == dict.fromkeys(created, base + 5)
    assert nice_of(threading.get_native_id()) == base
    del runtime


def test_batcher_lane_threads_run_lower() -> None:
    base = nice_of(threading.get_native_id())

    def fn(_key: object, items: list[int], _alone: bool) -> list[int]:
        return [nice_of(threading.get_native_id()) for _ in items]

    async def main() -> list[int]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(fn, max_batch_size=4, max_wait_s=0.0, lanes=2,
                                                           thread_nice=3)
        batcher.start()
        try:
            return list(await asyncio.gather(*(batcher.submit("k", i) for i in range(3))))
        finally:
            await batcher.stop()

    assert set(asyncio.run(main())) == {base + 3}
    lower_this_thread(0)  # a zero increment is a no-op
    assert nice_of(threading.get_native_id()) == base
