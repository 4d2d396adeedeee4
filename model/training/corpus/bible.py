"""Verse-aligned Bibles from Debian's SWORD modules (docs/training.md).

Spanish: `sword-text-sparv` (Reina-Valera 1909), English: `sword-text-web` (World English
Bible); both public domain. The modules are read verse by verse with libsword through
`python3-sword`, a binding built for the system Python only, so the verses are dumped as JSON
lines by /usr/bin/python3 in a subprocess and the OSIS markup is cleaned here.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import AptError, DebPackage, fetch

SPANISH_PACKAGE = "sword-text-sparv"
ENGLISH_PACKAGE = "sword-text-web"
SYSTEM_PYTHON = "/usr/bin/python3"

# Run by the system Python. Iterates the module in its own versification and prints one
# {"ref": OSIS reference, "osis": raw entry} per verse. os._exit skips the interpreter teardown,
# during which the SWIG binding's destructors crash libsword.
DUMP_SCRIPT = r"""
import json, os, sys
import Sword
library, module_name = sys.argv[1], sys.argv[2]
manager = Sword.SWMgr(library, True, None, False, False)  # no ~/.sword modules
module = manager.getModule(module_name)
if module is None:
    sys.stderr.write(f"no SWORD module {module_name} in {library}\n")
    sys.stdout.flush()
    os._exit(2)
top = Sword.SW_POSITION("\x01")  # named, so SWIG does not free it while libsword uses it
module.setPosition(top)
while module.popError() == "\x00":
    key = Sword.VerseKey.castTo(module.getKey())
    sys.stdout.write(json.dumps({"ref": key.getOSISRef(), "osis": module.getRawEntry()}, ensure_ascii=False) + "\n")
    module.increment()
