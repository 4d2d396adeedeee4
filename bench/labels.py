"""A glossary we did not write: the interface labels the GIMP manual marks up in both languages.

The manual's pages mark every interface label with its role (`<span class="guimenu">`,
`guisubmenu`, `guimenuitem`, `guilabel`, `guibutton`); the Spanish edition marks the same labels,
translated as the Spanish GIMP shows them. In each pair of aligned paragraphs (paired the way
model/training/corpus/documents.py pairs them, read by bench/markup.py) whose labels have the same
roles in the same order, the k-th English label is paired with the k-th Spanish one; labels spelt
the same in both languages, and labels of more than four words, are left out.

The paragraphs are those of the test and dev splits (never trained on); each is translated with its own
labels as its glossary, so every term asked for is in the source, and the manual's translators,
not we, wrote its answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.markup import Paragraph, manual_pairs, node_text
from model.text import glossary
from model.text.markup import MarkupError, Node, parse_html
from model.training.corpus import documents
from model.training.data import read_split

GUI_CLASSES = ("guimenu", "guisubmenu", "guimenuitem", "guilabel", "guibutton")
MAX_WORDS = 4

@dataclass(frozen=True)
class Case:
    """A held-out paragraph and the glossary labels in its source side (for one direction)."""

    source: str
    reference: str
    terms: tuple[glossary.Term, ...]


def labels(fragment: str) -> list[tuple[str, str]]:
    """(role, text) of each interface label of an HTML fragment, in document order."""
    found: list[tuple[str, str]] = []

    def walk(node: Node) -> None:
        for child in node.children:
            if child.kind != "element":
                continue
            roles = set((dict(child.attrs).get("class") or "").split()) & set(GUI_CLASSES)
            if roles:
                found.append((roles.pop(), documents._collapse(node_text(child)).strip()))
            else:
                walk(child)

    try:
        walk(parse_html(fragment))
    except MarkupError:
        return []
    return found


def paired_labels(paragraph: Paragraph) -> list[tuple[str, str]] | None:
    """(en, es) label pairs by position, when the two sides' labels have the same roles in the same
    order (else None), without labels spelt the same in both or of more than MAX_WORDS words."""
    en, es = labels(paragraph.en_html), labels(paragraph.es_html)
    if not en or [r for r, _ in en] != [r for r, _ in es]:
        return None
    return [(e, s) for (_, e), (_, s) in zip(en, es) if _usable(e) and _usable(s) and e.lower() != s.lower()]


def _usable(label: str) -> bool:
    return 0 < len(label.split()) <= MAX_WORDS and any(c.isalpha() for c in label)


def held_out(data: Path) -> tuple[list[Paragraph], dict]:
    """The GIMP manual's paragraph pairs of the test and dev splits, and how many of each."""
    wanted = {}
    for split in ("dev", "test"):
        wanted |= {(row.en, row.es): split for row in read_split(data / "splits" / f"{split}.tsv")
                   if row.source.startswith("doc:")}
    paragraphs, _ = manual_pairs(data, wanted)
    gimp = [p for p in paragraphs if p.manual == "gimp-help"]
    return gimp, {split: sum(p.split == split for p in gimp) for split in ("test", "dev")}


def cases(paragraphs: list[Paragraph], source: str, target: str) -> list[Case]:
    """The paragraphs with labels paired, each with its own labels that its text holds as its glossary;
    a paragraph that gives one label two translations is left out (no glossary can ask for both)."""
    out = []
    for p in paragraphs:
        pairs = paired_labels(p)
        if not pairs:
            continue
        by_source = {en if source == "en" else es: es if source == "en" else en for en, es in pairs}
        if len(by_source) != len(set(pairs)):
            continue
        # A label the paragraph's text does not hold as whole words ("Lineales" for "Lineal es") is no term of it.
        asked = [glossary.Term(*pair) for pair in by_source.items()]
        terms = sorted({m.term for m in glossary.find(p.text(source), asked)}, key=lambda t: t.source)
        if terms:
            out.append(Case(p.text(source), p.text(target), tuple(terms)))
    return out
