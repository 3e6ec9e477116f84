"""XML helpers shared by the HL7 aECG, GE MUSE and Philips Sierra readers.

Files are parsed with defusedxml: DTDs allowed, entity declarations and external references
refused, nothing is fetched. Element lookups go by local name, ignoring namespaces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from app.errors import MalformedFile


def root_name_from_head(head: bytes) -> str | None:
    """Local name of the first element in an XML prefix, or None if it is not XML."""
    if head.startswith(b"\xef\xbb\xbf"):
        text = head[3:].decode("utf-8", "replace")
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", "replace")
    else:
        text = head.decode("latin-1")
    text = text.lstrip()
    if not text.startswith("<"):
        return None
    text = re.sub(r"<\?.*?\?>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<!DOCTYPE[^\[>]*(\[.*?\]\s*)?>", "", text, flags=re.S | re.I)
    m = re.match(r"\s*<([A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)", text)
    return m.group(2) if m else None


def parse_xml(path: Path, label: str) -> Element:
    """Parse with defusedxml; every failure becomes MalformedFile naming the problem."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as DET
    from defusedxml import DefusedXmlException

    try:
        root = DET.parse(str(path), forbid_dtd=False, forbid_entities=True, forbid_external=True).getroot()
    except DefusedXmlException as exc:
        raise MalformedFile(
            f"{label} XML refused: it declares entities or references external resources "
            f"({type(exc).__name__}: {exc}); nothing was fetched"
        ) from None
    except ParseError as exc:
        raise MalformedFile(f"{label} XML is not well-formed (truncated?): {exc}") from None
    except (OSError, ValueError) as exc:
        raise MalformedFile(f"{label} XML cannot be read: {exc}") from None
    if root is None:  # a parsed document always has a root; typeshed allows None for empty trees
        raise MalformedFile(f"{label} XML has no root element")
    return root


def parse_root(path: Path, label: str, root_name: str) -> Element:
    """``parse_xml``, then MalformedFile unless the root element is ``root_name``."""
    root = parse_xml(path, label)
    if local(root.tag) != root_name:
        raise MalformedFile(
            f"{label}: root element is {local(root.tag)!r}, expected {root_name!r}"
        )
    return root


def local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def children(el: Element, name: str) -> list[Element]:
    return [c for c in el if local(c.tag) == name]


def child(el: Element, name: str) -> Element | None:
    for c in el:
        if local(c.tag) == name:
            return c
    return None


def text_of(el: Element | None) -> str:
    """The element's text, stripped; "" for a missing element."""
    return (el.text or "").strip() if el is not None else ""


class XmlRootReader:
    """Reader base for one XML document type, recognised by its root element's local name."""

    root_element: str
    extensions: tuple[str, ...] = (".xml",)

    def claims(self, path: Path, head: bytes) -> bool:
        return root_name_from_head(head) == self.root_element

    def companions(self, path: Path) -> list[Path]:
        return []
