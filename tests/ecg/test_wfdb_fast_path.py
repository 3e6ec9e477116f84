"""WFDB numpy fast path: bit-for-bit parity with wfdb.rdrecord, and the wfdb fallback.

Every comparison is against ``wfdb.rdrecord(...).p_signal`` on real files: the records in
tests/data/ecg and ../shared/ecg-samples, and synthetic records written with wfdb.wrsamp
(or byte by byte, for the formats wfdb cannot write) into tmp_path.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from app.ecg.readers import wfdb_reader as W
from app.ecg.readers.base import ReadHints
from app.ecg.readers.wfdb_reader import READER
from app.ecg.units import to_millivolts_factor
from app.errors import MalformedFile, ServiceError

ECG_DATA = Path(__file__).resolve().parents[1] / "data" / "ecg"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "ecg-samples"
HINTS = ReadHints()


def _headers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.hea")) if folder.is_dir() else []


def _id(path: Path) -> str:
    for root in (SHARED, ECG_DATA):
        if path.is_relative_to(root):
            return f"{root.name}/{path.relative_to(root)}"
    return path.name


def _plan(header: Path) -> W._SimplePlan | None:
    text = W._read_header_text(header)
    parsed = W._parse_header(text, header.name)
    return W._simple_plan(text, parsed, W._signal_files(header, parsed))


def _reference(header: Path) -> wfdb.Record:
    return wfdb.rdrecord(str(header.with_suffix("")))


def _expected_mv(ref: wfdb.Record) -> np.ndarray:
    factors = np.array([to_millivolts_factor(unit or "mV") for unit in ref.units])
    return (ref.p_signal * factors).T


def _assert_fast_parity(header: Path) -> None:
    """The fast path takes the record and gives exactly what wfdb.rdrecord gives."""
    plan = _plan(header)
    assert plan is not None, f"{header.name} did not take the fast path"
    signals, names, units = W._decode_simple(plan, header.name)
    ref = _reference(header)
    assert signals.dtype == np.float64 and signals.shape == ref.p_signal.T.shape
    assert np.array_equal(signals, ref.p_signal.T, equal_nan=True)
    assert list(names) == list(ref.sig_name)
    assert list(units) == list(ref.units)
    rec = READER.read(header, HINTS)
    assert rec.metadata["decoder"] == "numpy"
    assert rec.lead_names == tuple(n or f"signal{i + 1}" for i, n in enumerate(ref.sig_name))
    assert np.array_equal(rec.signals, _expected_mv(ref), equal_nan=True)
    assert rec.signals.flags.c_contiguous


def _assert_fallback_parity(header: Path) -> None:
    """The fast path declines the record; the reader gives wfdb.rdrecord's values."""
    assert _plan(header) is None
    rec = READER.read(header, HINTS)
    assert rec.metadata["decoder"] == "wfdb"
    assert np.array_equal(rec.signals, _expected_mv(_reference(header)), equal_nan=True)


# --- Real records ------------------------------------------------------------------------


@pytest.mark.parametrize("header", _headers(ECG_DATA), ids=_id)
def test_copied_records_take_the_fast_path_with_parity(header: Path) -> None:
    _assert_fast_parity(header)


SHARED_HEADERS = _headers(SHARED)


@pytest.mark.skipif(not SHARED_HEADERS, reason=f"shared ECG samples not found at {SHARED}")
@pytest.mark.parametrize("header", SHARED_HEADERS, ids=_id)
def test_shared_records_take_the_fast_path_with_parity(header: Path) -> None:
    _assert_fast_parity(header)


@pytest.mark.skipif(not SHARED_HEADERS, reason=f"shared ECG samples not found at {SHARED}")
def test_every_shared_wfdb_record_was_compared() -> None:
    # index.csv lists the cinc2021 records; ptbdb adds s0010_re. cpsc2018-raw has no .hea.
    index_rows = (SHARED / "index.csv").read_text().strip().splitlines()[1:]
    assert len(SHARED_HEADERS) == len(index_rows) + 1
    assert not any("cpsc2018-raw" in str(h) for h in SHARED_HEADERS)


# --- Synthetic records written by wfdb ---------------------------------------------------


