"""Glossaries: source terms that must come out as given target terms.

A term matches whole words, case-insensitively (and accent-insensitively when the term says so);
longer terms win where matches overlap ("Save as" before "Save"). Decoding forces the target term
where the model reaches the source term (model/search/constraints.py); model/text/compose.py writes it
on the target words aligned to the source term when the translation does not hold it as given (the
user's case, or a capital where it opens the sentence).

Named glossaries are TSV files in one folder, `<name>.<source>-<target>.tsv` (e.g. `ui.en-es.tsv`):
one `source<TAB>target` pair per line; blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

_FILE = re.compile(r"^(?P<name>[\w-]+)\.(?P<source>[a-z]{2})-(?P<target>[a-z]{2})\.tsv$")


class GlossaryError(ValueError):
    """A glossary file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Term:
    source: str
    target: str
    accents: bool = True  # False: the source term matches whatever accents the text gives its letters


@dataclass(frozen=True)
class Match:
    start: int  # character offsets of the source term in the text
    end: int
    term: Term


def find(text: str, terms: list[Term]) -> list[Match]:
    """Non-overlapping whole-word, case-insensitive matches of `terms` in `text`, in text order."""
    taken = [False] * len(text)
    matches = []
    folded = fold_accents(text)
    for term in sorted(terms, key=lambda t: len(t.source), reverse=True):
        words = (term.source if term.accents else fold_accents(term.source)).split()
        if not words:
            continue
        pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)
        for m in pattern.finditer(text if term.accents else folded):
            if not any(taken[m.start():m.end()]):
                matches.append(Match(m.start(), m.end(), term))
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
    return sorted(matches, key=lambda m: m.start)


def fold_accents(text: str) -> str:
    """`text` with each accented letter as its base letter ("Índice" -> "Indice"), one character for one."""
    return "".join(unicodedata.normalize("NFD", c)[0] if c.isalpha() else c for c in text)


def occurrences(text: str, phrase: str) -> list[tuple[int, int]]:
    """Where `text` holds `phrase` as whole words, spelt as given: case included, except that it may
    take a capital where it opens the text."""
    words = phrase.split()
    if not words:
        return []
    found = [m.span() for m in _spelt(words).finditer(text)]
    opening = _spelt([words[0][0].upper() + words[0][1:], *words[1:]]).match(text, len(text) - len(text.lstrip()))
    if opening and words[0][0].islower():
        found.insert(0, opening.span())
    return found


def _spelt(words: list[str]) -> re.Pattern:
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)")


def contains(text: str, phrase: str) -> bool:
    """Does `text` hold `phrase` as whole words, spelt as given (see `occurrences`)?"""
    return bool(occurrences(text, phrase))


@dataclass(frozen=True)
class Named:
    name: str
    source: str
    target: str
    terms: tuple[Term, ...]


def load_folder(folder: str | Path) -> dict[tuple[str, str, str], Named]:
    """Every `<name>.<source>-<target>.tsv` of `folder`, keyed by (name, source, target)."""
    found: dict[tuple[str, str, str], Named] = {}
    for path in sorted(Path(folder).glob("*.tsv")):
        parts = _FILE.match(path.name)
        if not parts:
            raise GlossaryError(f"{path}: glossary files are named <name>.<source>-<target>.tsv, e.g. ui.en-es.tsv")
        found[(parts["name"], parts["source"], parts["target"])] = Named(
            parts["name"], parts["source"], parts["target"], tuple(read_tsv(path)))
    return found


def read_tsv(path: Path) -> list[Term]:
    terms = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 2 or not columns[0].strip() or not columns[1].strip():
            raise GlossaryError(f"{path}, line {number}: expected `source<TAB>target`, got {line!r}")
        terms.append(Term(columns[0].strip(), columns[1].strip()))
    return terms
