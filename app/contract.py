"""The model contract: what a bundle's graphs expect and what preprocessing and explanation
must produce for them. Read from the bundle's manifest (``preprocessing`` section, and the
``config`` for what older manifests lack), checked when the bundle loads, and passed down;
nothing else hard-codes it.

A plain value object shared by ``app.serving`` (reads it from the manifest and checks it
against the graphs), ``app.ecg.preprocess`` (cuts windows to it), ``app.usecases.explain``
(maps attention columns to seconds) and ``app.build`` (writes it into new manifests). It
knows no format, no ONNX and no HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from app.errors import BundleError

STANDARD_LEAD_ORDER: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# The steps this code base implements; a manifest that asks for anything else is refused.
SUPPORTED_UNITS = "mV"
SUPPORTED_STEPS: dict[str, str] = {"nan": "set to 0", "filtering": "none", "normalisation": "none"}
# Fields a manifest may leave out (bundles exported before they were written): taken from the
# manifest's config or the graphs' shapes, else the pretraining values.
INFERABLE = ("feature_width", "segments")


def resampling_text(sampling_rate_hz: int) -> str:
    """How preprocessing resamples, as the manifest states it (compared literally at load)."""
    return f"scipy.signal.resample (FFT) of the whole record to round(n * {sampling_rate_hz} / fs) samples"


@dataclass(frozen=True)
class ContractMismatch:
    """One way a bundle's contract differs from what this code (or the bundle's graphs) can do."""

    field: str
    expected: Any
    found: Any

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected!r}, found {self.found!r}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "expected": self.expected, "found": self.found}


@dataclass(frozen=True)
class ModelContract:
    sampling_rate_hz: int = 100
    window_samples: int = 1000
    lead_order: tuple[str, ...] = STANDARD_LEAD_ORDER
    units: str = SUPPORTED_UNITS
    feature_width: int = 768  # label / ECG feature vector width (D)
    segments: int = 32  # ECG feature columns (TQN attention columns) per window

    @property
    def window_s(self) -> float:
        return self.window_samples / self.sampling_rate_hz

    @property
    def segment_s(self) -> float:
        """Seconds of the window one attention column covers (~0.31 s for the published model)."""
        return self.window_s / self.segments

    @property
    def window_shape(self) -> tuple[int, int]:
        return (len(self.lead_order), self.window_samples)

    def manifest_preprocessing(self) -> dict[str, Any]:
        """The ``preprocessing`` section a manifest carries for this contract."""
        return {
            "sampling_rate_hz": self.sampling_rate_hz,
            "window_samples": self.window_samples,
            "window_seconds": self.window_s,
            "lead_order": list(self.lead_order),
            "units": self.units,
            "resampling": resampling_text(self.sampling_rate_hz),
            **SUPPORTED_STEPS,
            "feature_seconds": self.segment_s,
            "feature_width": self.feature_width,
            "segments": self.segments,
        }

    def differences(self, other: ModelContract, *, only: tuple[str, ...] | None = None) -> list[ContractMismatch]:
        """Fields where ``other`` (found) differs from this contract (expected)."""
        names = only or tuple(f.name for f in fields(self))
        return [ContractMismatch(n, _plain(getattr(self, n)), _plain(getattr(other, n)))
                for n in names if getattr(self, n) != getattr(other, n)]


PRETRAINING = ModelContract()


@dataclass(frozen=True)
class ManifestContract:
    """The contract a manifest states, and which of its fields the manifest left out
    (``INFERABLE`` ones only: the runtime takes those from the graphs' shapes)."""

    contract: ModelContract
    assumed: frozenset[str]


def read_contract(manifest: Mapping[str, Any], *, source: str = "the manifest") -> ManifestContract:
    """The contract of a bundle manifest; BundleError naming every difference (field: expected
    vs found) when it asks for preprocessing this code does not implement."""
    section = manifest.get("preprocessing")
    if not isinstance(section, Mapping):
        raise BundleError(f"{source} has no preprocessing section; the bundle's model contract is unknown",
                          details={"contract": [ContractMismatch("preprocessing", "an object", section).as_dict()]})
    problems: list[ContractMismatch] = []
    rate = _positive_int(section, "sampling_rate_hz", problems)
    samples = _positive_int(section, "window_samples", problems)
    leads = _lead_order(section, problems)
    units = section.get("units")
    if units != SUPPORTED_UNITS:
        problems.append(ContractMismatch("units", SUPPORTED_UNITS, units))
    for step, supported in SUPPORTED_STEPS.items():
        if section.get(step) != supported:
            problems.append(ContractMismatch(step, supported, section.get(step)))
    if rate and section.get("resampling") != resampling_text(rate):
        problems.append(ContractMismatch("resampling", resampling_text(rate), section.get("resampling")))
    if rate and samples:
        _agrees(section, "window_seconds", samples / rate, problems)

    assumed: set[str] = set()
    width = _inferred(section, manifest, "feature_width", problems, assumed)
    segments = _inferred(section, manifest, "segments", problems, assumed)
    if rate and samples and segments and "feature_seconds" in section:
        _agrees(section, "feature_seconds", samples / rate / segments, problems)
    if problems:
        raise _refused(source, problems)
    assert rate and samples and width and segments  # every None above came with a problem
    contract = ModelContract(sampling_rate_hz=rate, window_samples=samples, lead_order=leads, units=SUPPORTED_UNITS,
                             feature_width=width, segments=segments)
    return ManifestContract(contract, frozenset(assumed))


def reconcile(stated: ManifestContract, graphs: Mapping[str, int | None], *, leads: int | None = None,
              source: str = "the bundle") -> ModelContract:
    """The contract checked against what the graphs fix. ``graphs``: contract field -> the
    static size of the axis carrying it (None where the axis is dynamic); ``leads``: the ECG
    input's lead axis. Fields the manifest left out take the graphs' value; a stated field the
    graphs contradict is a BundleError naming each difference."""
    def taken(name: str) -> int:
        size = graphs.get(name)
        return size if size is not None and name in stated.assumed else int(getattr(stated.contract, name))

    contract = replace(stated.contract, feature_width=taken("feature_width"), segments=taken("segments"))
    problems = [ContractMismatch(name, size, getattr(contract, name))
                for name, size in graphs.items() if size is not None and getattr(contract, name) != size]
    if leads is not None and leads != len(contract.lead_order):
        problems.append(ContractMismatch("lead_order", f"{leads} leads", _plain(contract.lead_order)))
    if problems:
        raise _refused(source, problems, against="its graphs")
    return contract


def _refused(source: str, problems: list[ContractMismatch], *, against: str = "this service") -> BundleError:
    found = "; ".join(str(p) for p in problems)
    return BundleError(f"the model contract in {source} does not match {against} ({found})",
                       details={"contract": [p.as_dict() for p in problems]})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _positive_int(section: Mapping[str, Any], name: str, problems: list[ContractMismatch]) -> int | None:
    value = section.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
        problems.append(ContractMismatch(name, "a positive whole number", value))
        return None
    return int(value)


def _lead_order(section: Mapping[str, Any], problems: list[ContractMismatch]) -> tuple[str, ...]:
    value = section.get("lead_order")
    if not isinstance(value, list) or sorted(map(str, value)) != sorted(STANDARD_LEAD_ORDER) or len(value) != 12:
        problems.append(ContractMismatch("lead_order", list(STANDARD_LEAD_ORDER), value))
        return STANDARD_LEAD_ORDER
    return tuple(value)  # the 12 standard leads, in any order: preprocessing arranges them so


def _agrees(section: Mapping[str, Any], name: str, derived: float, problems: list[ContractMismatch]) -> None:
    value = section.get(name)
    if name in section and not (isinstance(value, (int, float)) and math.isclose(value, derived, rel_tol=1e-9)):
        problems.append(ContractMismatch(name, derived, value))


def _inferred(section: Mapping[str, Any], manifest: Mapping[str, Any], name: str,
              problems: list[ContractMismatch], assumed: set[str]) -> int | None:
    """A field older manifests lack: the section's, else the config's (``d_model`` is the
    feature width), else derived (segments from ``feature_seconds``), else the pretraining value
    marked as assumed (the runtime then takes it from the graphs)."""
    if name in section:
        return _positive_int(section, name, problems)
    config = manifest.get("config")
    if name == "feature_width" and isinstance(config, Mapping) and isinstance(config.get("d_model"), int):
        return int(config["d_model"])
    stated = [section.get(k) for k in ("sampling_rate_hz", "window_samples", "feature_seconds")]
    numbers = [float(v) for v in stated if isinstance(v, (int, float)) and v > 0]
    if name == "segments" and len(numbers) == 3:
        rate, samples, seconds = numbers
        return round(samples / rate / seconds)
    assumed.add(name)
    return int(getattr(PRETRAINING, name))
