"""English -> Spanish pairs from the gettext catalogs (.mo) of Debian packages (docs/training.md).

Two kinds of source: the packages the design names, fetched as .debs (one `SourceResult`
each), and the Spanish catalogs of the packages already installed on this machine, read from
/usr/share/locale (one `SourceResult` together, since their .debs are not necessarily still
in the archive at the installed version).
"""

from __future__ import annotations

import codecs
import fnmatch
import html
import re
import struct
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model.training.corpus import Pair, SourceResult
from model.training.corpus.debian import AptError, DebPackage, fetch, package_license, sha256_file

SPANISH_CATALOGS = "usr/share/locale/es/LC_MESSAGES/*.mo"


@dataclass(frozen=True)
class CatalogLocation:
    pattern: str  # glob under the unpacked package
    zip_member: str | None = None  # glob inside the archive the pattern matched, if it is a zip


# Where each named package keeps its Spanish catalogs. Most follow the gettext layout; calibre
# bundles its catalogs in a zip and WordPress keeps its own language folder (es_ES only, as the
# design's Spanish is `es`, not Chile's or Peru's variant).
PACKAGES: dict[str, CatalogLocation] = {
    "calibre": CatalogLocation("usr/share/calibre/localization/locales.zip", zip_member="es/*.mo"),
    "inkscape": CatalogLocation(SPANISH_CATALOGS),
    "gimp-data": CatalogLocation(SPANISH_CATALOGS),
    "vlc-l10n": CatalogLocation(SPANISH_CATALOGS),
    "krita-l10n": CatalogLocation(SPANISH_CATALOGS),
    "gnucash-common": CatalogLocation(SPANISH_CATALOGS),
    "freeciv-data": CatalogLocation(SPANISH_CATALOGS),
    "wordpress-l10n": CatalogLocation("usr/share/wordpress/wp-content/languages/*es_ES.mo"),
    "cinnamon-l10n": CatalogLocation(SPANISH_CATALOGS),
    "kdevelop-l10n": CatalogLocation(SPANISH_CATALOGS),
}

MO_MAGIC = 0x950412DE
CONTEXT_SEPARATOR = "\x04"


def load(workdir: Path) -> list[SourceResult]:
    results = [_package_source(fetch(name, workdir), location) for name, location in PACKAGES.items()]
    results.append(_installed_source())
    return results


def _package_source(package: DebPackage, location: CatalogLocation) -> SourceResult:
    catalogs = list(_catalogs(package.root, location))
    if not catalogs:
        raise AptError(f"{package.name} {package.version} has no Spanish catalog at {location.pattern}")
    pairs = [pair for _, data in catalogs for pair in catalog_pairs(data)]
    provenance = package.provenance()
    return SourceResult(
        name=f"gettext:{package.name}",
        domain="software",
        pairs=pairs,
        provenance={"packages": [provenance], "license": provenance["license"],
                    "catalogs": [name for name, _ in catalogs]},
    )


def _catalogs(root: Path, location: CatalogLocation) -> Iterator[tuple[str, bytes]]:
    """(name, .mo bytes) of every catalog at `location` in an unpacked package."""
    for path in sorted(root.glob(location.pattern)):
        if location.zip_member is None:
            yield str(path.relative_to(root)), path.read_bytes()
            continue
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if fnmatch.fnmatch(member, location.zip_member):
                    yield f"{path.relative_to(root)}!{member}", archive.read(member)


def _installed_source() -> SourceResult:
    """The Spanish catalogs installed on this machine, each credited to its owning package."""
    root = Path("/")
    paths = sorted(root.glob(SPANISH_CATALOGS))
    owners = _owning_packages(paths)
    pairs, packages = [], []
    for path in paths:
        pairs.extend(catalog_pairs(path.read_bytes()))
        name = owners.get(str(path))
        version = _installed_version(name) if name else None
        packages.append({"name": name, "version": version, "sha256": sha256_file(path), "file": str(path),
                         "license": package_license(root, name) if name else None})
    licenses = sorted({package["license"] for package in packages if package["license"]})
    return SourceResult(
        name="gettext:installed",
        domain="software",
        pairs=pairs,
        # No .deb is read here, so each entry hashes the catalog file itself.
        provenance={"packages": packages, "license": "; ".join(licenses)},
    )


