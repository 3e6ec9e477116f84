"""GET /: a small page for a person: choose or drop ECG files, enter an API key, pick a label set,
and read the report.

The page holds no data and needs no key itself; what it shows comes from the same API a hospital
system calls, with the key the person types: ``GET /label-sets`` for the choice of sets and
``POST /diagnose`` with ``Accept: text/html`` for the report, which is inserted into the page
(its script removed: the page's own script switches the highlighted diagnosis, with the report's
own code, ``app.report.script.SELECT_SCRIPT``). The key is kept in ``sessionStorage`` only (this
tab, until it closes; "Forget the key" removes it), never in a cookie or ``localStorage``.

Everything is inline and nothing is loaded from elsewhere; the Content Security Policy allows
the page's one script by its hash, inline styles (the report's SVG carries style attributes)
and fetches to this origin only. Labelled controls, a keyboard path through all of them, status
and errors announced in live regions, and no meaning carried by colour alone.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.report.script import SELECT_SCRIPT, script_hash

router = APIRouter()

PAGE_SCRIPT = """(function () {
  "use strict";
  var KEY = "ecgfm-ked-api-key";
  var $ = function (id) { return document.getElementById(id); };
  var keyInput = $("api-key"), filesInput = $("files"), drop = $("drop-zone"), fileList = $("file-list");
  var setSelect = $("label-set"), statusLine = $("status"), errorBox = $("error"), report = $("report");
  var actions = $("actions");
  var chosen = [];
  var last = null;

  function say(text) { statusLine.textContent = text; }
  function fail(text) { errorBox.textContent = text; errorBox.hidden = !text; }
  function headers(accept) {
    var h = { "Accept": accept };
    if (keyInput.value.trim()) { h["Authorization"] = "Bearer " + keyInput.value.trim(); }
    return h;
  }
  async function problem(response) {
    try {
      var body = await response.json();
      if (body && body.error) { return response.status + " " + body.error.code + ": " + body.error.message; }
    } catch (e) { /* not JSON */ }
    return "the service answered " + response.status;
  }
  function showFiles() {
    fileList.textContent = chosen.length
      ? chosen.length + " file(s): " + chosen.map(function (f) { return f.name; }).join(", ")
      : "No file chosen yet.";
  }
  function choose(list) { chosen = Array.prototype.slice.call(list || []); showFiles(); }

  keyInput.value = sessionStorage.getItem(KEY) || "";
  keyInput.addEventListener("input", function () {
    if (keyInput.value) { sessionStorage.setItem(KEY, keyInput.value); } else { sessionStorage.removeItem(KEY); }
  });
  keyInput.addEventListener("change", function () { if (keyInput.value.trim()) { loadSets(); } });
  $("forget-key").addEventListener("click", function () {
    sessionStorage.removeItem(KEY); keyInput.value = ""; say("The key is forgotten."); keyInput.focus();
  });

  async function loadSets() {
    fail("");
    try {
      var response = await fetch("label-sets", { headers: headers("application/json") });
      if (!response.ok) { fail("Label sets: " + await problem(response)); return; }
      var sets = await response.json();
      var keep = setSelect.value;
      while (setSelect.options.length > 1) { setSelect.remove(1); }
      sets.forEach(function (s) {
        var option = document.createElement("option");
        option.value = s.name;
        option.textContent = s.name + " (" + s.labels.length + " labels, version " + s.version + ")";
        setSelect.appendChild(option);
      });
      setSelect.value = keep;
      say(sets.length + " label sets loaded.");
    } catch (e) { fail("Label sets: the service could not be reached (" + e.message + ")"); }
  }
  $("load-sets").addEventListener("click", loadSets);

  filesInput.addEventListener("change", function () { choose(filesInput.files); });
  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (event) { event.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    drop.addEventListener(type, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) { choose(event.dataTransfer.files); }
  });

  function request(accept) {
    var form = new FormData();
    chosen.forEach(function (f) { form.append("files", f, f.name); });
    var params = new URLSearchParams();
    if (setSelect.value) { params.set("label_set", setSelect.value); }
    params.set("top_k", $("top-k").value || "5");
    return fetch("diagnose?" + params.toString(), { method: "POST", headers: headers(accept), body: form });
  }

  function show(text) {
    var doc = new DOMParser().parseFromString(text, "text/html");
    doc.querySelectorAll("script").forEach(function (s) { s.remove(); });
    var main = doc.querySelector("main.ecg-report");
    var nodes = [];
    doc.querySelectorAll("head style").forEach(function (s) { nodes.push(document.importNode(s, true)); });
    if (main) { nodes.push(document.importNode(main, true)); }
    report.replaceChildren.apply(report, nodes);
    report.focus();
  }

  $("diagnose-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    fail("");
    if (!chosen.length) { fail("Choose or drop the ECG file(s) first."); filesInput.focus(); return; }
    var submit = $("submit");
    submit.disabled = true;
    report.setAttribute("aria-busy", "true");
    say("Scoring and drawing the report (with lead evidence: it takes a few seconds)...");
    try {
      var response = await request("text/html");
      if (!response.ok) { fail("Diagnose: " + await problem(response)); say(""); return; }
      var text = await response.text();
      last = { html: text, id: response.headers.get("X-Request-ID") || "report" };
      show(text);
      actions.hidden = false;
      say("Report ready. Choose a diagnosis in the list to show its evidence on the tracing.");
    } catch (e) {
      fail("Diagnose: the service could not be reached (" + e.message + ")"); say("");
    } finally {
      submit.disabled = false;
      report.removeAttribute("aria-busy");
    }
  });

  function download(blob, name) {
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
  }
  $("save-html").addEventListener("click", function () {
    if (last) { download(new Blob([last.html], { type: "text/html" }), "ecg-report-" + last.id + ".html"); }
  });
  $("get-pdf").addEventListener("click", async function () {
    fail("");
    say("Scoring again for the PDF...");
    try {
      var response = await request("application/pdf");
      if (!response.ok) { fail("PDF: " + await problem(response)); say(""); return; }
      download(await response.blob(), "ecg-report-" + (response.headers.get("X-Request-ID") || "report") + ".pdf");
      say("PDF downloaded.");
    } catch (e) { fail("PDF: the service could not be reached (" + e.message + ")"); say(""); }
  });

  showFiles();
  if (keyInput.value.trim()) { loadSets(); }
})();
""" + SELECT_SCRIPT

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#111;background:#fff;margin:0;line-height:1.45}
.page{max-width:80rem;margin:0 auto;padding:0 1rem 2rem}
h1{font-size:1.6rem;margin:1rem 0 .3rem}
.note{border-left:6px solid #333;background:#f4f4f4;padding:.5rem .8rem;max-width:60rem}
form{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:1rem;align-items:stretch;margin:1rem 0}
fieldset{border:1px solid #777;border-radius:6px;padding:.6rem .9rem;margin:0;min-width:0}
legend{font-weight:700;padding:0 .3rem}
label{display:block;font-weight:600;margin:.3rem 0 .15rem}
input,select,button{font:inherit}
input[type=password],input[type=number],select{width:100%;box-sizing:border-box;padding:.35rem;border:1px solid #555;
  border-radius:4px}
button{padding:.45rem .9rem;border:2px solid #1d3f73;border-radius:4px;background:#1d3f73;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1d3f73}
button:disabled{opacity:.6;cursor:progress}
:focus-visible{outline:3px solid #c25100;outline-offset:2px}
.drop-zone{border:3px dashed #555;border-radius:6px;padding:.6rem;text-align:left;overflow-wrap:anywhere}
.drop-zone input{max-width:100%}
.drop-zone.over{border-style:solid;background:#eef3fb}
.drop-zone.over::after{content:"Drop the files to choose them";display:block;font-weight:700}
.help{font-size:.9rem;color:#333;margin:.3rem 0}
#submit{font-size:1.1rem;grid-column:1/-1;justify-self:start}
#status{font-weight:600;min-height:1.4em}
#error{border:3px solid #900;background:#fff0f0;padding:.5rem .8rem;font-weight:600}
#error::before{content:"Error: "}
#error[hidden]{display:none}
#actions{display:flex;gap:.6rem;margin:.4rem 0}
#report:focus{outline:none}
"""

PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ECGFM-KED: ECG report</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><div class="page">
<header><h1>ECGFM-KED: ECG report</h1>
<p class="note"><strong>Decision support for qualified clinicians, not a diagnosis.</strong> This page sends the ECG
files you choose to this service's <code>POST /diagnose</code> (the API a hospital system uses) and shows the report it
answers with. It stores nothing; the API key stays in this browser tab.</p></header>
<main>
<form id="diagnose-form" novalidate>
<fieldset><legend>1. API key</legend>
<label for="api-key">API key</label>
<input id="api-key" name="api-key" type="password" autocomplete="off" spellcheck="false" aria-describedby="key-help">
<p id="key-help" class="help">A key with the <code>diagnose</code> scope (an administrator makes one with
<code>ecgfm-ked keys create</code>). Kept in this tab's session storage only, until the tab closes.</p>
<button type="button" id="forget-key" class="secondary">Forget the key</button>
</fieldset>
<fieldset><legend>2. ECG files</legend>
<div id="drop-zone" class="drop-zone">
<label for="files">Choose ECG files (or drop them here)</label>
<input id="files" name="files" type="file" multiple aria-describedby="files-help file-list">
<p id="files-help" class="help">A WFDB record's <code>.hea</code> with its <code>.dat</code>/<code>.mat</code>, a
<code>.zip</code>, DICOM, HL7 aECG, GE MUSE or Philips XML, EDF, CSV, NPY, HDF5: every record is scored.</p>
<p id="file-list" class="help" aria-live="polite"></p>
</div>
</fieldset>
<fieldset><legend>3. Diagnoses</legend>
<label for="label-set">Label set</label>
<select id="label-set" name="label-set"><option value="">the service's default set</option></select>
<p class="help"><button type="button" id="load-sets" class="secondary">Load the label sets</button></p>
<label for="top-k">Diagnoses listed per ECG</label>
<input id="top-k" name="top-k" type="number" min="1" max="100" value="5">
</fieldset>
<button type="submit" id="submit">Diagnose</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<div id="error" role="alert" hidden></div>
<div id="actions" hidden>
<button type="button" id="save-html" class="secondary">Save this report (HTML file)</button>
<button type="button" id="get-pdf" class="secondary">Download it as PDF (scores again)</button>
</div>
<div id="report" tabindex="-1" aria-label="report" aria-live="off"></div>
</main></div>
<script>{PAGE_SCRIPT}</script></body></html>
"""

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {script_hash(PAGE_SCRIPT)}; style-src 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
async def page() -> HTMLResponse:
    """The page (public: it holds no data; every call it makes sends the key typed into it)."""
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                       "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
