"""Each document format read and written back: real files made by the format's own library, a
stand-in translation (the text of every segment upper-cased, tags and entities untouched, so a
test knows what each word became), and the output read back by that library with the same structure."""

from __future__ import annotations

import io
import re
import zipfile

import docx
import ebooklib
import polib
import pptx
import pytest
import srt
import webvtt
from docx.shared import Pt
from ebooklib import epub
from lxml import etree
from odf import teletype
from odf import text as odftext
from odf.opendocument import OpenDocumentPresentation, OpenDocumentText, load
from odf.style import Style, TextProperties

from bench.documents import epub_bytes
from model.text import documents
from model.text.documents import DocumentError, Limits

_PIECES = re.compile(r"(<[^>]*>|&[#\w]+;)")


def shout(segment: str) -> str:
    """A stand-in translation: text upper-cased, tags and entities as they were."""
    return "".join(p if _PIECES.fullmatch(p) else p.upper() for p in _PIECES.split(segment))


def translated(name: str, data: bytes) -> bytes:
    extracted = documents.read(name, data)
    assert extracted.segments, "the file has text to translate"
    return extracted.write([shout(s) for s in extracted.segments])


# --- docx ------------------------------------------------------------------------------------


def make_docx() -> bytes:
    d = docx.Document()
    d.core_properties.title = "Informe anual"
    p = d.add_paragraph("El gato ")
    bold = p.add_run("negro")
    bold.bold = True
    p.add_run(" come ")
    italic = p.add_run("pescado")
    italic.italic = True
    italic.font.size = Pt(14)
    p.add_run(" fresco.")
    d.add_heading("Un título", level=1)
    table = d.add_table(rows=2, cols=2)
    for i, cell in enumerate(table._cells):
        cell.text = f"celda {i}"
    d.sections[0].header.paragraphs[0].text = "Cabecera del documento"
    d.sections[0].footer.paragraphs[0].text = "Pie de página"
    d.add_paragraph("12345")  # nothing to translate
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def runs_of(paragraph) -> list[tuple[str, bool | None, bool | None]]:
    return [(r.text, r.bold, r.italic) for r in paragraph.runs]


def test_docx_runs_keep_their_styles_on_the_translated_words():
    source = make_docx()
    out = docx.Document(io.BytesIO(translated("a.docx", source)))
    first = out.paragraphs[0]
    assert first.text == "EL GATO NEGRO COME PESCADO FRESCO."
    assert runs_of(first) == [("EL GATO ", None, None), ("NEGRO", True, None), (" COME ", None, None),
                              ("PESCADO", None, True), (" FRESCO.", None, None)]
    assert first.runs[3].font.size == Pt(14)
    assert out.paragraphs[1].text == "UN TÍTULO" and out.paragraphs[1].style.name == "Heading 1"
    assert [c.text for c in out.tables[0]._cells] == [f"CELDA {i}" for i in range(4)]
    assert out.sections[0].header.paragraphs[0].text == "CABECERA DEL DOCUMENTO"
    assert out.sections[0].footer.paragraphs[0].text == "PIE DE PÁGINA"
    assert out.core_properties.title == "INFORME ANUAL"
    assert out.paragraphs[-1].text == "12345"


def test_docx_hyperlink_and_tab_survive():
    d = docx.Document()
    p = d.add_paragraph("Visita ")
    run = p.add_run()
    run.add_tab()
    run.add_text("la página")
    out = io.BytesIO()
    d.save(out)
    result = docx.Document(io.BytesIO(translated("t.docx", out.getvalue())))
    xml = etree.tostring(result.paragraphs[0]._p).decode()
    assert "<w:tab/>" in xml
    assert result.paragraphs[0].text == "VISITA \tLA PÁGINA"


# --- pptx ------------------------------------------------------------------------------------


def make_pptx() -> bytes:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Resultados del año"
    body = slide.placeholders[1].text_frame
    body.text = "Ventas "
    run = body.paragraphs[0].add_run()
    run.text = "altas"
    run.font.bold = True
    body.add_paragraph().text = "Segundo punto"
    slide.notes_slide.notes_text_frame.text = "Notas del orador"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_pptx_slides_notes_and_runs():
    out = pptx.Presentation(io.BytesIO(translated("a.pptx", make_pptx())))
    slide = out.slides[0]
    assert slide.shapes.title.text == "RESULTADOS DEL AÑO"
    paragraphs = slide.placeholders[1].text_frame.paragraphs
    assert [(r.text, r.font.bold) for r in paragraphs[0].runs] == [("VENTAS ", None), ("ALTAS", True)]
    assert paragraphs[1].text == "SEGUNDO PUNTO"
    assert slide.notes_slide.notes_text_frame.text == "NOTAS DEL ORADOR"
    assert len(out.slides) == 1


