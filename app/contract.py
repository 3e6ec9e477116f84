"""The model contract: what a bundle's graphs expect and what preprocessing and explanation
must produce for them. Read from the bundle's manifest (``preprocessing`` and ``model``
sections), checked when the bundle loads, and passed down; nothing else hard-codes it.

A plain value object shared by ``app.serving`` (reads it from the manifest),
``app.ecg.preprocess`` (cuts windows to it), ``app.usecases.explain`` (maps attention
columns to seconds) and ``app.build`` (writes it into new manifests). It knows no format,
no ONNX and no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


STANDARD_LEAD_ORDER: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# What this code base implements; a manifest that asks for something else is refused.
RESAMPLING = "scipy.signal.resample (FFT) of the whole record to round(n * 100 / fs) samples"
SUPPORTED_STEPS = {"units": "mV", "nan": "set to 0", "filtering": "none", "normalisation": "none"}


@dataclass(frozen=True)
class ModelContract:
    sampling_rate_hz: int = 100
    window_samples: int = 1000
    lead_order: tuple[str, ...] = STANDARD_LEAD_ORDER
    units: str = "mV"
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
            "resampling": RESAMPLING.replace("100", str(self.sampling_rate_hz)),
            "nan": SUPPORTED_STEPS["nan"],
            "filtering": SUPPORTED_STEPS["filtering"],
            "normalisation": SUPPORTED_STEPS["normalisation"],
            "feature_seconds": self.segment_s,
            "feature_width": self.feature_width,
            "segments": self.segments,
        }


PRETRAINING = ModelContract()
