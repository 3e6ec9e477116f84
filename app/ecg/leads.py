"""Standard 12-lead names, spelling variants, and derivation of limb leads.

``canonical_lead`` maps the many ways files spell a lead ("AVR", "Lead II", "LEAD_II",
"v1", "DII", "C1") to the standard name; leads that are not part of the standard
12-lead ECG (Frank vx/vy/vz, modified leads such as MLII) map to ``None``.
``is_lead_name`` is the looser test readers use to tell lead columns from other signals
(it accepts those non-standard leads too); ``strip_lead_prefix`` drops "ECG "/"Lead " from
such labels. Readers otherwise keep lead names as the file spells them.

Einthoven/Goldberger relations used to derive missing limb leads from I and II:
III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2.
"""

from __future__ import annotations

import re

import numpy as np

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS_FROM_I_II: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")

_BY_KEY: dict[str, str] = {lead.lower(): lead for lead in STANDARD_LEADS}
# Brazilian/French Einthoven naming (DI, DII, DIII) and IEC chest names (C1..C6).
_BY_KEY.update({"di": "I", "dii": "II", "diii": "III"})
_BY_KEY.update({f"c{i}": f"V{i}" for i in range(1, 7)})

_SEPARATORS = re.compile(r"[\s_\-.:]+")

# Looser recognition for column/signal labels: also non-standard leads (V7-V9, V3R-V9R,
# Frank vx/vy/vz, MLII), inverted leads ("-aVR") and an "ECG"/"EKG"/"Lead" prefix.
_LABEL_RE = re.compile(
    r"^-?(?:i|ii|iii|avr|avl|avf|v[1-9]|v[3-9]r|vx|vy|vz|mlii)$",
    re.IGNORECASE,
)
_LABEL_PREFIX_RE = re.compile(r"^(?:ecg|ekg|lead)[\s_:\-]*", re.IGNORECASE)


def _key(name: str) -> str:
    key = _SEPARATORS.sub("", name.strip().lower())
    return key.removeprefix("lead")


def canonical_lead(name: str) -> str | None:
    """Standard lead name for a spelling variant, or None for a non-standard lead."""
    return _BY_KEY.get(_key(name))


def strip_lead_prefix(label: str) -> str:
    """``"ECG I"`` -> ``"I"``, ``"EKG-V2"`` -> ``"V2"``; other labels unchanged (trimmed)."""
    s = label.strip()
    rest = _LABEL_PREFIX_RE.sub("", s, count=1).strip()
    return rest if rest and _LABEL_RE.match(rest) else s


def is_lead_name(label: str) -> bool:
    """True for the usual ECG lead spellings (I, ii, aVR, AVL, V1..V9, V4R, ECG II, ...)."""
    return bool(_LABEL_RE.match(strip_lead_prefix(label)))


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL and aVF computed from leads I and II (same units as the inputs)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }
