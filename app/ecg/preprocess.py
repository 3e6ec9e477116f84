"""Recording -> model windows, exactly as the model's pretraining data were prepared.

Steps: pick the 12 standard leads by name (spelling variants mapped, other leads ignored),
derive missing limb leads from I and II, set missing samples (NaN) to 0, resample the whole
record to the contract's rate with ``scipy.signal.resample`` (FFT method), cut windows of the
contract's length, leads in the contract's order. No filtering, no normalisation; float32
millivolts. The contract (app/contract.py) is the served bundle's; by default the published
model's: 100 Hz, 1000 samples (10 s), the standard lead order.

Windows start at 0, 10, 20 s ... (for 10 s windows); when a tail remains after the last full window, one
final window ending exactly at the record's end is added (it overlaps the previous one).

Quality warnings are computed on the 12 leads at the input rate, after NaN filling:

* ``flat_lead``: peak-to-peak under 0.02 mV over the whole record.
* ``clipped_lead``: more than 1 % of the lead's samples sit at its maximum (or at its
  minimum), counting only samples inside runs of at least 3 consecutive samples at that
  value that neither start at the first sample nor end at the last one. An ADC or
  amplifier that saturates produces such plateaus; a real R peak touches its maximum for
  one or two samples per beat, far below 1 %. Runs touching the record's ends are left out
  because some recorders hold the last value (seen in PTB-XL records); that is not
  saturation. Flat leads are not checked.
* ``implausible_amplitude``: the lead stays beyond +/-20 mV (``IMPLAUSIBLE_MV``) for at least
  0.2 s in a row (``IMPLAUSIBLE_SPAN_S``). A diagnostic ECG's largest deflections (QRS in LVH) are
  a few mV and last under 0.12 s; IEC 60601-2-25 asks electrocardiographs for +/-5 mV of input
  range, and front ends rarely pass more than +/-10 mV after their high-pass. So a lead that
  holds 20 mV for 0.2 s is not an ECG in millivolts (most often the wrong units, e.g.
  microvolts or ADC counts read as mV, or an uncorrected DC offset); the model, which does no
  normalisation, then scores nonsense. It is a warning, not a refusal: the answer names the
  leads and the likely cause, and a clinician looking at the trace can judge it, whereas one
  artefact-laden lead should not make a whole record unscorable. Brief spikes (electrode pops)
  are not counted.
* ``negative_gain``: the file declares a negative gain for these leads (``Recording.gains``):
  their polarity is as the file says, which is rarely what the recorder meant.

Refused instead of scored (422): a record in which no lead carries signal (every lead read is
entirely missing, NaN, ``MissingLeads``; or flat, peak-to-peak under 0.02 mV over its finite
samples, ``UnsupportedSignal``), naming the leads: the model would score zeros as a diagnosis.
Amplitudes too large for the model's float32 input are refused too (``UnsupportedSignal``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from scipy.signal import resample

from app.contract import PRETRAINING, ModelContract
from app.ecg.leads import LIMB_LEADS_FROM_I_II, STANDARD_LEADS, canonical_lead, derive_limb_leads
from app.ecg.recording import Recording, SignalWarning
from app.ecg.units import check_sampling_rate
from app.errors import InvalidInput, MissingLeads, SignalTooShort, UnsupportedSignal

MIN_PAD_S = 2.0
FLAT_PTP_MV = 0.02
CLIP_FRACTION = 0.01
CLIP_MIN_RUN = 3
IMPLAUSIBLE_MV = 20.0
IMPLAUSIBLE_SPAN_S = 0.2
RESAMPLE_ALL_LEADS_MAX_SAMPLES = 120_000  # 2 min at 1 kHz: resampled in one call below this


@dataclass
class ModelInput:
    windows: np.ndarray  # (N, leads, window_samples) float32, mV, at the contract's rate, in its lead order
    window_starts_s: list[float]
    derived_leads: list[str]
    warnings: list[SignalWarning]
    source_format: str
    fs_in: float
    duration_s: float
    padded: bool
    leads_read: list[str] = field(default_factory=list)  # standard leads taken from the record
    acquired_at: datetime | None = None  # the recording's own acquisition time, when its file gives one
    # the 12 leads at the record's own rate (fs_in), mV, in the contract's lead order, after NaN
    # filling and lead derivation, before resampling: for plotting; only with keep_tracing=True
    tracing: np.ndarray | None = None


def _select_leads(rec: Recording) -> tuple[dict[str, np.ndarray], list[str]]:
    """Standard lead name -> samples (copies), and the source names that were ignored."""
    picked: dict[str, np.ndarray] = {}
    source_of: dict[str, str] = {}
    ignored: list[str] = []
    for name, row in zip(rec.lead_names, rec.signals, strict=True):
        lead = canonical_lead(name)
        if lead is None:
            ignored.append(name)
        elif lead in picked:
            raise InvalidInput(
                f"leads {source_of[lead]!r} and {name!r} are both lead {lead}",
                details={"lead": lead},
            )
        else:
            picked[lead] = np.array(row, dtype=np.float64)
            source_of[lead] = name
    return picked, ignored


def _refuse_no_signal(picked: dict[str, np.ndarray]) -> None:
    """MissingLeads / UnsupportedSignal when no lead read carries any usable signal."""
    if not picked:
        return
    missing: list[str] = []
    flat: list[str] = []
    for lead in (lead for lead in STANDARD_LEADS if lead in picked):
        finite = picked[lead][np.isfinite(picked[lead])]
        if finite.size == 0:
            missing.append(lead)
        elif float(np.ptp(finite)) >= FLAT_PTP_MV:
            return  # one lead with signal: scored (with nan_samples / flat_lead warnings)
        else:
            flat.append(lead)
    details: dict[str, object] = {"leads": missing + flat, "missing_samples": missing, "flat": flat}
    if not flat:
        raise MissingLeads(f"no usable signal: every sample is missing (NaN) in leads {', '.join(missing)}",
                           details=details)
    parts = ([f"missing (NaN) in leads {', '.join(missing)}"] if missing else []) + [
        f"flat (peak-to-peak under {FLAT_PTP_MV} mV) in leads {', '.join(flat)}"]
    raise UnsupportedSignal(f"no usable signal: the recording is {' and '.join(parts)}", details=details)


def _fill_nan(picked: dict[str, np.ndarray]) -> SignalWarning | None:
    counts = {lead: int((~np.isfinite(x)).sum()) for lead, x in picked.items()}
    affected = tuple(lead for lead in STANDARD_LEADS if counts.get(lead))
    for lead in affected:
        picked[lead][~np.isfinite(picked[lead])] = 0.0
    if not affected:
        return None
    total = sum(counts.values())
    return SignalWarning("nan_samples", f"{total} missing samples (NaN) were set to 0", affected)


_DERIVE_HINT = "; III, aVR, aVL and aVF can be derived only when I and II are present"


def _listed(code: str, text: str, leads: tuple[str, ...]) -> SignalWarning:
    return SignalWarning(code, f"{text}: {', '.join(leads)}", leads)


def _complete_leads(picked: dict[str, np.ndarray]) -> list[str]:
    """Derive missing limb leads in place; MissingLeads if anything else is absent."""
    missing = [lead for lead in STANDARD_LEADS if lead not in picked]
    derivable = [lead for lead in missing if lead in LIMB_LEADS_FROM_I_II]
    has_i_ii = "I" in picked and "II" in picked
    still_missing = [lead for lead in missing if not (has_i_ii and lead in derivable)]
    if still_missing:
        hint = "" if has_i_ii or not derivable else _DERIVE_HINT
        raise MissingLeads(
            f"missing leads: {', '.join(still_missing)}{hint}", details={"missing": still_missing}
        )
    if derivable:
        derived = derive_limb_leads(picked["I"], picked["II"])
        picked.update({lead: derived[lead] for lead in derivable})
    return derivable


def _runs_at(mask: np.ndarray, min_run: int) -> int:
    """True samples in runs of at least ``min_run`` that touch neither end of ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    inner = (starts > 0) & (ends < mask.size)
    lengths = (ends - starts)[inner]
    return int(lengths[lengths >= min_run].sum())


