"""Word alignment from the model's own cross-attention: which source words each target word came from.

Words are runs of letters and digits (punctuation is not aligned). A token belongs to every word its
characters overlap. The score of (target word, source word) is the attention the target word's
tokens paid to the source word's tokens, summed over the source word and averaged over the target
word's tokens, in one decoder layer averaged over a set of heads. Each target word links to its
best-scoring source word. Which layer, heads and step give the best links was measured against
silver links from Apertium's bilingual dictionary (`python -m bench.alignment`); `BEST` holds the
choice kept, and docs/benchmarks.md the figures.

`shift` picks the step whose attention is read: 0 is the step that produced the token (the query
is the token before it), 1 the step after (the query is the token itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"\w+(?:['’]\w+)*")
_BYTE = re.compile(r"<0x([0-9A-F]{2})>")


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # character offsets in the text the word came from
    end: int
    tokens: tuple[int, ...]  # indices of its tokens in the id sequence they were read from


@dataclass(frozen=True)
class Rule:
    layer: int  # decoder layer, negative counts from the last
    heads: tuple[int, ...] | None = None  # None: every head
    shift: int = 0  # 0: the step that produced the token; 1: the step that read it

    def describe(self) -> dict:
        return {"layer": self.layer, "heads": "all" if self.heads is None else list(self.heads), "shift": self.shift}


# Shipped model vs Apertium silver links: P 56.7 R 77.8 F1 65.6 (`python -m bench.alignment`, held-out half).
BEST = Rule(layer=1, heads=None, shift=0)


def words_of(text: str, spans: list[tuple[int, int]], first_token: int = 0) -> list[Word]:
    """The words of `text`, each with the tokens (by index, from `first_token`) whose character `spans` overlap it.

    An empty span (a special token such as </s>) belongs to no word, even one it sits inside.
    """
    words = []
    for match in WORD.finditer(text):
        start, end = match.span()
        tokens = tuple(first_token + i for i, (a, b) in enumerate(spans) if a < b and a < end and b > start)
        words.append(Word(match.group(), start, end, tokens))
    return words


def source_words(tokenizer, text: str) -> list[Word]:
    """Words of a source text; token indices count the leading language tag, as in `encode_source`."""
    encoding = tokenizer.tok.encode(text, add_special_tokens=False)
    return words_of(text, list(encoding.offsets), first_token=1)


def _byte_pieces(raw: bytes, indices: list[int]) -> list[tuple[str, list[int]]]:
    """A run of byte tokens as the tokenizer's ByteFallback decodes it: its characters if the run is
    valid UTF-8 (each with the tokens of its bytes), else one U+FFFD per byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [("\ufffd", [i]) for i in indices]
    pieces, at = [], 0
    for char in text:
        size = len(char.encode("utf-8"))
        pieces.append((char, indices[at:at + size]))
        at += size
    return pieces


def token_spans(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of generated `ids` and each token's character span in it.

    Mirrors the tokenizer's decoder (▁ -> space, byte fallback, one leading space stripped), so the
    text equals `tokenizer.decode(ids)`; the byte tokens of one character share its span. Special
    tokens get an empty span where they stand, and are dropped before decoding as `decode` does, so
    byte tokens either side of one still join into a character.
    """
    pieces: list[tuple[str, list[int]]] = []  # (text, token indices), special tokens left out
    pending: list[int] = []  # indices of byte tokens not yet decoded
    specials: set[int] = set()
    tokens = tokenizer.tokens(ids)
    for i, token in enumerate(tokens):
        if ids[i] in tokenizer.special_ids:
            specials.add(i)
        elif _BYTE.fullmatch(token):
            pending.append(i)
        else:
            pieces += _byte_pieces(bytes(int(tokens[j][3:5], 16) for j in pending), pending)
            pending = []
            pieces.append((token.replace("▁", " "), [i]))
    pieces += _byte_pieces(bytes(int(tokens[j][3:5], 16) for j in pending), pending)
    spans: list[tuple[int, int] | None] = [None] * len(ids)
    text, position, stripped = "", 0, False
    for piece, indices in pieces:
        if not stripped and piece:
            if piece.startswith(" "):
                piece = piece[1:]
            stripped = True
        for i in indices:
            spans[i] = (position, position + len(piece))
        text += piece
        position += len(piece)
    # A special token sits, empty, where the token before it ended.
    end = 0
    for i in range(len(ids)):
        if spans[i] is None:
            spans[i] = (end, end)
        end = spans[i][1] if i not in specials else end
    return text, spans  # type: ignore[return-value]


def target_words(tokenizer, ids: list[int]) -> tuple[str, list[Word]]:
    text, spans = token_spans(tokenizer, ids)
    return text, words_of(text, spans)


def scores(attention: list[list[list[float]]], src_words: list[Word], tgt_words: list[Word], shift: int,
           heads: tuple[int, ...] | None) -> list[list[float]]:
    """[target word][source word] scores from one layer's rows `attention[step][head][source token]`."""
    n_steps = len(attention)
    table = []
    for word in tgt_words:
        rows = [attention[t + shift] for t in word.tokens if t + shift < n_steps]
        row_scores = []
        for source in src_words:
            total = 0.0
            for heads_rows in rows:
                chosen = heads_rows if heads is None else [heads_rows[h] for h in heads]
                total += sum(sum(head[s] for s in source.tokens) for head in chosen) / len(chosen)
            row_scores.append(total / len(rows) if rows else 0.0)
        table.append(row_scores)
    return table


def links(table: list[list[float]], threshold: float = 0.0) -> list[tuple[int, int]]:
    """(target word, source word) pairs: each target word's best source word, when it scores above `threshold`."""
    result = []
    for t, row in enumerate(table):
        if row:
            best = max(range(len(row)), key=row.__getitem__)
            if row[best] > threshold:
                result.append((t, best))
    return result


def align(steps_attention: dict[int, list], n_layers: int, src_words: list[Word], tgt_words: list[Word],
          rule: Rule = BEST) -> list[tuple[int, int]]:
    """Links by `rule` from per-layer attention rows `{layer: [step][head][source token]}`."""
    attention = steps_attention[rule.layer % n_layers]
    return links(scores(attention, src_words, tgt_words, rule.shift, rule.heads))
