"""Subtitles (.srt, .vtt): the cues' text is translated; cue numbers, timings, settings, headers,
notes and styles stay byte for byte.

A sentence that runs across cues (a cue that ends no sentence, and a next one that starts in lower
case) is one segment, so the model translates it whole; the cue breaks
inside it are elements with no text, which the alignment puts after the target word aligned to each
cue's last word, and the translation is cut back into the cues there. A translated cue keeps its
number of lines (split at the spaces nearest the original proportions), and its inline tags (<i>,
<b>, <font>) ride on the aligned words."""

from __future__ import annotations

import itertools
import re

import srt

from model.text.documents.base import (
    DocumentError,
    Extracted,
    Limits,
    decode_text,
    encode_text,
    markup_text,
    text_markup,
)

# Between two cues of one segment: an element with no text, which the alignment places like a line break.
CUE_BREAK = '<img data-cue="">'
_CUE_BREAK = re.compile(r'\s*<img data-cue="">\s*')
# A cue ends a sentence when its text ends so (closing quotes, brackets and tags aside).
# What may come before a cue's first word: tags, dashes, ellipses, opening marks.
_LEAD = re.compile(r"(?:<[^>]*>|[\s\-–—.…¿¡\"'«“])*")
_SENTENCE_END = re.compile(r"[.!?…:;♪](?:[\s\"'»”’)\]]|<[^>]*>)*$")


def read_srt(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    try:
        list(srt.parse(text))
    except srt.SRTParseError as e:
        raise DocumentError("syntax", f"not a valid SRT file: {e}") from None
    return _cues(data, text)


def read_vtt(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise DocumentError("syntax", "not a valid WebVTT file: line 1 must start with WEBVTT")
    return _cues(data, text)


def _cues(data: bytes, text: str) -> Extracted:
    """Every block with a timing line: the lines after it are the cue's text."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.replace("\r\n", "\n").split("\n")
    cues: list[tuple[int, int]] = []  # (first, end) line indices of each cue's text
    i = 0
    while i < len(lines):
        if "-->" in lines[i] and not lines[i].startswith("NOTE"):
            first = end = i + 1
            while end < len(lines) and lines[end].strip():
                end += 1
            if end > first:
                cues.append((first, end))
            i = end
        i += 1
    texts = [" ".join(line.strip() for line in lines[a:b]) for a, b in cues]
    groups = _sentences(texts)
    segments = [f" {CUE_BREAK} ".join(text_markup(texts[i]) for i in group) for group in groups]

    def write(translations: list[str]) -> bytes:
        out = list(lines)
        pieces = [piece for group, t in zip(groups, translations) for piece in _cue_texts(t, [texts[i] for i in group])]
        for (a, b), piece in reversed(list(zip(cues, pieces))):
            out[a:b] = split_lines(piece, [len(line) for line in lines[a:b]])
        return encode_text(newline.join(out), data)

    return Extracted(data, segments, write)


def _sentences(texts: list[str]) -> list[list[int]]:
    """Cues grouped so that a sentence running across cues is one segment (the model sees it whole): a cue
    joins the one before when that one ends no sentence and this one starts in lower case."""
    groups: list[list[int]] = []
    for i, text in enumerate(texts):
        if groups and not _SENTENCE_END.search(texts[groups[-1][-1]]) and _continues(text):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _continues(text: str) -> bool:
    """Whether a cue's first word is in lower case: the sentence of the cue before goes on."""
    return text[_LEAD.match(text).end():][:1].islower()


def _cue_texts(translation: str, sources: list[str]) -> list[str]:
    """A group's translation cut back into its cues at the breaks, which the alignment placed after the
    target word aligned to the last source word of each cue; an empty cue is cut by length instead."""
    pieces = [markup_text(piece).strip() for piece in _CUE_BREAK.split(translation)]
    if len(pieces) == len(sources) and all(pieces):
        return pieces
    words = " ".join(pieces).split()
    total = sum(map(len, sources)) or 1
    bounds = [0] + [round(len(words) * done / total) for done in itertools.accumulate(map(len, sources))]
    return [" ".join(words[start:end]) for start, end in zip(bounds, bounds[1:])]


def split_lines(text: str, lengths: list[int]) -> list[str]:
    """`text` in as many lines as `lengths`, broken at the spaces nearest the original lines' proportions."""
    words = text.split(" ")
    if len(lengths) == 1 or len(words) < len(lengths):
        return [text]
    total, lines, start = sum(lengths) or 1, [], 0
    for share in lengths[:-1]:
        goal = len(text) * share / total
        best, position, length = start + 1, 0, 0
        for j in range(start, len(words) - (len(lengths) - len(lines) - 1)):
            length += len(words[j]) + 1
            if abs(length - goal) <= abs(position - goal) or j == start:
                best, position = j + 1, length
        lines.append(" ".join(words[start:best]))
        start = best
    lines.append(" ".join(words[start:]))
    return lines
