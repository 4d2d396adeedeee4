"""Office Open XML (.docx, .pptx): every paragraph of the body, headers, footers, footnotes,
endnotes, comments, text boxes, table cells, slides and slide notes, and the document title.

A paragraph's runs become inline markup: runs with its most common formatting are plain text,
every other run (with the same formatting as its neighbours, merged) a `<span>`, hyperlinks and
simple fields a `<span>` around their runs, and anything without text (tabs, breaks, drawings,
field codes, footnote references, bookmarks) an `<img>` at its point. Written back, each span is a
run with the original's properties around the target words aligned to it; every other member of
the package (styles, images, relationships) is copied as it was.
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from lxml import etree

from model.text.documents.base import (
    Extracted,
    Limits,
    Package,
    atom_ref,
    escape,
    has_words,
    open_ref,
    package_writer,
    parse_xml,
    pieces,
    plain_element,
)
from model.text.documents.base import Piece as TranslatedPiece

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
DC = "{http://purl.org/dc/elements/1.1/}"
XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


@dataclass(frozen=True)
class Dialect:
    """Where a flavour of OOXML keeps its paragraphs, runs and their parts."""

    paragraph: str
    runs: frozenset[str]  # elements holding formatting and text
    text: str
    properties: frozenset[str]  # a run's formatting children, kept in every run written from it
    containers: frozenset[str]  # elements around runs (hyperlinks, fields)
    first: frozenset[str]  # paragraph children that stay first (paragraph properties)
    last: frozenset[str]  # paragraph children that stay last
    parts: re.Pattern  # package members with paragraphs


WORD = Dialect(
    paragraph=f"{W}p", runs=frozenset({f"{W}r"}), text=f"{W}t", properties=frozenset({f"{W}rPr"}),
    containers=frozenset({f"{W}hyperlink", f"{W}fldSimple", f"{W}smartTag", f"{W}ins", f"{W}customXml"}),
    first=frozenset({f"{W}pPr"}), last=frozenset(),
    parts=re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml"),
)
PRESENTATION = Dialect(
    paragraph=f"{A}p", runs=frozenset({f"{A}r", f"{A}fld"}), text=f"{A}t",
    properties=frozenset({f"{A}rPr", f"{A}pPr"}), containers=frozenset(),
    first=frozenset({f"{A}pPr"}), last=frozenset({f"{A}endParaRPr"}),
    parts=re.compile(r"ppt/(slides/slide|notesSlides/notesSlide)\d+\.xml"),
)


def read_docx(data: bytes, limits: Limits) -> Extracted:
    return _read(data, limits, WORD)


def read_pptx(data: bytes, limits: Limits) -> Extracted:
    return _read(data, limits, PRESENTATION)


def _read(data: bytes, limits: Limits, dialect: Dialect) -> Extracted:
    package = Package(data, limits)
    segments: list[str] = []
    writers: list[tuple[int, Any]] = []  # (first segment, write(translations of its segments)) per paragraph
    trees: dict[str, tuple[etree._ElementTree, bytes]] = {}
    for name in package.names:
        if not (dialect.parts.fullmatch(name) or name == "docProps/core.xml"):
            continue
        raw = package.read(name)
        tree = parse_xml(raw, name)
        trees[name] = (tree, raw)
        if name == "docProps/core.xml":
            found = [plain_element(title) for title in tree.getroot().iter(f"{DC}title")]
        else:
            paragraphs = [_Paragraph(e, dialect) for e in tree.getroot().iter(dialect.paragraph)]
            found = [(p.segment, p.write) for p in paragraphs]
        for segment, write_one in found:
            if has_words(segment):
                writers.append((len(segments), write_one))
                segments.append(segment)

    return Extracted(data, segments, package_writer(package, trees, writers))


@dataclass
class _RunRef:
    """A span's run: written as a copy of `template` (the run with only its formatting)."""

    template: etree._Element


@dataclass
class _ContainerRef:
    element: etree._Element


@dataclass
class _AtomRef:
    element: etree._Element
    in_run: bool  # it sat in a bare run, so a base-style run is written around it


