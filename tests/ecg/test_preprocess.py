"""Preprocessing to model windows on real records (and controlled edits of them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy.signal import resample

from app.contract import PRETRAINING, ModelContract
from app.ecg.leads import STANDARD_LEADS
from app.ecg.preprocess import ModelInput, preprocess
from app.ecg.readers.base import ReadHints
from app.ecg.readers.wfdb_reader import READER
from app.ecg.recording import Recording
from app.errors import InvalidInput, MissingLeads, SignalTooShort, UnsupportedSignal


def _read(ecg_data_dir: Path, stem: str) -> Recording:
    return READER.read(ecg_data_dir / f"{stem}.hea", ReadHints())


def _subset(rec: Recording, keep: list[str], n: int | None = None) -> Recording:
    rows = [rec.lead_names.index(name) for name in keep]
    return Recording(rec.signals[rows, :n].copy(), rec.fs, tuple(keep), rec.source_format)


def _codes(model_input: ModelInput) -> list[str]:
    return [w.code for w in model_input.warnings]


def test_ten_second_record_is_one_exact_window(ecg_data_dir: Path) -> None:
    p_signal = wfdb.rdrecord(str(ecg_data_dir / "E07500")).p_signal  # (5000, 12), standard order
    rec = _read(ecg_data_dir, "E07500")
    shuffled = _subset(rec, list(reversed(rec.lead_names)))  # order must not matter
    model_input = preprocess(shuffled)
    assert model_input.windows.shape == (1, 12, 1000)
    assert model_input.windows.dtype == np.float32
    expected = resample(p_signal.T, 1000, axis=1).astype(np.float32)
    np.testing.assert_allclose(model_input.windows[0], expected, rtol=0, atol=1e-6)
    assert model_input.window_starts_s == [0.0]
    assert model_input.derived_leads == [] and model_input.warnings == []
    assert model_input.leads_read == list(STANDARD_LEADS)
    assert (model_input.fs_in, model_input.duration_s, model_input.padded) == (500.0, 10.0, False)
    assert model_input.source_format == "wfdb"


def test_derived_limb_leads_match_formulas(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    kept = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    model_input = preprocess(_subset(rec, kept))
    assert model_input.derived_leads == ["III", "aVR", "aVL", "aVF"]
    assert model_input.leads_read == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    derived_warning = [w for w in model_input.warnings if w.code == "derived_leads"]
    assert derived_warning[0].leads == ("III", "aVR", "aVL", "aVF")
    lead_i, lead_ii = rec.signals[0], rec.signals[1]
    formulas = {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    window = model_input.windows[0]
    for lead, signal in formulas.items():
        expected = resample(signal, 1000).astype(np.float32)
        np.testing.assert_allclose(window[STANDARD_LEADS.index(lead)], expected, atol=1e-6)
        # The recorded lead agrees with the derived one to within the 1 uV quantisation.
        recorded = resample(rec.signals[STANDARD_LEADS.index(lead)], 1000)
        assert np.abs(window[STANDARD_LEADS.index(lead)] - recorded).max() < 0.01


@pytest.mark.parametrize(
    ("drop", "missing"),
    [(["V3"], ["V3"]), (["I", "III"], ["I", "III"]), (["II", "aVF", "V6"], ["II", "aVF", "V6"])],
)
def test_missing_leads_are_named(ecg_data_dir: Path, drop: list[str], missing: list[str]) -> None:
    rec = _read(ecg_data_dir, "E07500")
    with pytest.raises(MissingLeads) as info:
        preprocess(_subset(rec, [n for n in rec.lead_names if n not in drop]))
    assert info.value.details["missing"] == missing
    assert ", ".join(missing) in info.value.message


def test_long_record_windows_and_tail(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "S0001")  # 1000 Hz, 38.4 s
    model_input = preprocess(rec)
    assert model_input.window_starts_s == [0.0, 10.0, 20.0, 28.4]
    full = resample(wfdb.rdrecord(str(ecg_data_dir / "S0001")).p_signal.T, 3840, axis=1).astype(np.float32)
    np.testing.assert_allclose(model_input.windows[1], full[:, 1000:2000], atol=1e-5)
    np.testing.assert_allclose(model_input.windows[-1], full[:, -1000:], atol=1e-5)
    assert "tail_window" in _codes(model_input)


def test_exact_multiple_has_no_tail(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "S0001")
    model_input = preprocess(_subset(rec, list(rec.lead_names), n=30_000))
    assert model_input.window_starts_s == [0.0, 10.0, 20.0]
    assert "tail_window" not in _codes(model_input)


def test_fifteen_second_500hz_record(ecg_data_dir: Path) -> None:
    model_input = preprocess(_read(ecg_data_dir, "A0001"))
    assert model_input.windows.shape == (2, 12, 1000)
    assert model_input.window_starts_s == [0.0, 5.0]


def test_short_record_needs_pad(ecg_data_dir: Path) -> None:
    rec = _subset(_read(ecg_data_dir, "E07500"), list(STANDARD_LEADS), n=2500)  # 5 s
    with pytest.raises(SignalTooShort) as info:
        preprocess(rec)
    assert "5.00 s" in info.value.message and "pad=true" in info.value.message
    model_input = preprocess(rec, pad=True)
    assert model_input.padded and "padded" in _codes(model_input)
    expected = resample(rec.signals, 500, axis=1).astype(np.float32)
    np.testing.assert_allclose(model_input.windows[0, :, :500], expected, atol=1e-6)
    assert not model_input.windows[0, :, 500:].any()


def test_pad_refuses_under_two_seconds(ecg_data_dir: Path) -> None:
    rec = _subset(_read(ecg_data_dir, "E07500"), list(STANDARD_LEADS), n=900)  # 1.8 s
    with pytest.raises(SignalTooShort, match="at least 2 s"):
        preprocess(rec, pad=True)


def test_too_long_is_refused(ecg_data_dir: Path) -> None:
    with pytest.raises(UnsupportedSignal, match="38.4 s; at most 30 s"):
        preprocess(_read(ecg_data_dir, "S0001"), max_duration_s=30)


def test_nan_counted_and_zeroed_without_touching_input(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    rec.signals[1, 100:150] = np.nan
    rec.signals[7, 0] = np.nan
    model_input = preprocess(rec)
    nan = [w for w in model_input.warnings if w.code == "nan_samples"][0]
    assert nan.leads == ("II", "V2") and nan.message.startswith("51 missing")
    assert np.isnan(rec.signals).sum() == 51  # the caller's recording is unchanged
    filled = rec.signals.copy()
    filled[np.isnan(filled)] = 0
    np.testing.assert_allclose(model_input.windows[0], resample(filled, 1000, axis=1), atol=1e-5)


def test_flat_and_clipped_warnings(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    assert preprocess(rec).warnings == []
    rec.signals[7] = 0.3 + 0.005 * np.sin(np.arange(rec.n_samples))  # V2 ptp 0.01 mV
    lead_ii = rec.signals[1]
    ceiling = np.quantile(lead_ii, 0.97)  # saturate the top 3 % of lead II
    rec.signals[1] = np.minimum(lead_ii, ceiling)
    warnings = {w.code: w for w in preprocess(rec).warnings}
    assert warnings["flat_lead"].leads == ("V2",)
    assert warnings["clipped_lead"].leads == ("II",)


def test_held_value_at_record_end_is_not_clipping(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    rec.signals[0, -100:] = rec.signals[0].max()  # recorder holds the last value
    assert "clipped_lead" not in _codes(preprocess(rec))


def test_ignored_and_duplicate_leads(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    extra = Recording(
        np.vstack([rec.signals, rec.signals[:1]]), rec.fs, ("i", "II", "III", "AVR", "avl", "aVF",
        "v1", "V2", "V3", "V4", "V5", "V6", "MLII"), "json",
    )
    model_input = preprocess(extra)
    ignored = [w for w in model_input.warnings if w.code == "ignored_leads"][0]
    assert ignored.leads == ("MLII",)
    duplicate = Recording(extra.signals, rec.fs, extra.lead_names[:12] + ("Lead I",), "json")
    with pytest.raises(InvalidInput, match="'i' and 'Lead I' are both lead I"):
        preprocess(duplicate)


def test_hundred_hz_input_is_not_resampled() -> None:
    signals = np.random.default_rng(0).normal(size=(12, 1000))
    model_input = preprocess(Recording(signals, 100.0, STANDARD_LEADS, "json"))
    np.testing.assert_array_equal(model_input.windows[0], signals.astype(np.float32))


def test_clipping_prefilter_never_hides_a_clipped_lead() -> None:
    """_may_be_clipped only skips leads that _is_clipped would clear (same answer, less work)."""
    from app.ecg.preprocess import _is_clipped, _may_be_clipped

    rng = np.random.default_rng(7)
    found = 0
    for trial in range(200):
        x = rng.standard_normal((12, 1000)).cumsum(axis=1) * 0.05
        for lead in rng.choice(12, size=3, replace=False):  # saturate some leads, at various lengths
            top = np.quantile(x[lead], 1 - rng.uniform(0.001, 0.05))
            x[lead] = np.minimum(x[lead], top)
        ptp = np.ptp(x, axis=1)
        maybe = _may_be_clipped(x, ptp)
        for lead in range(12):
            if _is_clipped(x[lead]):
                found += 1
                assert maybe[lead], (trial, lead)
    assert found > 100  # the trials really contain clipped leads


def test_resampling_all_leads_at_once_equals_lead_by_lead() -> None:
    from app.ecg.preprocess import _resample

    x = np.random.default_rng(3).standard_normal((12, 5000))
    assert np.array_equal(_resample(x, 500.0, 100), np.stack([resample(row, 1000) for row in x]))


def test_default_contract_is_the_pretraining_one(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "A0001")
    explicit = preprocess(rec, contract=PRETRAINING)
    default = preprocess(rec)
    assert np.array_equal(explicit.windows, default.windows) and explicit.window_starts_s == default.window_starts_s


def test_another_contract_cuts_other_windows(ecg_data_dir: Path) -> None:
    """250 Hz, 4 s windows (1000 samples), leads in reverse order: rate, length and order all come
    from the contract."""
    contract = ModelContract(sampling_rate_hz=250, window_samples=1000, lead_order=tuple(reversed(STANDARD_LEADS)))
    rec = _read(ecg_data_dir, "S0001")  # 1000 Hz, 38.4 s -> 9600 samples at 250 Hz
    model_input = preprocess(rec, contract=contract)
    assert model_input.windows.shape == (10, 12, 1000)
    assert model_input.window_starts_s == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 34.4]
    assert "last window starts at 34.4 s" in next(w.message for w in model_input.warnings if w.code == "tail_window")
    p_signal = wfdb.rdrecord(str(ecg_data_dir / "S0001")).p_signal.T  # standard order
    full = resample(p_signal, 9600, axis=1)[::-1].astype(np.float32)  # V6 first
    np.testing.assert_allclose(model_input.windows[1], full[:, 1000:2000], atol=1e-5)
    np.testing.assert_allclose(model_input.windows[-1], full[:, -1000:], atol=1e-5)


def test_another_contract_sets_the_padding_window(ecg_data_dir: Path) -> None:
    contract = ModelContract(sampling_rate_hz=50, window_samples=400)  # 8 s
    rec = _subset(_read(ecg_data_dir, "E07500"), list(STANDARD_LEADS), n=2500)  # 5 s at 500 Hz
    with pytest.raises(SignalTooShort, match="shorter than one 8 s model window"):
        preprocess(rec, contract=contract)
    model_input = preprocess(rec, pad=True, contract=contract)
    assert model_input.windows.shape == (1, 12, 400) and model_input.padded
    np.testing.assert_allclose(model_input.windows[0, :, :250], resample(rec.signals, 250, axis=1), atol=1e-5)
    assert not model_input.windows[0, :, 250:].any()


def test_a_contract_with_other_leads_is_a_programming_error() -> None:
    signals = np.zeros((12, 1000))
    contract = ModelContract(lead_order=(*STANDARD_LEADS[:-1], "V7"))
    with pytest.raises(ValueError, match="12 standard leads"):
        preprocess(Recording(signals, 100.0, STANDARD_LEADS, "json"), contract=contract)


# --- signals that cannot be read honestly -------------------------------------------------


def test_an_all_nan_record_is_refused_naming_the_leads(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    rec.signals[:] = np.nan
    with pytest.raises(MissingLeads, match="no usable signal: every sample is missing") as err:
        preprocess(rec)
    assert err.value.details["leads"] == list(STANDARD_LEADS) and err.value.code == "missing_leads"
    assert ", ".join(STANDARD_LEADS) in err.value.message
    rec.signals[:] = np.inf  # infinite samples are missing samples too
    with pytest.raises(MissingLeads):
        preprocess(rec)


@pytest.mark.parametrize("value", [0.0, 0.3, -1.5])
def test_a_record_of_constant_leads_is_refused(value: float) -> None:
    rec = Recording(np.full((12, 5000), value), 500.0, STANDARD_LEADS, "json")
    with pytest.raises(UnsupportedSignal, match=r"no usable signal: the recording is flat \(peak-to-peak under "
                                                 r"0.02 mV\) in leads I, II") as err:
        preprocess(rec)
    assert err.value.details["flat"] == list(STANDARD_LEADS) and err.value.code == "unsupported_signal"


def test_missing_and_flat_leads_together_are_refused_naming_each(ecg_data_dir: Path) -> None:
    rec = _subset(_read(ecg_data_dir, "E07500"), ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    rec.signals[:4] = np.nan
    rec.signals[4:] = 0.001 * np.sin(np.arange(rec.n_samples))  # ptp 0.002 mV
    rec.signals[4, :10] = np.nan  # NaN samples do not count towards a flat lead's peak-to-peak
    with pytest.raises(UnsupportedSignal) as err:
        preprocess(rec)
    assert err.value.details["missing_samples"] == ["I", "II", "V1", "V2"]
    assert err.value.details["flat"] == ["V3", "V4", "V5", "V6"]
    assert "missing (NaN) in leads I, II, V1, V2 and flat" in err.value.message


def test_one_lead_with_signal_is_still_scored_with_warnings(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    rec.signals[1:] = np.nan  # only lead I is left
    model_input = preprocess(rec)
    assert model_input.windows.shape == (1, 12, 1000)
    nan = next(w for w in model_input.warnings if w.code == "nan_samples")
    assert nan.leads == STANDARD_LEADS[1:]


def test_implausible_amplitudes_are_warned_about(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    rec.signals[6] *= 1000.0  # V1 in microvolts read as millivolts
    rec.signals[9] += 50.0  # V4 with a 50 mV DC offset
    warning = next(w for w in preprocess(rec).warnings if w.code == "implausible_amplitude")
    assert warning.leads == ("V1", "V4") and "beyond 20 mV for at least 0.2 s" in warning.message
    huge = Recording(np.random.default_rng(0).normal(size=(12, 5000)) * 1e6, 500.0, STANDARD_LEADS, "json")
    assert next(w for w in preprocess(huge).warnings if w.code == "implausible_amplitude").leads == STANDARD_LEADS


def test_a_brief_spike_is_not_an_implausible_amplitude(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")  # 500 Hz: 0.2 s is 100 samples
    rec.signals[2, 1000:1099] = 80.0  # 0.198 s over 20 mV: an electrode pop, not a units error
    rec.signals[3, 2000:2060] = -30.0
    rec.signals[3, 2061:2120] = -30.0  # two short runs, not one sustained one
    assert "implausible_amplitude" not in _codes(preprocess(rec))
    rec.signals[2, 1099] = 80.0  # now 0.2 s in a row
    assert next(w for w in preprocess(rec).warnings if w.code == "implausible_amplitude").leads == ("III",)


def test_amplitudes_beyond_float32_are_refused() -> None:
    signals = np.random.default_rng(1).normal(size=(12, 1000)) * 1e39
    with pytest.raises(UnsupportedSignal, match="amplitudes too large for the model's input"):
        preprocess(Recording(signals, 100.0, STANDARD_LEADS, "json"))


def test_a_negative_gain_is_warned_about(ecg_data_dir: Path) -> None:
    rec = _read(ecg_data_dir, "E07500")
    gains = [200.0] * 12
    assert "negative_gain" not in _codes(preprocess(Recording(rec.signals, rec.fs, rec.lead_names, "wfdb",
                                                              gains=tuple(gains))))
    gains[0] = gains[7] = -200.0
    warned = preprocess(Recording(rec.signals, rec.fs, rec.lead_names, "wfdb", gains=tuple(gains)))
    assert next(w for w in warned.warnings if w.code == "negative_gain").leads == ("I", "V2")
    with pytest.raises(ValueError, match="one gain per lead"):
        Recording(rec.signals, rec.fs, rec.lead_names, "wfdb", gains=(200.0,))


NEW_CODES = {"implausible_amplitude", "negative_gain"}


def test_the_shared_sample_records_raise_none_of_the_new_warnings(shared_samples_dir: Path) -> None:
    """Every record of ../shared/ecg-samples (WFDB, SPH HDF5, raw CPSC 2018 MATLAB) still
    preprocesses, without the amplitude or gain warnings and without being refused."""
    from app.ecg.readers import READERS
    from app.ecg.readers.base import HEAD_BYTES

    formats: dict[str, int] = {}
    for path in sorted(shared_samples_dir.rglob("*")):
        if path.suffix not in (".hea", ".h5", ".mat") or (path.suffix == ".mat" and path.with_suffix(".hea").exists()):
            continue
        head = path.read_bytes()[:HEAD_BYTES]
        reader = next(r for r in READERS if r.claims(path, head))
        model_input = preprocess(reader.read(path, ReadHints()))
        assert not NEW_CODES & set(_codes(model_input)), path.name
        formats[reader.name] = formats.get(reader.name, 0) + 1
    assert formats.keys() == {"wfdb", "sph_hdf5", "cpsc2018_mat"} and sum(formats.values()) >= 140, formats