# --- odt / odp -------------------------------------------------------------------------------


def make_odt() -> bytes:
    doc = OpenDocumentText()
    bold = Style(name="Bold", family="text")
    bold.addElement(TextProperties(fontweight="bold"))
    doc.automaticstyles.addElement(bold)
    p = odftext.P(text="El perro ")
    p.addElement(odftext.Span(stylename=bold, text="blanco"))
    p.addText(" duerme.")
    doc.text.addElement(p)
    doc.text.addElement(odftext.H(outlinelevel=1, text="Capítulo uno"))
    out = io.BytesIO()
    doc.write(out)
    return out.getvalue()


def test_odt_spans_keep_their_style():
    result = load(io.BytesIO(translated("a.odt", make_odt())))
    paragraphs = result.getElementsByType(odftext.P)
    assert teletype.extractText(paragraphs[0]) == "EL PERRO BLANCO DUERME."
    spans = paragraphs[0].getElementsByType(odftext.Span)
    assert [(teletype.extractText(s), s.getAttribute("stylename")) for s in spans] == [("BLANCO", "Bold")]
    assert teletype.extractText(result.getElementsByType(odftext.H)[0]) == "CAPÍTULO UNO"


def test_odt_mimetype_stays_first_and_stored():
    members = zipfile.ZipFile(io.BytesIO(translated("a.odt", make_odt()))).infolist()
    assert members[0].filename == "mimetype" and members[0].compress_type == zipfile.ZIP_STORED


def test_odp_slide_text():
    from odf.draw import Frame, Page, TextBox
    from odf.style import MasterPage, PageLayout

    doc = OpenDocumentPresentation()
    layout = PageLayout(name="L")
    doc.automaticstyles.addElement(layout)
    master = MasterPage(name="M", pagelayoutname=layout)
    doc.masterstyles.addElement(master)
    page = Page(masterpagename=master)
    frame = Frame(width="10cm", height="3cm", x="1cm", y="1cm")
    box = TextBox()
    box.addElement(odftext.P(text="Hola a todos"))
    frame.addElement(box)
    page.addElement(frame)
    doc.presentation.addElement(page)
    out = io.BytesIO()
    doc.write(out)
    result = load(io.BytesIO(translated("a.odp", out.getvalue())))
    assert [teletype.extractText(p) for p in result.getElementsByType(odftext.P)] == ["HOLA A TODOS"]
    assert len(result.getElementsByType(Page)) == 1


# --- epub ------------------------------------------------------------------------------------


def make_epub() -> bytes:
    book = epub.EpubBook()
    book.set_identifier("id123")
    book.set_title("Mi libro")
    book.set_language("es")
    chapter = epub.EpubHtml(title="Capítulo", file_name="c1.xhtml", lang="es")
    chapter.content = "<h1>Capítulo uno</h1><p>El gato <em>negro</em> duerme.</p><p><img src='x.png'/></p>"
    book.toc = [epub.Link("c1.xhtml", "Capítulo uno", "c1")]
    return epub_bytes(book, chapter)


def test_epub_chapters_and_title():
    out = io.BytesIO(translated("a.epub", make_epub()))
    book = epub.read_epub(out)
    assert book.get_metadata("DC", "title")[0][0] == "MI LIBRO"
    chapter = next(i for i in book.get_items_of_type(ebooklib.ITEM_DOCUMENT) if i.file_name == "c1.xhtml")
    body = chapter.get_content().decode()
    assert "<h1>CAPÍTULO UNO</h1>" in body and "<p>EL GATO <em>NEGRO</em> DUERME.</p>" in body
    assert "x.png" in body


# --- subtitles -------------------------------------------------------------------------------


SRT = srt.compose([
    srt.Subtitle(1, srt.timedelta(seconds=1), srt.timedelta(seconds=3), "Hola, <i>amigo</i>.\n¿Cómo estás hoy?"),
    srt.Subtitle(2, srt.timedelta(seconds=4), srt.timedelta(seconds=6), "Muy bien."),
])