def _is_clipped(x: np.ndarray) -> bool:
    tolerance = 1e-9 * float(np.ptp(x))
    limit = CLIP_FRACTION * x.size
    at_max = _runs_at(x >= x.max() - tolerance, CLIP_MIN_RUN)
    at_min = _runs_at(x <= x.min() + tolerance, CLIP_MIN_RUN)
    return at_max > limit or at_min > limit


def _may_be_clipped(signals: np.ndarray, ptp: np.ndarray) -> np.ndarray:
    """Leads with enough samples at their extremes that a clipping run is possible at all
    (a cheap pass over all leads; ``_is_clipped`` then looks for the runs)."""
    tolerance = (1e-9 * ptp)[:, None]
    limit = CLIP_FRACTION * signals.shape[1]
    at_max = (signals >= signals.max(axis=1, keepdims=True) - tolerance).sum(axis=1)
    at_min = (signals <= signals.min(axis=1, keepdims=True) + tolerance).sum(axis=1)
    clipped: np.ndarray = (at_max > limit) | (at_min > limit)
    return clipped


def _quality_warnings(signals: np.ndarray, leads: tuple[str, ...]) -> list[SignalWarning]:
    ptp = np.ptp(signals, axis=1)
    flat = tuple(lead for lead, p in zip(leads, ptp, strict=True) if p < FLAT_PTP_MV)
    candidates = _may_be_clipped(signals, ptp)
    clipped = tuple(
        lead
        for lead, x, p, maybe in zip(leads, signals, ptp, candidates, strict=True)
        if p >= FLAT_PTP_MV and maybe and _is_clipped(x)
    )
    found = []
    if flat:
        found.append(_listed("flat_lead", f"peak-to-peak under {FLAT_PTP_MV} mV", flat))
    if clipped:
        found.append(_listed("clipped_lead", "signal looks clipped (saturated)", clipped))
    return found


