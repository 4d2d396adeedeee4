"""Offline tests of the parsing inside the package-shipped corpus readers (no apt, no network)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from model.training.corpus import Pair, cataclysm, gnome_help
from model.training.corpus.bible import align_verses, osis_to_text, undo_drop_cap
from model.training.corpus.debian import download, package_license
from model.training.corpus.documents import align_documents, extract_blocks
from model.training.corpus.gettext_catalogs import (
    MoEntry,
    catalog_pairs,
    clean_ui_text,
    read_mo,
    read_mo_entries,
    strip_accelerators,
)
from model.training.corpus.narrative import read_po, same_numbers

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


# --- narrative: Cataclysm: Dark Days Ahead ----------------------------------------------------

def test_read_mo_entries_keeps_context_and_marks_plurals() -> None:
    mo = build_mo([
        (b"", HEADER),
        (b"key name\x04HOME", b"INICIO"),
        (b"pair of EOD gloves\x00pairs of EOD gloves", b"par de guantes EOD\x00pares de guantes EOD"),
        (b"Untranslated", b""),
    ])
    assert sorted(read_mo_entries(mo), key=lambda entry: entry.msgid) == [
        MoEntry(context="key name", msgid="HOME", msgstr="INICIO", plural=False),
        MoEntry(context=None, msgid="pair of EOD gloves", msgstr="par de guantes EOD", plural=True),
    ]


CATACLYSM_ENTRIES = [
    (b"", HEADER),
    # Colour and emphasis spans go, their words stay, nested or not.
    (b"<color_yellow>Warning:</color> the <good><bold>bridge</bold></good> is out.",
     "<color_yellow>Atención:</color> el <good><bold>puente</bold></good> está caído.".encode()),
    # A gendered variant of a sentence keeps its context-free pair.
    (b"memorial_female\x04You were a survivor.", b"Eras una superviviente."),
    (b"pair of EOD gloves\x00pairs of EOD gloves", b"par de guantes EOD\x00pares de guantes EOD"),
    # Lines of a list become pairs of their own, without their bullets; blank lines separate nothing.
    (b"Profit: $12/hour\nDanger: Minimal\n\n- Bring water.",
     "Ganancia: 12$/hora\nPeligro: Mínimo\n\n- Trae agua.".encode()),
    (b"Step aside, <name_g>!", "¡Apártate, <name_g>!".encode()),
    (b"Hello there, <npcname>.", b"Hola."),
    (b"%s moves out of the way.", b"%s se quita del medio."),
    (b"One line\nand another", "Una sola línea".encode()),
    (b"key name\x04HOME", b"INICIO"),
    (b"training intensity\x04High", b"Drogado"),
    (b"It costs 150 circuits.", b"Cuesta 500 circuitos."),
    (b"----", b"----"),
]


def test_cataclysm_catalog_is_cleaned_to_plain_text_and_counts_what_it_drops() -> None:
    pairs, dropped = cataclysm.catalog_lines(read_mo_entries(build_mo(CATACLYSM_ENTRIES)))
    assert sorted(pairs, key=lambda pair: pair.en) == [
        Pair(en="Bring water.", es="Trae agua."),
        Pair(en="Danger: Minimal", es="Peligro: Mínimo"),
        Pair(en="Profit: $12/hour", es="Ganancia: 12$/hora"),
        Pair(en="Warning: the bridge is out.", es="Atención: el puente está caído."),
        Pair(en="You were a survivor.", es="Eras una superviviente."),
        Pair(en="pair of EOD gloves", es="par de guantes EOD"),
    ]
    assert dropped == {"substitution_tag": 1, "tag_mismatch": 1, "placeholder": 1, "line_mismatch": 1,
                       "context_fragment": 2, "number_mismatch": 1, "no_text": 1}


@pytest.mark.parametrize(("text", "expected"), [
    ("<color_light_green>%s</color> ready", "%s ready"),
    ("<color_%s>any colour</color>", "any colour"),
    ("<info><stat>Strength</stat></info> rises", "Strength rises"),
    ("Press <npcname> now", "Press <npcname> now"),  # a substitution tag is not a span
    ("a < b and c > d", "a < b and c > d"),
])
def test_cataclysm_strip_spans(text: str, expected: str) -> None:
    assert cataclysm.strip_spans(text) == expected


# --- prose: the GNOME help's Mallard pages ---------------------------------------------------

EN_MALLARD = """<page xmlns="http://projectmallard.org/1.0/" xmlns:its="http://www.w3.org/2005/11/its"
      type="topic" id="a11y-bouncekeys">
  <info>
    <revision pkgversion="3.8" date="2013-03-13" status="final"/>
    <credit type="author"><name>Shaun McCance</name></credit>
    <desc>Ignore quickly-repeated key presses.</desc>
  </info>
  <title>Turn on bounce keys</title>
  <p>Turn on <em>bounce keys</em> to ignore key
  presses that are rapidly repeated.</p>
  <steps>
    <item><p>Open the <gui xref="shell-introduction">Activities</gui> overview.</p></item>
    <item><p>Press <keyseq><key>Ctrl</key><key>Alt</key><key>T</key></keyseq> to open a terminal.</p></item>
  </steps>
  <screen>gsettings set org.gnome.desktop.a11y bounce-keys true</screen>
  <comment><cite>shaunm</cite><p>Say more about Orca.</p></comment>
  <note style="tip">
    <title>Quickly turn bounce keys on</title>
    <p>See <link xref="a11y-icon"/> for the icon.</p>
  </note>
  <table><tr><td><p>Delay</p></td><td><p>500</p></td></tr></table>
  <p>Not translated yet.</p>