def _owning_packages(paths: list[Path]) -> dict[str, str]:
    if not paths:
        return {}
    done = subprocess.run(["dpkg-query", "-S", *map(str, paths)], capture_output=True, text=True, check=False)
    owners = {}
    for line in done.stdout.splitlines():
        package, _, path = line.partition(": ")
        # Multi-arch packages print "name:arch"; several owners are comma-separated.
        owners[path] = package.split(",")[0].split(":")[0].strip()
    return owners


def _installed_version(package: str) -> str | None:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


# Entries whose "translation" is the list of translators (GNOME, KDE).
TRANSLATOR_CREDITS = {"translator-credits", "translator_credits", "Your names", "Your emails"}
# Freeciv's Q_() disambiguates short msgids with a "?context:" prefix that the program strips.
_QUALIFIER = re.compile(r"^\?[\w ]+:")


def catalog_pairs(data: bytes) -> list[Pair]:
    """English/Spanish pairs of one .mo file, cleaned of accelerators and markup."""
    return [pair for msgid, msgstr in read_mo(data) if (pair := clean_pair(msgid, msgstr)) is not None]


def clean_pair(msgid: str, msgstr: str) -> Pair | None:
    """One catalog entry cleaned of accelerators and markup, or None when nothing is left to translate."""
    if msgid in TRANSLATOR_CREDITS:
        return None
    en, es = strip_accelerators(_QUALIFIER.sub("", msgid), _QUALIFIER.sub("", msgstr))
    en, es = clean_ui_text(en), clean_ui_text(es)
    return Pair(en=en, es=es) if en and es and _has_letters(en) else None


def read_mo(data: bytes) -> list[tuple[str, str]]:
    """(msgid, msgstr) of a compiled catalog: context dropped, plurals as singular -> msgstr[0].

    The header (empty msgid) and untranslated entries are left out.
    """
    return [(entry.msgid, entry.msgstr) for entry in read_mo_entries(data)]


@dataclass(frozen=True)
class MoEntry:
    context: str | None  # msgctxt, when the entry has one
    msgid: str  # the singular, for a plural entry
    msgstr: str  # msgstr[0], for a plural entry
    plural: bool


def read_mo_entries(data: bytes) -> list[MoEntry]:
    """The translated entries of a compiled catalog with their context, for readers that need it."""
    byte_order = _byte_order(data)
    _, count, originals_at, translations_at = struct.unpack_from(byte_order + "4I", data, 4)
    raw = [
        (_mo_string(data, byte_order, originals_at + 8 * index),
         _mo_string(data, byte_order, translations_at + 8 * index))
        for index in range(count)
    ]
    charset = _charset(dict(raw).get(b"", b""))
    entries = []
    for original, translation in raw:
        singular, *plurals = original.decode(charset).split("\x00")
        context, separator, msgid = singular.rpartition(CONTEXT_SEPARATOR)
        msgstr = translation.decode(charset).split("\x00")[0]
        if msgid and msgstr:
            entries.append(MoEntry(context if separator else None, msgid, msgstr, bool(plurals)))
    return entries


def _byte_order(data: bytes) -> str:
    for order in ("<", ">"):
        if len(data) >= 20 and struct.unpack_from(order + "I", data)[0] == MO_MAGIC:
            return order
    raise ValueError("not a gettext .mo file (bad magic number)")


def _mo_string(data: bytes, byte_order: str, table_entry: int) -> bytes:
    length, offset = struct.unpack_from(byte_order + "2I", data, table_entry)
    return data[offset:offset + length]


def _charset(header: bytes) -> str:
    found = re.search(rb"charset=([\w.-]+)", header)
    if found is None:
        return "utf-8"
    try:
        return codecs.lookup(found.group(1).decode("ascii")).name
    except LookupError:  # catalogs built from an unfilled template declare "charset=CHARSET"
        return "utf-8"


