"""ONNX Runtime sessions over a bundle: the only object the service calls for inference.

The CUDA execution provider is tried when asked for, or on ``auto`` when the installed
onnxruntime lists it *and* the machine has an NVIDIA driver (without one, creating a CUDA
session only prints ONNX Runtime's own load errors, e.g. about libcublasLt, before falling
back). ONNX Runtime falls back to CPU silently when CUDA cannot load, so the provider
actually in use is read back from ``session.get_providers()`` after creation, reported in
:class:`ModelInfo`, and an explicit ``cuda`` request that did not get CUDA is an error
rather than a quiet slowdown.

The bundle's model contract (window shape, feature width, segments) is checked against the
graphs' input and output shapes here and exposed as :attr:`ModelRuntime.contract`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.contract import ModelContract, reconcile
from app.errors import BundleError, InvalidInput
from app.serving import bundle as B
from app.serving.priority import call_at_lower_priority
from app.serving.tokenizer import load_tokenizer, pad, pad_id_of, token_ids

log = logging.getLogger(__name__)

ProviderChoice = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "int8", "fp16"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TEXT_BATCH = 32
# ONNX Runtime's own log (written from C++ to stderr): errors only. Its warnings at this level
# say nothing a user of the service can act on (e.g. that a saved optimised graph may hold fusions
# for this CPU, printed at every first start).
ORT_LOG_SEVERITY_ERROR = 3


@dataclass(frozen=True)
class RuntimeOptions:
    provider: ProviderChoice = "auto"
    intra_op_threads: int = 0  # 0: one per core (os.cpu_count())
    inter_op_threads: int = 1
    lanes: int = 0  # ecg_tqn calls that may run at once, each on intra_op_threads // lanes threads (0: auto)
    optimized_model_dir: Path | None = None  # cache of the optimised graphs (default: inside the bundle)
    # ecg_tqn variant: int8 / fp16 files written by `ecgfm-ked quantize` (fp16: CUDA only)
    precision: Precision = "fp32"
    # how much lower (nice) than the event loop the model's threads run (app/serving/priority.py)
    thread_nice: int = 0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    provider: str
    precision: str
    untrained: bool
    checkpoint_sha256: str | None
    bundle: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "provider": self.provider,
            "precision": self.precision,
            "untrained": self.untrained,
            "checkpoint_sha256": self.checkpoint_sha256,
        }


NVIDIA_KERNEL_DRIVER = Path("/proc/driver/nvidia/version")
CUDA_DRIVER_LIBRARY = "libcuda.so.1"


def nvidia_driver_present() -> bool:
    """The NVIDIA driver is here: its kernel module (``/proc/driver/nvidia/version``) and its
    user-space library (``libcuda.so.1`` loads; in a container the device may be visible while
    the library was not mounted).

    Checked before any CUDA session is made: onnxruntime-gpu lists the CUDA provider whenever
    it is installed, and without a driver its load attempt only prints errors.
    """
    if not NVIDIA_KERNEL_DRIVER.exists():
        return False
    try:
        ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError:
        return False
    return True


def _providers(choice: ProviderChoice) -> list[str]:
    import onnxruntime as ort

    if choice == "cpu":
        return [CPU]
    listed = CUDA in ort.get_available_providers()
    driver = listed and nvidia_driver_present()
    if choice == "cuda":
        if not listed:
            raise BundleError("the CUDA execution provider was requested but the installed onnxruntime has none "
                              "(install onnxruntime-gpu instead of onnxruntime, see requirements/README.md)")
        if not driver:
            raise BundleError("the CUDA execution provider was requested but this machine has no NVIDIA driver "
                              f"({NVIDIA_KERNEL_DRIVER} or {CUDA_DRIVER_LIBRARY} is missing); "
                              "use provider cpu or auto")
        return [CUDA, CPU]
    if driver:
        return [CUDA, CPU]
    if listed:
        log.info("no NVIDIA driver on this machine; using the CPU execution provider")
    return [CPU]


@dataclass(frozen=True)
class PreparedLabels:
    """A label set ready for scoring: its (C, D) vectors and, with the prepared graphs, the
    TQN's first-layer work that depends on the labels only (label_state.onnx)."""

    vectors: np.ndarray
    queries: np.ndarray | None = None
    cross_queries: np.ndarray | None = None


