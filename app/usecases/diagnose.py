"""The diagnose use-case: recordings + a label set -> ranked diagnoses with knowledge and evidence.

read (uploads -> Recordings) -> preprocess (windows) -> panel (label set + cached vectors)
-> score (batched ONNX) -> explain (aggregate, rank, evidence). Shared by the API; no HTTP.

Bounded work (for the API): ``admit()`` lets a request in only while the ECGs admitted stay
under ``max_queued_ecgs`` and the service is not draining (else ``Overloaded`` /
``ShuttingDown``); ``diagnose(..., deadline=t)`` never scores a request still waiting at ``t``
(``DeadlineExceeded``). With a ``ParsePool``, uploads are read in its worker processes, each
file under a deadline and a memory budget (``app.ecg.parse_pool``), and waiting for them holds
neither the request thread nor the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import numpy as np

from app.contract import ModelContract
from app.ecg.parse_pool import ParsePool
from app.ecg.preprocess import ModelInput, preprocess
from app.ecg.readers import discover
from app.ecg.readers.base import ReadHints
from app.ecg.recording import Recording
from app.ecg.uploads import UploadLimits, unpacked_upload
from app.errors import DeadlineExceeded, InvalidInput, Overloaded, ShuttingDown, UnsupportedSignal
from app.knowledge.embedding_cache import LabelSetVectors
from app.knowledge.store import KnowledgeStore, LabelSetReader, label_set_version
from app.knowledge.types import Label, LabelSet
from app.ops import metrics
from app.serving.batching import AdmissionLimit
from app.usecases.explain import (
    INTENDED_USE,
    Aggregation,
    LeadMasking,
    Panel,
    PanelLabel,
    RankOptions,
    describe_source,
    rank_diagnoses,
    signal_warnings,
)
from app.usecases.results import DiagnoseResult, EcgResult, LabelSetRef, ResultWarning, Tracing
from app.usecases.scoring import RuntimeEmbedder, Scored, Scorer, ServedModel, gather_or_withdraw

ADHOC_SET = "adhoc"
UNTRAINED_WARNING = ResultWarning(
    "untrained_model", "This response comes from an UNTRAINED demo model (random weights): its outputs mean nothing.")
R = TypeVar("R")
MASKED_JOB_WINDOWS = 13  # explain=leads: a window and its 12 masked variants per model job (Scorer.score_in_parts)


def knowledge_warnings(label_set: LabelSet) -> tuple[ResultWarning, ...]:
    """the set came from memory because the knowledge database was unreachable."""
    if not label_set.served_from_memory:
        return ()
    return (ResultWarning("knowledge_from_cache", f"the knowledge database is unreachable; label set "
                          f"{label_set.name!r} version {label_set.version} served from memory"),)


@dataclass(frozen=True)
class EcgSource:
    recording: Recording
    filename: str | None = None
    ref: str | None = None  # the caller's own reference, echoed back


@dataclass(frozen=True)
class DiagnoseOptions:
    label_set: str | None = None
    labels: tuple[str, ...] = ()
    top_k: int = 5
    threshold: float = 0.0
    pad: bool = False
    aggregation: Aggregation = "max"
    include_windows: bool = False
    evidence_spans: int = 3
    explain_leads: bool = False  # lead-level evidence: each lead masked, 12 extra passes per window
    keep_tracing: bool = False  # return the 12-lead signal with each result (for a rendered report)


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        """Record a stage for the response and for the stage-latency metric."""
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds
        metrics.observe_stage(stage, seconds)

    def since(self, stage: str, started: float) -> None:
        self.add(stage, time.perf_counter() - started)

    def note(self, stage: str, seconds: float) -> None:
        """Record a stage for the response only (not one of the stage-latency metric's stages)."""
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds

    def as_ms(self) -> dict[str, float]:
        out = {k: round(v * 1000, 2) for k, v in self.stages.items()}
        out["total"] = round((time.perf_counter() - self.started) * 1000, 2)
        return out


def read_uploaded_ecgs(files: Iterable[tuple[str, BinaryIO | bytes]], limits: UploadLimits,
                       hints: ReadHints, pool: ParsePool | None = None) -> list[EcgSource]:
    """Unpack uploads in a private temp dir (always removed) and read every record found: in this
    process, or with ``pool`` in its workers (the same records, names and order; the folder is
    unpacked here either way, under the upload limits, and only its path crosses)."""
    with unpacked_upload(files, limits) as directory:
        if pool is not None:
            return [EcgSource(recording, filename=name) for name, recording in pool.read_records(directory, hints)]
        found = discover(directory)
        return [EcgSource(reader.read(path, hints), filename=path.name) for reader, path in found]


def panel_labels(labels: Iterable[Label]) -> tuple[PanelLabel, ...]:
    return tuple(PanelLabel(name=label.name, knowledge=label.description, codes=dict(label.codes), label_id=label.id)
                 for label in labels)


def _panel(label_set: LabelSet, vectors: np.ndarray) -> Panel:
    return Panel(label_set.name, label_set.version, panel_labels(label_set.labels), vectors)


async def _score_all(scorer: Scorer, key: str, windows: Sequence[np.ndarray], vectors: np.ndarray,
                     deadline: float | None, *, masked: bool = False) -> list[Scored]:
    """Score every ECG of a request (``windows``: one array per ECG, one model job each; with
    ``masked``, lead-masked windows, in jobs of one window's worth each); if one fails, the others
    are withdrawn (``gather_or_withdraw``)."""
    return await gather_or_withdraw([
        scorer.score_in_parts(key, w, vectors, part=MASKED_JOB_WINDOWS, deadline=deadline) if masked else
        scorer.score(key, w, vectors, deadline=deadline) for w in windows])


def _lead_masking(inputs: Sequence[ModelInput], timings: Timings) -> list[LeadMasking]:
    """Each ECG's windows with their lead-masked variants (``explain=leads``); the time it takes is
    in the response's timings as ``lead_masking`` (the 12 extra model passes per window are in
    ``inference``)."""
    t = time.perf_counter()
    masking = [LeadMasking.of(mi.windows) for mi in inputs]
    timings.note("lead_masking", time.perf_counter() - t)
    return masking


def _out_of_range(index: int) -> UnsupportedSignal:
    # Amplitudes beyond float32 (after conversion to mV) give inf/NaN model outputs, which
    # cannot be reported (JSON has no NaN): refuse them instead of failing with a 500.
    return UnsupportedSignal(
        f"ECG {index}: sample values are too large to score (non-finite model input or output); "
        "check the signal units", details={"ecg_index": index},
    )


class DiagnoseService:
    """Runs its CPU-bound request work (reading uploads, label-set lookup, preprocessing) on
    ``request_threads`` worker threads, one by default: that work holds the GIL, so more
    threads only contend for it (measured at 16 concurrent requests on 2 cores: one thread
    halved the service's CPU per request). The event loop stays free for health checks."""

    def __init__(self, *, store: KnowledgeStore, vectors: LabelSetVectors, default_label_set: str, max_labels: int,
                 max_duration_s: float, request_threads: int = 1, label_sets: LabelSetReader | None = None,
                 parse_pool: ParsePool | None = None) -> None:
        """``label_sets``: the label-set reader (its fallback while the database is down); by default
        one over ``store``. ``parse_pool``: where uploads are read (its owner starts and closes it);
        None: on the request thread. The model is given per call (``model``: the version the
        request leased from the model repository)."""
        self.store = store
        self.label_sets = label_sets if label_sets is not None else LabelSetReader(store)
        self.vectors = vectors
        self.default_label_set = default_label_set
        self.max_labels = max_labels
        self.max_duration_s = max_duration_s
        self._request_work = ThreadPoolExecutor(max_workers=request_threads, thread_name_prefix="request-work")
        # one thread per parse worker: each unpacks an upload and waits for the worker's answers
        # (blocked in select, not holding the GIL), so a slow file never holds the request thread
        self.parse_pool = parse_pool
        self._upload_work = (None if parse_pool is None else
                             ThreadPoolExecutor(parse_pool.options.workers, thread_name_prefix="upload-read"))
        # bounded work (configure_overload; the offline scorer leaves it unbounded)
        self.retry_after_s = 1
        self.admission = AdmissionLimit(2**62, on_change=metrics.set_admitted_ecgs)
        self.draining = False

    def configure_overload(self, *, max_queued_ecgs: int, retry_after_s: int) -> None:
        """Bound the ECGs admitted at once (``admit``) and set the Retry-After of 503s."""
        self.retry_after_s = max(1, int(retry_after_s))
        self.admission = AdmissionLimit(max_queued_ecgs, retry_after_s=self.retry_after_s,
                                        on_change=metrics.set_admitted_ecgs)

    def start_draining(self) -> None:
        """Shutting down (SIGTERM): requests already admitted finish, new ones get ShuttingDown."""
        self.draining = True

    @contextmanager
    def admit(self) -> Iterator[Callable[[int], None]]:
        """Let one request in (``with service.admit() as resize: ... resize(n_ecgs)``) or raise
        ShuttingDown / Overloaded (counted in the shed metric). ``resize`` raises Overloaded too
        when the request's ECGs, once read, do not fit next to the others'."""
        if self.draining:
            metrics.record_shed("draining")
            raise ShuttingDown("the service is shutting down and takes no new requests; retry on another replica "
                               "or after it restarts", retry_after_s=self.retry_after_s)
        try:
            with self.admission.admit(1) as resize:
                yield resize
        except Overloaded as exc:
            if not isinstance(exc, DeadlineExceeded):
                metrics.record_shed("rejected")
            raise

    @staticmethod
    def check_deadline(deadline: float | None, stage: str) -> None:
        """Raise DeadlineExceeded (counted as expired) if ``deadline`` (time.monotonic()) has passed."""
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"the request passed its deadline {stage}; it was not scored (the service is "
                                   "overloaded: retry later)")

    def close(self) -> None:
        self._request_work.shutdown(wait=False, cancel_futures=True)
        if self._upload_work is not None:
            self._upload_work.shutdown(wait=False, cancel_futures=True)

    async def _off_loop(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._request_work, fn, *args)

    async def read_uploads(self, files: Sequence[tuple[str, BinaryIO | bytes]], limits: UploadLimits,
                           hints: ReadHints) -> list[EcgSource]:
        if self.parse_pool is None or self._upload_work is None:
            return await self._off_loop(read_uploaded_ecgs, files, limits, hints)
        return await asyncio.get_running_loop().run_in_executor(
            self._upload_work, read_uploaded_ecgs, files, limits, hints, self.parse_pool)

    # --- panel -------------------------------------------------------------------------------

    def label_set_for(self, options: DiagnoseOptions) -> LabelSet:
        """The label set named (or the explicit labels, in order), checked against the limits."""
        if options.labels and options.label_set:
            raise InvalidInput("give either a label set or explicit labels, not both")
        if options.labels:
            labels = [self.store.get_label_by_name(n) for n in options.labels]
            if len({label.id for label in labels}) != len(labels):
                raise InvalidInput("explicit labels list the same label more than once")
            label_set = LabelSet(name=ADHOC_SET, description="", version=label_set_version(labels),
                                 labels=tuple(labels))
        else:
            label_set = self.label_sets.get(options.label_set or self.default_label_set)
        if len(label_set.labels) > self.max_labels:
            raise InvalidInput(f"{len(label_set.labels)} labels requested; the limit is {self.max_labels}")
        return label_set

    def panel_for(self, label_set: LabelSet, embedder: RuntimeEmbedder) -> Panel:
        """The set with its vectors, embedding the texts not cached yet (seconds for many texts)."""
        vectors, stats = self.vectors.vectors_for_label_set(label_set, embedder)
        metrics.record_embedding_cache(hits=stats.hits, misses=stats.misses)
        return _panel(label_set, vectors)

    def _cached_panel(self, label_set: LabelSet, embedder: RuntimeEmbedder) -> Panel | None:
        vectors = self.vectors.cached(label_set, embedder.identity)
        if vectors is None:
            return None
        metrics.record_embedding_cache(hits=len(vectors), misses=0)
        return _panel(label_set, vectors)

    def _prepare(self, sources: list[EcgSource], options: DiagnoseOptions, model: ServedModel, timings: Timings,
                 submitted: float, deadline: float | None = None) -> tuple[LabelSet, Panel | None, list[ModelInput]]:
        """Label set (with its vectors when they are in memory) and model input, in one trip to
        the request worker thread. Waiting for that thread is counted in the preprocess stage."""
        self.check_deadline(deadline, "while it waited to be preprocessed")
        t = time.perf_counter()
        label_set = self.label_set_for(options)
        panel = self._cached_panel(label_set, model.embedder)
        timings.since("embed", t)
        waited = t - submitted
        inputs = self.model_inputs(sources, options.pad, model.runtime.contract, timings, waited=waited,
                                   keep_tracing=options.keep_tracing)
        return label_set, panel, inputs

    def model_inputs(self, sources: Sequence[EcgSource], pad: bool, contract: ModelContract, timings: Timings, *,
                     waited: float = 0.0, keep_tracing: bool = False) -> list[ModelInput]:
        """The model's windows of each source (the preprocess stage; ``waited``: time spent
        waiting for the request thread, counted in it; ``keep_tracing``: keep the 12 leads for a report)."""
        t = time.perf_counter()
        inputs = [preprocess(s.recording, pad=pad, max_duration_s=self.max_duration_s, contract=contract,
                             keep_tracing=keep_tracing)
                  for s in sources]
        timings.add("preprocess", time.perf_counter() - t + waited)
        return inputs

    async def model_inputs_off_loop(self, sources: Sequence[EcgSource], pad: bool, model: ServedModel,
                                    timings: Timings, deadline: float | None = None) -> list[ModelInput]:
        """``model_inputs`` on the request thread (after the deadline check), as ``diagnose`` does."""
        submitted = time.perf_counter()

        def run() -> list[ModelInput]:
            self.check_deadline(deadline, "while it waited to be preprocessed")
            return self.model_inputs(sources, pad, model.runtime.contract, timings,
                                     waited=time.perf_counter() - submitted)

        return await self._off_loop(run)

    # --- the whole flow --------------------------------------------------------------------

    @staticmethod
    def expect_request(model: ServedModel) -> AbstractContextManager[Callable[[], None]]:
        """Announce a request before its upload is read, so that the model does not give every
        core to one batch while more requests are about to need them (see app.serving.batching).
        ``diagnose(..., arrived=...)`` ends the announcement when the request reaches the model."""
        return model.scorer.incoming.expect()

    async def diagnose(self, sources: list[EcgSource], options: DiagnoseOptions, timings: Timings, *,
                       model: ServedModel, request_id: str, arrived: Callable[[], None] = lambda: None,
                       deadline: float | None = None) -> DiagnoseResult:
        """Score ``sources`` together against the label set ``options`` name with ``model``.
        ``request_id`` is the caller's (the HTTP middleware's, or one the offline scorer made):
        it names the result. ``deadline`` (``time.monotonic()``): past it, raise DeadlineExceeded
        instead of scoring."""
        try:
            return await self._diagnose(sources, options, timings, model=model, request_id=request_id,
                                        arrived=arrived, deadline=deadline)
        except DeadlineExceeded as exc:
            self.expired(exc)
            raise

    def expired(self, exc: DeadlineExceeded) -> None:
        """A request passed its deadline: the Retry-After it answers with, and the shed metric."""
        exc.retry_after_s = self.retry_after_s
        metrics.record_shed("expired")

    async def _diagnose(self, sources: list[EcgSource], options: DiagnoseOptions, timings: Timings, *,
                        model: ServedModel, request_id: str, arrived: Callable[[], None],
                        deadline: float | None) -> DiagnoseResult:
        label_set, panel, inputs = await self._off_loop(self._prepare, sources, options, model, timings,
                                                        time.perf_counter(), deadline)
        if panel is None:  # vectors not in memory: embedding may take seconds, so not on the request thread
            t = time.perf_counter()
            panel = await asyncio.to_thread(self.panel_for, label_set, model.embedder)
            timings.since("embed", t)
        for i, mi in enumerate(inputs):
            if not np.isfinite(mi.windows).all():
                raise _out_of_range(i)
        # explain=leads: each ECG is scored on its windows and their lead-masked variants (12 more
        # windows per window, built off the event loop), in model jobs of 13 windows submitted
        # together, which the batcher combines up to max_batch_size: a long record's variants never
        # go into one huge call (memory grows with the call's windows); admission still counts the
        # ECG as one: that bound is on the ECGs in hand (read and queued), and the 13 times longer
        # model work is bounded by the request deadline (a job still queued at it is dropped).
        masking = await self._off_loop(_lead_masking, inputs, timings) if options.explain_leads else None

        key = f"{model.embedder.identity}:{panel.version}"
        arrived()
        self.check_deadline(deadline, "before it reached the model")
        windows = [mi.windows for mi in inputs] if masking is None else [m.windows for m in masking]
        scored = await _score_all(model.scorer, key, windows, panel.vectors, deadline, masked=masking is not None)
        for i, sc in enumerate(scored):
            if not (np.isfinite(sc.probabilities).all() and np.isfinite(sc.attention).all()):
                raise _out_of_range(i)
        queue = max(s.queue_s for s in scored)
        inference = max(s.inference_s for s in scored)
        timings.add("queue", queue)
        timings.add("inference", inference)

        rank = RankOptions(top_k=options.top_k, threshold=options.threshold, aggregation=options.aggregation,
                           include_windows=options.include_windows, evidence_spans=options.evidence_spans)
        results: list[EcgResult] = []
        for i, (source, mi, sc) in enumerate(zip(sources, inputs, scored, strict=True)):
            probs, attention, masked = sc.probabilities, sc.attention, None
            if masking is not None:  # the reported result comes from the original windows' rows alone
                probs, attention, masked = masking[i].split(probs, attention)
            results.append(EcgResult(
                ecg_index=i,
                ref=source.ref,
                source=describe_source(mi, source.filename),
                diagnoses=rank_diagnoses(mi, probs, attention, panel, rank, model.runtime.contract, masked),
                warnings=signal_warnings(mi),
                tracing=(None if mi.tracing is None else
                         Tracing(fs=mi.fs_in, leads=model.runtime.contract.lead_order, signals=mi.tracing)),
            ))
            metrics.record_ecgs(mi.source_format)
        metrics.observe_request_ecgs(len(sources))
        metrics.observe_label_count(len(panel.labels))
        return DiagnoseResult(
            request_id=request_id,
            model=model.info,
            label_set=LabelSetRef(panel.name, panel.version),
            intended_use=INTENDED_USE,
            results=tuple(results),
            warnings=((UNTRAINED_WARNING,) if model.info.untrained else ()) + knowledge_warnings(label_set),
            timings_ms=timings.as_ms(),
        )