def _digital(rng: np.random.Generator, n: int, n_sig: int, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high + 1, size=(n, n_sig), dtype=np.int64)


def _wrsamp(folder: Path, name: str, d: np.ndarray, fmt: str | list[str], **fields) -> Path:
    n_sig = d.shape[1]
    fmts = fmt if isinstance(fmt, list) else [fmt] * n_sig
    wfdb.wrsamp(
        name,
        fs=fields.pop("fs", 500),
        units=fields.pop("units", ["mV"] * n_sig),
        sig_name=fields.pop("sig_name", [f"L{i}" for i in range(n_sig)]),
        d_signal=d,
        fmt=fmts,
        adc_gain=fields.pop("adc_gain", [200.0] * n_sig),
        baseline=fields.pop("baseline", [0] * n_sig),
        write_dir=str(folder),
        **fields,
    )
    return folder / f"{name}.hea"


def test_format_16_invalid_samples_baselines_gains(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    d = _digital(rng, 1001, 3, -32767, 32767)
    d[rng.integers(0, 1001, 25), rng.integers(0, 3, 25)] = -32768  # invalid -> NaN
    header = _wrsamp(
        tmp_path, "f16", d, "16",
        adc_gain=[200.0, 1000.5, 0.25], baseline=[0, -12, 300], units=["mV", "uV", "mV"],
    )
    _assert_fast_parity(header)
    signals, _, _ = W._decode_simple(_plan(header), header.name)
    assert np.isnan(signals).sum() == np.count_nonzero(d == -32768) > 0


@pytest.mark.parametrize("n_sig", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3, 999, 1000])
def test_format_212_odd_and_even_sample_counts(tmp_path: Path, n: int, n_sig: int) -> None:
    rng = np.random.default_rng(n * 10 + n_sig)
    d = _digital(rng, n, n_sig, -2047, 2047)
    d[rng.integers(0, n, 3), rng.integers(0, n_sig, 3)] = -2048  # invalid -> NaN
    d[0, 0] = 2047
    header = _wrsamp(
        tmp_path, "f212", d, "212",
        adc_gain=[rng.uniform(1, 5000) for _ in range(n_sig)],
        baseline=[int(b) for b in rng.integers(-3000, 3000, n_sig)],
    )
    _assert_fast_parity(header)


@pytest.mark.parametrize(
    ("fmt", "low", "high"),
    [("24", -(2**23), 2**23 - 1), ("32", -(2**31), 2**31 - 1), ("80", -128, 127)],
)
def test_formats_wfdb_writes(tmp_path: Path, fmt: str, low: int, high: int) -> None:
    rng = np.random.default_rng(int(fmt))
    d = _digital(rng, 777, 2, low + 1, high)
    d[::50, 1] = low  # the format's invalid value -> NaN
    d[1, 0], d[2, 0] = low + 1, high
    header = _wrsamp(tmp_path, f"f{fmt}", d, fmt, adc_gain=[123.25, 2.0], baseline=[7, -70000])
    _assert_fast_parity(header)


def test_nan_physical_signal_written_by_wfdb(tmp_path: Path) -> None:
    p = np.sin(np.linspace(0, 20, 2000)).reshape(1000, 2)
    p[10:20, 0] = np.nan
    wfdb.wrsamp("nan16", fs=500, units=["mV", "mV"], sig_name=["I", "II"], p_signal=p,
                fmt=["16", "212"], write_dir=str(tmp_path))
    _assert_fast_parity(tmp_path / "nan16.hea")
    assert np.isnan(READER.read(tmp_path / "nan16.hea", HINTS).signals[0, 10:20]).all()


def _write_files(folder: Path, name: str, d: np.ndarray, files: list[str], fmts: list[str],
                 **fields) -> None:
    """A record whose signals go to several files, written by wfdb.Record.wrsamp."""
    n_sig = d.shape[1]
    record = wfdb.Record(
        record_name=name, fs=500, d_signal=d, fmt=fmts, units=["mV"] * n_sig,
        sig_name=[f"L{i}" for i in range(n_sig)], **fields,
    )
    record.set_d_features()
    record.file_name = files
    record.set_defaults()
    record.wrsamp(write_dir=str(folder))


