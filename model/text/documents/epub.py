"""EPUB (.epub): the XHTML chapters the package lists, its title and its table of contents.

Each block of a chapter whose content is inline (a paragraph, a heading, a list item, a cell,
a caption) is a segment; its inline elements (`em`, `a`, `span`, ...) become `<span>`s over the
words, and images, breaks and code `<img>`s at their points. Styles, images, fonts and the
package's other members are copied as they were.
"""

from __future__ import annotations

import posixpath

from lxml import etree

from model.text import markup
from model.text.documents.base import (
    DocumentError,
    Extracted,
    Limits,
    Mixed,
    Package,
    has_words,
    local,
    package_writer,
    parse_xml,
    plain_element,
)

CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
OPF = "{http://www.idpf.org/2007/opf}"
DC = "{http://purl.org/dc/elements/1.1/}"
NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
BLOCKS = frozenset("p h1 h2 h3 h4 h5 h6 li td th dt dd caption figcaption blockquote div title label summary "
                   "legend".split())
INLINE = markup.INLINE_TAGS - markup.VOID_TAGS - markup.UNTRANSLATED_TAGS
CHAPTER_TYPES = ("application/xhtml+xml", "text/html")


def read(data: bytes, limits: Limits) -> Extracted:
    package = Package(data, limits)
    opf_name = _rootfile(package)
    opf_raw = package.read(opf_name)
    opf = parse_xml(opf_raw, opf_name)
    trees = {opf_name: (opf, opf_raw)}
    segments: list[str] = []
    writers: list = []

    def add(segment: str, write_one) -> None:
        if has_words(segment):
            writers.append((len(segments), write_one))
            segments.append(segment)

    for title in opf.getroot().iter(f"{DC}title"):
        add(*plain_element(title))
    folder = posixpath.dirname(opf_name)
    for item in opf.getroot().iter(f"{OPF}item"):
        name = posixpath.normpath(posixpath.join(folder, item.get("href", "")))
        if name not in package.names:
            continue
        kind = item.get("media-type", "")
        if kind in CHAPTER_TYPES:
            raw = package.read(name)
            tree = parse_xml(raw, name)
            trees[name] = (tree, raw)
            for block in _blocks(tree.getroot()):
                paragraph = Mixed(block, _is_container)
                add(paragraph.segment, paragraph.write)
        elif kind == "application/x-dtbncx+xml":
            raw = package.read(name)
            tree = parse_xml(raw, name)
            trees[name] = (tree, raw)
            for text in tree.getroot().iter(f"{NCX}text"):
                add(*plain_element(text))
    return Extracted(data, segments, package_writer(package, trees, writers))


def _rootfile(package: Package) -> str:
    if "META-INF/container.xml" not in package.names:
        raise DocumentError("corrupt", "not an EPUB: META-INF/container.xml is missing")
    container = parse_xml(package.read("META-INF/container.xml"), "META-INF/container.xml")
    rootfile = container.getroot().find(f".//{CONTAINER_NS}rootfile")
    if rootfile is None or rootfile.get("full-path") not in package.names:
        raise DocumentError("corrupt", "not an EPUB: its container names no package document it holds")
    return rootfile.get("full-path")


def _blocks(root: etree._Element) -> list[etree._Element]:
    """Blocks whose content is all inline: the units a reader sees as one paragraph."""
    return [e for e in root.iter() if local(e) in BLOCKS
            and not any(local(d) in BLOCKS or local(d) in ("ul", "ol", "table", "dl") for d in e.iterdescendants())]


def _is_container(element: etree._Element) -> bool:
    return local(element) in INLINE
