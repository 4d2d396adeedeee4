"""Offline tests of the parsing inside the package-shipped corpus readers (no apt, no network)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from model.corpus import Pair
from model.corpus.bible import align_verses, osis_to_text, undo_drop_cap
from model.corpus.debian import download, package_license
from model.corpus.documents import align_documents, extract_blocks
from model.corpus.gettext_catalogs import catalog_pairs, clean_ui_text, read_mo, strip_accelerators
from model.corpus.narrative import read_po, same_numbers

HEADER = b"Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def build_mo(entries: list[tuple[bytes, bytes]], byte_order: str = "<") -> bytes:
    """A compiled gettext catalog in the format msgfmt writes (without the optional hash table)."""
    entries = sorted(entries)
    count = len(entries)
    originals_at = 28
    translations_at = originals_at + 8 * count
    data_at = translations_at + 8 * count
    tables, blob = [b"", b""], b""
    for column in (0, 1):
        for entry in entries:
            tables[column] += struct.pack(byte_order + "2I", len(entry[column]), data_at + len(blob))
            blob += entry[column] + b"\x00"
    header = struct.pack(byte_order + "7I", 0x950412DE, 0, count, originals_at, translations_at, 0, data_at)
    return header + tables[0] + tables[1] + blob


# --- gettext ---------------------------------------------------------------------------------

def test_read_mo_skips_header_and_untranslated_and_strips_context_and_plurals() -> None:
    mo = build_mo([
        (b"", HEADER),
        (b"Open", b"Abrir"),
        (b"menu\x04Open", b"Abrir men\xc3\xba"),
        (b"%d file\x00%d files", b"%d archivo\x00%d archivos"),
        (b"Untranslated", b""),
    ])
    assert sorted(read_mo(mo)) == [("%d file", "%d archivo"), ("Open", "Abrir"), ("Open", "Abrir menú")]


def test_read_mo_big_endian_and_declared_charset() -> None:
    mo = build_mo([(b"", b"Content-Type: text/plain; charset=ISO-8859-1\n"), (b"Year", b"A\xf1o")], byte_order=">")
    assert read_mo(mo) == [("Year", "Año")]


def test_read_mo_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="magic"):
        read_mo(b"\x00" * 32)


@pytest.mark.parametrize(("en", "es", "expected"), [
    ("_File", "_Archivo", ("File", "Archivo")),  # GTK
    ("Save _As…", "Guardar _como…", ("Save As…", "Guardar como…")),
    ("Re_do", "Re_hacer", ("Redo", "Rehacer")),  # inside a word
    ("_Color", "_Color", ("Color", "Color")),
    ("Saved Sce_narios:", "Escenarios guardados:", ("Saved Scenarios:", "Escenarios guardados:")),  # dropped in Spanish
    ("&Open", "&Abrir", ("Open", "Abrir")),  # Qt/KDE
    ("Defor&m Selection", "Defor&mar la selección", ("Deform Selection", "Deformar la selección")),
    ("Copy && Paste", "Copiar && pegar", ("Copy && Paste", "Copiar && pegar")),  # literal ampersand
    ("Tom &amp; Jerry", "Tom &amp; Jerry", ("Tom &amp; Jerry", "Tom &amp; Jerry")),  # an entity
    ("Convert & Stream", "Convertir y emitir", ("Convert & Stream", "Convertir y emitir")),
    ("file_name", "file_name", ("file_name", "file_name")),  # an identifier
    ("Open VIDEO_TS folder", "Abrir la carpeta VIDEO_TS.", ("Open VIDEO_TS folder", "Abrir la carpeta VIDEO_TS.")),
    ("%prog ebook_file", "%prog archivo_de_libro", ("%prog ebook_file", "%prog archivo_de_libro")),
])
def test_strip_accelerators(en: str, es: str, expected: tuple[str, str]) -> None:
    assert strip_accelerators(en, es) == expected


def test_clean_ui_text_removes_markup_but_keeps_placeholders() -> None:
    text = "<qt>Open <b>the</b> <filename>%1</filename>.<br/>Use <file> &amp; &nothing  else</qt>"
    assert clean_ui_text(text) == "Open the %1. Use <file> & &nothing else"


def test_catalog_pairs_cleans_and_filters() -> None:
    mo = build_mo([
        (b"", HEADER),
        (b"_Quit", b"_Salir"),
        (b"translator-credits", b"Ana <ana@example.org>"),
        (b"NAME OF TRANSLATORS\x04Your names", b"Ana"),
        (b"?plural:Romans", b"Romanos"),
        (b"%s: %s", b"%s: %s"),
        (b"<b>Note</b>:\n  read   this", b"<b>Nota</b>:\n lea esto"),
    ])
    assert sorted(catalog_pairs(mo), key=lambda pair: pair.en) == [
        Pair(en="Note: read this", es="Nota: lea esto"),
        Pair(en="Quit", es="Salir"),
        Pair(en="Romans", es="Romanos"),
    ]


# --- documents -------------------------------------------------------------------------------

EN_PAGE = """<html><head><title>2.1. Crop</title></head><body>
<div class="navheader"><table><tr><td>Prev</td><td>Next</td></tr></table></div>
<h2 class="title">2.1. Crop</h2>
<p>The crop tool cuts an image to <span class="guilabel">size</span>.</p>
<p>Press   <code class="literal">Enter</code> to crop 25 pixels.</p>
<pre class="screen">$ convert in.png -crop 10x10 out.png</pre>
<ul><li><p>First item</p></li><li>Second item</li></ul>
<table><tr><td><code class="literal">apt-get</code></td><td>package tool</td></tr></table>
<p>Not translated yet.</p>
<div class="navfooter"><p>Home</p></div>
</body></html>"""

ES_PAGE = """<html><head><title>2.1. Recortar</title></head><body>
<div class="navheader"><table><tr><td>Anterior</td><td>Siguiente</td></tr></table></div>
<h2 class="title">2.1. Recortar</h2>
<p>La herramienta de recorte corta una imagen a su tamaño.</p>
<p>Pulse <code class="literal">Enter</code> para recortar 25 píxeles.</p>
<pre class="screen">$ convert in.png -crop 10x10 out.png</pre>
<ul><li><p>Primer elemento</p></li><li>Segundo elemento</li></ul>
<table><tr><td><code class="literal">apt-get</code></td><td>herramienta de paquetes</td></tr></table>
<p>Not translated yet.</p>
<div class="navfooter"><p>Inicio</p></div>
</body></html>"""

EXPECTED_PAIRS = [
    Pair(en="Crop", es="Recortar"),
    Pair(en="Crop", es="Recortar"),
    Pair(en="The crop tool cuts an image to size.", es="La herramienta de recorte corta una imagen a su tamaño."),
    Pair(en="Press Enter to crop 25 pixels.", es="Pulse Enter para recortar 25 píxeles."),
    Pair(en="First item", es="Primer elemento"),
    Pair(en="Second item", es="Segundo elemento"),
    Pair(en="package tool", es="herramienta de paquetes"),
]


def test_extract_blocks_skips_navigation_listings_and_code_only_cells() -> None:
    blocks = extract_blocks(EN_PAGE)
    assert [(block.kind, block.text) for block in blocks] == [
        ("title", "Crop"),
        ("h2", "Crop"),
        ("p", "The crop tool cuts an image to size."),
        ("p", "Press Enter to crop 25 pixels."),
        ("p", "First item"),
        ("li", "Second item"),
        ("td", "package tool"),
        ("p", "Not translated yet."),
    ]
    assert blocks[3].signature == ("p", ("25",), ("Enter",))


def test_align_documents_with_the_same_structure_pairs_blocks_in_order_without_untranslated_ones() -> None:
    spelled_out = ES_PAGE.replace("recortar 25 píxeles", "recortar veinticinco píxeles")
    assert align_documents(en_html=EN_PAGE, es_html=ES_PAGE) == EXPECTED_PAIRS
    assert align_documents(en_html=EN_PAGE, es_html=spelled_out)[3] == Pair(
        en="Press Enter to crop 25 pixels.", es="Pulse Enter para recortar veinticinco píxeles.")


def test_align_documents_with_an_extra_block_aligns_on_numbers_and_code() -> None:
    extra = ES_PAGE.replace("<ul>", "<p>Véase también la sección 3.</p><ul>")
    assert align_documents(en_html=EN_PAGE, es_html=extra) == EXPECTED_PAIRS


# --- bible -----------------------------------------------------------------------------------

def test_osis_to_text_keeps_words_and_canonical_titles_only() -> None:
    osis = ('<div type="x-milestone" subType="x-preverse" sID="pv1"/><title canonical="true" type="psalm">'
            'A Psalm by David.</title> <title type="section">Editor heading</title><l level="1" sID="l1"/>'
            '<w lemma="strong:H0430">God</w><note placement="foot"><reference>1:1 </reference>Elohim.</note>'
            '<w lemma="strong:H1254">created</w> the earth<note>a note</note>.<l eID="l1" level="1"/>')
    assert osis_to_text(osis) == "A Psalm by David. God created the earth."


def test_osis_to_text_stops_at_the_end_of_the_book() -> None:
    osis = 'Amen.<div eID="gen1" type="book"/> <div sID="gen2" type="glossary"/>Abba means father.'
    assert osis_to_text(osis) == "Amen."


def test_osis_to_text_joins_supplied_words() -> None:
    osis = '<w lemma="strong:G1">Y</w> <transChange type="added">les</transChange> <w>dijo</w>: &amp; ya'
    assert osis_to_text(osis) == "Y les dijo: & ya"


@pytest.mark.parametrize(("text", "expected"), [
    ("EN el principio crió Dios", "En el principio crió Dios"),
    ("Y YO me paré sobre la arena", "Y yo me paré sobre la arena"),
    ("Salmo de David. JEHOVÁ es mi pastor", "Salmo de David. Jehová es mi pastor"),
    ("¡OH Jehová", "¡Oh Jehová"),
    ("A Psalm by David. Yahweh is my shepherd", "A Psalm by David. Yahweh is my shepherd"),
])
def test_undo_drop_cap(text: str, expected: str) -> None:
    assert undo_drop_cap(text) == expected


def test_align_verses_drops_a_chapter_that_keeps_another_numbering() -> None:
    lengths = [10, 40, 15, 60, 20, 80, 12, 50]
    english = {f"Jonah.2.{n}": "e" * length for n, length in enumerate(lengths, start=1)}
    shifted = {f"Jonah.2.{n}": "s" * length for n, length in enumerate(lengths[1:] + [30], start=1)}
    same = {f"Jonah.2.{n}": "s" * length for n, length in enumerate(lengths, start=1)}
    assert align_verses(english=english, spanish=shifted) == []
    assert len(align_verses(english=english, spanish=same)) == len(lengths)


def test_align_verses_drops_the_neighbours_of_a_merged_verse() -> None:
    spanish = {"Gen.1.1": "EN el principio", "Gen.1.2": "uno", "Job.1.1": "a+b", "Job.1.2": "", "Job.1.3": "c"}
    english = {"Gen.1.1": "In the beginning", "Gen.1.2": "one", "Job.1.1": "a", "Job.1.2": "b", "Job.1.3": "c"}
    assert align_verses(english=english, spanish=spanish) == [
        Pair(en="In the beginning", es="En el principio"),
        Pair(en="one", es="uno"),
    ]


# --- debian ----------------------------------------------------------------------------------

def test_download_reuses_a_cached_deb_without_apt(tmp_path: Path) -> None:
    cached = tmp_path / "sword-text-web_426.0-1_all.deb"
    cached.write_bytes(b"not really a deb")
    (tmp_path / "sword-text-web-extra_1.0_all.deb").write_bytes(b"another package")
    assert download("sword-text-web", tmp_path) == cached


def test_package_license_reads_the_files_star_stanza(tmp_path: Path) -> None:
    doc = tmp_path / "usr/share/doc/demo"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: debian/*\nLicense: MIT\n\nFiles: *\nCopyright: someone\nLicense: GPL-2+\n text\n"
    )
    assert package_license(tmp_path, "demo") == "GPL-2+"
    (doc / "copyright").write_text("This package was debianized by someone.\nLicense: GNU GPL\n")
    assert package_license(tmp_path, "demo") == "see /usr/share/doc/demo/copyright"


# --- narrative: .po catalogs and the numbers check --------------------------------------------

PO = r'''# header comment
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"

#: ../items/items.txt:8
msgid "Gold"
msgstr "Oro"

#, fuzzy
msgid "Iron Sword"
msgstr "Espada de hierro vieja"

#: ../dialogs/a.txt
msgctxt "greeting"
msgid ""
"Lord Konrad, the orcs "
"are coming!"
msgstr ""
"¡Señor Konrad, vienen "
"los orcos!"

msgid "%d potion"
msgid_plural "%d potions"
msgstr[0] "%d poción"
msgstr[1] "%d pociones"

msgid "Untranslated"
msgstr ""

#~ msgid "Obsolete"
#~ msgstr "Obsoleto"
'''


def test_read_po_keeps_translated_entries_and_skips_fuzzy_obsolete_and_header() -> None:
    assert read_po(PO) == [
        ("Gold", "Oro"),
        ("Lord Konrad, the orcs are coming!", "¡Señor Konrad, vienen los orcos!"),
        ("%d potion", "%d poción"),
    ]


@pytest.mark.parametrize("en, es, same", [
    ("I want to code (costs 150 circuits, 13 points)", "Quiero programar (cuesta 500 circuitos, 15 puntos)", False),
    ("It costs 1.5 coins", "Cuesta 1,5 monedas", True),
    ("Go north", "Ve al norte", True),
    ("Take 2 potions", "Toma dos pociones", False),
])
def test_narrative_pairs_must_carry_the_same_numbers(en: str, es: str, same: bool) -> None:
    assert same_numbers(Pair(en, es)) is same
