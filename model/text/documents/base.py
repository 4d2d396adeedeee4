"""What every format shares: the Extracted shape, refusals, safe XML, zip packages with limits, and
inline markup built from and written back into XML elements.

A segment is inline markup: text escaped as in HTML, a run or other element with text inside as
`<span data-k="N">…</span>`, anything without translatable text (a tab, an image, a field code, a
bookmark) as `<img data-k="N">`; N indexes the segment's `refs`, the format's own objects, so the
writer puts back exactly what was there.
"""

from __future__ import annotations

import html
import io
import re
import zipfile
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field

from lxml import etree

from model.text import markup


class DocumentError(ValueError):
    """A file that cannot be translated; `kind` says why: unsupported (format), mismatched (the content is
    not what the name says), corrupt, protected (a password), too_large (zip limits), unsafe (DTDs,
    entities) or syntax (the message names the line)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    """Limits on a package's contents, checked from its directory before anything is expanded."""

    max_uncompressed_bytes: int = 100 * 1024 * 1024
    max_members: int = 2000


@dataclass
class Extracted:
    """A file's segments (inline markup) and how to write it back from their translations."""

    data: bytes
    segments: list[str]
    writer: Callable[[list[str]], bytes]

    def write(self, translations: list[str]) -> bytes:
        """The translated file; the original bytes when nothing changed (a file with nothing translatable)."""
        if len(translations) != len(self.segments):
            raise ValueError(f"{len(translations)} translations for {len(self.segments)} segments")
        if translations == self.segments:
            return self.data
        return self.writer(translations)


def decode_text(data: bytes) -> str:
    """A text file's characters (UTF-8, with or without BOM); corrupt when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig") if data.startswith(b"\xef\xbb\xbf") else data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DocumentError("corrupt", f"the file is not UTF-8 text (byte {e.start})") from None


def encode_text(text: str, like: bytes) -> bytes:
    """`text` as UTF-8, with a BOM when the original had one."""
    return (b"\xef\xbb\xbf" if like.startswith(b"\xef\xbb\xbf") else b"") + text.encode("utf-8")


# --- text with inline tags ---------------------------------------------------------------------


def text_markup(text: str) -> str:
    """A plain text as a segment: its inline tags that pair up (a subtitle's <i>, a catalog's <b>) kept, the
    rest escaped."""
    inline = markup.parse_text(text)
    return markup.render(inline.root, inline.plain, _places_as_parsed(inline), escape=True)


def _places_as_parsed(inline: markup.Inline) -> dict[int, markup.Placement]:
    places = {id(e): markup.Placement(e.start, e.end) for e in inline.root.elements()}
    places.update({id(a): markup.Placement(a.position, a.position) for a in inline.root.atoms()})
    return places


def markup_text(fragment: str) -> str:
    """A translated segment back to plain text: tags kept as written, entities decoded."""
    return "".join(part if part.startswith("<") else html.unescape(part)
                   for part in re.split(r"(<[^>]*>)", fragment) if part)


# --- XML ---------------------------------------------------------------------------------------

# Entities are never expanded, DTDs never loaded, nothing is fetched; huge trees are refused by libxml2.
_PARSER = dict(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
               remove_blank_text=False)


# An internal DTD subset (`<!DOCTYPE x [ ... ]>`) or an entity declaration; a plain `<!DOCTYPE html>` is fine.
_DECLARATIONS = re.compile(rb"<!DOCTYPE[^>\[]*\[|<!ENTITY", re.I)


def parse_xml(data: bytes, where: str) -> etree._ElementTree:
    """An XML part, parsed safely; a document declaring entities or an internal DTD is refused."""
    if _DECLARATIONS.search(data):
        raise DocumentError("unsafe", f"{where} declares entities or an internal DTD; such XML is refused")
    try:
        tree = etree.parse(io.BytesIO(data), etree.XMLParser(**_PARSER))
    except etree.XMLSyntaxError as e:
        raise DocumentError("corrupt", f"{where} is not well-formed XML: {e}") from None
    return tree


def xml_bytes(tree: etree._ElementTree, original: bytes) -> bytes:
    """The tree serialised with the original's XML declaration (encoding and standalone kept)."""
    declared = original.lstrip().startswith(b"<?xml")
    return etree.tostring(tree, xml_declaration=declared, encoding=tree.docinfo.encoding or "UTF-8",
                          standalone=tree.docinfo.standalone)


# --- zip packages ------------------------------------------------------------------------------


