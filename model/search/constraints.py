"""Glossary terms enforced while decoding: a term's target tokens are forced when the model reaches its source.

A `Constraint` (in `DecodeOptions.constraints`) names a span of source tokens and the target ids that
must translate it. Every row of a search keeps a `TermState`: the terms still to write and the one
being written. At each step the row's cross-attention (one decoder layer, `DecodeOptions.align_layer`,
heads averaged) says which source token the model is translating; when that token lies in a pending
term's source span, or the model's own best token starts the term while it reads near it, the
term's tokens are forced one per step, and the model decodes the rest of the sentence around them.
A row never leaves a term unwritten: the first pending term is forced when the attention has gone
past it, when the row would end (its best token is </s>, or it attends to the source's </s>), and
when only the steps to write the terms are left. Greedy search calls `choose` per row and step,
beam search `steer_beams` and `took` (a beam copies its parent's state).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from model.search.options import Constraint, DecodeOptions

NEAR = 2  # source tokens either side of a term's span that count as close to it
TAIL = 32  # the last tokens of a row kept to recognise a term it wrote itself (longer terms are forced)


@dataclass
class TermState:
    """A row's progress: the constraints not yet begun, and the ids still to force of the one begun."""

    pending: list[Constraint]
    writing: tuple[int, ...] = ()
    forced: bool = False  # the last chosen token was forced
    position: int = 0  # the source token the row attended to at the last step
    tail: tuple[int, ...] = ()  # the row's last tokens, to see a term it wrote on its own
    done: tuple[Constraint, ...] = ()  # the terms met

    def copy(self) -> TermState:
        return replace(self, pending=list(self.pending))


def state(opts: DecodeOptions) -> TermState | None:
    """A row's fresh state, or None when the options hold no term (then the row is not steered for terms)."""
    return TermState(sorted(opts.constraints, key=lambda c: c.start)) if opts.constraints else None


def states(opts: DecodeOptions, rows: int) -> list[TermState] | None:
    """A fresh state for each of `rows` rows, or None when the options hold no term."""
    return [state(opts) for _ in range(rows)] if opts.constraints else None


def attended(cross: dict[int, torch.Tensor], opts: DecodeOptions, row: int, source_length: int) -> int:
    """The source token row `row` attends most to at this step (heads averaged), in the alignment layer."""
    weights = cross[opts.align_layer][row, :, :source_length].float().mean(dim=0)
    return int(weights.argmax())


@dataclass(frozen=True)
class At:
    """Where a row is at step t: the source token it attends to, the token it would take, and what
    ends it (its source's last token, </s>, and the steps it has left before max_new_tokens)."""

    t: int
    position: int
    best: int
    source_length: int
    eos: int
    steps_left: int


def choose(state: TermState, at: At) -> int | None:
    """The token the row must take now (None: the search chooses). Updates `state` as if the returned
    token were taken."""
    state.forced, state.position = False, at.position
    if not state.writing and state.pending:
        term = _reached(state, at)
        if term is not None:
            _meet(state, term)
            state.writing = term.ids(at.t)
    if not state.writing:
        return None
    token, state.writing = state.writing[0], state.writing[1:]
    state.forced = True
    return token


def took(state: TermState, token: int, t: int) -> None:
    """The token the row took at step t. One the search chose freely that starts a pending term near
    its source begins the term (its other tokens follow); one that ends a whole pending term the model
    wrote on its own meets the term. Either way the term is not forced a second time later."""
    state.tail = (*state.tail, token)[-TAIL:]
    if state.forced or state.writing:
        return
    for term in state.pending:
        ids = term.ids(t)
        if ids[0] == token and _near(term, state.position):
            _meet(state, term)
            state.writing = ids[1:]
            return
        if any(state.tail[-len(way):] == way for way in (term.target, term.opening) if way):
            _meet(state, term)
            return


def _meet(state: TermState, term: Constraint) -> None:
    state.pending.remove(term)
    state.done += (term,)


def written_again(state: TermState) -> list[int]:
    """Tokens that would end, once more, a term the row has met and has no other occurrence of to write:
    the model often says a forced term a second time in its own way ("Wool Wool Boots")."""
    pending = {way for term in state.pending for way in (term.target, term.opening)}
    return [way[-1] for term in state.done for way in (term.target, term.opening)
            if way and way not in pending and state.tail[len(state.tail) - len(way) + 1:] == way[:-1]]


def _reached(state: TermState, at: At) -> Constraint | None:
    """The pending term to begin now: one whose source the model attends to, or whose first token it
    chose itself; the first one when the attention has gone past it, or the row would end (it chose
    </s>, has read its whole source, or has just the steps left to write its terms and </s>)."""
    for term in state.pending:
        if term.start <= at.position < term.end or (at.best == term.ids(at.t)[0] and _near(term, at.position)):
            return term
    first = state.pending[0]
    needed = sum(len(term.target) for term in state.pending) + 1
    if at.best == at.eos or at.position >= at.source_length - 1 or at.position > first.end or at.steps_left <= needed:
        return first
    return None


def _near(term: Constraint, position: int) -> bool:
    """Is the model reading close to the term's source? Only there does its own choice of the term's
    first token begin the term ("Flip" for an earlier "voltear" is not "Flip Horizontally" begun)."""
    return term.start - NEAR <= position < term.end + NEAR


def steer_beams(terms: list[TermState], logp: torch.Tensor, cross: dict[int, torch.Tensor], opts: DecodeOptions,
                source_lengths: list[int], t: int, eos: int) -> torch.Tensor:
    """Beam search's log-probabilities (R, V) to rank by: a row writing a term offers only its next
    token (at the model's probability), a row with terms still to write never </s>."""
    steered = logp.clone()
    best = logp.argmax(dim=-1).tolist()
    for row, state in enumerate(terms):
        position = attended(cross, opts, row, source_lengths[row])
        token = choose(state, At(t, position, best[row], source_lengths[row], eos, opts.max_new_tokens - t))
        if token is not None:
            steered[row] = float("-inf")
            steered[row, token] = logp[row, token]
            continue
        steered[row, written_again(state)] = float("-inf")
        if state.pending:
            steered[row, eos] = float("-inf")
    return steered


def for_terms(tokenizer, source: str, terms: list[tuple[int, int, str]]) -> tuple[Constraint, ...]:
    """Constraints for `terms` (start, end, target) given by character offsets in `source`, the text
    `tokenizer.encode_source` encodes: each covers the source tokens its characters overlap."""
    offsets = tokenizer.tok.encode(source, add_special_tokens=False).offsets
    found = []
    for start, end, target in terms:
        covered = [i + 1 for i, (a, b) in enumerate(offsets) if a < end and b > start]  # + 1: the language tag
        ids = tuple(tokenizer.encode_target(target)[:-1])
        if not covered or not ids:
            continue
        opening = tuple(tokenizer.encode_target(target[0].upper() + target[1:])[:-1]) if target[0].islower() else ()
        found.append(Constraint(covered[0], covered[-1] + 1, ids, opening))
    return tuple(found)
