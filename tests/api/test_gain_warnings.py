"""POST /diagnose with WFDB uploads whose headers declare an odd gain, through the real app:
a negative ADC gain on one lead is scored with the ``negative_gain`` warning naming that lead;
a zero one is refused with 422 ``malformed_file`` and the documented error body naming it.

The records are tests/data/ecg/E07500 written again with wfdb.wrsamp into tmp_path (format 16,
1000 adu/mV), with one signal line of the header edited afterwards: wrsamp writes positive
gains only. The lead given a negative gain stores negated digits, so the physical signal, and
so the probabilities, are those of the original record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import wfdb

from .helpers import ECG_DIR, assert_error, upload

GAIN = 1000.0


def _record_with_gain(folder: Path, lead: str, gain: str) -> list[Path]:
    """E07500 as ``folder/gain.hea`` + ``gain.dat``, ``lead``'s gain written as ``gain``."""
    src = wfdb.rdrecord(str(ECG_DIR / "E07500"))
    sign = np.array([-1.0 if name == lead and gain.startswith("-") else 1.0 for name in src.sig_name])
    digits = np.round(src.p_signal * GAIN * sign).astype(np.int64)
    wfdb.wrsamp("gain", fs=src.fs, units=["mV"] * 12, sig_name=list(src.sig_name), d_signal=digits,
                fmt=["16"] * 12, adc_gain=[GAIN] * 12, baseline=[0] * 12, write_dir=str(folder))
    header = folder / "gain.hea"
    lines = header.read_text().splitlines()
    index = 1 + list(src.sig_name).index(lead)
    tokens = lines[index].split()
    assert tokens[-1] == lead and tokens[2].startswith("1000")
    tokens[2] = gain + tokens[2][tokens[2].index("("):]
    lines[index] = " ".join(tokens)
    header.write_text("\n".join(lines) + "\n")
    return [header, folder / "gain.dat"]


def test_negative_gain_is_scored_with_a_warning_naming_the_lead(client, tmp_path, upload_tmp):
    resp = client.post("/diagnose", files=upload(*_record_with_gain(tmp_path, "V3", "-1000")))
    assert resp.status_code == 200, resp.text[:500]
    [result] = resp.json()["results"]
    assert result["source"]["format"] == "wfdb"
    [warning] = [w for w in result["warnings"] if w["code"] == "negative_gain"]
    assert warning["leads"] == ["V3"]
    assert "negative gain" in warning["message"]


def test_zero_gain_is_refused_with_422_naming_the_lead(client, tmp_path, upload_tmp):
    resp = client.post("/diagnose", files=upload(*_record_with_gain(tmp_path, "aVF", "0")))
    err = assert_error(resp, 422, "malformed_file")
    assert err["details"]["leads"] == ["aVF"]
    assert err["details"]["field"] == "ADC gain"
    assert "aVF" in err["message"] and "ADC gain" in err["message"]
    assert str(tmp_path) not in err["message"]