def test_srt_cues_and_timings_identical():
    before, after = list(srt.parse(SRT)), list(srt.parse(translated("a.srt", SRT.encode()).decode()))
    assert [(c.index, c.start, c.end) for c in after] == [(c.index, c.start, c.end) for c in before]
    assert after[0].content == "HOLA, <i>AMIGO</i>.\n¿CÓMO ESTÁS HOY?"
    assert after[1].content == "MUY BIEN."


def test_a_sentence_across_cues_is_one_segment_cut_back_at_the_aligned_break():
    cues = srt.compose([
        srt.Subtitle(1, srt.timedelta(seconds=1), srt.timedelta(seconds=2), "El gato negro y blanco"),
        srt.Subtitle(2, srt.timedelta(seconds=2), srt.timedelta(seconds=3), "come."),
        srt.Subtitle(3, srt.timedelta(seconds=4), srt.timedelta(seconds=5), "Fin."),
    ])
    extracted = documents.read("a.srt", cues.encode())
    assert len(extracted.segments) == 2 and extracted.segments[0].startswith("El gato negro y blanco <img")
    after = list(srt.parse(extracted.write([shout(s) for s in extracted.segments]).decode()))
    assert [c.content for c in after] == ["EL GATO NEGRO Y BLANCO", "COME.", "FIN."]
    assert [(c.start, c.end) for c in after] == [(c.start, c.end) for c in srt.parse(cues)]
    # A translation whose break came out at an end is cut by the cues' lengths instead.
    moved = extracted.segments[0].replace(' <img data-cue=""> ', " ") + '<img data-cue="">'
    after = list(srt.parse(extracted.write([shout(moved), extracted.segments[1]]).decode()))
    assert [c.content for c in after][:2] == ["EL GATO NEGRO Y BLANCO", "COME."]


def test_vtt_cues_timings_and_header(tmp_path):
    vtt = webvtt.WebVTT()
    vtt.captions.append(webvtt.Caption("00:00:01.000", "00:00:02.500", "Buenos días"))
    vtt.captions.append(webvtt.Caption("00:00:03.000", "00:00:04.000", ["Primera línea", "segunda línea"]))
    source = tmp_path / "a.vtt"
    vtt.save(str(source))
    out = tmp_path / "b.vtt"
    out.write_bytes(translated("a.vtt", source.read_bytes()))
    before, after = webvtt.read(str(source)), webvtt.read(str(out))
    assert [(c.start, c.end) for c in after] == [(c.start, c.end) for c in before]
    assert [c.text for c in after] == ["BUENOS DÍAS", "PRIMERA LÍNEA\nSEGUNDA LÍNEA"]


# --- gettext ---------------------------------------------------------------------------------


def make_po() -> bytes:
    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2; plural=(n != 1);"}
    catalog.append(polib.POEntry(msgid="Open the <b>file</b>", msgctxt="menu", comment="a menu item",
                                 occurrences=[("main.c", "12")]))
    catalog.append(polib.POEntry(msgid="%d file", msgid_plural="%d files"))
    catalog.append(polib.POEntry(msgid="Already done", msgstr="Ya hecho"))
    return str(catalog).encode()


def test_po_entries_get_fuzzy_translations_and_keep_everything_else():
    after = polib.pofile(translated("a.po", make_po()).decode())
    before = polib.pofile(make_po().decode())
    assert [(e.msgid, e.msgctxt, e.comment, e.occurrences) for e in after] == \
        [(e.msgid, e.msgctxt, e.comment, e.occurrences) for e in before]
    menu, plural, done = after
    assert menu.msgstr == "OPEN THE <b>FILE</b>" and "fuzzy" in menu.flags
    assert plural.msgstr_plural == {0: "%D FILE", 1: "%D FILES"} and "fuzzy" in plural.flags
    assert done.msgstr == "Ya hecho" and "fuzzy" not in done.flags


def test_po_with_broken_syntax_names_the_line():
    broken = make_po().decode() + '\nmsgid "unterminated\nmsgstr ""\n'
    line = broken.splitlines().index('msgid "unterminated') + 1
    with pytest.raises(DocumentError) as e:
        documents.read("b.po", broken.encode())
    assert e.value.kind == "syntax" and f"line {line}" in str(e.value)


# --- xliff -----------------------------------------------------------------------------------

