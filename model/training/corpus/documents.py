"""Paragraph-aligned pairs from Debian's Spanish and English manuals (docs/training.md).

The GIMP user manual (`gimp-help-es`/`gimp-help-en`) and the Debian Reference
(`debian-reference-es`/`debian-reference-en`) are translated with po4a-style tools from one
DocBook source, so both editions have the same files and, nearly always, the same sequence of
blocks in each; those are paired in order. Where a page's structure differs, blocks are aligned
on a signature that translation preserves (element kind, the numbers and the code in the
block), so a split or merged block costs itself and not the rest of the page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from html.parser import HTMLParser
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import fetch


@dataclass(frozen=True)
class Manual:
    name: str
    es_package: str
    en_package: str
    es_dir: str  # folder of the HTML files inside the unpacked package
    en_dir: str
    es_suffix: str  # file name ending that the two editions differ by
    en_suffix: str


MANUALS = (
    Manual("gimp-help", "gimp-help-es", "gimp-help-en",
           "usr/share/gimp/2.0/help/es", "usr/share/gimp/2.0/help/en", ".html", ".html"),
    Manual("debian-reference", "debian-reference-es", "debian-reference-en",
           "usr/share/debian-reference", "usr/share/debian-reference", ".es.html", ".en.html"),
)


@dataclass(frozen=True)
class Block:
    kind: str  # the element: "p", "li", "h2", ...
    text: str
    signature: tuple  # what a faithful translation keeps: kind, numbers, code


def load(workdir: Path) -> list[SourceResult]:
    return [_manual_source(manual, workdir) for manual in MANUALS]


def _manual_source(manual: Manual, workdir: Path) -> SourceResult:
    spanish, english = fetch(manual.es_package, workdir), fetch(manual.en_package, workdir)
    es_dir, en_dir = spanish.root / manual.es_dir, english.root / manual.en_dir
    pairs = []
    for es_file in sorted(es_dir.glob(f"*{manual.es_suffix}")):
        en_file = en_dir / (es_file.name.removesuffix(manual.es_suffix) + manual.en_suffix)
        if en_file.is_file():
            pairs.extend(align_documents(en_html=_read(en_file), es_html=_read(es_file)))
    licenses = sorted({spanish.license, english.license})
    return SourceResult(
        name=f"doc:{manual.name}",
        domain="prose",
        pairs=pairs,
        provenance={"packages": [spanish.provenance(), english.provenance()], "license": "; ".join(licenses)},
    )


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def align_documents(en_html: str, es_html: str) -> list[Pair]:
    """Pairs of translated blocks from two editions of one HTML page."""
    pairs = []
    for en, es in align_blocks(extract_blocks(en_html), extract_blocks(es_html)):
        # An untranslated block is left in English in the Spanish edition.
        if en.text != es.text:
            pairs.append(Pair(en=en.text, es=es.text))
    return pairs


def align_blocks(en_blocks: list[Block], es_blocks: list[Block]) -> list[tuple[Block, Block]]:
    """Corresponding blocks: in order when the pages have the same structure, else by signature.

    Identical structure is the rule (the translation tools work block by block), and there the
    signature would only lose pairs whose translator spelled a number out or dropped a code span.
    """
    if [block.kind for block in en_blocks] == [block.kind for block in es_blocks]:
        return list(zip(en_blocks, es_blocks))
    matcher = SequenceMatcher(None, [block.signature for block in en_blocks],
                              [block.signature for block in es_blocks], autojunk=False)
    return [(en_blocks[en_start + offset], es_blocks[es_start + offset])
            for en_start, es_start, length in matcher.get_matching_blocks() for offset in range(length)]


BLOCK_TAGS = {"p", "li", "dt", "td", "th", "title", "h1", "h2", "h3", "h4", "h5", "h6"}
HEADING_TAGS = {"title", "h1", "h2", "h3", "h4", "h5", "h6"}
# Void elements never get an end tag in HTML, so they must not be pushed on the element stack.
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
# Listings and screens are code, navigation and tables of contents repeat text found elsewhere,
# and an index or glossary is sorted by the translated terms, so its entries do not correspond.
SKIPPED_TAGS = {"pre", "script", "style"}
SKIPPED_CLASSES = {"navheader", "navfooter", "toc", "index", "glossary", "screen", "programlisting", "synopsis"}
# Inline code (commands, file and package names) stays untranslated: it anchors the alignment,
# and a block made only of it is a command, not prose.
CODE_TAGS = {"code", "tt", "kbd", "samp"}
CODE_CLASSES = {"command", "literal", "filename", "userinput", "computeroutput", "option", "replaceable",
                "envar", "systemitem", "function", "parameter", "varname", "code", "programlisting"}


def extract_blocks(html: str) -> list[Block]:
    """The text blocks of a page in document order, without code-only blocks or navigation."""
    parser = _BlockParser()
    parser.feed(html)
    parser.close()
    return parser.blocks


@dataclass
class _OpenBlock:
    kind: str
    runs: list[tuple[str, bool]] = field(default_factory=list)  # (text, whether it is code)


class _BlockParser(HTMLParser):
    """Collects the innermost block element's text; nested blocks (a <p> in an <li>) split it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self._open: list[tuple[str, bool, bool]] = []  # (tag, skipped, code) per open element
        self._block_stack: list[_OpenBlock] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and self._block_stack:
            self._block_stack[-1].runs.append((" ", False))
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipped = tag in SKIPPED_TAGS or bool(classes & SKIPPED_CLASSES)
        code = tag in CODE_TAGS or bool(classes & CODE_CLASSES)
        self._open.append((tag, skipped, code))
        if tag in BLOCK_TAGS:
            self._block_stack.append(_OpenBlock(tag))

    def handle_endtag(self, tag: str) -> None:
        if tag not in (open_tag for open_tag, _, _ in self._open):
            return  # a stray end tag closes nothing
        while self._open:
            open_tag, _, _ = self._open.pop()
            if open_tag in BLOCK_TAGS:
                self._finish_block()
            if open_tag == tag:
                return

    def handle_data(self, data: str) -> None:
        if not self._block_stack or any(skipped for _, skipped, _ in self._open):
            return
        self._block_stack[-1].runs.append((data, any(code for _, _, code in self._open)))

    def close(self) -> None:
        super().close()
        while self._block_stack:
            self._finish_block()

    def _finish_block(self) -> None:
        block = self._block_stack.pop()
        kind, runs = block.kind, block.runs
        text = _collapse("".join(text for text, _ in runs))
        prose = "".join(text for text, is_code in runs if not is_code)
        if not re.search(r"[^\W\d_]{2}", prose):
            return  # empty, numbers only, or nothing but code
        code = tuple(sorted(_collapse(text) for text, is_code in runs if is_code and text.strip()))
        numbers = tuple(sorted(re.findall(r"\d+", prose)))
        if kind in HEADING_TAGS:
            text = re.sub(r"^(?:\d+\.)+\d*\s+|^\d+\s+", "", text)  # the section number, kept in `numbers`
        self.blocks.append(Block(kind=kind, text=text, signature=(kind, numbers, code)))


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
