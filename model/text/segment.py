"""Sentence segmentation for Spanish and English, lossless: pieces + separators rejoin to the input.

The model was trained on sentences and short paragraphs, so a long text is translated piece by
piece. Splitting happens at line breaks and after . ! ? … when the next word starts a sentence,
except after known abbreviations ("Sr.", "etc.", "p. ej.") and initials ("J. K."); closing quotes
and brackets stay with their sentence, and ¿…? / ¡…! pairs are never cut in the middle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower-cased, without the final period. "etc." may also end a sentence, but a wrong split costs
# more (a fragment translated alone) than a missed one, so it is kept as an abbreviation.
ABBREVIATIONS = frozenset(
    """
    sr sra srta sres dr dra dres lic ing arq prof profa dña ud uds vd vds av avda pág págs pp
    núm nº no vol cap fig etc ej aprox admón dpto depto tel tlf ee uu a.c d.c s.a s.l
    mr mrs ms messrs jr sr st mt vs e.g i.e approx dept inc ltd co corp fig no nos est
    jan feb mar apr jun jul aug sep sept oct nov dec ene abr ago dic
    """.split()
)
_TERMINATOR = re.compile(r"(?:\.\.\.|…|[.!?])+[\"'”’»)\]]*")
_LINE = re.compile(r"(\r\n|\n|\r)")


@dataclass(frozen=True)
class Piece:
    text: str  # what is translated ("" for blank lines)
    after: str  # separator that followed it in the input: spaces, a line break, or ""


def _word_before(text: str, end: int) -> str:
    match = re.search(r"([^\s¿¡\"'“‘«(\[]+)$", text[:end])
    return match.group(1) if match else ""


def is_abbreviation(word: str) -> bool:
    stem = word.rstrip(".").lower()
    if not stem:
        return False
    if len(stem) == 1 and stem.isalpha():  # an initial: "J. K. Rowling"
        return True
    return stem in ABBREVIATIONS


def _starts_sentence(rest: str) -> bool:
    """Does the text after a terminator (whitespace stripped) look like a new sentence?"""
    if not rest:
        return False
    first = rest[0]
    return first.isupper() or first.isdigit() or first in "¿¡\"'“‘«([-—"


def _split_line(line: str) -> list[Piece]:
    pieces: list[Piece] = []
    start = 0
    for match in _TERMINATOR.finditer(line):
        end = match.end()
        gap = len(line[end:]) - len(line[end:].lstrip())
        if gap == 0:
            continue  # "3.14", "e.g.x", "¿Sí?" at the very end: not a boundary inside the line
        terminator = match.group(0)
        if (terminator.startswith(".") and not terminator.startswith("...")
                and is_abbreviation(_word_before(line, match.start()) + ".")):
            continue
        if not _starts_sentence(line[end + gap :]):
            continue
        pieces.append(Piece(line[start:end], line[end : end + gap]))
        start = end + gap
    pieces.append(Piece(line[start:], ""))
    return pieces


def split(text: str) -> tuple[str, list[Piece]]:
    """(leading whitespace, pieces); "".join(lead, p.text + p.after ...) == text."""
    lead = text[: len(text) - len(text.lstrip())]
    body = text[len(lead) :]
    pieces: list[Piece] = []
    parts = _LINE.split(body)
    for i in range(0, len(parts), 2):
        line, newline = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        stripped = line.rstrip()
        trailing = line[len(stripped) :]
        line_pieces = _split_line(stripped) if stripped else [Piece("", "")]
        last = line_pieces[-1]
        line_pieces[-1] = Piece(last.text, last.after + trailing + newline)
        pieces.extend(line_pieces)
    return lead, pieces


def join(lead: str, translations: list[str], pieces: list[Piece]) -> str:
    """Rejoin translated pieces with the input's own spacing and line breaks."""
    return lead + "".join(t + p.after for t, p in zip(translations, pieces))
