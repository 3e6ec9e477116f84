"""Inference for concurrent requests: one dynamic batcher in front of the ONNX runtime.

Requests that share a panel (same label-set version, hence the same label vectors) are
scored in one ``ModelRuntime.score`` call; the call runs in a worker thread so the event
loop (health checks, metrics) stays responsive while the model is busy. Up to
``runtime.lanes`` calls run at once under load; a call with nothing else running, queued
or on its way (``incoming``) uses every core (see app.serving.batching). A job given a
``deadline`` that is still queued then is dropped (``DeadlineExceeded``), never scored.

ECG feature requests (``POST /embeddings``: the encoder alone, ``Scorer.encode``) go through
the same batcher under their own key, so they share its bound, lanes and fairness with
scoring. A :class:`ServedModel` is one loaded model version: its runtime, text embedder and
scorer, what the model repository (app.serving.repository) switches between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from app.lru import LruCache
from app.ops import metrics
from app.serving.batching import BatchStats, DynamicBatcher, IncomingWork
from app.serving.runtime import ModelInfo, ModelRuntime, PreparedLabels

T = TypeVar("T")
ENCODE_KEY = "encode"  # the batch key of feature requests (panel keys are "<text encoder>:<version>")


class RuntimeEmbedder:
    """The knowledge layer's ``TextEmbedder`` over the bundle's ONNX text encoder."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime
        self.identity = runtime.text_encoder_id

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._runtime.embed_texts(texts)


@dataclass(frozen=True)
class ScoreJob:
    windows: np.ndarray  # (N, 12, 1000)
    vectors: np.ndarray  # (C, D), identical for every job of one batch key


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray  # (N, C)
    attention: np.ndarray  # (N, C, 32)
    queue_s: float
    inference_s: float


