"""Progress of the long build jobs (export, demo-bundle, quantize): a tqdm bar over named steps
on stderr, and each step's duration as a log line. stdout stays free for the command's result.

The bar is drawn only when stderr is a terminal (tqdm's ``disable=None``), so logs of a CI job
or of ``2> file`` get the duration lines without carriage-return clutter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from tqdm import tqdm

Log = Callable[[str], None]


class Progress:
    """``with Progress(3, "export", log) as p: with p.step("ecg_tqn.onnx"): ...``"""

    def __init__(self, total: int, desc: str, log: Log, *, bar: bool | None = None) -> None:
        self.desc = desc
        self._log = log
        self._started = time.perf_counter()
        # bar=None: only on a terminal; False: never (library callers, tests)
        self._bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False,
                         disable=None if bar is None else not bar, dynamic_ncols=True)

    def log(self, message: str) -> None:
        """A log line that does not tear the bar (the bar is cleared, the line written, the bar redrawn)."""
        with tqdm.external_write_mode(file=sys.stderr):
            self._log(message)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One named step: shown on the bar while it runs, its duration logged when it is done."""
        self._bar.set_postfix_str(name, refresh=True)
        started = time.perf_counter()
        yield
        self._bar.update(1)
        self.log(f"{name}: {time.perf_counter() - started:.1f} s")

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._started

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._bar.close()
        if kind is None:
            self.log(f"{self.desc} done in {self.elapsed_s:.1f} s")
