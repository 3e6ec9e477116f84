"""app/ecg/parse_pool.py: real worker processes reading real files.

Nothing is mocked: the pool forks real workers (forkserver), the files are the real records of
tests/data/ecg, the malformed corpus, and valid records that are slow (a CSV) or large (WFDB)
written into the test's folder (tests/fixtures/large_records.py). Deadlines, memory budgets
and crashes are real: a worker is really killed past its deadline, really runs out of its
RLIMIT_AS, and the test really sends SIGKILL to a worker in the middle of a job.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.ecg.parse_pool import SINGLE_THREAD_ENV, ParsePool, ParsePoolOptions, ParseWorkerError
from app.ecg.readers import discover
from app.ecg.readers._limits import LARGEST_RECORDING_BYTES, MAX_SAMPLES_PER_LEAD, MEMORY_BUDGET_BYTES
from app.ecg.readers.base import ReadHints
from app.ecg.uploads import UploadLimits
from app.errors import MalformedFile, ServiceError, ShuttingDown, UnsupportedFormat, UploadTooLarge
from app.ops.settings import Settings
from app.usecases.diagnose import read_uploaded_ecgs
from tests.fixtures.large_records import (
    address_space_limit,
    environment,
    nice_of,
    proc_status,
    process_gone,
    wait_for,
    write_csv,
    write_wfdb,
)
from tests.formats.malformed_corpus import CASES

ECG_DIR = Path(__file__).resolve().parents[1] / "data" / "ecg"
MiB = 1 << 20
CSV_HINTS = ReadHints(sampling_rate=500, units="mV")
# About 1.5 s to read on a quiet 2-core machine (2-4 s shared): long enough to be caught in the
# middle, short enough for a test. Rows of a 12-lead CSV; the 50 MB upload limit is ~600,000.
SLOW_CSV_ROWS = 60_000


def _record_uploads(*records: str) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for r in records for p in sorted(ECG_DIR.glob(f"{r}.*"))
            if p.suffix in (".hea", ".mat", ".dat", ".xyz")]


class Failures:
    """What the pool reports to its ``on_failure`` callback (the metrics hook), thread-safe."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self._lock:
            self.reasons.append(reason)


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
def pool(failures: Failures) -> Iterator[ParsePool]:
    with ParsePool(ParsePoolOptions(workers=2, timeout_s=60), on_failure=failures) as started:
        yield started


@pytest.fixture
def slow_csv(tmp_path: Path) -> Path:
    folder = tmp_path / "slow"
    folder.mkdir()
    write_csv(folder / "slow.csv", SLOW_CSV_ROWS)
    return folder


@pytest.fixture
def e07500(tmp_path: Path) -> Path:
    folder = tmp_path / "e07500"
    folder.mkdir()
    for name, data in _record_uploads("E07500"):
        (folder / name).write_bytes(data)
    return folder


