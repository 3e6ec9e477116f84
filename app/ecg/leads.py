"""Standard 12-lead names, spelling variants, and derivation of limb leads.

``canonical_lead`` maps the many ways files spell a lead ("AVR", "Lead II", "LEAD_II",
"v1", "DII", "C1") to the standard name; leads that are not part of the standard
12-lead ECG (Frank vx/vy/vz, modified leads such as MLII) map to ``None``.

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


def _key(name: str) -> str:
    key = _SEPARATORS.sub("", name.strip().lower())
    return key.removeprefix("lead")


def canonical_lead(name: str) -> str | None:
    """Standard lead name for a spelling variant, or None for a non-standard lead."""
    if not isinstance(name, str):
        return None
    return _BY_KEY.get(_key(name))


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL and aVF computed from leads I and II (same units as the inputs)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }
