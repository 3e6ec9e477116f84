"""The report as one self-contained HTML page: works as a saved file, offline.

Everything is inline: the printout as SVG (``app.report.plot`` with every diagnosis's evidence
group drawn), the CSS, and one small script (``app.report.script.SELECT_SCRIPT``) that switches
the highlighted diagnosis. No URL of any kind appears in the page (no ``src``, no ``href`` to a
host, no namespace URIs: ``plot.inline_svg`` removes them). Its Content Security Policy
(``content_security_policy``, also sent as a header by the API) allows that one script by its
hash and nothing else to load.

Which diagnosis is highlighted is one attribute, ``data-selected`` (a rank) on the ECG's
``<section>``; generated CSS rules show that diagnosis's evidence group on the tracing and its
details, so the page reads correctly before any script runs, and with scripts off it shows the
top diagnosis (or ``highlight``). The buttons of the ranked list set it (click, Enter/Space,
arrow keys); they carry ``aria-pressed``, and the highlighted one says so in text, so nothing
depends on colour. Every text from the result goes through ``html.escape``.
"""

from __future__ import annotations

from html import escape

from app import __version__
from app.report import plot
from app.report.script import SELECT_SCRIPT, script_hash
from app.report.text import (
    UNTRAINED_BANNER,
    codes_text,
    delta_text,
    diagnosis_heading,
    ecg_facts,
    ecg_title,
    lead_effect_meaning,
    lead_effects_ranked,
    percent,
    placed_spans,
    select_ecgs,
    selected_diagnosis,
    span_description,
)
from app.usecases.results import DiagnoseResult, EcgResult, RankedDiagnosis, ResultWarning

STYLE = """
.ecg-report{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#111;line-height:1.4;max-width:80rem;
  margin:0 auto;padding:0 1rem 2rem}
.ecg-report h1{font-size:1.5rem;margin:.8rem 0 .4rem}
.ecg-report h2{font-size:1.25rem;margin:1.6rem 0 .3rem;border-top:2px solid #333;padding-top:.6rem}
.ecg-report h3{font-size:1.05rem;margin:.6rem 0 .3rem}
.ecg-report h4{font-size:.95rem;margin:.8rem 0 .2rem}
.ecg-report .untrained{background:#b00000;color:#fff;border:4px solid #000;padding:.7rem 1rem;font-size:1.2rem;
  font-weight:700;text-transform:uppercase;letter-spacing:.02em}
.ecg-report .intended-use{border-left:6px solid #333;background:#f4f4f4;padding:.5rem .8rem}
.ecg-report dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.4rem 0}
.ecg-report dl.facts dt{font-weight:600}
.ecg-report dl.facts dd{margin:0;overflow-wrap:anywhere}
.ecg-report .warnings li{margin:.15rem 0}
.ecg-report .tracing svg{display:block;width:100%;max-width:297mm;height:auto;border:1px solid #999}
.ecg-report .below{display:grid;grid-template-columns:minmax(16rem,26rem) 1fr;gap:1.2rem;margin-top:.8rem}
@media (max-width:50rem){.ecg-report .below{grid-template-columns:1fr}}
.ecg-report ol.diagnoses{list-style:none;margin:0;padding:0}
.ecg-report ol.diagnoses li{margin:0 0 .35rem}
.ecg-report ol.diagnoses button{width:100%;text-align:left;font:inherit;padding:.45rem .6rem;border:1px solid #555;
  border-radius:4px;background:#fff;color:#111;cursor:pointer;display:grid;
  grid-template-columns:2.6rem 1fr 5.6rem;grid-template-areas:"rank name p" "rank bar shown";gap:.1rem .4rem}
.ecg-report ol.diagnoses button:hover{background:#f0f4fa}
.ecg-report ol.diagnoses button:focus-visible{outline:3px solid #1d4f91;outline-offset:2px}
.ecg-report ol.diagnoses button[aria-pressed="true"]{border:3px solid #000;background:#e8eef8;font-weight:600}
.ecg-report .rank{grid-area:rank;font-weight:700}
.ecg-report .name{grid-area:name}
.ecg-report .p{grid-area:p;text-align:right;font-variant-numeric:tabular-nums}
.ecg-report button meter{grid-area:bar;width:100%}
.ecg-report .shown{grid-area:shown;display:none;font-size:.8rem;text-align:right}
.ecg-report button[aria-pressed="true"] .shown{display:block}
.ecg-report .detail{display:none}
.ecg-report .knowledge{max-width:50rem}
.ecg-report table{border-collapse:collapse;font-size:.9rem}
.ecg-report td,.ecg-report th{border:1px solid #bbb;padding:.15rem .5rem;text-align:left}
.ecg-report td.num{text-align:right;font-variant-numeric:tabular-nums}
.ecg-report .muted{color:#444;font-size:.9rem}
.ecg-report footer{margin-top:2rem;border-top:1px solid #999;padding-top:.5rem;font-size:.9rem}
@media print{.ecg-report .tracing svg{width:297mm;max-width:none;border:0}
  .ecg-report .detail{display:block!important}.ecg-report ol.diagnoses button{border-width:1px}}
"""


# No fetches, no frames, nothing loaded: the report's own script (by hash), inline styles (the SVG
# carries style attributes) and data: images only.
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src {script_hash(SELECT_SCRIPT)}; style-src 'unsafe-inline'; "
                           "img-src data:; base-uri 'none'; form-action 'none'")


def content_security_policy() -> str:
    """The policy of the report (in its ``<meta>`` and, from the API, its header)."""
    return CONTENT_SECURITY_POLICY


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _warnings(warnings: tuple[ResultWarning, ...]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li><strong>{_e(w.code)}</strong>: {_e(w.message)}"
                    + (f" (leads {_e(', '.join(w.leads))})" if w.leads else "") + "</li>" for w in warnings)
    return f'<ul class="warnings" aria-label="warnings">{items}</ul>'


def _lead_table(d: RankedDiagnosis) -> str:
    if d.lead_effects is None:
        return ('<p class="muted">Lead evidence was not computed for this answer (it is when the report is asked '
                "for through the API, or with <code>explain=leads</code>).</p>")
    ranked = lead_effects_ranked(d.lead_effects)
    biggest = max((abs(e.delta) for e in ranked), default=0.0) or 1.0
    rows = "".join(
        f"<tr><th scope='row'>{_e(e.lead)}</th><td class='num'>{delta_text(e)}</td><td>{lead_effect_meaning(e)}</td>"
        f"<td><meter min='0' max='1' value='{abs(e.delta) / biggest:.3f}' aria-label='relative size'>"
        f"{abs(e.delta) / biggest:.2f}</meter></td></tr>" for e in ranked)
    return ("<p class='muted'>Change in this diagnosis's probability when one lead is masked: negative where the lead "
            "supported it, positive where it argued against it; strongest support first.</p>"
            "<table><thead><tr><th scope='col'>lead</th><th scope='col'>&Delta; probability</th>"
            f"<th scope='col'>effect</th><th scope='col'>size</th></tr></thead><tbody>{rows}</tbody></table>")


def _detail(ecg: EcgResult, d: RankedDiagnosis, prefix: str) -> str:
    spans = placed_spans(d)
    evidence = ("<ol>" + "".join(f"<li>{_e(span_description(p))}</li>" for p in spans) + "</ol>"
                if spans else "<p>No evidence spans.</p>")
    codes = codes_text(d)
    windows = ""
    if d.window_probabilities is not None:
        windows = ("<p class='muted'>per 10 s window: "
                   + _e(", ".join(percent(p) for p in d.window_probabilities)) + "</p>")
    return (f'<div class="detail" id="{prefix}detail-{d.rank}" data-rank="{d.rank}">'
            f"<h3>{_e(diagnosis_heading(d))}</h3>"
            f"<p class='muted'>aggregation {_e(d.aggregation)}" + (f"; codes {_e(codes)}" if codes else "") + "</p>"
            f"{windows}<h4>What it means</h4><p class='knowledge'>{_e(d.knowledge)}</p>"
            "<h4>Evidence on the tracing</h4><p class='muted'>Shaded and hatched on the tracing and labelled E1, "
            "E2 ... (heaviest first): where the model attended for this diagnosis; attention is not a "
            f"measurement.</p>{evidence}<h4>Leads that drove it</h4>{_lead_table(d)}</div>")


def _ecg_rules(ecg: EcgResult, prefix: str) -> str:
    """CSS: show the selected diagnosis's evidence group and details (one rule per rank)."""
    section = f"#{prefix[:-1]}"
    groups = ",".join(f"#{prefix}evidence-{d.rank}" for d in ecg.diagnoses)
    rules = [f"{groups}{{display:none}}"] if groups else []
    for d in ecg.diagnoses:
        rules.append(f'{section}[data-selected="{d.rank}"] #{prefix}evidence-{d.rank}{{display:inline}}')
        rules.append(f'{section}[data-selected="{d.rank}"] #{prefix}detail-{d.rank}{{display:block}}')
    return "\n".join(rules)


