"""Our format readers against ecgdatakit 2.0 on the same files: time to read one record.

    python benchmarks/format_readers_bench.py                 # 15 reads each, after 2 warm-ups
    python benchmarks/format_readers_bench.py --repeats 31

The files: the shared record cinc2021-a/E07500 (10 s, 12 leads, 500 Hz; WFDB .hea/.mat as
published) and that record written by the project's independent test writers
(tests/formats/writers_*.py) as DICOM (2.5 uV LSB), HL7 aECG, GE MUSE XML, Philips Sierra XML
(plain and XLI-compressed), EDF and SCP-ECG (5 uV; uncompressed, and second differences
coded with the default Huffman table). Each side reads the path from
the file system: ours ``app.ecg.readers.read_any`` (detection + read + conversion to mV),
ecgdatakit ``FileParser.parse(path).to_physical()`` (detection + parse + scaling), in one
process, alternating, ``--repeats`` times after ``--warmup`` reads each. Reported: median and p90
per read (ms) and the ratio ecgdatakit / ours. For SCP-ECG our reader checks the structure and
CRCs and then calls ecgdatakit's SCP parser, so its time is the library's plus the checks.
Results: a table on stdout and ``benchmarks/results/format_readers_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORD = "cinc2021-a/E07500"


def _files(tmp: Path) -> dict[str, Path]:
    from tests.formats import writers_scp as S
    from tests.formats import writers_tabular as T
    from tests.formats import writers_xml_dicom as W

    rec = W.load(RECORD)
    T.write_edf(tmp / "a.edf", rec.signals, rec.fs, list(rec.names))
    return {
        "wfdb": W.SAMPLES / f"{RECORD}.hea",
        "dicom": W.write_dicom(tmp / "a.dcm", rec),
        "hl7_aecg": W.write_aecg(tmp / "a.xml", rec),
        "ge_muse": W.write_muse(tmp / "m.xml", rec),
        "philips_sierra": W.write_sierra(tmp / "s.xml", rec),
        "philips_sierra_xli": W.write_sierra(tmp / "sx.xml", rec, xli=True),
        "edf": tmp / "a.edf",
        "scp_ecg": S.write_scp(tmp / "a.scp", rec.signals, rec.fs, rec.names, step_uv=5.0).path,
        "scp_ecg_huffman": S.write_scp(tmp / "h.scp", rec.signals, rec.fs, rec.names, step_uv=5.0,
                                       diff=2, huffman=True).path,
    }


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "format_readers_bench.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    import ecgdatakit
    from ecgdatakit import FileParser

    from app.ecg.readers import read_any

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, path in _files(Path(tmp)).items():
            def ours(p: Path = path) -> object:
                return read_any(p)

            def theirs(p: Path = path) -> object:
                return FileParser.parse(p).to_physical()

            for _ in range(args.warmup):
                ours()
                theirs()
            a: list[float] = []
            b: list[float] = []
            for _ in range(args.repeats):
                a.append(_time(ours))
                b.append(_time(theirs))
            q = lambda xs: statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]  # noqa: E731
            rows.append({
                "format": fmt, "file_bytes": path.stat().st_size,
                "ours_median_ms": statistics.median(a), "ours_p90_ms": q(a),
                "ecgdatakit_median_ms": statistics.median(b), "ecgdatakit_p90_ms": q(b),
                "ratio": statistics.median(b) / statistics.median(a),
            })

    print(f"{'format':20} {'bytes':>9} {'ours ms':>9} {'p90':>7} {'ecgdatakit ms':>14} {'p90':>7} {'ratio':>6}")
    for r in rows:
        print(f"{r['format']:20} {r['file_bytes']:9d} {r['ours_median_ms']:9.2f} {r['ours_p90_ms']:7.2f} "
              f"{r['ecgdatakit_median_ms']:14.2f} {r['ecgdatakit_p90_ms']:7.2f} {r['ratio']:6.2f}")
    result = {
        "record": RECORD, "repeats": args.repeats, "warmup": args.warmup,
        "ecgdatakit": ecgdatakit.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
