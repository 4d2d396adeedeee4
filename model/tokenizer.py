"""Tokenizer and detokenizer: one BPE vocabulary shared by Spanish and English.

Text is NFC-normalised, spaces become the visible "▁" marker (so detokenizing restores spacing
exactly), and any character the merges never saw falls back to its UTF-8 bytes (<0xC3><0xB1>),
so accents, ¿¡«», emoji or a stray Cyrillic word never turn into <unk>.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
LANGUAGES = {"en": "English", "es": "Spanish"}
# Source sentences start with the tag of the language to produce, so one model serves both ways.
LANG_TAGS = {code: f"<2{code}>" for code in LANGUAGES}
SPECIALS = [PAD, BOS, EOS, UNK, *LANG_TAGS.values()]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _blank_tokenizer(model: models.BPE) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.NFC()
    # Punctuation is split off so "pescado." and "pescado" share a token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Punctuation("isolated")]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn merges on `texts`, then add the 256 byte tokens that back the fallback."""
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),
        special_tokens=SPECIALS,
        min_frequency=2,
        show_progress=False,
    )
    draft = _blank_tokenizer(models.BPE(unk_token=UNK))
    draft.train_from_iterator(texts, trainer)
    spec = json.loads(draft.to_str())["model"]
    vocab: dict[str, int] = spec["vocab"]
    for token in BYTE_TOKENS:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    tok = _blank_tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True))
    tok.add_special_tokens(SPECIALS)
    return tok


class TranslationTokenizer:
    """Source/target encoding with the conventions the model was trained with."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in SPECIALS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids[PAD], ids[BOS], ids[EOS], ids[UNK]
        self.lang_ids = {code: ids[tag] for code, tag in LANG_TAGS.items()}
        self.special_ids = set(ids.values())

    @classmethod
    def load(cls, path: str | Path) -> TranslationTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode_source(self, text: str, target: str) -> list[int]:
        """<2xx> tag of the target language, the text's tokens, </s>."""
        return [self.lang_ids[target], *self.tok.encode(text, add_special_tokens=False).ids, self.eos_id]

    def encode_target(self, text: str) -> list[int]:
        """Target tokens and </s>; the decoder input is <s> followed by all but the last."""
        return [*self.tok.encode(text, add_special_tokens=False).ids, self.eos_id]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=True)

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.tok.id_to_token(i) for i in ids]