sys.stdout.flush()
os._exit(0)
"""


def load(workdir: Path) -> list[SourceResult]:
    spanish, english = fetch(SPANISH_PACKAGE, workdir), fetch(ENGLISH_PACKAGE, workdir)
    pairs = align_verses(english=read_module(english), spanish=read_module(spanish))
    return [SourceResult(
        name="bible:sparv-web",
        domain="bible",
        pairs=pairs,
        provenance={
            "packages": [spanish.provenance(), english.provenance()],
            "license": "public domain (Reina-Valera 1909; World English Bible)",
        },
    )]


def read_module(package: DebPackage) -> dict[str, str]:
    """OSIS reference -> plain verse text, for the one SWORD module a sword-text-* package ships."""
    library = package.root / "usr/share/sword"
    module_name = _module_name(library)
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", DUMP_SCRIPT, str(library), module_name],
                              capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise AptError(f"{SYSTEM_PYTHON} not found; the Bible reader needs Debian's python3-sword") from exc
    if done.returncode != 0:
        if "No module named 'Sword'" in done.stderr:
            raise AptError("python3-sword is not installed (apt-get install python3-sword)")
        raise AptError(f"reading SWORD module {module_name} failed: {done.stderr.strip()[-500:]}")
    verses = (json.loads(line) for line in done.stdout.splitlines())
    return {verse["ref"]: osis_to_text(verse["osis"]) for verse in verses}


def _module_name(library: Path) -> str:
    confs = sorted((library / "mods.d").glob("*.conf"))
    if len(confs) != 1:
        raise AptError(f"expected one SWORD module config in {library / 'mods.d'}, found {len(confs)}")
    section = re.search(r"^\[(.+)\]\s*$", confs[0].read_text(encoding="utf-8"), flags=re.MULTILINE)
    if section is None:
        raise AptError(f"no [module] section in {confs[0]}")
    return section.group(1)


def align_verses(english: dict[str, str], spanish: dict[str, str]) -> list[Pair]:
    """Pair verses with the same OSIS reference, in the Spanish module's order.

    Where the two translations split verses differently, the SWORD module leaves a verse empty
    and puts its text into a neighbour; the neighbours of an empty verse (same chapter) are
    therefore likely misaligned and are dropped with it. A few chapters of the Spanish module
    keep the Hebrew numbering (Jonah 2, Job 39, ...); those are dropped whole.
    """
    unreliable = _neighbours_of_empty(english) | _neighbours_of_empty(spanish)
    renumbered = _renumbered_chapters(english, spanish)
    pairs = []
    for ref, es in spanish.items():
        en = english.get(ref, "")
        if es and en and ref not in unreliable and ref.rsplit(".", 1)[0] not in renumbered:
            if ref.endswith(".1"):
                es, en = undo_drop_cap(es), undo_drop_cap(en)
            pairs.append(Pair(en=en, es=es))
    return pairs


# A chapter counts as renumbered when shifting its verse numbers by up to this many makes the
# verse lengths agree this much better (mean |log length ratio|, the same-numbering fit as 1).
MAX_VERSE_SHIFT = 3
RENUMBERED_FIT = 0.8


def _renumbered_chapters(english: dict[str, str], spanish: dict[str, str]) -> set[str]:
    verses_by_chapter = defaultdict(list)
    for ref in spanish:
        chapter, verse = ref.rsplit(".", 1)
        verses_by_chapter[chapter].append(int(verse))
    renumbered = set()
    for chapter, verses in verses_by_chapter.items():
        same = _length_mismatch(english, spanish, chapter, verses, shift=0)
        shifted = min(_length_mismatch(english, spanish, chapter, verses, shift)
                      for shift in range(-MAX_VERSE_SHIFT, MAX_VERSE_SHIFT + 1) if shift)
        if shifted < RENUMBERED_FIT * same:
            renumbered.add(chapter)
    return renumbered


def _length_mismatch(english: dict[str, str], spanish: dict[str, str], chapter: str, verses: list[int],
                     shift: int) -> float:
    """Mean |log(English length / Spanish length)| of verse n against verse n + shift."""
    ratios = [
        abs(math.log(len(en) / len(es)))
        for verse in verses
        if (en := english.get(f"{chapter}.{verse}")) and (es := spanish.get(f"{chapter}.{verse + shift}"))
    ]
    # Two or three verses can line up by chance at any shift.
    return sum(ratios) / len(ratios) if len(ratios) > MAX_VERSE_SHIFT else math.inf


def _neighbours_of_empty(verses: dict[str, str]) -> set[str]:
    neighbours = set()
    for ref, text in verses.items():
        if not text:
            book, chapter, verse = ref.rsplit(".", 2)
            neighbours |= {f"{book}.{chapter}.{int(verse) + step}" for step in (-1, 1)}
    return neighbours


# Reina-Valera upper-cases the opening word(s) of every chapter ("EN el principio", "Y YO me
# paré"), a typesetting habit that would teach the model capitals the language does not have.
_WORD = re.compile(r"[^\W\d_]+")


def undo_drop_cap(text: str) -> str:
    """Sentence-case the first run of all-capital words (the drop cap) in a chapter's first verse."""
    words = list(_WORD.finditer(text))
    first = next((i for i, word in enumerate(words) if len(word.group()) > 1 and word.group().isupper()), None)
    if first is None:
        return text
    if first > 0 and words[first - 1].group().isupper() and words[first - 1].end() + 1 == words[first].start():
        first -= 1  # a one-letter conjunction belongs to the run: "Y YO" -> "Y yo"
    last = first
    while (last + 1 < len(words) and words[last + 1].group().isupper()
           and words[last].end() + 1 == words[last + 1].start()):
        last += 1
    start, end = words[first].start(), words[last].end()
    return text[:start + 1] + text[start + 1:end].lower() + text[end:]


def osis_to_text(osis: str) -> str:
    """Plain text of one verse's OSIS markup: words and canonical titles, no notes or headings."""
    parser = _OsisText()
    parser.feed(osis)
    parser.close()
    text = re.sub(r"\s+", " ", "".join(parser.parts)).strip()
    # Notes sit between words and are replaced by a space; where one sat before punctuation
    # that space must go again.
    return re.sub(r" (?=[,.;:!?’”)])", "", text)


class _OsisText(HTMLParser):
    # Elements whose content is commentary or layout, not the verse: footnotes, cross
    # references, the speaker labels of the Song of Songs, and editors' (non-canonical) headings.
    SKIPPED = {"note", "speaker"}
    # Elements that separate words; the others (w, transChange, q, divineName...) are inline.
    BREAKS = {"l", "lg", "lb", "div", "p", "chapter", "item", "list", "title", "milestone", "note"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping: list[str] = []  # open elements whose content is dropped
        self._book_ended = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_startendtag(tag, attrs)
        if tag in self.SKIPPED or (tag == "title" and dict(attrs).get("canonical") != "true"):
            self._skipping.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # Milestones (<div sID=.../>, <l eID=.../>) are empty: they break words but open nothing.
        attributes = dict(attrs)
        if tag == "div" and attributes.get("type") == "book" and "eid" in attributes:
            self._book_ended = True  # what follows a book's end (WEB's glossary after Revelation) is not scripture
        if tag in self.BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BREAKS:
            self.parts.append(" ")
        if self._skipping and self._skipping[-1] == tag:
            self._skipping.pop()

    def handle_data(self, data: str) -> None:
        if not self._skipping and not self._book_ended:
            self.parts.append(data)
