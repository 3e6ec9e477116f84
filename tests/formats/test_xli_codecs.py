"""The Philips Sierra reader decodes XLI with ecgdatakit's codec (4.5x faster than sierraecg's,
which it used before). Both decoders must return the same integers, chunk by chunk, for the
XLI streams the project's independent writer (tests/formats/writers_xml_dicom.xli_encode)
makes from real records: limb residuals or not, with extra zero leads, short and full-length."""

from __future__ import annotations

import numpy as np
import pytest
from tests.formats import writers_xml_dicom as W

pytest.importorskip("sierraecg")
pytest.importorskip("ecgdatakit")

from ecgdatakit.parsing.codecs.xli import xli_decode as ecgdatakit_decode
from sierraecg.xli import xli_decode as sierraecg_decode


@pytest.mark.parametrize("record", [W.REC_500_A, W.REC_500_B, W.REC_1000])
@pytest.mark.parametrize(("residuals", "extra", "seconds"), [(True, 0, None), (False, 3, None), (True, 0, 0.5)])
def test_both_xli_decoders_return_the_same_integers(record: str, residuals: bool, extra: int,
                                                     seconds: float | None) -> None:
    rec = W.load(record)
    sig = rec.signals if seconds is None else rec.signals[:, : int(seconds * rec.fs)]
    lsb = W.quantise(sig, 5e-3)
    data = W.xli_encode(lsb, std12_residuals=residuals, extra_zero_leads=extra)
    ours = [np.asarray(x, dtype=np.int64) for x in ecgdatakit_decode(data)]
    before = [np.asarray(x, dtype=np.int64) for x in sierraecg_decode(data, [""] * (12 + extra))]
    assert len(ours) == len(before) == 12 + extra
    for a, b in zip(ours, before, strict=True):
        np.testing.assert_array_equal(a, b)
    if not residuals:  # no reconstruction: the decoded leads are the written integers
        np.testing.assert_array_equal(np.vstack(ours[:12]), lsb)
