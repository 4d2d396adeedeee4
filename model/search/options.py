"""What a search is asked for: the special token ids and the decoding options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialIds:
    pad: int = 0
    bos: int = 1
    eos: int = 2
    never: tuple[int, ...] = ()  # further ids the decoder must not emit (<unk>, language tags)

    @property
    def forbidden(self) -> list[int]:
        return [self.pad, self.bos, *self.never]


def special_ids(tokenizer) -> SpecialIds:
    """A `model.tokenizer.TranslationTokenizer`'s ids: a translation never contains <unk> (byte
    fallback covers every character) or a language tag."""
    never = (tokenizer.unk_id, *tokenizer.lang_ids.values())
    return SpecialIds(pad=tokenizer.pad_id, bos=tokenizer.bos_id, eos=tokenizer.eos_id, never=never)


def default_max_new_tokens(source_len: int) -> int:
    """Outputs rarely exceed twice the source; the slack covers wordier target languages."""
    return min(2 * source_len + 10, 256)


@dataclass(frozen=True)
class Constraint:
    """A glossary term: source tokens [start, end) come out as `target` ids (or as `opening`'s where the
    term opens the output: its capitalised spelling)."""

    start: int
    end: int
    target: tuple[int, ...]
    opening: tuple[int, ...] = ()

    def ids(self, t: int) -> tuple[int, ...]:
        return self.opening if t == 0 and self.opening else self.target


@dataclass
class DecodeOptions:
    strategy: str = "greedy"  # "greedy" | "beam"
    beam_size: int = 4
    max_new_tokens: int = 128  # generated tokens, </s> included
    length_penalty: float = 1.0  # score = sum(log p) / len ** length_penalty
    alternatives: int = 0  # extra n-best hypotheses (beam search only)
    top_k: int = 0  # alternatives listed per step
    cross_attention_layers: tuple[int, ...] = ()  # decoder layers whose cross-attention is recorded
    self_attention_layers: tuple[int, ...] = ()
    no_repeat_ngram: int = 0  # forbid repeating any n-gram of this size; 0 disables the guard
    prefix: tuple[int, ...] = ()  # target ids every output starts with (forced), then decoding goes on freely
    # Glossary terms forced where the model reaches their source (model/search/constraints.py), read
    # from the cross-attention of decoder layer `align_layer`.
    constraints: tuple[Constraint, ...] = ()
    align_layer: int = 0
