"""The clinician's report: a typed diagnose result -> bytes (no HTTP).

* ``paper``: the printed layout in millimetres (25 mm/s, 10 mm/mV, 3 x 4 leads + a lead II
  rhythm strip, calibration pulses); ``plot``: that layout drawn with matplotlib (SVG, PNG, a
  PDF page); ``html``: a self-contained HTML report; ``pdf``: ``report_pdf``; ``render``: one
  entry point per media type, for the API.

matplotlib is imported by ``plot``, ``html``, ``pdf`` and ``render`` only, never by this package
itself, so a process that never renders a report never loads it.
"""
