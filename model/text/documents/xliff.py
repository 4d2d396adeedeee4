"""XLIFF 1.2 and 2.0 (.xlf, .xliff): each unit's source without a target is a segment.

Inline codes stay: paired ones (`g`, `pc`, `mrk`) become `<span>`s over the words, the others
(`x`, `ph`, `bx`, `ex`, `bpt`, `ept`, `sc`, `ec`, ...) `<img>`s at their points, written into the
target as copies of the source's. The target is marked for review (1.2 `state`
"needs-review-translation"; 2.0 segment `state` "translated"). Units marked `translate="no"`, and
those that already have a target with text, are left as they are.
"""

from __future__ import annotations

from lxml import etree

from model.text.documents.base import DocumentError, Extracted, Limits, Mixed, has_words, local, parse_xml, xml_bytes

V1 = "urn:oasis:names:tc:xliff:document:1.2"
V2 = "urn:oasis:names:tc:xliff:document:2.0"
PAIRED = frozenset({"g", "pc", "mrk"})


def read(data: bytes, limits: Limits) -> Extracted:
    tree = parse_xml(data, "the XLIFF file")
    namespace = etree.QName(tree.getroot()).namespace
    if local(tree.getroot()) != "xliff" or namespace not in (V1, V2):
        raise DocumentError("corrupt", "not an XLIFF 1.2 or 2.0 file: the root must be <xliff> in the XLIFF namespace")
    units = tree.getroot().iter(f"{{{V1}}}trans-unit") if namespace == V1 else \
        tree.getroot().iter(f"{{{V2}}}segment")
    ns = f"{{{namespace}}}"
    found: list[tuple[Mixed, etree._Element]] = []
    for unit in units:
        source, target = unit.find(f"{ns}source"), unit.find(f"{ns}target")
        holder = unit if namespace == V1 else unit.getparent()
        if source is None or holder.get("translate") == "no" or (target is not None and "".join(target.itertext())):
            continue
        mixed = Mixed(source, lambda child: local(child) in PAIRED)
        if has_words(mixed.segment):
            found.append((mixed, unit))

    def write(translations: list[str]) -> bytes:
        for (mixed, unit), translation in zip(found, translations):
            target = unit.find(f"{ns}target")
            if target is None:
                target = unit.makeelement(f"{ns}target", {})
                mixed.element.addnext(target)
                target.tail = mixed.element.tail
            mixed.write_into(target, translation, copy_atoms=True)
            if namespace == V1:
                target.set("state", "needs-review-translation")
            else:
                unit.set("state", "translated")
        return xml_bytes(tree, data)

    return Extracted(data, [mixed.segment for mixed, _ in found], write)
