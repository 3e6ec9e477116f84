"""The report's one script and the CSP source that allows it (no matplotlib here: the GET / page
imports it at start)."""

from __future__ import annotations

import base64
import hashlib

# The only script of the report (and, verbatim, part of the GET / page's): delegated listeners,
# so it also works for a report inserted into another page.
SELECT_SCRIPT = """(function () {
  "use strict";
  function buttonOf(target) {
    return target && target.closest ? target.closest(".ecg-report section.ecg button[data-rank]") : null;
  }
  function select(button) {
    var section = button.closest("section.ecg");
    section.setAttribute("data-selected", button.getAttribute("data-rank"));
    section.querySelectorAll("button[data-rank]").forEach(function (b) {
      b.setAttribute("aria-pressed", b === button ? "true" : "false");
    });
    var status = section.querySelector(".selected-status");
    if (status) { status.textContent = "Highlighted on the tracing: " + button.getAttribute("data-label"); }
  }
  document.addEventListener("click", function (event) {
    var button = buttonOf(event.target);
    if (button) { select(button); }
  });
  document.addEventListener("keydown", function (event) {
    var button = buttonOf(event.target);
    if (!button || (event.key !== "ArrowDown" && event.key !== "ArrowUp")) { return; }
    var all = Array.prototype.slice.call(button.closest("section.ecg").querySelectorAll("button[data-rank]"));
    var next = all[all.indexOf(button) + (event.key === "ArrowDown" ? 1 : -1)];
    if (next) { event.preventDefault(); next.focus(); select(next); }
  });
})();
"""


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"