def _in_background(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn(*args)`` on a thread; the dict gets "value" or "error" and "ended" (monotonic)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # the test looks at it
            out["error"] = exc
        out["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# --- the same records as in-process --------------------------------------------------------


def test_reads_exactly_what_in_process_reading_gives(pool: ParsePool) -> None:
    """Names, order, signals, rates, leads, warnings, metadata and gains: identical."""
    files = _record_uploads("E07500", "A0001", "s0010_re", "S0001")
    limits, hints = UploadLimits(), ReadHints()
    direct = read_uploaded_ecgs(files, limits, hints)
    pooled = read_uploaded_ecgs(files, limits, hints, pool)
    assert [s.filename for s in pooled] == [s.filename for s in direct] == sorted(s.filename for s in direct)
    for a, b in zip(direct, pooled, strict=True):
        ra, rb = a.recording, b.recording
        assert np.array_equal(ra.signals, rb.signals, equal_nan=True) and rb.signals.dtype == ra.signals.dtype
        assert (ra.fs, ra.lead_names, ra.source_format, ra.gains) == (rb.fs, rb.lead_names, rb.source_format, rb.gains)
        assert ra.warnings == rb.warnings and ra.metadata == rb.metadata


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_corpus_gets_the_same_answer(name: str, pool: ParsePool, tmp_path: Path) -> None:
    """Every malformed, hostile and extreme file of the corpus: the pool raises the very error
    (class, message, details) reading in-process raises, or reads the same recording."""
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    case.build(folder)

    def in_process() -> list[Any]:
        return [reader.read(path, case.hints) for reader, path in discover(folder)]

    try:
        expected: list[Any] | ServiceError = in_process()
    except ServiceError as exc:
        expected = exc
    if isinstance(expected, ServiceError):
        with pytest.raises(ServiceError) as info:
            pool.read_records(folder, case.hints)
        got = info.value
        assert type(got) is type(expected)
        assert (got.code, got.message, got.details) == (expected.code, expected.message, expected.details)
    else:
        read = [rec for _name, rec in pool.read_records(folder, case.hints)]
        assert len(read) == len(expected)
        for a, b in zip(expected, read, strict=True):
            assert np.array_equal(a.signals, b.signals, equal_nan=True) and a.warnings == b.warnings
    assert len(pool.worker_pids()) == 2


def test_reader_errors_keep_their_details_and_the_worker(pool: ParsePool, tmp_path: Path) -> None:
    pids = sorted(pool.worker_pids())
    (tmp_path / "notes.txt").write_text("not an ECG")
    with pytest.raises(UnsupportedFormat) as info:
        pool.read_records(tmp_path, ReadHints())
    assert info.value.details == {"files": ["notes.txt"]}
    assert sorted(pool.worker_pids()) == pids  # an ordinary refusal costs no process


# --- the deadline ----------------------------------------------------------------------------


def test_a_file_past_the_deadline_is_stopped_and_the_pool_goes_on(slow_csv: Path, e07500: Path,
                                                                   failures: Failures) -> None:
    with ParsePool(ParsePoolOptions(workers=1, timeout_s=0.3), on_failure=failures) as pool:
        (before,) = pool.worker_pids()
        started = time.monotonic()
        with pytest.raises(UploadTooLarge) as info:
            pool.read_records(slow_csv, CSV_HINTS)
        assert time.monotonic() - started < 5  # answered at the deadline, not when the read would end
        assert info.value.details == {"limit": "parse_timeout_s", "value": 0.3, "file": "slow.csv"}
        assert "slow.csv took longer than the 0.3 s" in info.value.message
        assert failures.reasons == ["timeout"]
        assert process_gone(before), "the worker past its deadline still runs"
        (name, recording), = pool.read_records(e07500, ReadHints())  # the replacement reads the next file
        assert name == "E07500.hea" and recording.signals.shape == (12, 5000)
        assert pool.worker_pids() != [before]


# --- the memory budget -----------------------------------------------------------------------


def test_a_record_over_the_memory_budget_is_refused_with_the_budget(tmp_path: Path, e07500: Path,
                                                                     failures: Failures) -> None:
    """A valid record of 12 x 3,000,000 samples (600 s at 5 kHz: 288 MB as float64) needs more than
    a budget of the worker's baseline + 96 MiB; with the default budget it reads."""
    big = tmp_path / "big"
    write_wfdb(big, "long", 3_000_000, 5000.0)
    with ParsePool(ParsePoolOptions(workers=1)) as probe:
        baseline = probe.baseline_bytes()
        (_name, recording), = probe.read_records(big, ReadHints())
        assert recording.signals.shape == (12, 3_000_000)
        del recording
    budget = baseline + 96 * MiB
    with ParsePool(ParsePoolOptions(workers=1, memory_bytes=budget), on_failure=failures) as pool:
        (before,) = pool.worker_pids()
        assert address_space_limit(before) == budget
        with pytest.raises(UploadTooLarge) as info:
            pool.read_records(big, ReadHints())
        mb = budget // MiB
        assert info.value.details == {"limit": "parse_memory_mb", "value": mb, "file": "long.hea"}
        assert f"ECGFM_PARSE_MEMORY_MB = {mb} MB" in info.value.message
        assert failures.reasons == ["memory"]
        assert process_gone(before)  # a worker that ran out of memory is replaced, not trusted again
        (_name, small), = pool.read_records(e07500, ReadHints())
        assert small.signals.shape == (12, 5000)


def test_the_default_budget_holds_the_largest_accepted_recording(tmp_path: Path) -> None:
    """12 leads x 600 s x 10 kHz (576 MB as float64), read and sent back under the defaults: the
    budget is the worker's baseline + MEMORY_BUDGET_BYTES (4 x that recording), rounded up."""
    options = ParsePoolOptions()
    assert options.memory_bytes == Settings().parse_memory_mb * MiB
    big = tmp_path / "largest"
    write_wfdb(big, "largest", MAX_SAMPLES_PER_LEAD, 10_000.0)
    with ParsePool(ParsePoolOptions(workers=1)) as pool:
        assert pool.baseline_bytes() + MEMORY_BUDGET_BYTES <= options.memory_bytes
        (_name, recording), = pool.read_records(big, ReadHints())
    assert recording.signals.shape == (12, MAX_SAMPLES_PER_LEAD)
    assert recording.signals.nbytes == LARGEST_RECORDING_BYTES


# --- a worker that dies ------------------------------------------------------------------------


def test_a_worker_killed_during_a_job_is_a_422_and_is_replaced(pool: ParsePool, slow_csv: Path, e07500: Path,
                                                                failures: Failures) -> None:
    thread, out = _in_background(pool.read_records, slow_csv, CSV_HINTS)
    wait_for(lambda: pool.busy_pids())
    (victim,) = pool.busy_pids()
    time.sleep(0.2)  # inside the reader
    os.kill(victim, signal.SIGKILL)
    thread.join(30)
    error = out["error"]
    assert isinstance(error, MalformedFile)
    assert error.message.startswith("slow.csv could not be read: the reader process ended (killed by SIGKILL)")
    assert error.details == {"file": "slow.csv", "reader_process": "killed by SIGKILL"}
    assert failures.reasons == ["crashed"]
    assert process_gone(victim)
    for _ in range(3):  # both workers (one of them new) read again
        (_name, recording), = pool.read_records(e07500, ReadHints())
        assert recording.signals.shape == (12, 5000)
    pids = pool.worker_pids()
    assert len(pids) == 2 and victim not in pids


def test_a_worker_that_died_idle_is_replaced_before_its_next_job(pool: ParsePool, e07500: Path,
                                                                  failures: Failures) -> None:
    """(pebble 5.2.3's pool breaks for good here; see the module docstring.)"""
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)
        assert process_gone(pid)
    for _ in range(4):
        (_name, recording), = pool.read_records(e07500, ReadHints())
        assert recording.signals.shape == (12, 5000)
    assert failures.reasons == []  # no job was lost
    assert len(pool.worker_pids()) == 2


# --- one stuck worker does not stall the others --------------------------------------------------


def test_another_upload_is_read_while_one_worker_is_stuck(pool: ParsePool, slow_csv: Path, e07500: Path) -> None:
    thread, slow = _in_background(pool.read_records, slow_csv, CSV_HINTS)
    wait_for(lambda: pool.busy_pids())
    started = time.monotonic()
    for _ in range(5):
        (_name, recording), = pool.read_records(e07500, ReadHints())
        assert recording.signals.shape == (12, 5000)
    done = time.monotonic()
    assert "ended" not in slow, "the slow file finished first: the test proves nothing (make it larger)"
    assert done - started < 2.0
    thread.join(60)
    (name, csv_recording), = slow["value"]
    assert name == "slow.csv" and csv_recording.signals.shape == (12, SLOW_CSV_ROWS)


# --- the workers themselves ---------------------------------------------------------------------


def test_workers_run_limited(pool: ParsePool) -> None:
    """Address space at the budget, one thread, BLAS/OpenMP told to use one, 5 nice levels lower."""
    for pid in pool.worker_pids():
        assert address_space_limit(pid) == pool.options.memory_bytes
        assert proc_status(pid, "Threads") == "1"
        env = environment(pid)
        assert all(env.get(k) == v for k, v in SINGLE_THREAD_ENV.items()), env
        assert nice_of(pid) == min(19, nice_of(os.getpid()) + pool.options.nice)
        assert os.getppid() != pid
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != pool.options.memory_bytes  # the server is not limited


def test_close_leaves_no_process(e07500: Path, slow_csv: Path) -> None:
    pool = ParsePool(ParsePoolOptions(workers=2, timeout_s=60)).start()
    pids = pool.worker_pids()
    assert len(pids) == 2
    pool.read_records(e07500, ReadHints())
    thread, out = _in_background(pool.read_records, slow_csv, CSV_HINTS)  # one in the middle of a job
    wait_for(lambda: pool.busy_pids())
    pool.close()
    thread.join(30)
    assert isinstance(out.get("error"), ShuttingDown), out
    assert all(process_gone(pid) for pid in pids), [p for p in pids if not process_gone(p, 0)]
    assert pool.worker_pids() == []
    with pytest.raises(ShuttingDown):
        pool.read_records(e07500, ReadHints())


def test_a_reader_bug_comes_back_with_the_workers_traceback(pool: ParsePool, e07500: Path) -> None:
    """Not a ServiceError: a 500 as in-process, with the worker's traceback as the cause."""
    with pytest.raises(ParseWorkerError) as info:
        pool.call(("read", "no-such-format", str(e07500 / "E07500.hea"), ReadHints()), what="E07500.hea")
    assert str(info.value) == "a reader failed reading E07500.hea: ValueError: no reader is named 'no-such-format'"
    assert "in the parse worker" in str(info.value.__cause__)
    assert len(pool.worker_pids()) == 2


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        ParsePoolOptions(workers=0)
    with pytest.raises(ValueError, match="positive"):
        ParsePoolOptions(timeout_s=0)
    with pytest.raises(ValueError, match="64 MiB"):
        ParsePoolOptions(memory_bytes=10 * MiB)
