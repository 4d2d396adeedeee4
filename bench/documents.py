"""Documents: every format built from held-out paragraphs, translated both ways by the shipped model.

    python -m bench.documents [--split data/splits/test_extra.tsv] [--paragraphs 30] [--weights weights]

Paragraphs: the `prose` rows (GNOME help paragraphs) of a held-out split (never training pairs), both
their Spanish and English sides. For each format a real file is made by that format's own library
(python-docx, python-pptx, odfpy, ebooklib, srt, polib, lxml, or by hand for text formats), one
paragraph per segment, the second word of every paragraph in bold (italic in subtitles, a `<g>` code in
XLIFF; plain text, Markdown lists, gettext have none where the format has no runs), and sent to the
real app in-process (POST /documents/translate, greedy). Figures per format and direction:
- seconds per 1,000 source words (the whole request: reading, decoding, writing);
- formatting kept: of the source's formatted runs with text, the share whose run is in the output
  paragraph, still with text (read back from the written file by model/text/documents);
- text chrF of the output paragraphs' text against the references, and the same paragraphs translated
  as plain texts (POST /translate, greedy) for comparison (the difference should be within 1 point).
Writes bench/results/documents.json. Needs the shipped model and the dev extras (the formats' libraries).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import io
import re
import time
from pathlib import Path

import httpx
from sacrebleu.metrics import CHRF

from bench.common import ROOT, app_in_process, cpu_info, write_result
from model.text import documents
from model.training.data import read_split

DIRECTIONS = (("es", "en"), ("en", "es"))
_TAGS = re.compile(r"<[^>]*>")


def split_words(paragraph: str) -> tuple[str, str, str]:
    """(before, the second word, after): the word that gets the formatting."""
    words = paragraph.split(" ")
    if len(words) < 3:
        return paragraph, "", ""
    return words[0] + " ", words[1], " " + " ".join(words[2:])


# --- one builder per format, each with that format's own library ---------------------------------


def build_txt(paragraphs: list[str]) -> bytes:
    return "\n\n".join(paragraphs).encode() + b"\n"


def build_md(paragraphs: list[str]) -> bytes:
    lines = ["# " + paragraphs[0]] + [f"{a}**{b}**{c}" for a, b, c in map(split_words, paragraphs[1:])]
    return "\n\n".join(lines).encode() + b"\n"


def build_html(paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{html.escape(a)}<b>{html.escape(b)}</b>{html.escape(c)}</p>\n"
                   for a, b, c in map(split_words, paragraphs))
    return f"<!DOCTYPE html>\n<html><head><title>Bench</title></head><body>\n{body}</body></html>\n".encode()


def build_docx(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for a, b, c in map(split_words, paragraphs):
        p = document.add_paragraph(a)
        p.add_run(b).bold = True
        p.add_run(c)
    return _saved(document)


def build_pptx(paragraphs: list[str]) -> bytes:
    import pptx

    deck = pptx.Presentation()
    for start in range(0, len(paragraphs), 5):
        frame = deck.slides.add_slide(deck.slide_layouts[5]).shapes.add_textbox(0, 0, 9_000_000, 6_000_000).text_frame
        for i, (a, b, c) in enumerate(map(split_words, paragraphs[start:start + 5])):
            p = frame.paragraphs[0] if i == 0 else frame.add_paragraph()
            for text, bold in ((a, None), (b, True), (c, None)):
                run = p.add_run()
                run.text, run.font.bold = text, bold
    return _saved(deck)


def build_odt(paragraphs: list[str]) -> bytes:
    from odf import text
    from odf.opendocument import OpenDocumentText
    from odf.style import Style, TextProperties

    document = OpenDocumentText()
    bold = Style(name="Bold", family="text")
    bold.addElement(TextProperties(fontweight="bold"))
    document.automaticstyles.addElement(bold)
    for a, b, c in map(split_words, paragraphs):
        p = text.P(text=a)
        p.addElement(text.Span(stylename=bold, text=b))
        p.addText(c)
        document.text.addElement(p)
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def build_epub(paragraphs: list[str]) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("bench")
    book.set_title("Bench")
    chapter = epub.EpubHtml(title="Bench", file_name="c1.xhtml")
    chapter.content = "".join(f"<p>{html.escape(a)}<b>{html.escape(b)}</b>{html.escape(c)}</p>"
                              for a, b, c in map(split_words, paragraphs))
    return epub_bytes(book, chapter)


def epub_bytes(book, chapter) -> bytes:
    """The book with its one chapter, a table of contents and a navigation page, as an .epub file."""
    from ebooklib import epub

    book.add_item(chapter)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", chapter]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def build_srt(paragraphs: list[str]) -> bytes:
    import srt

    cues = [srt.Subtitle(i + 1, srt.timedelta(seconds=4 * i), srt.timedelta(seconds=4 * i + 3),
                         f"{a}<i>{b}</i>{c}") for i, (a, b, c) in enumerate(map(split_words, paragraphs))]
    return srt.compose(cues).encode()


def build_vtt(paragraphs: list[str]) -> bytes:
    cues = [f"00:{i // 15:02d}:{(4 * i) % 60:02d}.000 --> 00:{i // 15:02d}:{(4 * i) % 60 + 3:02d}.000\n{a}<i>{b}</i>{c}"
            for i, (a, b, c) in enumerate(map(split_words, paragraphs))]
    return ("WEBVTT\n\n" + "\n\n".join(cues) + "\n").encode()


def build_po(paragraphs: list[str]) -> bytes:
    import polib

    catalog = polib.POFile()
    catalog.metadata = {"Content-Type": "text/plain; charset=UTF-8"}
    for i, paragraph in enumerate(paragraphs):
        catalog.append(polib.POEntry(msgid=paragraph, occurrences=[("help.page", str(i + 1))]))
    return str(catalog).encode()


def build_xliff(paragraphs: list[str]) -> bytes:
    from lxml import etree

    ns = "urn:oasis:names:tc:xliff:document:1.2"
    root = etree.Element(f"{{{ns}}}xliff", nsmap={None: ns}, version="1.2")
    body = etree.SubElement(etree.SubElement(root, f"{{{ns}}}file", original="help", datatype="plaintext"),
                            f"{{{ns}}}body")
    for i, (a, b, c) in enumerate(map(split_words, paragraphs)):
        source = etree.SubElement(etree.SubElement(body, f"{{{ns}}}trans-unit", id=str(i)), f"{{{ns}}}source")
        source.text = a
        code = etree.SubElement(source, f"{{{ns}}}g", id=f"b{i}")
        code.text, code.tail = b, c
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _saved(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


BUILDERS = {".txt": build_txt, ".md": build_md, ".html": build_html, ".docx": build_docx, ".pptx": build_pptx,
            ".odt": build_odt, ".epub": build_epub, ".srt": build_srt, ".vtt": build_vtt, ".po": build_po,
            ".xlf": build_xliff}


# --- measuring -----------------------------------------------------------------------------------


def formatted_runs(segment: str) -> int:
    """Elements around text in a segment (a formatted run, an emphasis, a code pair)."""
    return len(re.findall(r"<(span|b|i|a)\b[^>]*>(?=[^<]*\w)", segment))


def texts_of(data: bytes, suffix: str) -> tuple[list[str], list[int]]:
    """A file's paragraphs' texts and formatted runs, as our reader sees them (the gettext and XLIFF
    writers put the translation in msgstr / target, and subtitles are read cue by cue)."""
    if suffix == ".po":
        import polib

        entries = [e for e in polib.pofile(data.decode()) if e.msgid]
        return [e.msgstr or e.msgid for e in entries], [0] * len(entries)
    if suffix == ".xlf":
        from lxml import etree

        units = etree.fromstring(data).iter("{urn:oasis:names:tc:xliff:document:1.2}trans-unit")
        found = [u.find("{*}target") if u.find("{*}target") is not None else u.find("{*}source") for u in units]
        return ["".join(t.itertext()) for t in found], [len(t) for t in found]
    if suffix in (".srt", ".vtt"):  # per cue (the reader joins cues that continue a sentence)
        import srt
        import webvtt

        cues = [c.content for c in srt.parse(data.decode())] if suffix == ".srt" else \
            [c.raw_text for c in webvtt.from_buffer(io.StringIO(data.decode()))]
        return [html.unescape(_TAGS.sub("", c)).replace("\n", " ") for c in cues], [formatted_runs(c) for c in cues]
    segments = documents.read(f"x{suffix}", data).segments
    return [html.unescape(_TAGS.sub("", s)) for s in segments], [formatted_runs(s) for s in segments]


async def measure(client: httpx.AsyncClient, suffix: str, paragraphs: list[str], references: list[str],
                  source: str, target: str) -> dict:
    data = BUILDERS[suffix](paragraphs)
    source_texts, before = texts_of(data, suffix)
    # The segments that are the paragraphs (not a title or a table of contents the format adds).
    wanted = set(paragraphs)
    indices = [i for i, text in enumerate(source_texts) if text in wanted]
    started = time.perf_counter()
    response = await client.post("/documents/translate", files={"file": (f"bench{suffix}", data)},
                                 data={"source": source, "target": target, "strategy": "greedy"})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    texts, after = texts_of(response.content, suffix)
    outputs = [texts[i] for i in indices]
    words = sum(len(p.split()) for p in paragraphs)
    formatted = sum(before[i] for i in indices)
    kept = sum(min(before[i], after[i]) for i in indices)
    return {"seconds": round(seconds, 2), "seconds_per_1000_words": round(seconds / words * 1000, 2),
            "words": words, "paragraphs": len(indices),
            "formatting_kept": round(kept / formatted, 3) if formatted else None,
            "chrf": round(CHRF().corpus_score(outputs, [[references[paragraphs.index(source_texts[i])]
                                                          for i in indices]]).score, 2)}


async def run(args: argparse.Namespace) -> dict:
    rows = [r for r in read_split(args.split) if r.domain == "prose"][:args.paragraphs]
    results: dict = {}
    async with app_in_process(args.weights, timeout=3600, request_timeout_s=3600,
                              document_sync_max_segments=10_000) as client:
        for source, target in DIRECTIONS:
            paragraphs = [getattr(r, source) for r in rows]
            references = [getattr(r, target) for r in rows]
            plain = await client.post("/translate", json={"text": paragraphs, "source": source, "target": target,
                                                          "decoding": {"strategy": "greedy"}})
            plain.raise_for_status()
            plain_texts = [t["text"] for t in plain.json()["translations"]]
            direction = results.setdefault(f"{source}-{target}", {
                "plain_text_chrf": round(CHRF().corpus_score(plain_texts, [references]).score, 2)})
            for suffix in BUILDERS:
                direction[suffix] = await measure(client, suffix, paragraphs, references, source, target)
                print(f"{source}->{target} {suffix}: {direction[suffix]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--split", type=Path, default=ROOT / "data/splits/test_extra.tsv",
                        help="held-out split whose prose rows make the documents")
    parser.add_argument("--paragraphs", type=int, default=30, help="paragraphs per document (at most 32)")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="folder of the models to serve")
    args = parser.parse_args()
    args.paragraphs = min(args.paragraphs, 32)
    results = asyncio.run(run(args))
    path = write_result("documents", {"command": "python -m bench.documents", "cpu": cpu_info(),
                                      "paragraphs": args.paragraphs, "split": str(args.split), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