class _Paragraph:
    """One paragraph's runs as inline markup, and how to write its translation back."""

    def __init__(self, p: etree._Element, dialect: Dialect):
        self.p, self.d = p, dialect
        self.refs: list[Any] = []
        self.bare_runs: list[etree._Element] = []  # runs written for bare text, so neighbours share one
        runs = [r for r in p.iter(*dialect.runs) if _paragraph_of(r, dialect) is p]
        texts = {}
        for run in runs:
            texts[_style(run, dialect)] = texts.get(_style(run, dialect), 0) + len(self._text(run))
        self.base = max(texts, key=texts.get) if texts else None
        self.base_run = next((_template(r, dialect) for r in runs if _style(r, dialect) == self.base), None)
        self.segment = self._markup(list(p))

    # --- reading -------------------------------------------------------------------------------

    def _text(self, run: etree._Element) -> str:
        return "".join(t.text or "" for t in run if t.tag == self.d.text)

    def _markup(self, children: list[etree._Element]) -> str:
        parts: list[str] = []
        open_style: str | None = None  # style of the span open at the end of parts, merging same-styled runs
        for child in children:
            if child.tag in self.d.first or child.tag in self.d.last:
                continue
            style = _style(child, self.d) if child.tag in self.d.runs else None
            if open_style is not None and style != open_style:
                parts.append("</span>")
                open_style = None
            if style is None:
                parts.append(self._other(child))
            elif style == self.base:
                parts.append(self._run_content(child, bare=True))
            else:
                if open_style is None:
                    parts.append(open_ref(self._ref(_RunRef(_template(child, self.d)))))
                    open_style = style
                parts.append(self._run_content(child, bare=False))
        if open_style is not None:
            parts.append("</span>")
        return "".join(parts)

    def _other(self, child: etree._Element) -> str:
        if child.tag in self.d.containers:
            return open_ref(self._ref(_ContainerRef(child))) + self._markup(list(child)) + "</span>"
        return atom_ref(self._ref(_AtomRef(child, in_run=False)))

    def _run_content(self, run: etree._Element, bare: bool) -> str:
        """A run's text, and its other children as atoms (which, from a bare run, need a run written around them)."""
        parts = []
        for child in run:
            if child.tag in self.d.properties:
                continue
            if child.tag == self.d.text:
                parts.append(escape(child.text))
            else:
                parts.append(atom_ref(self._ref(_AtomRef(child, in_run=bare))))
        return "".join(parts)

    def _ref(self, ref: Any) -> int:
        self.refs.append(ref)
        return len(self.refs) - 1

    # --- writing -------------------------------------------------------------------------------

    def write(self, translation: str) -> None:
        first = [c for c in self.p if c.tag in self.d.first]
        last = [c for c in self.p if c.tag in self.d.last]
        for child in list(self.p):
            self.p.remove(child)
        self.p.extend(first)
        self._fill(self.p, pieces(translation))
        self.p.extend(last)

    def _fill(self, parent: etree._Element, translated: list[TranslatedPiece]) -> None:
        """Pieces at paragraph (or container) level: bare text goes into runs of the base style."""
        for piece in translated:
            if piece.text is not None:
                self._add_text(self._bare_run(parent), piece.text)
                continue
            ref = self.refs[piece.k]
            if isinstance(ref, _AtomRef):
                self._put(self._bare_run(parent) if ref.in_run else parent, ref.element)
            elif isinstance(ref, _ContainerRef):
                container = parent.makeelement(ref.element.tag, dict(ref.element.attrib))
                parent.append(container)
                self._fill(container, piece.children)
            else:
                run = deepcopy(ref.template)
                parent.append(run)
                for inner in piece.children:
                    if inner.text is not None:
                        self._add_text(run, inner.text)
                    else:
                        self._put(run, self.refs[inner.k].element)

    def _put(self, parent: etree._Element, element: etree._Element) -> None:
        element.tail = None
        parent.append(element)

    def _bare_run(self, parent: etree._Element) -> etree._Element:
        """The base-style run last written into `parent`, or a new one."""
        if len(parent) and any(parent[-1] is run for run in self.bare_runs):
            return parent[-1]
        run = deepcopy(self.base_run)
        self.bare_runs.append(run)
        parent.append(run)
        return run

    def _add_text(self, run: etree._Element, text: str) -> None:
        if not text:
            return
        last = run[-1] if len(run) else None
        if last is None or last.tag != self.d.text:
            last = run.makeelement(self.d.text, {})
            run.append(last)
        last.text = (last.text or "") + text
        if self.d is WORD:  # Word drops a run's leading and trailing spaces unless told to keep them
            last.set(XML_SPACE, "preserve")


def _paragraph_of(element: etree._Element, dialect: Dialect) -> etree._Element | None:
    """The innermost paragraph holding `element` (a text box's runs belong to its own paragraphs)."""
    parent = element.getparent()
    while parent is not None and parent.tag != dialect.paragraph:
        parent = parent.getparent()
    return parent


def _style(run: etree._Element, dialect: Dialect) -> str:
    """What makes two runs look alike: their tag, attributes and formatting children, as XML."""
    properties = b"".join(etree.tostring(c) for c in run if c.tag in dialect.properties)
    return f"{run.tag}{sorted(run.attrib.items())}{properties.decode()}"


def _template(run: etree._Element, dialect: Dialect) -> etree._Element:
    """A copy of the run with only its formatting: what every run written in its style starts from."""
    template = run.makeelement(run.tag, dict(run.attrib))
    template.extend(deepcopy(c) for c in run if c.tag in dialect.properties)
    return template