# An accelerator marks the next character of a label as its keyboard shortcut: GTK writes
# "_File", Qt/KDE "&File" ("&&" is a literal ampersand). The Spanish label usually puts it on
# another letter, or drops it, so it is removed from both sides.
ACCELERATORS = (
    ("_", re.compile(r"(?<!_)_(?=[^\W_])")),
    ("&", re.compile(r"(?<!&)&(?!&|#?\w+;)(?=\w)")),
)
_TOKEN = re.compile(r"\S+")


def strip_accelerators(en: str, es: str) -> tuple[str, str]:
    """Remove the accelerator from each label when the pair agrees on having one.

    They agree when each side has exactly one marker, or one side has one and the other has no
    marker character at all. Anything else ("ebook_file" -> "archivo_de_libro") is text.
    """
    for char, marker in ACCELERATORS:
        en_hits, es_hits = _accelerators(marker, en, es), _accelerators(marker, es, en)
        one_each = len(en_hits) == 1 and len(es_hits) == 1
        one_side = (len(en_hits), len(es_hits)) in ((1, 0), (0, 1)) and char not in (es if en_hits else en)
        if one_each or one_side:
            en, es = _remove(en, en_hits), _remove(es, es_hits)
    return en, es


def _accelerators(marker: re.Pattern, text: str, other: str) -> list[re.Match]:
    """Markers in `text` that are not part of an identifier such as "VIDEO_TS" or "list_union".

    An identifier has several markers, or one inside a word that the translation copies verbatim.
    """
    other_tokens = {_bare(token.group()) for token in _TOKEN.finditer(other)}
    hits = []
    for hit in marker.finditer(text):
        token = next(token.group() for token in _TOKEN.finditer(text) if token.start() <= hit.start() < token.end())
        inside_word = hit.start() > 0 and text[hit.start() - 1].isalnum()
        if len(marker.findall(token)) == 1 and not (inside_word and _bare(token) in other_tokens):
            hits.append(hit)
    return hits


def _bare(token: str) -> str:
    return token.strip(".,;:!?()[]{}«»\"'“”‘’")


def _remove(text: str, hits: list[re.Match]) -> str:
    return text[:hits[0].start()] + text[hits[0].end():] if hits else text


# Rich-text labels (Qt's "<qt>", Pango's "<b>", KDE's "<filename>", WordPress's links); only
# known markup tags are removed, so placeholders like "<file>" or "<Ctrl>" stay. Block tags
# separate words, inline tags do not ("<b>Note</b>:" is "Note:").
_HTML_BLOCK_TAG = re.compile(
    r"</?(?:br|hr|p|div|qt|html|head|body|center|ul|ol|li|dl|dt|dd|h[1-6]|table|tr|td|th|pre|blockquote|"
    r"title|subtitle|para|list|item|nl|note|warning)\b[^<>]*>",
    flags=re.IGNORECASE,
)
_HTML_INLINE_TAG = re.compile(
    r"</?(?:a|b|i|u|s|em|strong|tt|code|kbd|span|font|big|small|sub|sup|nobr|img|abbr|cite|"
    r"emphasis|application|filename|command|interface|envar|icode|bcode|shortcut|link|email)\b[^<>]*>",
    flags=re.IGNORECASE,
)
# Only terminated entities: html.unescape would also read "&not" in "&nothing" as "¬".
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z]\w*);")


def clean_ui_text(text: str) -> str:
    text = _HTML_INLINE_TAG.sub("", _HTML_BLOCK_TAG.sub(" ", text))
    text = _ENTITY.sub(lambda entity: html.unescape(entity.group()), text)
    return re.sub(r"\s+", " ", text).strip()


def _has_letters(text: str) -> bool:
    """Format-only messages ("%s: %s", "%d%%") have nothing to translate."""
    return re.search(r"[^\W\d_]{2,}", re.sub(r"%\w", "", text)) is not None