def _resample(signals: np.ndarray, fs: float, target_fs: int) -> np.ndarray:
    n_out = round(signals.shape[1] * target_fs / fs)
    if fs == target_fs:
        return signals
    if n_out < 1:
        raise SignalTooShort(f"recording of {signals.shape[1]} samples is too short to resample")
    if signals.shape[1] <= RESAMPLE_ALL_LEADS_MAX_SAMPLES:
        return resample(signals, n_out, axis=1)  # one call: same values as lead by lead, less overhead
    # Long records lead by lead: keeps peak memory at one lead's spectrum.
    return np.stack([resample(row, n_out) for row in signals])


def _pad(signals: np.ndarray, duration_s: float, pad: bool, contract: ModelContract) -> np.ndarray:
    if not pad:
        raise SignalTooShort(
            f"recording lasts {duration_s:.2f} s, shorter than one {contract.window_s:g} s model window; "
            f"pass pad=true to zero-pad recordings of at least {MIN_PAD_S:g} s",
            details={"duration_s": round(duration_s, 3)},
        )
    if signals.shape[1] < MIN_PAD_S * contract.sampling_rate_hz:
        raise SignalTooShort(
            f"recording lasts {duration_s:.2f} s; padding needs at least {MIN_PAD_S:g} s of signal",
            details={"duration_s": round(duration_s, 3)},
        )
    return np.pad(signals, ((0, 0), (0, contract.window_samples - signals.shape[1])))


def _window_starts(n: int, window: int) -> list[int]:
    starts = list(range(0, n - window + 1, window))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def _check_input(rec: Recording, max_duration_s: float) -> float:
    fs = check_sampling_rate(rec.fs)
    if rec.n_samples == 0:
        raise InvalidInput("the recording has no samples")
    if rec.duration_s > max_duration_s:
        raise UnsupportedSignal(
            f"recording lasts {rec.duration_s:.1f} s; at most {max_duration_s:g} s is accepted",
            details={"duration_s": round(rec.duration_s, 3), "max_duration_s": max_duration_s},
        )
    return fs


def _twelve_leads(
    rec: Recording, order: tuple[str, ...]
) -> tuple[np.ndarray, list[str], list[str], list[SignalWarning]]:
    """(12, n) signals in ``order`` (the standard leads), leads read, leads derived, warnings."""
    warnings: list[SignalWarning] = []
    picked, ignored = _select_leads(rec)
    leads_read = [lead for lead in STANDARD_LEADS if lead in picked]
    if ignored:
        warnings.append(_listed("ignored_leads", "non-standard leads ignored", tuple(ignored)))
    _refuse_no_signal(picked)
    nan_warning = _fill_nan(picked)
    warnings += [nan_warning] if nan_warning else []
    derived = _complete_leads(picked)
    if derived:
        warnings.append(_listed("derived_leads", "derived from I and II", tuple(derived)))
    signals = np.stack([picked[lead] for lead in order])
    warnings += _quality_warnings(signals, order)
    warnings += _amplitude_warnings(signals, order, rec.fs)
    warnings += _gain_warnings(rec)
    return signals, leads_read, derived, warnings


