"""Paragraph-aligned pairs from the GNOME desktop help (docs/training.md).

`gnome-user-docs` ships the Mallard pages of the GNOME help in English (`usr/share/help/C/gnome-help`)
and, among other languages, the Spanish edition that itstool wrote from them (`usr/share/help/es/gnome-help`).
itstool translates a page block by block (a paragraph, a title, a list item's paragraph) and leaves
the markup around the blocks as it was, so the two editions of a page have the same sequence of
blocks, which are paired in order. A page whose sequence differs (one edition out of step with the
other) is left out whole rather than aligned by guesswork.

Inline markup (`<gui>`, `<em>`, `<link>`, `<key>`…) is flattened to its text, as the help viewer
shows it. A block whose text the viewer makes up (an empty `<link>` shows the linked page's title,
an icon is an image) is kept in the sequence but gives no pair. Code and screen listings, credits,
revisions and editorial comments are not prose and are not read.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import fetch

PACKAGE = "gnome-user-docs"
EN_DIR = "usr/share/help/C/gnome-help"
ES_DIR = "usr/share/help/es/gnome-help"
NAME = "doc:gnome-help"
DOMAIN = "prose"  # as the other manuals: the keep rule's domains stay the same

# Blocks whose content is text with inline markup; other block elements (sections, lists, steps,
# notes, tables) only hold these.
BLOCK_TAGS = {"p", "title", "subtitle", "desc"}
# Not prose: listings, who wrote the page, editors' notes to each other.
SKIPPED_TAGS = {"code", "screen", "synopsis", "credit", "revision", "comment", "include"}
# How the help viewer joins a sequence's parts: "Ctrl+Alt+T", "Settings ▸ Sound".
SEQUENCE_JOINS = {"keyseq": "+", "guiseq": " ▸ "}


@dataclass(frozen=True)
class Block:
    path: str  # the element names from the page down to the block: "page/section/steps/item/p"
    text: str | None  # None when the viewer would show words the page does not hold


def load(workdir: Path) -> list[SourceResult]:
    package = fetch(PACKAGE, workdir)
    en_dir, es_dir = package.root / EN_DIR, package.root / ES_DIR
    pairs: list[Pair] = []
    pages = aligned = 0
    for en_file in sorted(en_dir.glob("*.page")):
        es_file = es_dir / en_file.name
        if not es_file.is_file():
            continue
        pages += 1
        page_pairs = align_pages(en_file.read_bytes(), es_file.read_bytes())
        if page_pairs is not None:
            aligned += 1
            pairs.extend(page_pairs)
    provenance = package.provenance()
    return [SourceResult(
        name=NAME,
        domain=DOMAIN,
        pairs=pairs,
        provenance={"packages": [provenance], "license": provenance["license"],
                    "pages": pages, "pages_aligned": aligned},
    )]


def align_pages(en_page: bytes, es_page: bytes) -> list[Pair] | None:
    """Pairs of translated blocks of two editions of a page; None when their block sequences differ."""
    try:
        en_blocks, es_blocks = page_blocks(en_page), page_blocks(es_page)
    except ET.ParseError:
        return None
    if [block.path for block in en_blocks] != [block.path for block in es_blocks]:
        return None
    # A block left in English is one the translation had not reached.
    return [Pair(en.text, es.text) for en, es in zip(en_blocks, es_blocks)
            if en.text and es.text and en.text != es.text]


def page_blocks(page: bytes) -> list[Block]:
    """The text blocks of a Mallard page in document order.

    The standard library's parser neither fetches external entities nor DTDs: a page is read as it is.
    """
    blocks: list[Block] = []
    _collect(ET.fromstring(page), "", blocks)
    return blocks


def _collect(element: ET.Element, parent_path: str, blocks: list[Block]) -> None:
    tag = _local(element.tag)
    if tag in SKIPPED_TAGS:
        return
    path = f"{parent_path}/{tag}" if parent_path else tag
    if tag in BLOCK_TAGS:
        blocks.append(Block(path, _block_text(element)))
        return
    for child in element:
        _collect(child, path, blocks)


def _block_text(element: ET.Element) -> str | None:
    try:
        text = " ".join(_inline(element).split())
    except _MadeUpText:
        return None
    return text if re.search(r"[^\W\d_]{2}", text) else None  # numbers or punctuation only: nothing to pair


class _MadeUpText(Exception):
    """The viewer fills this element in with words the page does not hold."""


def _inline(element: ET.Element) -> str:
    tag = _local(element.tag)
    if tag in SKIPPED_TAGS:
        return ""
    children = [child for child in element if _local(child.tag) not in SKIPPED_TAGS]
    has_text = bool((element.text or "").strip()) or bool(children)
    if tag == "link" and not has_text or tag == "media" and not has_text:
        raise _MadeUpText(tag)  # an empty link shows the linked title; a bare icon is a picture
    if tag in SEQUENCE_JOINS and children:
        return SEQUENCE_JOINS[tag].join(_inline(child).strip() for child in children)
    parts = [element.text or ""]
    for child in element:
        parts += [_inline(child), child.tail or ""]
    return "".join(parts)


def _local(tag: str) -> str:
    """`{http://projectmallard.org/1.0/}p` -> `p`."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""
