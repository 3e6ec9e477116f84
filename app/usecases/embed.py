"""The embed use-case: recordings -> the ECG encoder's features (``POST /embeddings``).

The same reading and preprocessing as ``diagnose`` (``DiagnoseService.model_inputs``: one
model window per 10 s, the model's rate, leads and units), then the bundle's ECG encoder
graph, batched with the model's other work (``Scorer.encode``). Per window the encoder gives
one token per segment ((32, 768) for the published model); the *pooled* vector of a window is
the mean of its tokens, and the pooled vector of an ECG the mean of its windows' pooled
vectors. The tokens themselves are returned on request (``include_tokens``).

These are general-purpose features of a model trained for zero-shot diagnosis; nothing here
says how well they serve any other task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.errors import DeadlineExceeded, InvalidInput
from app.serving.runtime import ModelInfo
from app.usecases.diagnose import UNTRAINED_WARNING, DiagnoseService, EcgSource, Timings
from app.usecases.explain import INTENDED_USE, describe_source, signal_warnings
from app.usecases.results import ResultWarning, SourceDescription
from app.usecases.scoring import ServedModel

POOLING = ("mean of the ECG encoder's tokens (one per segment) for each window; for an ECG, the mean of its "
           "windows' vectors")


@dataclass(frozen=True)
class WindowFeatures:
    start_s: float
    pooled: np.ndarray  # (D,)
    tokens: np.ndarray | None  # (segments, D) when asked for


@dataclass(frozen=True)
class EcgFeatures:
    ecg_index: int
    ref: str | None
    source: SourceDescription
    pooled: np.ndarray  # (D,)
    windows: tuple[WindowFeatures, ...]
    warnings: tuple[ResultWarning, ...]


@dataclass(frozen=True)
class EmbedResult:
    request_id: str
    model: ModelInfo
    intended_use: str
    pooling: str
    results: tuple[EcgFeatures, ...]
    warnings: tuple[ResultWarning, ...]
    timings_ms: dict[str, float]


async def embed(service: DiagnoseService, sources: Sequence[EcgSource], *, model: ServedModel, pad: bool,
                include_tokens: bool, timings: Timings, request_id: str, deadline: float | None = None,
                max_token_windows: int | None = None) -> EmbedResult:
    """``max_token_windows``: with ``include_tokens``, refuse (InvalidInput, before the model
    runs) a request with more windows than this."""
    try:
        inputs = await service.model_inputs_off_loop(sources, pad, model, timings, deadline)
        n_windows = sum(len(mi.windows) for mi in inputs)
        if include_tokens and max_token_windows is not None and n_windows > max_token_windows:
            raise InvalidInput(f"include_tokens=true returns every window's tokens; this request has {n_windows} "
                               f"windows, the limit is {max_token_windows}: send fewer or shorter records",
                               details={"windows": n_windows, "limit": max_token_windows})
        for i, mi in enumerate(inputs):
            if not np.isfinite(mi.windows).all():
                raise _not_finite(i)
        service.check_deadline(deadline, "before it reached the model")
        encoded = [await model.scorer.encode(mi.windows, deadline=deadline) for mi in inputs]
    except DeadlineExceeded as exc:
        service.expired(exc)
        raise
    timings.add("queue", max(e.queue_s for e in encoded))
    timings.add("inference", max(e.inference_s for e in encoded))
    results = []
    for i, (source, mi, enc) in enumerate(zip(sources, inputs, encoded, strict=True)):
        tokens = enc.features.astype(np.float32)
        if not np.isfinite(tokens).all():
            raise _not_finite(i)
        per_window = tokens.mean(axis=1)
        windows = tuple(WindowFeatures(start_s=float(start), pooled=per_window[w],
                                       tokens=tokens[w] if include_tokens else None)
                        for w, start in enumerate(mi.window_starts_s))
        results.append(EcgFeatures(ecg_index=i, ref=source.ref, source=describe_source(mi, source.filename),
                                   pooled=per_window.mean(axis=0), windows=windows, warnings=signal_warnings(mi)))
    return EmbedResult(request_id=request_id, model=model.info, intended_use=INTENDED_USE, pooling=POOLING,
                       results=tuple(results), warnings=(UNTRAINED_WARNING,) if model.info.untrained else (),
                       timings_ms=timings.as_ms())


def _not_finite(index: int) -> Exception:
    from app.errors import UnsupportedSignal

    return UnsupportedSignal(f"ECG {index}: sample values are too large to encode (non-finite model input or "
                             "output); check the signal units", details={"ecg_index": index})
