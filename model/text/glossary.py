"""Glossaries: source terms that must come out as given target terms.

A term matches whole words, case-insensitively; longer terms win where matches overlap ("Save as"
before "Save"). model/text/compose.py puts the target term where the model's alignment says the source
term went, unless the translation already holds it.

Named glossaries are TSV files in one folder, `<name>.<source>-<target>.tsv` (e.g. `ui.en-es.tsv`):
one `source<TAB>target` pair per line; blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FILE = re.compile(r"^(?P<name>[\w-]+)\.(?P<source>[a-z]{2})-(?P<target>[a-z]{2})\.tsv$")


class GlossaryError(ValueError):
    """A glossary file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Term:
    source: str
    target: str


@dataclass(frozen=True)
class Match:
    start: int  # character offsets of the source term in the text
    end: int
    term: Term


def find(text: str, terms: list[Term]) -> list[Match]:
    """Non-overlapping whole-word, case-insensitive matches of `terms` in `text`, in text order."""
    taken = [False] * len(text)
    matches = []
    for term in sorted(terms, key=lambda t: len(t.source), reverse=True):
        words = term.source.split()
        if not words:
            continue
        pattern = re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)
        for m in pattern.finditer(text):
            if not any(taken[m.start():m.end()]):
                matches.append(Match(m.start(), m.end(), term))
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
    return sorted(matches, key=lambda m: m.start)


def contains(text: str, phrase: str) -> bool:
    """Does `text` hold `phrase` as whole words, ignoring case?"""
    words = phrase.split()
    return bool(words) and re.search(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", text,
                                     re.IGNORECASE) is not None


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
