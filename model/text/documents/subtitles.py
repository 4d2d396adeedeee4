"""Subtitles (.srt, .vtt): each cue's text is a segment; cue numbers, timings, settings, headers,
notes and styles stay byte for byte. A translated cue keeps its number of lines (split at the
spaces nearest the original proportions), and its inline tags (<i>, <b>, <font>, <c.class>) ride on
the aligned words."""

from __future__ import annotations

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

_BLOCKS = re.compile(r"\n[ \t]*\n")


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
    segments = [text_markup(" ".join(line.strip() for line in lines[a:b])) for a, b in cues]

    def write(translations: list[str]) -> bytes:
        out = list(lines)
        for (a, b), t in reversed(list(zip(cues, translations))):
            out[a:b] = split_lines(markup_text(t), [len(line) for line in lines[a:b]])
        return encode_text(newline.join(out), data)

    return Extracted(data, segments, write)


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