XLIFF12 = b"""<?xml version="1.0" encoding="UTF-8"?>
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">
  <file source-language="es" target-language="en" datatype="plaintext" original="ui">
    <body>
      <trans-unit id="1"><source>Pulse <g id="b">guardar</g> ahora<x id="br"/></source></trans-unit>
      <trans-unit id="2" translate="no"><source>Marca</source></trans-unit>
      <trans-unit id="3"><source>Hola</source><target>Hello</target></trans-unit>
    </body>
  </file>
</xliff>"""

XLIFF20 = b"""<?xml version="1.0" encoding="UTF-8"?>
<xliff version="2.0" xmlns="urn:oasis:names:tc:xliff:document:2.0" srcLang="es" trgLang="en">
  <file id="f1">
    <unit id="u1"><segment><source>Abra <pc id="1">el archivo</pc><ph id="2"/></source></segment></unit>
  </file>
</xliff>"""


def test_xliff12_targets_with_inline_codes():
    root = etree.fromstring(translated("a.xlf", XLIFF12))
    ns = {"x": "urn:oasis:names:tc:xliff:document:1.2"}
    first = root.find(".//x:trans-unit[@id='1']", ns)
    target = first.find("x:target", ns)
    assert etree.tostring(target, with_tail=False).decode().count('id="b"') == 1
    assert "".join(target.itertext()) == "PULSE GUARDAR AHORA"
    assert target.find("x:x", ns).get("id") == "br" and target.get("state") == "needs-review-translation"
    assert root.find(".//x:trans-unit[@id='2']/x:target", ns) is None
    assert root.find(".//x:trans-unit[@id='3']/x:target", ns).text == "Hello"
    assert "".join(first.find("x:source", ns).itertext()) == "Pulse guardar ahora"


def test_xliff20_targets():
    root = etree.fromstring(translated("a.xliff", XLIFF20))
    ns = {"x": "urn:oasis:names:tc:xliff:document:2.0"}
    target = root.find(".//x:segment/x:target", ns)
    assert "".join(target.itertext()) == "ABRA EL ARCHIVO"
    assert target.find("x:pc", ns).get("id") == "1" and target.find("x:ph", ns).get("id") == "2"


# --- plain text, Markdown, HTML --------------------------------------------------------------


def test_txt_lines():
    assert translated("a.txt", "  Hola mundo\n\nAdiós.\n".encode()) == "  HOLA MUNDO\n\nADIÓS.\n".encode()


def test_markdown_keeps_its_syntax():
    source = ("# Título *bonito*\n\nTexto **fuerte** con [enlace](http://x.org/a_b) y `code_x`.\n\n- uno\n"
              "1. dos\n\n| a | b |\n|---|---|\n| tres | cuatro |\n\n```\nno traducir\n```\n")
    expected = ("# TÍTULO *BONITO*\n\nTEXTO **FUERTE** CON [ENLACE](http://x.org/a_b) Y `code_x`.\n\n- UNO\n"
                "1. DOS\n\n| A | B |\n|---|---|\n| TRES | CUATRO |\n\n```\nno traducir\n```\n")
    assert translated("a.md", source.encode()).decode() == expected


def test_html_document_keeps_everything_but_its_text():
    source = ('<!DOCTYPE html><html><head><title>Mi página</title><style>p{color:red}</style></head>'
              '<body><p class="x">El <b>gato</b> &amp; el perro.</p><pre>code</pre></body></html>')
    assert translated("a.html", source.encode()).decode() == source.replace("Mi página", "MI PÁGINA").replace(
        "El <b>gato</b> &amp; el perro.", "EL <b>GATO</b> &amp; EL PERRO.")


# --- nothing to translate, refusals ----------------------------------------------------------


@pytest.mark.parametrize("name,data", [
    ("a.txt", b"1234\n\n--\n"), ("a.srt", b"1\n00:00:01,000 --> 00:00:02,000\n42\n"), ("a.docx", None)])
def test_a_file_with_nothing_translatable_comes_back_unchanged(name, data):
    if data is None:
        d = docx.Document()
        d.add_paragraph("2024 - 2025")
        out = io.BytesIO()
        d.save(out)
        data = out.getvalue()
    extracted = documents.read(name, data)
    assert extracted.write([shout(s) for s in extracted.segments]) == data