class Package:
    """A zip package (docx, pptx, odt, odp, epub), checked against the limits from its directory
    before any member is expanded, and rewritten member by member in the original order."""

    def __init__(self, data: bytes, limits: Limits):
        if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
            raise DocumentError("protected", "the file is an encrypted (password-protected) or legacy Office "
                                "document; save it without a password in the current format")
        if not data.startswith(b"PK"):
            raise DocumentError("mismatched", "the file is not the zip package its name says it is")
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError) as e:
            raise DocumentError("corrupt", f"the file is not a readable zip package: {e}") from None
        self.infos = self.zip.infolist()
        self.limits = limits
        self._check()
        self.names = [info.filename for info in self.infos]

    def _check(self) -> None:
        if len(self.infos) > self.limits.max_members:
            raise DocumentError("too_large", f"the package has {len(self.infos)} members, over the limit of "
                                f"{self.limits.max_members} (DOCUMENT_MAX_MEMBERS)")
        total = sum(info.file_size for info in self.infos)
        if total > self.limits.max_uncompressed_bytes:
            raise DocumentError("too_large", f"the package expands to {total} bytes, over the limit of "
                                f"{self.limits.max_uncompressed_bytes} (DOCUMENT_MAX_UNCOMPRESSED_BYTES)")
        if any(info.flag_bits & 0x1 for info in self.infos):
            raise DocumentError("protected", "the package is password-protected; send it without a password")

    def read(self, name: str) -> bytes:
        """A member's bytes, never more than its directory entry declared (a lying entry is corrupt)."""
        info = self.zip.getinfo(name)
        try:
            with self.zip.open(info) as member:
                data = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
            raise DocumentError("corrupt", f"member {name} cannot be read: {e}") from None
        if len(data) > info.file_size:
            raise DocumentError("too_large", f"member {name} expands past the size its directory declares")
        return data

    def write(self, replaced: dict[str, bytes]) -> bytes:
        """The package with the members in `replaced` swapped, every other member's bytes as they were."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as target:
            for info in self.infos:
                target.writestr(info, replaced.get(info.filename) or self.read(info.filename))
        return out.getvalue()


# --- inline markup from XML elements, and back ------------------------------------------------


def escape(text: str | None) -> str:
    return markup.escape_text(text or "")


def open_ref(index: int) -> str:
    return f'<span data-k="{index}">'


def atom_ref(index: int) -> str:
    return f'<img data-k="{index}">'


@dataclass
class Piece:
    """One node of a translated segment: text, or a reference (`k`) with the pieces inside it."""

    text: str | None = None
    k: int | None = None
    atom: bool = False
    children: list[Piece] = field(default_factory=list)


def pieces(fragment: str) -> list[Piece]:
    """A translated segment as a tree of pieces (the translation keeps the source's elements, so it parses)."""
    root = markup.parse_html(fragment)

    def walk(nodes: list[markup.Node]) -> list[Piece]:
        out: list[Piece] = []
        for node in nodes:
            if node.kind == "text":
                out.append(Piece(text=node.raw))
            elif node.kind == "entity":
                out.append(Piece(text=html.unescape(node.raw)))
            elif node.kind == "element" and "data-k" in dict(node.attrs):
                k = int(dict(node.attrs)["data-k"])
                out.append(Piece(k=k, atom=node.tag == "img", children=walk(node.children)))
        return out

    return walk(root.children)


def mixed_markup(element: etree._Element, is_container: Callable[[etree._Element], bool],
                 refs: list) -> str:
    """An element's mixed content (text and child elements) as inline markup; `refs` collects the children."""
    parts = [escape(element.text)]
    for child in element:
        refs.append(child)
        k = len(refs) - 1
        if isinstance(child.tag, str) and is_container(child):
            parts.append(open_ref(k) + mixed_markup(child, is_container, refs) + "</span>")
        else:
            parts.append(atom_ref(k))
        parts.append(escape(child.tail))
    return "".join(parts)


def fill_mixed(element: etree._Element, translated: list[Piece], refs: list, copy_atoms: bool = False) -> None:
    """Make `element`'s content the translated pieces: containers rebuilt empty from their originals
    (tag and attributes), atoms put back as they were (copies, with `copy_atoms`, when the source stays)."""
    for child in list(element):
        element.remove(child)
    element.text = None
    last = None
    for piece in translated:
        if piece.text is not None:
            if last is None:
                element.text = (element.text or "") + piece.text
            else:
                last.tail = (last.tail or "") + piece.text
            continue
        original = refs[piece.k]
        if piece.atom:
            child = deepcopy(original) if copy_atoms else original
        else:
            child = element.makeelement(original.tag, dict(original.attrib))
            fill_mixed(child, piece.children, refs, copy_atoms)
        child.tail = None
        element.append(child)
        last = child


def has_words(fragment: str) -> bool:
    """Whether a segment has anything for the model (letters outside its tags)."""
    return any(c.isalpha() for c in html.unescape(re.sub(r"<[^>]*>", "", fragment)))


class Mixed:
    """An element whose mixed content is one segment (an ODF or XHTML paragraph, an XLIFF source)."""

    def __init__(self, element: etree._Element, is_container: Callable[[etree._Element], bool]):
        self.element = element
        self.refs: list = []
        self.segment = mixed_markup(element, is_container, self.refs)

    def write_into(self, target: etree._Element, translation: str, copy_atoms: bool = False) -> None:
        fill_mixed(target, pieces(translation), self.refs, copy_atoms)

    def write(self, translation: str) -> None:
        self.write_into(self.element, translation)


def local(element: etree._Element) -> str:
    """An element's name without its namespace ("" for comments and processing instructions)."""
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def package_writer(package: Package, trees: dict[str, tuple[etree._ElementTree, bytes]],
                   writers: list[tuple[int, Callable[[str], None]]]) -> Callable[[list[str]], bytes]:
    """A package's writer: each segment's writer given its translation, innermost paragraphs first (a note's
    or a text box's paragraphs before the paragraph they sit in), then the changed parts serialised."""

    def write(translations: list[str]) -> bytes:
        for index, write_one in reversed(writers):
            write_one(translations[index])
        return package.write({name: xml_bytes(tree, raw) for name, (tree, raw) in trees.items()})

    return write


def plain_element(element: etree._Element) -> tuple[str, Callable[[str], None]]:
    """An element holding only text (a document title): its segment and its writer."""

    def write(translation: str) -> None:
        element.text = "".join(piece.text or "" for piece in pieces(translation))

    return escape(element.text), write