class ModelRuntime:
    """Sessions over a bundle's graphs; thread-safe ``run`` calls."""

    def __init__(self, bundle: B.Bundle, options: RuntimeOptions = RuntimeOptions()) -> None:
        import onnxruntime as ort

        self.bundle = bundle
        self.options = options
        self.tokenizer = load_tokenizer(bundle.path(B.TOKENIZER_JSON))
        requested = self._resolve_providers(bundle, options.provider)
        cache_dir = options.optimized_model_dir or (bundle.root / "optimized")
        self._sessions: dict[str, ort.InferenceSession] = {}
        precision, tqn_path = self._tqn_file(bundle, options.precision, requested)
        threads = options.intra_op_threads or (os.cpu_count() or 1)
        # fp32 with the prepared graphs: label_state once per label set, then ecg_tqn_prepared per
        # batch (the first decoder layer's label-only work is not repeated for every ECG)
        self.prepared = precision == "fp32" and all(bundle.has(g) for g in B.PREPARED_GRAPHS)
        scoring_path = bundle.path(B.ECG_TQN_PREPARED) if self.prepared else tqn_path
        self._scoring_name = scoring_path.name
        def session(path: Path, n_threads: int) -> ort.InferenceSession:
            # created on a lower-priority thread: the session's intra-op threads inherit it
            return call_at_lower_priority(lambda: self._session(path, requested, Path(cache_dir), n_threads),
                                          options.thread_nice)

        for path in (scoring_path, bundle.path(B.ECG_ENCODER), bundle.path(B.TEXT_ENCODER),
                     *([bundle.path(B.LABEL_STATE)] if self.prepared else [])):
            self._sessions[path.name] = session(path, threads)
        in_use = self._sessions[self._scoring_name].get_providers()[0]
        self.lanes = resolve_lanes(options.lanes, in_use, threads)
        # one more scoring session for calls that share the cores with other calls (see score)
        self._shared_scoring = (session(scoring_path, max(1, threads // self.lanes))
                                if self.lanes > 1 else self._sessions[self._scoring_name])
        self.contract: ModelContract = reconcile(bundle.stated_contract, self._graph_sizes(),
                                                 source=str(bundle.root), leads=self._graph_leads())
        m = bundle.manifest
        self.info = ModelInfo(
            name=str(m.get("model_name", "ECGFM-KED")),
            version=bundle.version,
            provider=in_use,
            precision=precision,
            untrained=bundle.untrained,
            checkpoint_sha256=(m.get("source_checkpoint") or {}).get("sha256"),
            bundle=str(bundle.root),
        )
        self._lock = threading.Lock()  # tokenizer is not documented as thread-safe

    @staticmethod
    def _resolve_providers(bundle: B.Bundle, choice: ProviderChoice) -> list[str]:
        """The providers that will really run. ONNX Runtime lists CUDA whenever onnxruntime-gpu
        is installed and silently falls back to CPU if CUDA/cuDNN cannot load, so a probe
        session on the (small) ECG encoder tells which provider a session actually gets."""
        import onnxruntime as ort

        requested = _providers(choice)
        if CUDA not in requested:
            return requested
        try:
            options = ort.SessionOptions()
            options.log_severity_level = ORT_LOG_SEVERITY_ERROR
            probe = ort.InferenceSession(str(bundle.path(B.ECG_ENCODER)), options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"cannot load {B.ECG_ENCODER} from {bundle.root}: {exc}") from exc
        actual = probe.get_providers()[0]
        if actual == CUDA:
            return requested
        if choice == "cuda":
            raise BundleError(
                "the CUDA execution provider was requested but ONNX Runtime is running on "
                f"{actual} (CUDA/cuDNN libraries could not be loaded; onnxruntime-gpu needs matching CUDA and cuDNN)"
            )
        log.warning("CUDA execution provider unavailable at runtime (listed, but CUDA/cuDNN could not load); "
                    "running on %s", actual)
        return [actual]

    def _graph_axes(self) -> dict[str, list[tuple[str, str, int]]]:
        """Contract field -> the (graph, input/output, axis) that carry it (the sessions loaded)."""
        scoring, labels = self._scoring_name, B.LABEL_STATE if self.prepared else self._scoring_name
        return {
            "leads": [(scoring, "ecg", 1), (B.ECG_ENCODER, "ecg", 1)],
            "window_samples": [(scoring, "ecg", 2), (B.ECG_ENCODER, "ecg", 2)],
            "feature_width": [(labels, "label_features", -1), (B.TEXT_ENCODER, "label_features", -1),
                              (B.ECG_ENCODER, "features", 2)],
            "segments": [(scoring, "attention", -1), (B.ECG_ENCODER, "features", 1)],
        }

    def _static_size(self, field: str) -> int | None:
        """The size the graphs fix for ``field`` (None where every axis carrying it is dynamic);
        BundleError if two graphs fix different sizes."""
        sizes: dict[int, str] = {}
        for graph, name, axis in self._graph_axes()[field]:
            session = self._sessions[graph]
            for arg in (*session.get_inputs(), *session.get_outputs()):
                if arg.name == name and -len(arg.shape) <= axis < len(arg.shape) and isinstance(arg.shape[axis], int):
                    sizes.setdefault(int(arg.shape[axis]), f"{graph} {name}")
        if len(sizes) > 1:
            found = ", ".join(f"{where}: {size}" for size, where in sizes.items())
            raise BundleError(f"the graphs of {self.bundle.root} disagree on {field} ({found})",
                              details={"field": field, "found": {where: size for size, where in sizes.items()}})
        return next(iter(sizes), None)

    def _graph_sizes(self) -> dict[str, int | None]:
        return {field: self._static_size(field) for field in ("window_samples", "feature_width", "segments")}

    def _graph_leads(self) -> int | None:
        return self._static_size("leads")

    @staticmethod
    def _tqn_file(bundle: B.Bundle, precision: str, requested: list[str]) -> tuple[str, Path]:
        if precision == "fp32":
            return "fp32", bundle.path(B.ECG_TQN)
        if precision not in B.PRECISION_FILES:
            raise BundleError(f"unknown precision {precision!r}; expected one of {sorted(B.PRECISION_FILES)}")
        if precision == "fp16" and CUDA not in requested:
            log.warning("precision fp16 is used only with the CUDA provider; using fp32 on CPU")
            return "fp32", bundle.path(B.ECG_TQN)
        path = bundle.path(B.PRECISION_FILES[precision])
        if not path.is_file():
            raise BundleError(f"precision {precision} was requested but the bundle {bundle.root} has no {path.name}; "
                              "build it with `ecgfm-ked quantize --bundle DIR` (it is written only when it meets the "
                              "fidelity bounds)")
        return precision, path

    def _session(self, path: Path, providers: list[str], cache_dir: Path, threads: int) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = ORT_LOG_SEVERITY_ERROR
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # set explicitly (one per core by default): ONNX Runtime's own default measured
        # ~1.8x slower at batch 1 on the 2-core reference machine (benchmarks/results)
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = self.options.inter_op_threads
        # keyed by the sha256 of the source graph (checked against the manifest when the bundle
        # opened), the provider that really runs and the ONNX Runtime version: optimised graphs
        # may hold provider- and version-specific fused operators
        digest = self.bundle.verified_digest(path.name)
        optimized = cache_dir / f"{path.stem}.{digest[:16]}.{providers[0]}.ort{ort.__version__}.onnx"
        if self._cached_graph_intact(optimized):
            fast = ort.SessionOptions()
            fast.log_severity_level = ORT_LOG_SEVERITY_ERROR
            fast.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # already optimised
            fast.intra_op_num_threads = so.intra_op_num_threads
            fast.inter_op_num_threads = so.inter_op_num_threads
            try:
                return ort.InferenceSession(str(optimized), fast, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                log.warning("cached optimised graph %s could not be loaded (%s); rebuilding it from %s",
                            optimized.name, exc, path.name)
        pending = None
        if os.access(cache_dir.parent, os.W_OK) or os.access(cache_dir, os.W_OK):
            try:
                cache_dir.mkdir(exist_ok=True)
                # written under a private name, then renamed: another process starting at the
                # same moment never reads a half-written graph
                pending = cache_dir / f"{optimized.name}.{os.getpid()}.{threading.get_ident()}.tmp"
                so.optimized_model_filepath = str(pending)
            except OSError:
                pending = None
        try:
            session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            if pending is not None:
                pending.unlink(missing_ok=True)
            raise BundleError(f"cannot load {path.name} from {path.parent}: {exc}") from exc
        if pending is not None and pending.is_file():
            self._store_cached_graph(pending, optimized)
        return session

    @staticmethod
    def _cached_graph_intact(optimized: Path) -> bool:
        """The cached graph exists and has the sha256 recorded beside it when it was written; a
        damaged, truncated or unrecorded one is removed (and rebuilt from the source graph)."""
        record = optimized.with_name(optimized.name + ".sha256")
        if not optimized.is_file():
            return False
        try:
            intact = record.read_text().strip() == B.verified_sha256(optimized)
        except OSError:
            intact = False
        if not intact:
            log.warning("cached optimised graph %s does not match the sha256 recorded when it was written "
                        "(damaged, truncated or unrecorded); rebuilding it from the bundle's verified graph",
                        optimized.name)
            for stale in (optimized, record):
                with contextlib.suppress(OSError):
                    stale.unlink(missing_ok=True)
        return intact

    @staticmethod
    def _store_cached_graph(pending: Path, optimized: Path) -> None:
        """Record the sha256 of a freshly written optimised graph, then move both into place (the
        graph first: a reader that finds it without its record rebuilds it)."""
        record = optimized.with_name(optimized.name + ".sha256")
        record_tmp = pending.with_name(pending.name + ".sha256")
        try:
            record_tmp.write_text(B.sha256_file(pending) + "\n")
            os.replace(pending, optimized)
            os.replace(record_tmp, record)
        except OSError:
            pending.unlink(missing_ok=True)
            record_tmp.unlink(missing_ok=True)

    # --- the three calls -------------------------------------------------------------------

    @property
    def text_encoder_id(self) -> str:
        return self.bundle.text_encoder_id

    def embed_texts(self, texts: list[str], *, batch_size: int = TEXT_BATCH, pad_to: int | None = None) -> np.ndarray:
        """(N, D) label features (D: the contract's feature width); texts are batched and padded to
        the longest in each batch.

        Batches are formed from texts sorted by length so that short texts are not padded to
        long ones; the result is returned in the input order.
        """
        if not texts:
            return np.zeros((0, self.contract.feature_width), dtype=np.float32)
        with self._lock:
            ids = token_ids(self.tokenizer, texts)  # tokenised once; batches are padded from these
        order = np.argsort([len(i) for i in ids], kind="stable")
        out: np.ndarray | None = None
        session = self._sessions[B.TEXT_ENCODER]
        pad_id = pad_id_of(self.tokenizer)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = pad([ids[i] for i in idx], pad_id=pad_id, pad_to=pad_to)
            (feats,) = session.run(None, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
            if out is None:
                out = np.empty((len(texts), feats.shape[1]), dtype=np.float32)
            out[idx] = feats
        assert out is not None
        return out

    def prepare_labels(self, label_vectors: np.ndarray) -> PreparedLabels:
        """(C, D) label vectors -> what ``score_prepared`` needs; compute once per label set."""
        if label_vectors.ndim != 2 or len(label_vectors) == 0:
            raise InvalidInput("at least one label is needed to score an ECG")
        width = self.contract.feature_width
        if label_vectors.shape[1] != width:
            raise InvalidInput(f"label vectors must be (C, {width}), got {tuple(label_vectors.shape)}")
        vectors = np.ascontiguousarray(label_vectors, dtype=np.float32)
        if not self.prepared:
            return PreparedLabels(vectors)
        queries, cross_queries = self._sessions[B.LABEL_STATE].run(None, {"label_features": vectors})
        return PreparedLabels(vectors, queries, cross_queries)

    def score(self, windows: np.ndarray, label_vectors: np.ndarray, *,
              alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(B, leads, samples) windows and (C, D) label vectors -> probabilities (B, C), attention (B, C, segments),
        sizes as in :attr:`contract` ((B, 12, 1000), D = 768, 32 segments for the published model)."""
        return self.score_prepared(windows, self.prepare_labels(label_vectors), alone=alone)

    def score_prepared(self, windows: np.ndarray, labels: PreparedLabels, *,
                       alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``score`` with the labels from ``prepare_labels``.

        ``alone``: no other score call runs meanwhile, so this one uses every intra-op thread.
        With ``alone=False`` it runs on the session with ``intra_op_threads // lanes`` threads:
        up to ``lanes`` such calls then share the cores without any of them spreading over
        cores that another call (or the service's own Python work) is using. ONNX Runtime's
        parallel loops wait for their slowest thread, so a call whose thread loses its core
        stalls as a whole (benchmarks/README.md, "lanes").
        """
        windows = self._check_windows(windows)
        if self.prepared:
            if labels.queries is None:
                labels = self.prepare_labels(labels.vectors)
            feeds = {"ecg": windows, "label_queries": labels.queries, "label_cross_queries": labels.cross_queries}
        else:
            feeds = {"ecg": windows, "label_features": labels.vectors}
        session = self._sessions[self._scoring_name] if alone else self._shared_scoring
        probs, attention = session.run(None, feeds)
        return probs, attention

    def close(self) -> None:
        """Release the sessions (and the memory their graphs hold); the runtime serves no more calls.

        glibc keeps the freed pages of a released model in its heap (measured with the small test
        bundle: 528 MB resident after releasing one of two loaded models, 306 MB once trimmed), so
        they are handed back to the system here (``malloc_trim``; a no-op where it is absent)."""
        self._sessions.clear()
        self._shared_scoring = None
        return_freed_memory()

    def encode_ecg(self, windows: np.ndarray) -> np.ndarray:
        (features,) = self._sessions[B.ECG_ENCODER].run(None, {"ecg": self._check_windows(windows)})
        return np.asarray(features)

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        leads, samples = self.contract.window_shape
        if windows.ndim != 3 or windows.shape[1:] != (leads, samples):
            raise InvalidInput(f"model input must be (B, {leads}, {samples}), got {tuple(windows.shape)}")
        return np.ascontiguousarray(windows, dtype=np.float32)


def return_freed_memory() -> None:
    """Ask glibc to return freed heap pages to the system (Linux; nothing elsewhere)."""
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def resolve_lanes(lanes: int, provider: str, threads: int) -> int:
    """``lanes`` as configured, or auto (0): two on a CPU with at least two threads, else one.

    On CUDA the device serialises the work of concurrent calls, so one lane (one session) is
    used unless more are asked for explicitly.
    """
    if lanes > 0:
        return min(lanes, threads) if provider == CPU else lanes
    return 2 if provider == CPU and threads >= 2 else 1


def load_runtime(bundle_dir: Path, options: RuntimeOptions = RuntimeOptions()) -> ModelRuntime:
    return ModelRuntime(B.open_bundle(bundle_dir), options)