def _ecg_section(result: DiagnoseResult, ecg: EcgResult, highlight: int | None) -> tuple[str, str]:
    prefix = f"ecg{ecg.ecg_index}-"
    chosen = selected_diagnosis(ecg, highlight)
    parts = [f'<section class="ecg" id="{prefix[:-1]}" data-selected="{chosen.rank if chosen else 0}" '
             f'aria-labelledby="{prefix}title">',
             f'<h2 id="{prefix}title">{_e(ecg_title(ecg))}</h2>',
             f'<p class="muted">{_e(ecg_facts(ecg))}' + (f"; your reference {_e(ecg.ref)}" if ecg.ref else "") + "</p>",
             _warnings(ecg.warnings)]
    if ecg.tracing is not None:
        svg = plot.inline_svg(plot.tracing_svg(result, ecg, highlight=highlight, all_evidence=True, id_prefix=prefix),
                              prefix)
        parts.append(f'<figure class="tracing" role="group" aria-label="12-lead tracing of {_e(ecg_title(ecg))}, '
                     f'25 mm/s, 10 mm/mV, with the highlighted diagnosis\'s evidence shaded">{svg}</figure>')
    else:
        parts.append("<p class='muted'>No tracing was kept for this answer.</p>")
    if chosen is None:
        parts.append("<p>No diagnosis reached the threshold.</p></section>")
        return "".join(parts), ""
    buttons = "".join(
        f'<li><button type="button" data-rank="{d.rank}" data-label="{_e(diagnosis_heading(d))}" '
        f'aria-pressed="{"true" if d is chosen else "false"}" aria-controls="{prefix}detail-{d.rank}">'
        f'<span class="rank">#{d.rank}</span><span class="name">{_e(d.label)}</span>'
        f'<span class="p">{percent(d.probability)}</span>'
        f'<meter min="0" max="1" value="{d.probability:.4f}" aria-hidden="true"></meter>'
        f'<span class="shown">highlighted</span></button></li>' for d in ecg.diagnoses)
    parts += ['<div class="below"><div><h3 id="', prefix, 'list">Ranked diagnoses</h3>',
              '<p class="muted">Choose one to show its evidence on the tracing (click, or Tab to a button and press '
              'Enter; arrow keys move through the list).</p>',
              f'<p class="selected-status" role="status" aria-live="polite">Highlighted on the tracing: '
              f'{_e(diagnosis_heading(chosen))}</p>',
              f'<ol class="diagnoses" aria-labelledby="{prefix}list">{buttons}</ol></div>',
              '<div class="details">', *(_detail(ecg, d, prefix) for d in ecg.diagnoses), "</div></div>",
              "</section>"]
    return "".join(parts), _ecg_rules(ecg, prefix)


def report_html(result: DiagnoseResult, *, ecg_index: int | None = None, highlight: int | None = None) -> str:
    """The HTML report of ``result``'s ECGs (every one, or the one at ``ecg_index``); ``highlight``:
    the rank of the diagnosis highlighted at first (default and fallback: the top one)."""
    ecgs = select_ecgs(result, ecg_index)
    sections, rules = zip(*(_ecg_section(result, ecg, highlight) for ecg in ecgs), strict=True)
    m, ls = result.model, result.label_set
    title = ecg_title(ecgs[0]) if len(ecgs) == 1 else f"{len(ecgs)} ECGs"
    banner = (f'<p class="untrained" role="note"><strong>{_e(UNTRAINED_BANNER)}.</strong> '
              "Do not use it for any patient.</p>" if m.untrained else "")
    facts = [("model", f"{m.name} {m.version}" + (" (UNTRAINED)" if m.untrained else "")),
             ("precision / provider", f"{m.precision} / {m.provider}"),
             ("label set", f"{ls.name}, version {ls.version}"),
             ("request", result.request_id)]
    facts_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    body = "".join([
        '<main class="ecg-report">', banner,
        f"<h1>ECG report: {_e(title)}</h1>",
        f'<p class="intended-use"><strong>Intended use.</strong> {_e(result.intended_use)}</p>',
        f'<dl class="facts">{facts_html}</dl>',
        _warnings(tuple(w for w in result.warnings if not (m.untrained and w.code == "untrained_model"))),
        *sections,
        f"<footer><p>{_e(result.intended_use)}</p><p class='muted'>Model {_e(m.name)} {_e(m.version)}, label set "
        f"{_e(ls.name)} version {_e(ls.version)}; rendered by ecgfm-ked {_e(__version__)}.</p></footer>",
        "</main>",
    ])
    style = STYLE + "\n".join(r for r in rules if r)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>ECG report: {_e(title)}</title><style>{style}</style></head>"
            f"<body>{body}<script>{SELECT_SCRIPT}</script></body></html>\n")