</page>"""

ES_MALLARD = """<?xml version="1.0" encoding="utf-8"?>
<page xmlns="http://projectmallard.org/1.0/" xmlns:its="http://www.w3.org/2005/11/its"
      type="topic" id="a11y-bouncekeys" xml:lang="es">
  <info>
    <revision pkgversion="3.8" date="2013-03-13" status="final"/>
    <credit type="author"><name>Shaun McCance</name></credit>
    <desc>Ignorar pulsaciones rápidas de la misma tecla.</desc>
    <mal:credit xmlns:mal="http://projectmallard.org/1.0/" type="translator copyright">
      <mal:name>Daniel Mustieles</mal:name>
    </mal:credit>
  </info>
  <title>Activar el rechazo de teclas</title>
  <p>Active el <em>rechazo de teclas</em> para ignorar las pulsaciones repetidas rápidamente.</p>
  <steps>
    <item><p>Abra la vista de <gui xref="shell-introduction">Actividades</gui>.</p></item>
    <item><p>Pulse <keyseq><key>Ctrl</key><key>Alt</key><key>T</key></keyseq> para abrir una terminal.</p></item>
  </steps>
  <screen>gsettings set org.gnome.desktop.a11y bounce-keys true</screen>
  <comment><cite>shaunm</cite><p>Say more about Orca.</p></comment>
  <note style="tip">
    <title>Activar rápidamente el rechazo de teclas</title>
    <p>Vea <link xref="a11y-icon"/> para el icono.</p>
  </note>
  <table><tr><td><p>Retardo</p></td><td><p>500</p></td></tr></table>
  <p>Not translated yet.</p>