def test_two_signal_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    d = np.column_stack([_digital(rng, 501, 2, -30000, 30000), _digital(rng, 501, 1, -2000, 2000)])
    _write_files(tmp_path, "two", d, ["two_a.dat", "two_a.dat", "two_b.dat"], ["16", "16", "212"],
                 adc_gain=[200.0, 400.0, 50.0], baseline=[1, 2, 3])
    header = tmp_path / "two.hea"
    assert READER.companions(header) == [tmp_path / "two_a.dat", tmp_path / "two_b.dat"]
    _assert_fast_parity(header)
    plan = _plan(header)
    assert [(f.path.name, f.fmt, f.first, f.count) for f in plan.files] == [
        ("two_a.dat", "16", 0, 2), ("two_b.dat", "212", 2, 1)
    ]
    assert (tmp_path / "two_b.dat").stat().st_size == 752  # 501 format-212 samples


def _prepend(file: Path, n_bytes: int) -> None:
    file.write_bytes(bytes(range(256))[:n_bytes] + file.read_bytes())


@pytest.mark.parametrize("fmt", ["16", "212", "24"])
def test_byte_offset(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(3)
    d = _digital(rng, 333, 3, -2047, 2047)
    header = _wrsamp(tmp_path, "off", d, fmt, baseline=[5, 6, 7])
    _prepend(tmp_path / "off.dat", 17)
    text = header.read_text()
    header.write_text(text.replace(f"off.dat {fmt} ", f"off.dat {fmt}+17 "))
    _assert_fast_parity(header)
    assert READER.read(header, HINTS).signals.shape == (3, 333)


@pytest.mark.parametrize("fmt", ["16", "212"])
def test_sample_count_from_file_size(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(4)
    d = _digital(rng, 400, 2, -2047, 2047)
    header = _wrsamp(tmp_path, "nolen", d, fmt)
    _prepend(tmp_path / "nolen.dat", 24)
    lines = header.read_text().splitlines()
    assert lines[0] == "nolen 2 500 400"
    lines[0] = "nolen 2 500"
    lines[1:3] = [line.replace(f" {fmt} ", f" {fmt}+24 ") for line in lines[1:3]]
    header.write_text("\n".join(lines) + "\n")
    assert _plan(header).n_samples == 400
    _assert_fast_parity(header)


def test_cinc_mat_record_with_offset_and_invalid_sample(tmp_path: Path) -> None:
    for file in ECG_DATA.glob("E07500.*"):
        shutil.copy(file, tmp_path / file.name)
    assert "E07500.mat 16x1+24 1000.0(0)/mV" in (tmp_path / "E07500.hea").read_text()
    mat = tmp_path / "E07500.mat"
    data = bytearray(mat.read_bytes())
    at = 24 + 2 * (12 * 7 + 3)  # sample 7 of lead aVR (the 4th of 12 interleaved)
    data[at : at + 2] = (-32768).to_bytes(2, "little", signed=True)
    mat.write_bytes(bytes(data))
    _assert_fast_parity(tmp_path / "E07500.hea")
    assert np.isnan(READER.read(tmp_path / "E07500.hea", HINTS).signals[3, 7])


# --- Formats wfdb reads but does not write: written byte by byte -------------------------


def _hand_record(folder: Path, name: str, fmt: str, data: bytes, n: int, lines: list[str]) -> Path:
    (folder / f"{name}.dat").write_bytes(data)
    header = folder / f"{name}.hea"
    signal_lines = "".join(f"{name}.dat {fmt} {line}\n" for line in lines)
    header.write_text(f"{name} {len(lines)} 250 {n}\n{signal_lines}")
    return header


def test_format_61_big_endian(tmp_path: Path) -> None:
    rng = np.random.default_rng(61)
    d = _digital(rng, 300, 2, -32768, 32767)
    d[5, 0] = -32768
    header = _hand_record(tmp_path, "f61", "61", d.astype(">i2").tobytes(), 300,
                          ["100(-5)/mV 16 0 0 0 0 A", "2.5/mV 16 0 0 0 0 B"])
    _assert_fast_parity(header)


def test_format_160_offset_binary(tmp_path: Path) -> None:
    rng = np.random.default_rng(160)
    d = _digital(rng, 300, 2, 0, 65535)  # stored unsigned; 0 is the invalid value
    d[7, 1] = 0
    header = _hand_record(tmp_path, "f160", "160", d.astype("<u2").tobytes(), 300,
                          ["200(10)/mV 16 0 0 0 0 A", "200/mV 16 0 0 0 0 B"])
    _assert_fast_parity(header)


def test_format_8_differences_from_initial_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    d = _digital(rng, 500, 3, -128, 127)
    header = _hand_record(tmp_path, "f8", "8", d.astype("i1").tobytes(), 500,
                          ["200(0)/mV 8 0 17 0 0 A", "200(-3)/mV 8 0 -400 0 0 B", "1000/mV 8 0"])
    _assert_fast_parity(header)


def test_header_defaults_as_wfdb_reads_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    d = _digital(rng, 200, 5, -32767, 32767)
    header = _hand_record(tmp_path, "dflt", "16", d.astype("<i2").tobytes(), 200, [
        "",                               # no gain, baseline, units, name: 200, 0, mV, None
        "0/mV 16 0 0 0 0 zero gain",      # gain 0 means 200; a name with a space
        "100 16 7 0 0 0 adc zero",        # no baseline: the ADC zero (7); no units: mV
        "100(3) 16 0 0 0 0 no units",
        "1e3(-4)/mV 16 0 0 0 0 exp\tafter tab",
    ])
    plan = _plan(header)
    assert plan is not None
    assert [c.gain for c in plan.channels] == [200.0, 200.0, 100.0, 100.0, 1000.0]
    assert [c.baseline for c in plan.channels] == [0, 0, 7, 3, -4]
    signals, _, _ = W._decode_simple(plan, header.name)
    assert np.array_equal(signals, _reference(header).p_signal.T, equal_nan=True)
    # ... but the reader refuses a gain stated as 0 ("no amplitude calibration" in WFDB):
    # tests/formats/test_gains.py
    with pytest.raises(MalformedFile) as refused:
        READER.read(header, HINTS)
    assert refused.value.details["leads"] == ["zero gain"]
    header.write_text(header.read_text().replace(" 0/mV ", " 200/mV "))
    _assert_fast_parity(header)
    rec = READER.read(header, HINTS)
    assert rec.lead_names == ("signal1", "zero gain", "adc zero", "no units", "exp")
    assert rec.metadata["units_in"] == ["mV"]


# --- Fallback to wfdb.rdrecord -----------------------------------------------------------


def test_two_samples_per_frame_falls_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    e_d = [rng.integers(-1000, 1000, 400), rng.integers(-1000, 1000, 200)]
    wfdb.wrsamp("spf", fs=500, units=["mV", "mV"], sig_name=["I", "II"], e_d_signal=e_d,
                samps_per_frame=[2, 1], fmt=["16", "16"], adc_gain=[200.0, 200.0],
                baseline=[0, 0], write_dir=str(tmp_path))
    assert " 16x2 " in (tmp_path / "spf.hea").read_text()
    _assert_fallback_parity(tmp_path / "spf.hea")


def test_format_310_falls_back(tmp_path: Path) -> None:
    data = bytes(random.Random(310).randrange(256) for _ in range(400))  # 300 samples
    header = _hand_record(tmp_path, "f310", "310", data, 100, ["200/mV 10 0 0 0 0 A"] * 3)
    _assert_fallback_parity(header)


@pytest.mark.parametrize(
    "variant",
    ["skew", "mixed formats in one file", "non-ascii name", "extra signal line"],
)
def test_unusual_headers_fall_back(tmp_path: Path, variant: str) -> None:
    rng = np.random.default_rng(7)
    d = _digital(rng, 300, 2, -2000, 2000)
    header = _wrsamp(tmp_path, "odd", d, "16")
    text = header.read_text()
    if variant == "skew":
        text = text.replace("odd.dat 16 ", "odd.dat 16:0 ", 1)
        text = text.replace("odd.dat 16 ", "odd.dat 16:2 ", 1)
    elif variant == "mixed formats in one file":  # wfdb reads the file in its first format
        text = "odd.dat 61 ".join(text.rsplit("odd.dat 16 ", 1))
    elif variant == "non-ascii name":
        text = text.replace(" L1", " Ableitung \u00c4")
    else:
        text = text.replace("odd 2 500", "odd 1 500")
    header.write_bytes(text.encode("latin-1"))
    if variant == "extra signal line":
        assert _plan(header) is None
        with pytest.raises(MalformedFile, match="cannot read WFDB record"):
            READER.read(header, HINTS)  # wfdb refuses it, as before
        return
    _assert_fallback_parity(header)


# --- Broken input: ServiceErrors only ----------------------------------------------------


def test_short_second_file_with_inferred_length_is_truncated(tmp_path: Path) -> None:
    d = np.arange(600, dtype=np.int64).reshape(200, 3) - 300
    _write_files(tmp_path, "short", d, ["short_a.dat", "short_a.dat", "short_b.dat"], ["16"] * 3,
                 adc_gain=[200.0] * 3, baseline=[0] * 3)
    header = tmp_path / "short.hea"
    header.write_text(header.read_text().replace("short 3 500 200", "short 3 500"))
    second = tmp_path / "short_b.dat"
    second.write_bytes(second.read_bytes()[:-10])
    message = r"short_b\.dat is truncated: 390 bytes, but short\.hea implies 400"
    with pytest.raises(MalformedFile, match=message):
        READER.read(header, HINTS)


def test_format_212_odd_count_missing_last_byte(tmp_path: Path) -> None:
    d = np.arange(-500, 499, dtype=np.int64).reshape(-1, 1)  # 999 samples: 1499 bytes
    header = _wrsamp(tmp_path, "odd212", d, "212")
    dat = tmp_path / "odd212.dat"
    assert dat.stat().st_size == 1499
    dat.write_bytes(dat.read_bytes()[:-1])
    with pytest.raises(MalformedFile, match=r"odd212\.dat is truncated: 1498 bytes"):
        READER.read(header, HINTS)


@pytest.mark.parametrize(
    "line",
    [
        "g.dat 16 -/mV 16 0 0 0 0 I",          # a gain wfdb cannot convert
        "g.dat 16 200(-)/mV 16 0 0 0 0 I",     # a baseline wfdb cannot convert
        "g.dat 16 200/mV 16 - 0 0 0 I",        # an ADC zero wfdb cannot convert
        "g.dat 16x 200/mV 16 0 0 0 0 I",
        "g.dat 16+ 200/mV 16 0 0 0 0 I",
        "g.dat 16 ./mV 16 0 0 0 0 I",
    ],
)
def test_garbage_in_a_signal_line_is_a_service_error(tmp_path: Path, line: str) -> None:
    (tmp_path / "g.dat").write_bytes(np.arange(100, dtype="<i2").tobytes())
    header = tmp_path / "g.hea"
    header.write_text(f"g 1 500 100\n{line}\n")
    try:
        rec = READER.read(header, HINTS)
    except ServiceError:
        return
    ref = _reference(header)  # read: then wfdb reads it too, to the same values
    assert np.array_equal(rec.signals, _expected_mv(ref), equal_nan=True)


def test_mutated_headers_give_parity_or_service_errors(tmp_path: Path) -> None:
    """Random edits of a real header: the reader gives wfdb's values or a ServiceError."""
    for file in ECG_DATA.glob("s0010_re.*"):
        shutil.copy(file, tmp_path / file.name)
    header = tmp_path / "s0010_re.hea"
    original = (ECG_DATA / "s0010_re.hea").read_text()
    rng = random.Random(20240611)
    alphabet = "0123456789 -+.x:/()eE#abmVu\t\n~"
    decoders = set()
    for _ in range(60):
        text = list(original)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(0, 600)
            text[pos : pos + rng.randint(0, 1)] = rng.choice(alphabet) * rng.randint(0, 1)
        header.write_text("".join(text))
        try:
            rec = READER.read(header, ReadHints(sampling_rate=1000))
        except ServiceError:
            continue
        decoders.add(rec.metadata["decoder"])
        ref = _reference(header)
        assert np.array_equal(rec.signals, _expected_mv(ref), equal_nan=True), "".join(text)[:400]
    assert "numpy" in decoders
