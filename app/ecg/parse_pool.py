"""Read uploaded records in a few worker processes, so that one bad file cannot stall or sink the others.

Why: the readers decode untrusted files. In the server process a file that is slow to decode
holds the request thread (and the GIL) while every other request waits, and memory a reader
allocates is the server's. Here each record is read by a worker process with

* a **memory budget**: ``RLIMIT_AS`` (address space) set to ``memory_bytes`` at the worker's start,
  so a reader that allocates past it gets ``MemoryError`` in the worker, never the server;
  answered ``UploadTooLarge`` (413 ``upload_too_large``, ``details.limit = "parse_memory_mb"``),
  the family of the readers' own size limits (a file declaring more than the service accepts is
  413 too): the file needs more than a stated budget, and sending it again will not help;
* a **deadline** per job (``timeout_s``): a worker past it is killed (SIGKILL, which also stops
  one busy in C code) and replaced; answered ``UploadTooLarge`` (413, ``details.limit =
  "parse_timeout_s"``), for the same reason;
* **a worker that dies** during a job (segfault in a C decoder, the kernel's OOM killer, an
  operator's kill) is replaced; answered ``MalformedFile`` (422 ``malformed_file``, "the reader
  process ended"): the file is the likeliest cause, and the answer is never a 500;
* one thread for BLAS/OpenMP (environment, before numpy loads: the readers need none, and
  each thread reserves address space) and a lower CPU priority (``nice``), so parsing shares
  the cores below the event loop, like the model's threads.

One upload is read by one worker, a job at a time (finding its records, then each record);
other workers keep reading other uploads meanwhile. What crosses to a worker is small: the
path of the upload's private folder (unpacked in the server by ``app.ecg.uploads``, which
already bounds archives and zip bombs) and the read hints; what comes back is the
``Recording`` of each record and its file name, in ``discover`` order, exactly what reading
in-process gives (``read_records``), the samples written from the worker's array straight into
one buffer in the server (``_send``: no pickled copy on either side). Errors the readers raise
(``ServiceError``) come back as themselves, with their details; an unexpected exception (a
reader bug) comes back as ``ParseWorkerError`` with the worker's traceback as its cause (a 500,
as in-process).

Processes: the ``forkserver`` start method, never ``fork`` (the server process runs ONNX
Runtime threads, and a forked copy of a multi-threaded process can deadlock). The fork
server is started once per server process with the readers and their libraries imported
(one BLAS thread), so a new or replacement worker is a fork of a warm, single-threaded
process: milliseconds, not the 1.5 s of imports a ``spawn`` would pay. ``start()`` starts every
worker and waits until each says it is ready (warm: the first request pays nothing);
``close()`` stops them all (no process left behind; workers are also daemonic, and exit when
the server's end of their pipe closes).

Why not ``pebble`` (5.2.3, evaluated for this): its ``ProcessPool`` has per-task timeouts that
kill and restart a worker, an initializer and a context, but (1) a worker that dies while idle
(the OOM killer, an operator) leaves the pool permanently broken: every later ``schedule()``
raises ``RuntimeError("Unexpected error within the Pool")`` (tried: two forkserver workers,
SIGKILL to an idle one); (2) all workers share one pipe guarded by cross-process locks, which
(reading its code) a worker killed in the middle of a message would keep held, and every result
(up to 576 MB here) is pickled whole and funnels through one reader thread; (3) workers start
at the first task and their pids are private, so neither a warm start nor a test that kills a
worker mid-job has a public handle.
The pool below is one pipe per worker, and one waiting thread per worker in the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import queue
import resource
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from app.ecg.readers.base import ReadHints
from app.ecg.recording import Recording
from app.errors import MalformedFile, ServiceError, ShuttingDown, UploadTooLarge

log = logging.getLogger(__name__)

MiB = 1 << 20
# Imported by the fork server before it forks any worker, so that workers start warm. The
# readers import their format libraries lazily; a worker would otherwise pay for them (and
# grow its address space) at its first file of that format.
WARM_MODULES: tuple[str, ...] = (
    "numpy", "app.ecg.readers", "app.ecg.parse_pool", "scipy.io", "h5py", "pydicom",
    "pydicom.waveforms.numpy_handler", "pyedflib", "defusedxml.ElementTree", "ecgdatakit.parsing.codecs.xli",
    "ecgdatakit.parsing.parsers.scp_ecg", "wfdb",
)
# One thread for every numerical library a reader might load (they read these at load time).
SINGLE_THREAD_ENV: dict[str, str] = dict.fromkeys(
    ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
     "NUMEXPR_NUM_THREADS"), "1")
FAILURE_REASONS: tuple[str, ...] = ("timeout", "memory", "crashed")
_forkserver_lock = threading.Lock()


@dataclass(frozen=True)
class ParsePoolOptions:
    """``workers`` processes; ``timeout_s`` per job (a discovery or one record's read);
    ``memory_bytes`` the RLIMIT_AS of each worker (its whole address space, imports included);
    ``nice`` how much lower than the server each worker runs; ``start_timeout_s`` the longest
    a worker may take to start before it counts as failed."""

    workers: int = 2
    timeout_s: float = 20.0
    memory_bytes: int = 2560 * MiB
    nice: int = 5
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("a parse pool needs at least one worker (0 means: no pool, read in-process)")
        if not self.timeout_s > 0 or not self.start_timeout_s > 0:
            raise ValueError("timeouts must be positive")
        if self.memory_bytes < 64 * MiB:
            raise ValueError("memory_bytes below 64 MiB cannot even hold the interpreter")

    @property
    def memory_mb(self) -> int:
        return self.memory_bytes // MiB


class ParseWorkerError(RuntimeError):
    """A reader raised something other than a ServiceError in a worker (a bug): a 500, logged
    with the worker's traceback (``__cause__``), exactly as in-process reading would be."""


class _RemoteTraceback(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n(in the parse worker)\n{self.text}"


# --- the worker process ---------------------------------------------------------------------


def _vm_bytes(field: str = "VmSize") -> int:
    """This process's address-space size (``VmSize``) or peak (``VmPeak``), from /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _has_memory_error(exc: BaseException) -> bool:
    """The exception is, or was raised while handling, a MemoryError (readers wrap what their
    libraries raise in MalformedFile ``from None``: the MemoryError stays in ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _run_job(job: tuple[Any, ...]) -> Any:
    from app.ecg.readers import READERS, discover

    kind = job[0]
    if kind == "discover":
        return [(reader.name, str(path)) for reader, path in discover(Path(job[1]))]
    if kind == "read":
        _kind, reader_name, path, hints = job
        reader = next((r for r in READERS if r.name == reader_name), None)
        if reader is None:
            raise ValueError(f"no reader is named {reader_name!r}")
        return reader.read(Path(path), hints)
    raise ValueError(f"unknown parse job {kind!r}")


def _reply_for(exc: BaseException) -> tuple[Any, ...]:
    if _has_memory_error(exc):
        return ("memory", _vm_bytes("VmPeak"))
    if isinstance(exc, ServiceError):
        return ("error", type(exc), exc.message, dict(exc.__dict__))
    return ("bug", type(exc).__name__, str(exc)[:2000], traceback.format_exc()[-20000:])


def _encode(reply: tuple[Any, ...]) -> tuple[bytes, list[memoryview]]:
    """The reply pickled without its arrays' data (protocol 5, out of band), and that data."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(reply, protocol=5, buffer_callback=buffers.append)
    return data, [buffer.raw() for buffer in buffers]


def _send(conn: Connection, reply: tuple[Any, ...]) -> None:
    """Send a reply: the sizes of its out-of-band buffers, the pickle, then each buffer's bytes
    written straight from the array's memory. ``Connection.send`` would pickle a 576 MB array
    into a second copy, and ``Connection.recv`` reads a large message with one ``os.read`` of the
    whole remaining size per 64 KB that arrives (measured: 7 s for 288 MB, against 0.5 s to read
    the file); raw writes into a buffer the server allocated once take a fraction of a second."""
    try:
        data, views = _encode(reply)
    except MemoryError:
        data, views = _encode(("memory", _vm_bytes("VmPeak")))
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:  # cannot be pickled
        data, views = _encode(("bug", type(exc).__name__, f"the reader's result cannot be sent back: {exc}", ""))
    conn.send([view.nbytes for view in views])
    conn.send_bytes(data)
    fd = conn.fileno()
    for view in views:
        sent = 0
        while sent < view.nbytes:
            sent += os.write(fd, view[sent:])


def _receive(conn: Connection, idle_timeout_s: float, sentinel: int) -> Any:
    """Read one reply ``_send`` sent; TimeoutError when no byte arrives for ``idle_timeout_s``,
    EOFError when the worker is gone."""
    sizes = conn.recv()
    data = conn.recv_bytes()
    fd = conn.fileno()
    buffers = [bytearray(size) for size in sizes]
    for buffer in buffers:
        view, received = memoryview(buffer), 0
        while received < len(buffer):
            ready = wait([conn, sentinel], idle_timeout_s)
            if not ready:
                raise TimeoutError("no data from the worker")
            if conn not in ready:
                raise EOFError("the worker ended")
            got = os.readv(fd, [view[received:]])
            if got == 0:
                raise EOFError("the worker ended")
            received += got
    return pickle.loads(data, buffers=buffers)


def _worker_main(conn: Connection, memory_bytes: int, nice: int) -> None:
    """A worker: limit itself, say it is ready (pid, address space before the limit), then
    answer one job at a time until told to stop (None) or its pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server's terminal: the server stops us
    os.environ.update(SINGLE_THREAD_ENV)
    if nice > 0:
        with suppress(OSError):
            os.nice(nice)
    for name in WARM_MODULES:  # already imported when the fork server preloaded them
        with suppress(ImportError):
            __import__(name)
    baseline = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    _send(conn, ("ready", os.getpid(), baseline))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the server went away
        if job is None:
            return
        try:
            reply: tuple[Any, ...] = ("ok", _run_job(job))
        except BaseException as exc:
            reply = _reply_for(exc)
        try:
            _send(conn, reply)
        except (EOFError, OSError, BrokenPipeError):
            return
        del reply


# --- the server side ------------------------------------------------------------------------


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def start_fork_server() -> None:
    """Start this process's fork server now, if it is not running (``ParsePool.start`` does it).

    It lives as long as this process, with its socket in a ``pymp-*`` folder that multiprocessing
    makes in the temp dir of the moment: code that points ``tempfile`` elsewhere for a while
    (tests) starts it first."""
    _start_forkserver(multiprocessing.get_context("forkserver"))


def _start_forkserver(context: ForkServerContext) -> None:
    """Start this process's fork server (once) with the readers imported and one BLAS thread.

    The environment is the server's own for the instant the fork server starts (its imports
    read it); if the fork server already runs (started by other code), workers import what it
    lacks themselves."""
    with _forkserver_lock:
        # "__main__": the fork server imports the server's main module once (as spawn would in
        # every worker: multiprocessing re-imports it in each child unless its parent has it)
        context.set_forkserver_preload(["__main__", *WARM_MODULES])
        with _environment(SINGLE_THREAD_ENV):
            multiprocessing.forkserver.ensure_running()


class _WorkerLost(Exception):
    """The worker did not answer: ``reason`` "timeout" or "crashed", ``how`` says what happened."""

    def __init__(self, reason: str, how: str) -> None:
        super().__init__(how)
        self.reason = reason
        self.how = how


def _ended(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}" if code is not None else "its pipe closed"


class _Worker:
    """One worker process and its pipe; used by one caller thread at a time."""

    def __init__(self, context: ForkServerContext, options: ParsePoolOptions) -> None:
        self._context = context
        self._options = options
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.ready = False
        self.pid: int | None = None
        self.baseline_bytes = 0
        self.lost = False  # to be replaced when given back

    def start(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_worker_main, name="ecg-parse-worker", daemon=True,
                                        args=(child, self._options.memory_bytes, self._options.nice))
        try:
            process.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.process, self.conn, self.ready, self.pid, self.lost = process, parent, False, process.pid, False

    def _lost(self, process: BaseProcess) -> _WorkerLost:
        process.join(1.0)
        return _WorkerLost("crashed", _ended(process))

    def _await(self, process: BaseProcess, conn: Connection, timeout_s: float) -> bool:
        """True when the pipe has a message; False on timeout; _WorkerLost when the process ended
        (or the pool closed the pipe under us)."""
        try:
            ready = wait([conn, process.sentinel], timeout_s)
        except (OSError, ValueError):
            raise self._lost(process) from None
        if conn in ready:
            return True
        if ready:
            raise self._lost(process)
        return False

    def _recv(self, process: BaseProcess, conn: Connection) -> Any:
        try:
            return _receive(conn, self._options.timeout_s, process.sentinel)
        except TimeoutError:
            process.kill()
            process.join(5.0)
            raise _WorkerLost("timeout", f"no data for {self._options.timeout_s:g} s") from None
        except (EOFError, OSError):
            raise self._lost(process) from None

    def wait_ready(self) -> None:
        """Start the process if there is none, or if it died while idle (the OOM killer, an operator:
        no job was lost, so nobody is told), and wait for its "ready"."""
        if self.process is not None and not self.process.is_alive():
            log.warning("parse worker %s ended while idle (%s); starting another", self.pid, _ended(self.process))
            self.stop(grace_s=0)
        if self.process is None or self.conn is None:
            self.start()
        process, conn = self.process, self.conn
        assert process is not None and conn is not None
        if self.ready:
            return
        if not self._await(process, conn, self._options.start_timeout_s):
            raise _WorkerLost("crashed", f"it did not start within {self._options.start_timeout_s:g} s")
        message = self._recv(process, conn)
        if not (isinstance(message, tuple) and message and message[0] == "ready"):
            raise _WorkerLost("crashed", "it started wrongly")
        _tag, pid, baseline = message
        self.pid, self.baseline_bytes, self.ready = int(pid), int(baseline), True
        headroom = self._options.memory_bytes - self.baseline_bytes
        if headroom < 256 * MiB:
            log.warning("parse worker %s: its memory budget (%d MB) leaves %d MB above its baseline of %d MB; "
                        "raise ECGFM_PARSE_MEMORY_MB", self.pid, self._options.memory_mb, headroom // MiB,
                        self.baseline_bytes // MiB)

    def run(self, job: tuple[Any, ...], timeout_s: float) -> tuple[Any, ...]:
        """Send one job and return the worker's reply, or raise _WorkerLost (timeout: the worker is
        killed here). The deadline starts when the worker has the job, not while it starts."""
        self.wait_ready()
        process, conn = self.process, self.conn
        assert process is not None and conn is not None
        try:
            conn.send(job)
        except (OSError, EOFError, ValueError):
            raise self._lost(process) from None
        if not self._await(process, conn, timeout_s):
            if process.is_alive():
                process.kill()
                process.join(5.0)
            raise _WorkerLost("timeout", f"past {timeout_s:g} s")
        reply = self._recv(process, conn)
        assert isinstance(reply, tuple)
        return reply

    def stop(self, grace_s: float) -> None:
        """Ask the worker to exit (None), then kill it if it has not after ``grace_s``."""
        process, conn = self.process, self.conn
        if process is None:
            return
        if conn is not None:
            with suppress(OSError, EOFError, ValueError):
                conn.send(None)
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join(5.0)
        if conn is not None:
            conn.close()
        self.process, self.conn, self.ready = None, None, False


class ParsePool:
    """``workers`` reader processes. ``read_records`` is blocking and thread-safe: call it from
    at most ``workers`` threads at once (more callers wait for a free worker)."""

    def __init__(self, options: ParsePoolOptions = ParsePoolOptions(), *,
                 on_failure: Callable[[str], None] = lambda reason: None,
                 on_busy: Callable[[int], None] = lambda busy: None) -> None:
        """``on_failure(reason)`` is told of every job lost to a timeout, the memory budget or a
        crash (for metrics); ``on_busy(n)`` of the number of workers holding a job."""
        self.options = options
        self._on_failure = on_failure
        self._on_busy = on_busy
        self._context = multiprocessing.get_context("forkserver")
        self._workers = [_Worker(self._context, options) for _ in range(options.workers)]
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._busy: list[_Worker] = []
        self._closed = False
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ParsePool:
        """Start every worker and wait until each is ready (raises RuntimeError if one cannot)."""
        if self._started:
            return self
        _start_forkserver(self._context)
        for worker in self._workers:
            worker.start()
        try:
            for worker in self._workers:
                worker.wait_ready()
        except _WorkerLost as lost:
            self.close()
            raise RuntimeError(f"a parse worker could not start: {lost.how}") from None
        for worker in self._workers:
            self._idle.put(worker)
        self._started = True
        log.info("parse pool: %d workers ready (memory budget %d MB each, baseline %d MB; deadline %g s per file)",
                 len(self._workers), self.options.memory_mb, max(w.baseline_bytes for w in self._workers) // MiB,
                 self.options.timeout_s)
        return self

    def close(self, grace_s: float = 2.0) -> None:
        """Stop every worker (jobs in flight are killed); afterwards read_records raises ShuttingDown."""
        with self._lock:
            self._closed = True
            for worker in self._workers:  # a worker with a job is not waited for: its caller gets ShuttingDown
                worker.stop(0.0 if any(w is worker for w in self._busy) else grace_s)

    def __enter__(self) -> ParsePool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """The pids of the live workers (for health checks and tests)."""
        return [w.pid for w in self._workers if w.pid is not None and w.process is not None and w.process.is_alive()]

    def busy_pids(self) -> list[int]:
        """The pids of the workers holding a job now."""
        with self._lock:
            return [w.pid for w in self._busy if w.pid is not None]

    def baseline_bytes(self) -> int:
        """The largest address space a worker had at its start, before its limit was set."""
        return max((w.baseline_bytes for w in self._workers), default=0)

    # --- work --------------------------------------------------------------------------------

    def read_records(self, directory: Path, hints: ReadHints) -> list[tuple[str, Recording]]:
        """(file name, Recording) of every record in ``directory``, in ``discover`` order, read by one
        worker: one job to find the records, then one per record, each under the deadline and the
        memory budget. The first error ends the upload (as in-process: later files are not read)."""
        with self._worker() as worker:
            found = self._job(worker, ("discover", str(directory)), "the upload")
            records: list[tuple[str, Recording]] = []
            for reader_name, path in found:
                name = Path(path).name
                recording = self._job(worker, ("read", reader_name, path, hints), name)
                assert isinstance(recording, Recording)
                records.append((name, recording))
            return records

    def call(self, job: tuple[Any, ...], *, what: str = "the upload") -> Any:
        """Run one job (``("discover", folder)`` or ``("read", reader name, path, hints)``) on a free
        worker: its value, or the error it stands for."""
        with self._worker() as worker:
            return self._job(worker, job, what)

    @contextmanager
    def _worker(self) -> Iterator[_Worker]:
        """A free worker for a series of jobs; given back (replaced if it was lost) at the end."""
        worker = self._take()
        try:
            yield worker
        finally:
            self._give_back(worker, recycle=worker.lost)

    def _job(self, worker: _Worker, job: tuple[Any, ...], what: str) -> Any:
        try:
            reply = worker.run(job, self.options.timeout_s)
        except _WorkerLost as lost:
            worker.lost = True
            self._on_failure(lost.reason)
            if self._closed:
                raise self._shutting_down() from None
            if lost.reason == "timeout":
                raise UploadTooLarge(
                    f"{what} took longer than the {self.options.timeout_s:g} s a file may take to read "
                    f"(ECGFM_PARSE_TIMEOUT_S); the reader was stopped",
                    details={"limit": "parse_timeout_s", "value": self.options.timeout_s, "file": what},
                ) from None
            raise MalformedFile(
                f"{what} could not be read: the reader process ended ({lost.how}); if the file is valid, "
                "sending it again may succeed", details={"file": what, "reader_process": lost.how},
            ) from None
        except BaseException:
            worker.lost = True  # interrupted between messages: its pipe cannot be trusted
            raise
        if reply[0] == "memory":
            worker.lost = True  # a process that ran out of memory is not trusted with another file
        return self._value(reply, what)

    def _value(self, reply: tuple[Any, ...], what: str) -> Any:
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "memory":
            self._on_failure("memory")
            raise UploadTooLarge(
                f"reading {what} needs more memory than a reader may use (ECGFM_PARSE_MEMORY_MB = "
                f"{self.options.memory_mb} MB per reader process)",
                details={"limit": "parse_memory_mb", "value": self.options.memory_mb, "file": what},
            )
        if kind == "error":
            _kind, cls, message, state = reply
            exc = cls.__new__(cls)
            Exception.__init__(exc, message)
            exc.__dict__.update(state)
            raise exc
        _kind, type_name, message, text = reply
        raise ParseWorkerError(f"a reader failed reading {what}: {type_name}: {message}") from _RemoteTraceback(text)

    def _shutting_down(self) -> ShuttingDown:
        return ShuttingDown("the service is shutting down; the upload was not read")

    def _take(self) -> _Worker:
        """A free worker, marked busy (waits while all are busy); ShuttingDown once closed."""
        while True:
            if self._closed:
                raise self._shutting_down()
            try:
                worker = self._idle.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                taken = not self._closed
                if taken:
                    self._busy.append(worker)
                busy = len(self._busy)
            if not taken:
                self._idle.put(worker)
                raise self._shutting_down()
            self._on_busy(busy)
            return worker

    def _give_back(self, worker: _Worker, recycle: bool) -> None:
        """Back to the idle queue; a worker that was lost, or failed for memory, is replaced by a
        new process first (started now, so that it is warm when its next job comes). Under the
        lock, so that ``close`` never misses a replacement."""
        with self._lock:
            self._busy = [w for w in self._busy if w is not worker]
            busy = len(self._busy)
            if recycle and not self._closed:
                worker.stop(grace_s=0.5)
                try:
                    worker.start()
                except OSError as exc:  # started again at its next job
                    log.error("parse worker could not be restarted (%s); retrying at the next upload", exc)
        self._on_busy(busy)
        self._idle.put(worker)