</page>"""

GNOME_HELP_PAIRS = [
    Pair("Ignore quickly-repeated key presses.", "Ignorar pulsaciones rápidas de la misma tecla."),
    Pair("Turn on bounce keys", "Activar el rechazo de teclas"),
    Pair("Turn on bounce keys to ignore key presses that are rapidly repeated.",
         "Active el rechazo de teclas para ignorar las pulsaciones repetidas rápidamente."),
    Pair("Open the Activities overview.", "Abra la vista de Actividades."),
    Pair("Press Ctrl+Alt+T to open a terminal.", "Pulse Ctrl+Alt+T para abrir una terminal."),
    Pair("Quickly turn bounce keys on", "Activar rápidamente el rechazo de teclas"),
    Pair("Delay", "Retardo"),
]


def test_mallard_blocks_skip_credits_listings_comments_and_made_up_text() -> None:
    blocks = gnome_help.page_blocks(EN_MALLARD.encode())
    assert [(block.path, block.text) for block in blocks] == [
        ("page/info/desc", "Ignore quickly-repeated key presses."),
        ("page/title", "Turn on bounce keys"),
        ("page/p", "Turn on bounce keys to ignore key presses that are rapidly repeated."),
        ("page/steps/item/p", "Open the Activities overview."),
        ("page/steps/item/p", "Press Ctrl+Alt+T to open a terminal."),
        ("page/note/title", "Quickly turn bounce keys on"),
        ("page/note/p", None),  # the viewer writes the linked page's title into the empty link
        ("page/table/tr/td/p", "Delay"),
        ("page/table/tr/td/p", None),  # a number only
        ("page/p", "Not translated yet."),
    ]


def test_mallard_pages_with_the_same_blocks_pair_in_order_without_untranslated_ones() -> None:
    assert gnome_help.align_pages(EN_MALLARD.encode(), ES_MALLARD.encode()) == GNOME_HELP_PAIRS


def test_mallard_pages_whose_blocks_differ_give_nothing() -> None:
    extra = ES_MALLARD.replace("<steps>", "<p>Véase también la sección 3.</p><steps>")
    assert gnome_help.align_pages(EN_MALLARD.encode(), extra.encode()) is None
    assert gnome_help.align_pages(EN_MALLARD.encode(), b"<page><p>cut off") is None


def test_mallard_pages_are_read_without_fetching_external_entities(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read me")
    page = f'<!DOCTYPE page [<!ENTITY x SYSTEM "file://{secret}">]><page><p>Hello &x; there</p></page>'
    assert gnome_help.align_pages(page.encode(), page.encode()) is None  # an undefined entity is a parse error


# --- both readers on packages built here (dpkg-deb, no apt) ---------------------------------

def build_deb(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    """A minimal .deb of `files` (path -> content), the way `apt-get download` would leave it."""
    tree = folder / "tree" / package
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
                                          "Maintainer: Test <test@example.org>\nDescription: test package\n")
    deb = folder / "debs" / f"{package}_1.0-1_all.deb"
    deb.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (a Debian system)")
def test_new_readers_load_their_packages(tmp_path: Path) -> None:
    copyright_file = b"Files: *\nCopyright: someone\nLicense: CC-BY-SA-3.0\n"
    build_deb(tmp_path, "cataclysm-dda-data", {
        cataclysm.CATALOG: build_mo(CATACLYSM_ENTRIES),
        "usr/share/locale/es_AR/LC_MESSAGES/cataclysm-dda.mo": build_mo([(b"", HEADER), (b"Hello.", b"Hola, vos.")]),
        "usr/share/doc/cataclysm-dda-data/copyright": copyright_file,
    })
    build_deb(tmp_path, "gnome-user-docs", {
        f"{gnome_help.EN_DIR}/a11y-bouncekeys.page": EN_MALLARD.encode(),
        f"{gnome_help.ES_DIR}/a11y-bouncekeys.page": ES_MALLARD.encode(),
        f"{gnome_help.EN_DIR}/only-english.page": EN_MALLARD.encode(),
        "usr/share/doc/gnome-user-docs/copyright": copyright_file,
    })
    (game,) = cataclysm.load(tmp_path)
    assert (game.name, game.domain, len(game.pairs)) == ("narrative:cataclysm-dda", "narrative", 6)
    assert Pair("Hello.", "Hola, vos.") not in game.pairs  # es_AR is not read
    assert game.provenance["packages"][0]["version"] == "1.0-1" and game.provenance["license"] == "CC-BY-SA-3.0"
    assert game.provenance["dropped_entries"]["context_fragment"] == 2
    (help_pages,) = gnome_help.load(tmp_path)
    assert (help_pages.name, help_pages.domain, help_pages.pairs) == ("doc:gnome-help", "prose", GNOME_HELP_PAIRS)
    assert (help_pages.provenance["pages"], help_pages.provenance["pages_aligned"]) == (1, 1)
