"""Markup: HTML documents and inline tags, taken apart into plain text for the model and put back.

A document is parsed into a tree with the standard library's HTML parser. Containers (block
elements, and inline elements that hold blocks) are copied as written; each run of inline content
inside them (text, `b`, `i`, `a`, `span`, ...) becomes an `Inline`: its plain text, which is what
is translated, plus a tree of the elements over character spans of that text, and `Atom`s (void
elements, comments, untranslated elements such as `code`) at points of it. model/text/compose.py places
the elements on the translation by the model's alignment; `render` writes the result back with
exactly the source's elements, so the answer is always well formed.

A plain text (`format: "text"`) may carry inline tags too (UI strings: "Click <b>Save</b>"): those
that pair up are treated the same way, and everything else in it is text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

INLINE_TAGS = frozenset(
    "a abbr b bdi bdo big cite code data del dfn em font i img ins kbd label mark q s samp small span "
    "strike strong sub sup time tt u var br wbr".split()
)
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Never translated: program text, and what the author marked so.
UNTRANSLATED_TAGS = frozenset("script style code pre kbd samp tt textarea".split())
# HTML lets these end without an end tag; closing their parent closes them.
OPTIONAL_END_TAGS = frozenset("p li dt dd tr td th thead tbody tfoot option optgroup colgroup caption rb rt rp "
                              "html head body".split())
TRANSLATED_ATTRIBUTES = ("title", "alt", "placeholder")


class MarkupError(ValueError):
    """Malformed markup; the message says where (line and column, from 1)."""


# --- the inline model --------------------------------------------------------------------------


@dataclass
class Atom:
    """Something placed at a point of the text and written back unchanged: a void element, a comment,
    an untranslated element, or a protected span cut out of the text (then `text` is True: escape it)."""

    raw: str
    position: int  # character offset in the plain text
    space_before: bool = False
    space_after: bool = False
    text: bool = False


@dataclass
class Element:
    """An inline element over characters [start, end) of the plain text; tag None is the root."""

    tag: str | None
    open: str
    close: str
    start: int
    end: int
    children: list[Element | Atom] = field(default_factory=list)

    def elements(self):
        """Every element below this one, depth first."""
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.elements()

    def atoms(self):
        for child in self.children:
            if isinstance(child, Atom):
                yield child
            else:
                yield from child.atoms()


@dataclass
class Inline:
    plain: str
    root: Element

    @property
    def has_markup(self) -> bool:
        return bool(self.root.children)


def plain_inline(text: str) -> Inline:
    return Inline(text, Element(None, "", "", 0, len(text)))


# --- inline tags in a plain text ---------------------------------------------------------------

_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)((?:\s+[^<>]*?)?)\s*(/?)>")


def parse_text(text: str) -> Inline:
    """A plain text's inline tags that pair up (and void ones): an Inline; other `<` stay text."""
    tags = [m for m in _TAG.finditer(text) if m.group(2).lower() in INLINE_TAGS]
    paired = _paired(tags)
    if not paired:
        return plain_inline(text)
    plain, root, stack, last = [], Element(None, "", "", 0, 0), [], 0
    length = 0
    for match in tags:
        if match.start() not in paired:
            continue
        chunk = text[last:match.start()]
        plain.append(chunk)
        length += len(chunk)
        last = match.end()
        parent = stack[-1] if stack else root
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if tag in VOID_TAGS or match.group(4):
            parent.children.append(Atom(match.group(), length, _space(text, match.start() - 1),
                                        _space(text, match.end())))
            if tag == "br" and not _space(text, match.end()):
                plain.append(" ")  # a line break separates words: "uno<br>dos" is two
                length += 1
        elif closing:
            element = stack.pop()
            element.close, element.end = match.group(), length
        else:
            element = Element(tag, match.group(), "", length, length)
            parent.children.append(element)
            stack.append(element)
    plain.append(text[last:])
    joined = "".join(plain)
    root.end = len(joined)
    return Inline(joined, root)


