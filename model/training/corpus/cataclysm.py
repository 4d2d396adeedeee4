"""Narrative and dialogue from the Spanish catalog of Cataclysm: Dark Days Ahead (docs/training.md).

`cataclysm-dda-data` ships the game's text as one gettext catalog per language: NPC dialogue,
quests, item and profession descriptions, and the game's messages. The `es_ES` catalog is the one
read; the `es_AR` one is written in voseo, a register the rest of the corpus does not use.

The game's text carries markup, cleaned so that every pair reads as plain text:

* colour and emphasis spans (`<color_red>…</color>`, `<good>…</good>`) lose their tags and keep their text;
* an entry with a substitution tag (`<npcname>`, `<name_g>`, `<swear>`: a word the game picks at run
  time) or a printf placeholder (`%s`, `%d`: a name, an item, a count) is left out, since its text is
  a template whose words around the gap a translator could not agree with, not a sentence;
* an entry of several lines (a list, a stats table, paragraphs) is split into its lines when both
  sides have as many, and left out otherwise;
* a lone word with a context (`key name`, `Volume unit`, `training intensity|High`) is left out: the
  context carries its sense, and without it "High" -> "Drogado" is a wrong pair;
* then the software catalogs' cleaning (accelerators, markup) and, as for the other games, the
  rule that both sides carry the same numbers.

Plural entries give their singular and msgstr[0], as in every catalog reader.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import fetch
from model.training.corpus.gettext_catalogs import MoEntry, clean_pair, read_mo_entries
from model.training.corpus.narrative import DOMAIN, same_numbers
from model.training.data import placeholders

PACKAGE = "cataclysm-dda-data"
CATALOG = "usr/share/locale/es_ES/LC_MESSAGES/cataclysm-dda.mo"
NAME = "narrative:cataclysm-dda"

# `<color_red>`, `<color_%s>` and the `</color>` that closes any of them.
_COLOR_TAG = re.compile(r"</?color(?:_[\w%]+)?>")
# An emphasis span: a tag closed by its own end tag (`<good>…</good>`, `<info>…</info>`).
_SPAN = re.compile(r"<(\w+)>(.*?)</\1>", flags=re.DOTALL)
# What is left: a tag without spaces, so that "a < b" or "<- back" is text.
_TAG = re.compile(r"<[^<>\s]+>")
# The bullet of a list line ("- ", "* ", "> ", ">> ", "-> "), which is layout, not text.
_BULLET = re.compile(r"^[-*•>]+\s+")


def load(workdir: Path) -> list[SourceResult]:
    package = fetch(PACKAGE, workdir)
    pairs, dropped = catalog_lines(read_mo_entries((package.root / CATALOG).read_bytes()))
    provenance = package.provenance()
    return [SourceResult(
        name=NAME,
        domain=DOMAIN,
        pairs=pairs,
        provenance={"packages": [provenance], "license": provenance["license"], "catalogs": [CATALOG],
                    "dropped_entries": dict(sorted(dropped.items()))},
    )]


def catalog_lines(entries: list[MoEntry]) -> tuple[list[Pair], Counter[str]]:
    """The clean pairs of a catalog's entries, and why the others were left out (one reason each)."""
    pairs: list[Pair] = []
    dropped: Counter[str] = Counter()
    for entry in entries:
        kept, reason = entry_pairs(entry)
        pairs.extend(kept)
        if reason:
            dropped[reason] += 1
    return pairs, dropped


def entry_pairs(entry: MoEntry) -> tuple[list[Pair], str | None]:
    """One entry's pairs (a line each), or no pairs and the reason."""
    if entry.context is not None and len(entry.msgid.split()) < 2:
        return [], "context_fragment"
    en, es = strip_spans(entry.msgid), strip_spans(entry.msgstr)
    en_tags, es_tags = sorted(_TAG.findall(en)), sorted(_TAG.findall(es))
    if en_tags != es_tags:
        return [], "tag_mismatch"
    if en_tags:
        return [], "substitution_tag"
    if placeholders(en) or placeholders(es):
        return [], "placeholder"
    en_lines, es_lines = _lines(en), _lines(es)
    if len(en_lines) != len(es_lines):
        return [], "line_mismatch"
    pairs = [pair for en_line, es_line in zip(en_lines, es_lines)
             if (pair := clean_pair(en_line, es_line)) is not None]
    if not pairs:
        return [], "no_text"
    # One line with other numbers is a mistranslated line; it says nothing about its neighbours.
    same = [pair for pair in pairs if same_numbers(pair)]
    return same, None if same else "number_mismatch"


def strip_spans(text: str) -> str:
    """Text without colour and emphasis tags; the words they colour stay."""
    text = _COLOR_TAG.sub("", text)
    while (unwrapped := _SPAN.sub(r"\2", text)) != text:  # spans nest: <good><bold>…</bold></good>
        text = unwrapped
    return text


def _lines(text: str) -> list[str]:
    return [_BULLET.sub("", line.strip()) for line in text.split("\n") if line.strip()]