def test_unknown_format_is_unsupported():
    with pytest.raises(DocumentError) as e:
        documents.read("a.exe", b"MZ")
    assert e.value.kind == "unsupported" and ".docx" in documents.supported()


def test_zip_bomb_refused_from_its_directory_before_expanding():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (2 * 1024 * 1024))
    with pytest.raises(DocumentError) as e:
        documents.read("a.docx", out.getvalue(), Limits(max_uncompressed_bytes=1024 * 1024))
    assert e.value.kind == "too_large" and "expands" in str(e.value)


def test_too_many_members_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for i in range(20):
            z.writestr(f"m{i}", b"x")
    with pytest.raises(DocumentError) as e:
        documents.read("a.odt", out.getvalue(), Limits(max_members=10))
    assert e.value.kind == "too_large"


def test_corrupt_package_and_encrypted_office_file():
    with pytest.raises(DocumentError) as e:
        documents.read("a.docx", b"PK\x03\x04 not really a zip")
    assert e.value.kind == "corrupt"
    with pytest.raises(DocumentError) as e:
        documents.read("a.docx", b"plain text named .docx")
    assert e.value.kind == "mismatched"
    with pytest.raises(DocumentError) as e:
        documents.read("a.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    assert e.value.kind == "protected"


def test_xml_with_entities_is_refused_and_nothing_is_fetched():
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/secret">]>'
            b'<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2"><file><body>'
            b'<trans-unit id="1"><source>&e;</source></trans-unit></body></file></xliff>')
    with pytest.raises(DocumentError) as e:
        documents.read("a.xlf", evil)
    assert e.value.kind == "unsafe"


WPS = "http://schemas.microsoft.com/office/word/2010/wordprocessingShape"


def test_docx_hyperlink_and_text_box_paragraphs():
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    d = docx.Document()
    p = d.add_paragraph("Lea ")
    rel = p.part.relate_to("http://example.org/", docx.opc.constants.RELATIONSHIP_TYPE.HYPERLINK, is_external=True)
    p._p.append(parse_xml(f'<w:hyperlink {nsdecls("w", "r")} r:id="{rel}"><w:r><w:rPr><w:rStyle w:val="Hyperlink"/>'
                          '</w:rPr><w:t>la guía</w:t></w:r></w:hyperlink>'))
    box = parse_xml(
        f'<w:r {nsdecls("w", "wp", "a")} xmlns:wps="{WPS}"><w:drawing><wp:anchor><a:graphic><a:graphicData><wps:wsp>'
        '<wps:txbx><w:txbxContent><w:p><w:r><w:t>Texto en caja</w:t></w:r></w:p></w:txbxContent></wps:txbx>'
        '</wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></w:r>')
    p._p.append(box)
    out = io.BytesIO()
    d.save(out)
    result = docx.Document(io.BytesIO(translated("h.docx", out.getvalue())))
    body = result.paragraphs[0]._p
    w = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
    link = body.find(f"{w}hyperlink")
    assert "".join(t.text for t in link.iter(f"{w}t")) == "LA GUÍA" and link.get(
        "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id") == rel
    inner = body.find(f".//{w}txbxContent/{w}p")
    assert "".join(t.text for t in inner.iter(f"{w}t")) == "TEXTO EN CAJA"
    assert result.paragraphs[0].text.startswith("LEA ")


@pytest.mark.parametrize("name,make,with_text", [
    ("a.docx", make_docx, ("word/document.xml", "word/header", "word/footer", "docProps/core.xml")),
    ("a.pptx", make_pptx, ("ppt/slides/slide", "ppt/notesSlides/notesSlide", "docProps/core.xml")),
    ("a.odt", make_odt, ("content.xml", "styles.xml", "meta.xml")),
    ("a.epub", make_epub, ("EPUB/c1.xhtml", "EPUB/nav.xhtml", "EPUB/toc.ncx", "EPUB/content.opf")),
])
def test_package_members_without_text_are_copied_byte_for_byte(name, make, with_text):
    source = make()
    before, after = zipfile.ZipFile(io.BytesIO(source)), zipfile.ZipFile(io.BytesIO(translated(name, source)))
    assert [(i.filename, i.compress_type) for i in before.infolist()] == \
        [(i.filename, i.compress_type) for i in after.infolist()]
    changed = {n for n in before.namelist() if before.read(n) != after.read(n)}
    assert changed and all(n.startswith(with_text) for n in changed), changed
