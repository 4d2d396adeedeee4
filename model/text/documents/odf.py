"""OpenDocument (.odt, .odp): every paragraph and heading of the body, the styles' headers and
footers, notes, frames, comments and slide notes, and the document title.

ODF paragraphs are mixed content: text with `text:span` (formatting) and `text:a` (links) around
parts of it; those become `<span>`s over the words, and everything else inside a paragraph
(spaces, tabs, line breaks, notes, frames, bookmarks) an `<img>` at its point. A note's or a
frame's own paragraphs are segments of their own. Every other member is copied as it was.
"""

from __future__ import annotations

from lxml import etree

from model.text.documents.base import (
    Extracted,
    Limits,
    Mixed,
    Package,
    has_words,
    package_writer,
    parse_xml,
    plain_element,
)

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
DC = "{http://purl.org/dc/elements/1.1/}"
PARTS = ("content.xml", "styles.xml", "meta.xml")
CONTAINERS = frozenset({f"{TEXT}span", f"{TEXT}a"})


def read(data: bytes, limits: Limits) -> Extracted:
    package = Package(data, limits)
    segments: list[str] = []
    writers: list = []
    trees: dict[str, tuple[etree._ElementTree, bytes]] = {}
    for name in PARTS:
        if name not in package.names:
            continue
        raw = package.read(name)
        tree = parse_xml(raw, name)
        trees[name] = (tree, raw)
        for element in tree.getroot().iter(f"{TEXT}p", f"{TEXT}h", f"{DC}title"):
            if element.tag == f"{DC}title":
                segment, write_one = plain_element(element)
            else:
                paragraph = Mixed(element, lambda child: child.tag in CONTAINERS)
                segment, write_one = paragraph.segment, paragraph.write
            if has_words(segment):
                writers.append((len(segments), write_one))
                segments.append(segment)
    return Extracted(data, segments, package_writer(package, trees, writers))

