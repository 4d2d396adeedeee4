"""gettext catalogs (.po, .pot): each untranslated entry's msgid (and msgid_plural) are segments.

msgid, context, comments, references and flags stay; msgstr (every plural form) gets the
translation and the entry is marked fuzzy, so a translator reviews it. Entries already translated,
obsolete ones and the header are left as they are. A line break inside a msgid splits it into
segments, one per line, so the breaks survive.
"""

from __future__ import annotations

import re

import polib

from model.text.documents.base import (
    DocumentError,
    Extracted,
    Limits,
    decode_text,
    encode_text,
    markup_text,
    text_markup,
)


def read(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    _check_lines(text)
    try:
        catalog = polib.pofile(text, wrapwidth=78)
    except (OSError, ValueError) as e:
        raise DocumentError("syntax", f"the catalog has a syntax error: {_message(e)}") from None
    entries = [e for e in catalog if e.msgid and not e.obsolete and not e.translated() and not _has_text(e)]
    slots: list[tuple[polib.POEntry, str, int]] = []  # (entry, "msgid"/"msgid_plural", lines)
    segments: list[str] = []
    for entry in entries:
        for field in ("msgid", "msgid_plural"):
            value = getattr(entry, field)
            if value:
                lines = value.split("\n")
                slots.append((entry, field, len(lines)))
                segments.extend(text_markup(line) for line in lines)

    def write(translations: list[str]) -> bytes:
        done = iter(markup_text(t) for t in translations)
        found: dict[int, dict[str, str]] = {}
        for entry, field, count in slots:
            found.setdefault(id(entry), {})[field] = "\n".join(next(done) for _ in range(count))
        for entry in entries:
            values = found[id(entry)]
            if entry.msgid_plural:
                forms = max(len(entry.msgstr_plural), _plural_forms(catalog))
                entry.msgstr_plural = {i: values["msgid"] if i == 0 else values["msgid_plural"] for i in range(forms)}
            else:
                entry.msgstr = values["msgid"]
            if "fuzzy" not in entry.flags:
                entry.flags.append("fuzzy")
        return encode_text(str(catalog) + "\n", data)

    return Extracted(data, segments, write)


# A line of a catalog that is not a comment: a keyword with a quoted string, or a continued string.
_LINE = re.compile(r'(msgctxt|msgid|msgid_plural|msgstr(\[\d+\])?)?\s*"(\\.|[^"\\])*"\s*')


def _check_lines(text: str) -> None:
    """polib lets an unterminated string through (it drops its last character); refuse it, naming the line."""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not _LINE.fullmatch(stripped):
            raise DocumentError("syntax", f"the catalog has a syntax error at line {number}: {stripped[:60]!r}")


def _has_text(entry: polib.POEntry) -> bool:
    return bool(entry.msgstr or any(entry.msgstr_plural.values()))


def _plural_forms(catalog: polib.POFile) -> int:
    match = re.search(r"nplurals\s*=\s*(\d+)", catalog.metadata.get("Plural-Forms", ""))
    return int(match.group(1)) if match else 2


def _message(error: Exception) -> str:
    """polib's message, which names the line ("... (line 12)")."""
    return str(error).strip() or type(error).__name__