async def gather_or_withdraw(jobs: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Await every model job; if one fails (e.g. its deadline), the others are withdrawn from the
    queue (cancelled, so the batcher skips them) instead of being scored for nothing."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()


class Scorer:
    def __init__(self, runtime: ModelRuntime, *, max_batch_size: int, max_wait_s: float,
                 prepared_panels: int = 32) -> None:
        self.runtime = runtime
        # label sets prepared for scoring (runtime.prepare_labels), by panel key
        self._prepared: LruCache[str, PreparedLabels] = LruCache(prepared_panels)
        self.incoming = IncomingWork()
        self._batcher: DynamicBatcher[ScoreJob, tuple[np.ndarray, np.ndarray, float]] = DynamicBatcher(
            self._run, max_batch_size=max_batch_size, max_wait_s=max_wait_s, lanes=runtime.lanes,
            upcoming=lambda: self.incoming.count, on_batch=self._on_batch, on_expired=self._on_expired,
            name="scorer", thread_nice=runtime.options.thread_nice,
        )

    def start(self) -> None:
        self._batcher.start()

    async def stop(self, *, timeout: float = 30.0) -> None:
        """Finish what is queued (for at most ``timeout`` s), then fail the rest with ModelNotReady."""
        await self._batcher.stop(timeout=timeout)

    @property
    def queue_depth(self) -> int:
        return self._batcher.queue_depth

    def _labels(self, key: str, vectors: np.ndarray) -> PreparedLabels:
        """The panel's prepared labels, computed on its first batch (a key names one label-set
        version under one text encoder, so the vectors behind a key never change)."""
        labels = self._prepared.get(key)
        if labels is None:
            labels = self.runtime.prepare_labels(vectors)
            self._prepared.put(key, labels)
        return labels

    def _run(self, key: Hashable, jobs: list[ScoreJob], alone: bool) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """One model call for the jobs of one panel (``key``: the panel key ``score`` was given),
        or one encoder call for feature jobs (``ENCODE_KEY``: the features in the first slot)."""
        assert isinstance(key, str)
        started = time.perf_counter()
        windows = jobs[0].windows if len(jobs) == 1 else np.concatenate([j.windows for j in jobs])
        if key == ENCODE_KEY:
            features = self.runtime.encode_ecg(windows)
            first, second = features, np.empty((len(windows), 0), dtype=np.float32)
        else:
            first, second = self.runtime.score_prepared(windows, self._labels(key, jobs[0].vectors), alone=alone)
        elapsed = time.perf_counter() - started
        out, offset = [], 0
        for job in jobs:
            n = len(job.windows)
            out.append((first[offset : offset + n], second[offset : offset + n], elapsed))
            offset += n
        return out

    @property
    def retry_after_s(self) -> int:
        """Retry-After of the DeadlineExceeded raised for jobs dropped at their deadline."""
        return self._batcher.retry_after_s

    @retry_after_s.setter
    def retry_after_s(self, seconds: int) -> None:
        self._batcher.retry_after_s = max(1, int(seconds))

    def _on_expired(self, _weight: int) -> None:
        metrics.set_queue_depth(self._batcher.queue_depth)

    @staticmethod
    def _on_batch(stats: BatchStats) -> None:
        metrics.observe_inference_batch(stats.size, alone=stats.alone)

    async def score(self, panel_key: str, windows: np.ndarray, vectors: np.ndarray, *,
                    deadline: float | None = None) -> Scored:
        """``deadline`` (``time.monotonic()``): not scored if still queued then (DeadlineExceeded)."""
        submitted = time.perf_counter()
        metrics.set_queue_depth(self._batcher.queue_depth + 1)
        try:
            probs, attention, run_s = await self._batcher.submit(
                panel_key, ScoreJob(windows, vectors), weight=len(windows), deadline=deadline)
        finally:
            metrics.set_queue_depth(self._batcher.queue_depth)
        total = time.perf_counter() - submitted
        return Scored(probs, attention, queue_s=max(total - run_s, 0.0), inference_s=run_s)

    async def score_in_parts(self, panel_key: str, windows: np.ndarray, vectors: np.ndarray, *, part: int,
                             deadline: float | None = None) -> Scored:
        """``score`` for a job of many windows (lead evidence: 13 per window), as model jobs of at
        most ``part`` windows submitted together: the batcher combines them up to its batch size,
        so no model call holds more than max(part, max_batch_size) windows' activations (one job
        of a 600 s record's 780 windows would need about 2 GB in one call). Rows keep their order."""
        if len(windows) <= part:
            return await self.score(panel_key, windows, vectors, deadline=deadline)
        parts = await gather_or_withdraw([self.score(panel_key, windows[i:i + part], vectors, deadline=deadline)
                                          for i in range(0, len(windows), part)])
        return Scored(np.concatenate([s.probabilities for s in parts]), np.concatenate([s.attention for s in parts]),
                      queue_s=max(s.queue_s for s in parts), inference_s=max(s.inference_s for s in parts))

    async def encode(self, windows: np.ndarray, *, deadline: float | None = None) -> Encoded:
        """The ECG encoder's token features of ``windows`` (N, segments, D), batched with the
        other model work."""
        submitted = time.perf_counter()
        metrics.set_queue_depth(self._batcher.queue_depth + 1)
        no_labels = np.empty((0, 0), dtype=np.float32)
        try:
            features, _, run_s = await self._batcher.submit(
                ENCODE_KEY, ScoreJob(windows, no_labels), weight=len(windows), deadline=deadline)
        finally:
            metrics.set_queue_depth(self._batcher.queue_depth)
        total = time.perf_counter() - submitted
        return Encoded(features, queue_s=max(total - run_s, 0.0), inference_s=run_s)


@dataclass(frozen=True)
class Encoded:
    features: np.ndarray  # (N, segments, D): one token per segment of each window
    queue_s: float
    inference_s: float


WARM_UP_TEXT = "normal sinus rhythm"


class ServedModel:
    """One loaded model version: runtime, text embedder and scorer (see the module docstring).

    Built by ``app.service.load_served_model``; ``warm_up`` runs each graph once so the first
    request after a switch does not pay for ONNX Runtime's first-call work.
    """

    def __init__(self, runtime: ModelRuntime, *, max_batch_size: int, max_wait_s: float) -> None:
        self.runtime = runtime
        self.embedder = RuntimeEmbedder(runtime)
        self.scorer = Scorer(runtime, max_batch_size=max_batch_size, max_wait_s=max_wait_s)

    @property
    def version(self) -> str:
        return self.runtime.info.version

    @property
    def info(self) -> ModelInfo:
        return self.runtime.info

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(self.runtime.bundle.manifest)

    def warm_up(self) -> None:
        leads, samples = self.runtime.contract.window_shape
        window = np.zeros((1, leads, samples), dtype=np.float32)
        self.runtime.score(window, self.embedder.embed([WARM_UP_TEXT]))
        self.runtime.encode_ecg(window)

    def start(self) -> None:
        self.scorer.start()

    async def stop(self, *, timeout: float) -> None:
        await self.scorer.stop(timeout=timeout)

    def close(self) -> None:
        self.runtime.close()