def _paired(tags: list[re.Match]) -> set[int]:
    """Start offsets of the tags that nest properly (opening with its closing) or are void."""
    kept: set[int] = set()
    stack: list[re.Match] = []
    for match in tags:
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if tag in VOID_TAGS or match.group(4):
            if not closing:
                kept.add(match.start())
        elif not closing:
            stack.append(match)
        elif stack and stack[-1].group(2).lower() == tag:
            kept.update((stack.pop().start(), match.start()))
        else:
            stack.clear()  # crossing tags: trust none of the open ones
    return kept


def _space(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isspace()


# --- HTML documents ----------------------------------------------------------------------------


@dataclass
class Node:
    kind: str  # "text", "entity", "element", "other" (comment, doctype, processing instruction)
    raw: str = ""
    tag: str = ""
    attrs: list[tuple[str, str | None]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    close: str = ""
    where: tuple[int, int] = (1, 1)

    @property
    def untranslated(self) -> bool:
        attrs = dict(self.attrs)
        return (self.tag in UNTRANSLATED_TAGS or (attrs.get("translate") or "").lower() == "no"
                or "notranslate" in (attrs.get("class") or "").split())

    @property
    def inline(self) -> bool:
        """Can this node sit inside a sentence? Text, entities, comments, and inline elements of such nodes."""
        if self.kind != "element":
            return True
        return self.tag in INLINE_TAGS and all(child.inline for child in self.children)

    def source(self) -> str:
        """The node as written."""
        if self.kind != "element":
            return self.raw
        return self.raw + "".join(child.source() for child in self.children) + self.close


def parse_html(document: str) -> Node:
    """The document's tree; raises MarkupError for an end tag that closes nothing open, crossing
    elements, or an element that is never closed (those with optional end tags excepted)."""
    builder = _TreeBuilder(document)
    builder.feed(document)
    builder.close()
    return builder.finish()


class _TreeBuilder(HTMLParser):
    def __init__(self, document: str):
        super().__init__(convert_charrefs=False)
        self.document = document
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", document)]
        self.root = Node("element", tag="#document")
        self.stack = [self.root]

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    def _where(self) -> tuple[int, int]:
        line, column = self.getpos()
        return line, column + 1

    def _add(self, node: Node) -> None:
        self.stack[-1].children.append(node)

    def handle_starttag(self, tag, attrs):
        node = Node("element", self.get_starttag_text(), tag, attrs, where=self._where())
        self._add(node)
        if tag not in VOID_TAGS:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self._add(Node("element", self.get_starttag_text(), tag, attrs, where=self._where()))

    def handle_endtag(self, tag):
        start = self._offset()
        raw = self.document[start:self.document.index(">", start) + 1]
        line, column = self._where()
        if tag in VOID_TAGS:  # "</br>": nothing to close; keep it as written
            self._add(Node("other", raw, where=(line, column)))
            return
        if not any(open_node.tag == tag for open_node in self.stack[1:]):
            raise MarkupError(f"line {line}, column {column}: the end tag </{tag}> closes no open element")
        while self.stack[-1].tag != tag:
            top = self.stack[-1]
            if top.tag not in OPTIONAL_END_TAGS:
                raise MarkupError(f"line {line}, column {column}: </{tag}> ends while <{top.tag}> opened at line "
                                  f"{top.where[0]}, column {top.where[1]} is still open")
            self.stack.pop()
        self.stack.pop().close = raw

    def handle_data(self, data):
        self._add(Node("text", data))

    def handle_entityref(self, name):
        self._add(Node("entity", f"&{name};" if self.document.startswith(f"&{name};", self._offset()) else f"&{name}"))

    def handle_charref(self, name):
        self._add(Node("entity", f"&#{name};" if self.document.startswith(f"&#{name};", self._offset())
                       else f"&#{name}"))

    def handle_comment(self, data):
        self._add(Node("other", f"<!--{data}-->"))

    def handle_decl(self, decl):
        self._add(Node("other", f"<!{decl}>"))

    def handle_pi(self, data):
        self._add(Node("other", f"<?{data}>"))

    def unknown_decl(self, data):
        self._add(Node("other", f"<![{data}]>"))

    def finish(self) -> Node:
        for node in reversed(self.stack[1:]):
            if node.tag not in OPTIONAL_END_TAGS:
                raise MarkupError(f"line {node.where[0]}, column {node.where[1]}: <{node.tag}> is never closed")
        return self.root


def inline_of(nodes: list[Node], start_tag=lambda node: node.raw) -> Inline:
    """The Inline of a run of inline nodes: text (entities decoded) and elements over it.

    `start_tag(node)` gives what an element's start tag is written as (translated attributes)."""
    root = Element(None, "", "", 0, 0)
    chunks: list[str] = []

    def length() -> int:
        return sum(map(len, chunks))

    def walk(node: Node, parent: Element) -> None:
        if node.kind == "text":
            chunks.append(node.raw)
        elif node.kind == "entity":
            chunks.append(html.unescape(node.raw))
        elif node.kind == "other" or node.untranslated:
            parent.children.append(Atom(node.source(), length(), _ends_with_space(chunks)))
        elif node.tag in VOID_TAGS:
            parent.children.append(Atom(start_tag(node), length(), _ends_with_space(chunks)))
            if node.tag == "br":
                chunks.append(" ")  # a line break separates words: "uno<br>dos" is two
        else:
            element = Element(node.tag, start_tag(node), node.close, length(), 0)
            parent.children.append(element)
            for child in node.children:
                walk(child, element)
            element.end = length()

    for node in nodes:
        walk(node, root)
    plain = "".join(chunks)
    root.end = len(plain)
    for atom in root.atoms():  # now that the text after each atom is known
        atom.space_after = _space(plain, atom.position)
    return Inline(plain, root)


def _ends_with_space(chunks: list[str]) -> bool:
    text = "".join(chunks[-2:])
    return bool(text) and text[-1].isspace()


def text_of(document: str) -> str:
    """A document's text without its tags, entities decoded: what language identification should read
    (tag and attribute names are English whatever the page's language). Never raises."""
    return html.unescape(re.sub(r"<!--.*?-->|<[^>]*>", " ", document, flags=re.S))


# --- writing back ------------------------------------------------------------------------------


@dataclass
class Placement:
    """Where an element's content lies in the translation, or where an atom goes."""

    start: int
    end: int


def escape_text(text: str) -> str:
    return html.escape(text, quote=False)


def render(root: Element, text: str, places: dict[int, Placement], escape: bool,
           pads: dict[int, tuple[str, str]] | None = None) -> str:
    """The translation `text` with each element of the tree and each atom at its placement.

    `places` (and `pads`, the spaces written around an atom) are keyed by id() of elements and atoms.
    Every element and atom is written, once, in the source's order: each is clamped into its parent
    and after its earlier siblings (one the translation moved before them comes right after them), so
    the output has exactly the source's tags, nested and in the order the source has them.
    """
    write_text = escape_text if escape else str
    pads = pads or {}

    def emit(element: Element, lo: int, hi: int) -> str:
        out, cursor = [], lo
        for child in sorted(element.children, key=_source_position):
            place = places[id(child)]
            start = min(max(place.start, cursor), hi)
            end = min(max(place.end, start), hi)
            out.append(write_text(text[cursor:start]))
            if isinstance(child, Atom):
                before, after = pads.get(id(child), ("", ""))
                out.append(before + (write_text(child.raw) if child.text else child.raw) + after)
            else:
                out.append(child.open + emit(child, start, end) + child.close)
            cursor = end
        out.append(write_text(text[cursor:hi]))
        return "".join(out)

    return emit(root, 0, len(text))


def _source_position(item: Element | Atom) -> int:
    """Where an element or atom stood in the source (a stable sort keeps parsed siblings in their order)."""
    return item.position if isinstance(item, Atom) else item.start


_ATTRIBUTE = re.compile(r"""(\s(""" + "|".join(TRANSLATED_ATTRIBUTES) + r""")\s*=\s*)("[^"]*"|'[^']*'|[^\s"'=<>`]+)""",
                        re.I)


def attribute_texts(start_tag: str) -> list[str]:
    """Values of the translated attributes (title, alt, placeholder) of a start tag as written, unescaped."""
    return [html.unescape(m.group(3).strip("\"'")) for m in _ATTRIBUTE.finditer(start_tag)]


def with_attributes(start_tag: str, translations: list[str]) -> str:
    """The start tag with its translated attributes' values replaced, in order."""
    values = iter(translations)
    return _ATTRIBUTE.sub(lambda m: f'{m.group(1)}"{html.escape(next(values), quote=True)}"', start_tag)
