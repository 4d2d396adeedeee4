"""Narrative and dialogue: the Spanish catalogs of two role-playing games (docs/training.md).

FreedroidRPG ships compiled catalogs (`freedroidrpg-dialogs.mo`, its characters' lines, and
`freedroidrpg-data.mo`, item and place names); Flare ships its campaigns' `.po` sources under
`usr/share/games/flare/mods/<mod>/languages/`. Both are cleaned like the software catalogs
(accelerators, markup, format-only strings), and, because game text is full of prices and
item counts that a careless translation gets wrong ("costs 150 circuits" against "cuesta 500
circuitos"), a pair whose two sides do not carry the same numbers is left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import fetch
from model.training.corpus.gettext_catalogs import catalog_pairs, clean_pair

DOMAIN = "narrative"
FREEDROID_CATALOGS = ("freedroidrpg-dialogs.mo", "freedroidrpg-data.mo")
FLARE_CATALOGS = "usr/share/games/flare/mods/*/languages/*.es.po"
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def load(workdir: Path) -> list[SourceResult]:
    return [_freedroid(workdir), _flare(workdir)]


def _freedroid(workdir: Path) -> SourceResult:
    package = fetch("freedroidrpg-data", workdir)
    folder = package.root / "usr/share/locale/es/LC_MESSAGES"
    paths = [folder / name for name in FREEDROID_CATALOGS]
    pairs = [pair for path in paths for pair in catalog_pairs(path.read_bytes())]
    return _result("narrative:freedroidrpg", package, pairs, [str(p.relative_to(package.root)) for p in paths])


def _flare(workdir: Path) -> SourceResult:
    package = fetch("flare-game", workdir)
    paths = sorted(package.root.glob(FLARE_CATALOGS))
    pairs = [pair for path in paths for msgid, msgstr in read_po(path.read_text(encoding="utf-8"))
             if (pair := clean_pair(msgid, msgstr)) is not None]
    return _result("narrative:flare", package, pairs, [str(p.relative_to(package.root)) for p in paths])


def _result(name: str, package, pairs: list[Pair], catalogs: list[str]) -> SourceResult:
    provenance = package.provenance()
    return SourceResult(
        name=name,
        domain=DOMAIN,
        pairs=[pair for pair in pairs if same_numbers(pair)],
        provenance={"packages": [provenance], "license": provenance["license"], "catalogs": catalogs},
    )


def same_numbers(pair: Pair) -> bool:
    """Both sides carry the same numbers (a decimal comma and a decimal point count as one)."""
    def numbers(text: str) -> list[str]:
        return sorted(n.replace(",", ".") for n in _NUMBER.findall(text))
    return numbers(pair.en) == numbers(pair.es)


_PO_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")\s*$')


def read_po(text: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) of a .po file, as `read_mo` gives them for a compiled one.

    Entries are the blank-line separated blocks of the file. Fuzzy and obsolete (`#~`) entries are
    left out, as msgfmt leaves them out of a .mo, and so are the header and untranslated entries;
    a plural entry gives its singular and msgstr[0].
    """
    entries = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        if any(line.startswith("#,") and "fuzzy" in line for line in lines):
            continue
        fields: dict[str, str] = {}
        last = None
        for line in lines:
            keyword = _PO_KEYWORD.match(line)
            if keyword:
                name, index, literal = keyword.groups()
                last = None if index not in (None, "0") else "msgstr" if name.startswith("msgstr") else name
                if last:
                    fields[last] = ast.literal_eval(literal)
            elif line.startswith('"') and last:
                fields[last] += ast.literal_eval(line)
        if fields.get("msgid") and fields.get("msgstr"):
            entries.append((fields["msgid"], fields["msgstr"]))
    return entries
