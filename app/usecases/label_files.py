"""Label files: ad-hoc diagnoses (name, description, codes) written by hand, scored without
being registered (``ecgfm-ked diagnose --labels-file``).

Two formats, told apart by content (JSON starts with ``[`` or ``{``; anything else is CSV):

* JSON: a list of objects, or ``{"labels": [...]}``; each object has ``name`` and
  ``description`` and optionally ``codes`` (``{"SNOMED CT": "164889003"}``), ``synonyms``
  (a list) and ``encode_text`` (``"description"``, the default, or ``"name"``), as in
  ``POST /labels``.
* CSV with a header row: columns ``name`` and ``description``, optional ``encode_text`` and
  ``synonyms`` (separated by ``|``); every other column is a code system (its header, e.g.
  ``SNOMED CT``) and its cells the codes (several separated by ``|``); empty cells are skipped.

Labels are returned as validated ``LabelDraft``s, in file order; a problem raises
``InvalidInput`` naming the file and the entry.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from app.errors import InvalidInput, MalformedFile
from app.knowledge.types import CODE_SEPARATOR, ENCODE_TEXT_CHOICES, LabelDraft, name_key

JSON_KEYS = frozenset({"name", "description", "codes", "synonyms", "encode_text"})
CSV_FIELDS = ("name", "description", "encode_text", "synonyms")
MAX_FILE_BYTES = 8 * 1024 * 1024
_EXTRA_CELLS = "\0extra"  # DictReader key of cells beyond the header


def read_label_file(path: Path) -> list[LabelDraft]:
    """The labels of a JSON or CSV label file (see the module docstring)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path}: label file is {size} bytes; the limit is {MAX_FILE_BYTES}")
        content = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MalformedFile(f"{path}: cannot be read ({exc.strerror})", details={"path": str(path)}) from None
    except UnicodeDecodeError:
        raise MalformedFile(f"{path}: a label file must be UTF-8 text", details={"path": str(path)}) from None
    return parse_labels(content, str(path))


def parse_labels(content: str, origin: str) -> list[LabelDraft]:
    """Labels from label-file text; ``origin`` names the file in error messages."""
    stripped = content.lstrip()
    if not stripped:
        raise InvalidInput(f"{origin}: the label file holds no label")
    drafts = _from_json(stripped, origin) if stripped[:1] in ("[", "{") else _from_csv(content, origin)
    if not drafts:
        raise InvalidInput(f"{origin}: the label file holds no label")
    seen: set[str] = set()
    for draft in drafts:
        key = name_key(draft.name)
        if key in seen:
            raise InvalidInput(f"{origin}: label {draft.name!r} is listed more than once")
        seen.add(key)
    return drafts


def _draft(values: dict[str, Any], where: str) -> LabelDraft:
    try:
        return LabelDraft(
            name=values["name"], description=values["description"], synonyms=tuple(values.get("synonyms", ())),
            codes=dict(values.get("codes", {})), encode_text=values.get("encode_text") or "description",
        ).validated()
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", details=exc.details) from None


def _from_json(content: str, origin: str) -> list[LabelDraft]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise MalformedFile(f"{origin}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    items = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InvalidInput(f"{origin}: expected a list of labels or {{\"labels\": [...]}}")
    return [_json_label(item, f"{origin}, label {i + 1}") for i, item in enumerate(items)]


def _json_label(item: object, where: str) -> LabelDraft:
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: expected an object with name and description")
    unknown = sorted(set(item) - JSON_KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {unknown}; expected {sorted(JSON_KEYS)}")
    for key in ("name", "description"):
        if not isinstance(item.get(key), str):
            raise InvalidInput(f"{where}: {key!r} must be a string")
    codes = item.get("codes", {})
    if not isinstance(codes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in codes.items()):
        raise InvalidInput(f"{where}: 'codes' must map code systems to code strings")
    synonyms = item.get("synonyms", [])
    if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
        raise InvalidInput(f"{where}: 'synonyms' must be a list of strings")
    encode_text = item.get("encode_text", "description")
    if encode_text not in ENCODE_TEXT_CHOICES:
        raise InvalidInput(f"{where}: 'encode_text' must be one of {list(ENCODE_TEXT_CHOICES)}")
    return _draft(item, where)


def _from_csv(content: str, origin: str) -> list[LabelDraft]:
    reader = csv.DictReader(io.StringIO(content), restkey=_EXTRA_CELLS)
    try:
        header = [name.strip() for name in reader.fieldnames or []]
        rows = list(reader)
    except csv.Error as exc:
        raise MalformedFile(f"{origin}: not valid CSV ({exc})") from None
    missing = [f for f in ("name", "description") if f not in header]
    if missing:
        raise InvalidInput(f"{origin}: a CSV label file needs a header row with columns name and description "
                           f"(missing: {', '.join(missing)}); or give JSON")
    drafts = []
    for line, row in enumerate(rows, start=2):
        where = f"{origin}, row {line}"
        if _EXTRA_CELLS in row:
            raise InvalidInput(f"{where}: more cells than header columns")
        cells = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue  # blank line
        encode_text = cells.get("encode_text") or "description"
        if encode_text not in ENCODE_TEXT_CHOICES:
            raise InvalidInput(f"{where}: encode_text must be one of {list(ENCODE_TEXT_CHOICES)}")
        codes = {k: v for k, v in cells.items() if k not in CSV_FIELDS and k and v}
        synonyms = [s.strip() for s in cells.get("synonyms", "").split(CODE_SEPARATOR) if s.strip()]
        drafts.append(_draft({"name": cells["name"], "description": cells["description"], "codes": codes,
                              "synonyms": synonyms, "encode_text": encode_text}, where))
    return drafts
