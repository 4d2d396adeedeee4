"""Protected spans: what a translation must carry over unchanged, found in a plain sentence.

Three treatments, by what the span does to the model:
- `cut`: URLs, e-mail addresses, file paths, placeholders (%s, %1$s, {name}, ${var}, &amp;), emoji
  and other symbols. They are not language, and the model (trained on prose) mangles or loops on
  them, so they are taken out of the model's input and put back next to the words aligned to their
  neighbours (model/text/compose.py).
- `drop`: control and invisible formatting characters (NUL, BEL, zero-width spaces, bidi marks).
  They carry no meaning the output could keep in place, so they never reach the model and are left
  out of the answer, which says so in `warnings`.
- `copy`: numbers and rare names (a capitalised word inside the sentence that the tokenizer cuts
  into pieces, i.e. one the model saw too rarely to know). They stay in the input, because the
  sentence's grammar needs them, and the words aligned to them are repaired if the model changed
  them (model/text/compose.py says when).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from model.text import segment

CUT, DROP, COPY = "cut", "drop", "copy"

_URL = r"(?:https?|ftp)://[^\s<>\"'`]+|www\.[\w-]+(?:\.[\w-]+)+[^\s<>\"'`]*"
_EMAIL = r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
# /usr/bin, ~/.config, ./run.sh, C:\Windows: a slash between words ("y/o", "km/h") is not a path.
_PATH = r"(?<![\w/])(?:~|\.\.?)?/(?:[\w.+-]+/)*[\w.+-]+/?|(?<!\w)[A-Za-z]:\\(?:[\w .+-]+\\)*[\w.+-]+"
_PLACEHOLDER = (
    r"%(?:\(\w+\)|\d+\$)?[-+ 0#]*\d*(?:\.\d+)?(?:l{0,2}|h{0,2})[sdifuxXeEgGcp]"  # printf, Python %(name)s
    r"|%%|\$\{\w+\}|\{\{\s*\w+\s*\}\}|\{[\w.:-]*\}"  # %%, ${var}, {{ var }}, {name}, {0}
    r"|&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);"  # an HTML entity written in plain text
)
_NUMBER = r"(?<![\w.,])\d+(?:[.,:]\d+)*(?![\w])"
_PATTERNS = [(re.compile(p), kind) for p, kind in ((_URL, "url"), (_EMAIL, "email"), (_PATH, "path"),
                                                    (_PLACEHOLDER, "placeholder"))]
_NUMBER_RE = re.compile(_NUMBER)
_CAPITALISED = re.compile(r"(?<![\w'’])[A-ZÁÉÍÓÚÑÜ][\w'’-]*")
_TRAILING = ".,;:!?)]}'\""  # punctuation that ends a sentence after a URL or path, not the URL itself
_KEEP_CONTROLS = {"\t", "\n", "\r"}
_EMOJI_MODIFIERS = {0xFE0E, 0xFE0F, 0x20E3} | set(range(0x1F3FB, 0x1F400)) | set(range(0xE0020, 0xE0080))
_ZWJ = "\u200d"


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str  # url, email, path, placeholder, symbol, control, number, name
    treatment: str  # CUT, DROP or COPY

    @property
    def length(self) -> int:
        return self.end - self.start


def find(text: str, is_rare: Callable[[str], bool] = lambda word: False) -> list[Span]:
    """Protected spans of `text`, sorted and not overlapping (the first pattern to claim a character wins)."""
    spans: list[Span] = []
    taken = [False] * len(text)

    def claim(start: int, end: int, kind: str, treatment: str) -> None:
        if start < end and not any(taken[start:end]):
            spans.append(Span(start, end, kind, treatment))
            taken[start:end] = [True] * (end - start)

    for pattern, kind in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if kind in ("url", "path"):
                end = start + len(match.group().rstrip(_TRAILING))
            claim(start, end, kind, CUT)
    for start, end, kind in _symbols(text):
        claim(start, end, kind, DROP if kind == "control" else CUT)
    for match in _NUMBER_RE.finditer(text):
        claim(*match.span(), "number", COPY)
    for match in _CAPITALISED.finditer(text):
        if not _starts_sentence(text, match.start()) and is_rare(match.group()):
            claim(*match.span(), "name", COPY)
    return sorted(spans, key=lambda s: s.start)


def _symbols(text: str):
    """(start, end, kind) of emoji/symbol clusters and of control or invisible formatting characters."""
    i = 0
    while i < len(text):
        char = text[i]
        category = unicodedata.category(char)
        if category in ("Cc", "Cf") and char not in _KEEP_CONTROLS and char != _ZWJ:
            yield i, i + 1, "control"
            i += 1
        elif category in ("So", "Co") or ord(char) in _EMOJI_MODIFIERS or char == _ZWJ:
            end = _cluster_end(text, i)
            yield i, end, "symbol"
            i = end
        else:
            i += 1


def _cluster_end(text: str, i: int) -> int:
    """End of the symbol cluster starting at `i`: modifiers, variation selectors, ZWJ-joined symbols."""
    end = i + 1
    while end < len(text):
        code = ord(text[end])
        if code in _EMOJI_MODIFIERS:
            end += 1
        elif text[end] == _ZWJ and end + 1 < len(text) and unicodedata.category(text[end + 1]) in ("So", "Co"):
            end += 2
        elif text[end] == _ZWJ:
            end += 1
        else:
            break
    return end


def _starts_sentence(text: str, position: int) -> bool:
    """Is `position` the first word of the text or of a sentence inside it (a capital there says nothing)?"""
    before = text[:position].rstrip(" \"'“‘«([¿¡-—")
    if before.endswith(".") and segment.is_abbreviation(before.split()[-1]):
        return False  # "El Sr. García": the period ends "Sr.", not a sentence
    return not before or before[-1] in ".!?:…\n"