def _longest_run(mask: np.ndarray) -> int:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if starts.size else 0


def _amplitude_warnings(signals: np.ndarray, leads: tuple[str, ...], fs: float) -> list[SignalWarning]:
    span = max(1, round(IMPLAUSIBLE_SPAN_S * fs))
    beyond = np.abs(signals) > IMPLAUSIBLE_MV
    candidates = np.flatnonzero(beyond.sum(axis=1) >= span)
    implausible = tuple(leads[i] for i in candidates if _longest_run(beyond[i]) >= span)
    if not implausible:
        return []
    peak = float(np.abs(signals[[leads.index(lead) for lead in implausible]]).max())
    text = (f"amplitude beyond {IMPLAUSIBLE_MV:g} mV for at least {IMPLAUSIBLE_SPAN_S:g} s (peak {peak:.3g} mV), "
            "not an ECG in millivolts: check the units (microvolts or ADC counts read as mV?) or a DC offset; "
            "the model's answer for this record is not meaningful")
    return [_listed("implausible_amplitude", text, implausible)]


def _gain_warnings(rec: Recording) -> list[SignalWarning]:
    if rec.gains is None:
        return []
    negative = tuple(name for name, gain in zip(rec.lead_names, rec.gains, strict=True) if gain < 0)
    if not negative:
        return []
    text = "the file declares a negative gain, so these leads are inverted as the file says; check the recorder"
    return [_listed("negative_gain", text, negative)]


def _tail_warning(starts: list[int], contract: ModelContract) -> list[SignalWarning]:
    if len(starts) < 2 or starts[-1] % contract.window_samples == 0:
        return []
    text = (
        f"last window starts at {starts[-1] / contract.sampling_rate_hz:g} s so that it ends at the record's "
        "end; it overlaps the previous window"
    )
    return [SignalWarning("tail_window", text)]


def _lead_order(contract: ModelContract) -> tuple[str, ...]:
    if sorted(contract.lead_order) != sorted(STANDARD_LEADS):
        raise ValueError(f"preprocessing produces the 12 standard leads, in any order; not {contract.lead_order}")
    return contract.lead_order


def preprocess(rec: Recording, *, pad: bool = False, max_duration_s: float = 600.0,
               contract: ModelContract = PRETRAINING, keep_tracing: bool = False) -> ModelInput:
    """Model windows (N, 12, window_samples) float32 from a Recording, as ``contract`` says
    (the served bundle's; by default the published model's 100 Hz, 10 s); pure, no I/O.
    ``keep_tracing``: also return the 12 leads at the record's own rate (``ModelInput.tracing``)."""
    fs = _check_input(rec, max_duration_s)
    signals, leads_read, derived, warnings = _twelve_leads(rec, _lead_order(contract))
    warnings = list(rec.warnings) + warnings
    resampled = _resample(signals, fs, contract.sampling_rate_hz)
    window = contract.window_samples
    padded = resampled.shape[1] < window
    if padded:
        resampled = _pad(resampled, rec.duration_s, pad, contract)
        text = f"recording of {rec.duration_s:.2f} s zero-padded at the end to {contract.window_s:g} s"
        warnings.append(SignalWarning("padded", text))
    starts = _window_starts(resampled.shape[1], window)
    warnings += _tail_warning(starts, contract)
    cut = np.stack([resampled[:, s : s + window] for s in starts])
    largest = float(np.finfo(np.float32).max)
    if not np.isfinite(cut).all() or float(np.abs(cut).max()) > largest:
        raise UnsupportedSignal(f"amplitudes too large for the model's input (beyond {largest:.3g} mV after "
                                "resampling)")
    windows = cut.astype(np.float32)
    return ModelInput(
        windows=windows,
        window_starts_s=[s / contract.sampling_rate_hz for s in starts],
        derived_leads=derived,
        warnings=warnings,
        source_format=rec.source_format,
        fs_in=fs,
        duration_s=rec.duration_s,
        padded=padded,
        leads_read=leads_read,
        acquired_at=rec.acquired_at,
        tracing=signals if keep_tracing else None,
    )
