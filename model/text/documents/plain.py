"""Plain text (.txt) and Markdown (.md): one segment per line with text.

In Markdown the syntax around a line's text stays as written: headings' `#`, list markers, quote
marks, table pipes (each cell a segment of its own), fenced and indented code blocks (not
translated); inside a line, code spans are kept whole, and emphasis and links become inline
elements, so they land on the words aligned to theirs (link targets are never translated).
"""

from __future__ import annotations

import html
import re

from model.text.documents.base import Extracted, Limits, decode_text, encode_text, markup_text, text_markup

_LINE = re.compile(r"^(\s*)(.*?)(\s*)$", re.S)


def read_text(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    lines = text.split("\n")
    slots = [i for i, line in enumerate(lines) if line.strip()]
    parts = [_LINE.match(lines[i]).groups() for i in slots]

    def write(translations: list[str]) -> bytes:
        out = list(lines)
        for i, (lead, _, trail), t in zip(slots, parts, translations):
            out[i] = lead + markup_text(t) + trail
        return encode_text("\n".join(out), data)

    return Extracted(data, [text_markup(body) for _, body, _ in parts], write)


# --- Markdown ------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_BLOCK_PREFIX = re.compile(r"^(\s*(?:>\s*)*(?:#{1,6}\s+|[-*+]\s+(?:\[[ xX]\]\s+)?|\d+[.)]\s+)?)(.*?)(\s*#*\s*)$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HTML_SPECIAL = re.compile(r"[<>&]")
# Inline syntax, in the order it is recognised: code spans, images, links, strong, emphasis.
_INLINE = re.compile(
    r"(?P<code>`+)(?P<code_body>.+?)(?P=code)"
    r"|(?P<image>!\[[^\]]*\]\([^)]*\))"
    r"|\[(?P<link_text>[^\]]+)\](?P<link_target>\([^)]*\)|\[[^\]]*\])"
    r"|(?P<strong>\*\*|__)(?P<strong_body>.+?)(?P=strong)"
    r"|(?P<em>[*_])(?P<em_body>[^*_]+?)(?P=em)"
    r"|(?P<autolink><https?://[^>]+>)"
)


def read_markdown(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    lines = text.split("\n")
    slots: list[tuple[int, int, int]] = []  # (line, start, end) of each translated piece of a line
    segments: list[str] = []
    atoms: list[list[str]] = []  # per segment, the syntax kept whole (code spans, images, link targets)
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or not line.strip() or line.startswith(("    ", "\t")) or _TABLE_RULE.match(line):
            continue
        for start, end in _cells(line):
            kept: list[str] = []
            segment = _inline_markup(line[start:end], kept)
            slots.append((i, start, end))
            segments.append(segment)
            atoms.append(kept)

    def write(translations: list[str]) -> bytes:
        out = list(lines)
        for (i, start, end), t, kept in reversed(list(zip(slots, translations, atoms))):
            out[i] = out[i][:start] + _markdown_of(t, kept) + out[i][end:]
        return encode_text("\n".join(out), data)

    return Extracted(data, segments, write)


def _cells(line: str) -> list[tuple[int, int]]:
    """The spans of a line that are text: its cells in a table row, else what follows the block syntax."""
    if line.lstrip().startswith("|") and line.count("|") >= 2:
        bounds = [m.start() for m in re.finditer(r"(?<!\\)\|", line)]
        spans = [_stripped(line, a + 1, b) for a, b in zip(bounds, bounds[1:])]
        return [span for span in spans if span[0] < span[1]]
    match = _BLOCK_PREFIX.match(line)
    start, end = match.start(2), match.end(2)
    return [(start, end)] if start < end else []


def _stripped(line: str, start: int, end: int) -> tuple[int, int]:
    while start < end and line[start].isspace():
        start += 1
    while end > start and line[end - 1].isspace():
        end -= 1
    return start, end


def _inline_markup(text: str, kept: list[str]) -> str:
    """A line's text as inline markup: emphasis as <b>/<i>, links as <a>, what must stay whole as <img>."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(_escape(text[last:m.start()]))
        last = m.end()
        if m.group("link_text") is not None:
            kept.append(m.group("link_target"))
            out.append(f'<a data-k="{len(kept) - 1}">{_inline_markup(m.group("link_text"), kept)}</a>')
        elif m.group("strong"):
            out.append(f'<b data-m="{m.group("strong")}">{_inline_markup(m.group("strong_body"), kept)}</b>')
        elif m.group("em"):
            out.append(f'<i data-m="{m.group("em")}">{_inline_markup(m.group("em_body"), kept)}</i>')
        else:
            kept.append(m.group())
            out.append(f'<img data-k="{len(kept) - 1}">')
    out.append(_escape(text[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return _HTML_SPECIAL.sub(lambda m: html.escape(m.group(), quote=False), text)


_TAG = re.compile(r'<(/?)(a|b|i|img)(?: data-([km])="([^"]*)")?>')


def _markdown_of(fragment: str, kept: list[str]) -> str:
    """A translated line back to Markdown: each element as the syntax it came from."""
    out, last, closers = [], 0, []
    for m in _TAG.finditer(fragment):
        out.append(html.unescape(fragment[last:m.start()]))
        last = m.end()
        closing, tag, _, value = m.groups()
        if tag == "img":
            out.append(kept[int(value)])
        elif closing:
            out.append(closers.pop())
        elif tag == "a":
            closers.append("]" + kept[int(value)])
            out.append("[")
        else:
            closers.append(value)
            out.append(value)
    out.append(html.unescape(fragment[last:]))
    return "".join(out)
