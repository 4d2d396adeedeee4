"""Greedy search, written once: a running batch that sources join and leave between steps.

Every row is a sentence at its own position: new sources are encoded and join between two steps,
and a row leaves as soon as it has produced </s> (or reached its `max_new_tokens`), so under steady
traffic the decoder keeps running with full rows. The three ways greedy search is driven all run
this one algorithm: `greedy` decodes a batch (all rows join at once), `stream` yields one source's
steps as they are chosen, and the server keeps a `GreedySearch` running that callers join.
A row gets the same tokens whatever else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import model.search.constraints as constraints
from model.search.backend import Backend, StepOutput
from model.search.cache import RowCache
from model.search.options import DecodeOptions, SpecialIds
from model.search.records import Hypothesis, Step, TopToken, length_normalised


@dataclass
class Request:
    """One source to translate greedily; `tag` is the caller's handle, returned with the result."""

    source_ids: list[int]
    options: DecodeOptions
    tag: Any = None


@dataclass
class _Row:
    request: Request
    steps: list[Step] = field(default_factory=list)
    logp_sum: float = 0.0
    terms: constraints.TermState | None = None  # glossary terms still to write, when it has some

    @property
    def source_length(self) -> int:
        return len(self.request.source_ids)


class GreedySearch:
    """The running batch: `add` sources between steps, `step` decodes one token for every row."""

    def __init__(self, backend: Backend, special: SpecialIds, rows: int = 8):
        """`rows`: the rows the caches first hold (they grow when more join)."""
        self.backend, self.special = backend, special
        self.rows: list[_Row] = []
        self.cache = RowCache(backend.config, backend.device, backend.dtype, rows)
        self._forbidden = torch.tensor(list(special.forbidden), dtype=torch.long, device=backend.device)
        self._layers: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())  # the rows' (cross, self)
        self._steered: list[int] = []  # rows whose choice is not the plain argmax (a prefix, the repeat guard)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def source_positions(self) -> int:
        return self.cache.width if self.rows else 0

    @torch.inference_mode()
    def add(self, requests: list[Request]) -> None:
        """Encode `requests` together and let them join the batch at the next step."""
        if not requests:
            return
        self.backend.join([r.source_ids for r in requests], self.cache, self.special.bos)
        self.rows += [_Row(r, terms=constraints.state(r.options)) for r in requests]
        self._rows_changed()

    @torch.inference_mode()
    def step(self) -> list[tuple[Request, Hypothesis]]:
        """One token for every row; returns the rows that finished, which leave the batch."""
        if not self.rows:
            return []
        self.cache.prepare_step(max(len(row.steps) for row in self.rows))  # a row writes one position per step
        cross_layers, self_layers = self._layers
        out = self.backend.greedy_step(self.cache, self._forbidden, self_layers, cross_layers)
        for i in self._steered:
            self._steer(i, out)
        self._record(out)
        return self._leave()

    def remove(self, tags: set) -> None:
        """Drop the rows of callers who gave up (their requests' tags)."""
        keep = [i for i, row in enumerate(self.rows) if row.request.tag not in tags]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _rows_changed(self) -> None:
        """What the rows ask for, worked out when rows join or leave, not every step."""
        options = [row.request.options for row in self.rows]
        self._layers = (frozenset(l for o in options for l in (*o.cross_attention_layers, *_term_layer(o))),
                        frozenset(l for o in options for l in o.self_attention_layers))
        self._steered = [i for i, o in enumerate(options) if o.prefix or o.no_repeat_ngram or o.constraints]

    def _steer(self, i: int, out: StepOutput) -> None:
        """Row i's token where it is not the argmax: the prefix's next token or a glossary term's (its
        probability stays the model's), or the best token that neither repeats an n-gram nor writes a
        term met already once more (the banned ones leave the row's top list too)."""
        row, opts, logp = self.rows[i], self.rows[i].request.options, out.logp
        t = len(row.steps)
        term = self._term_token(i, out) if t >= len(opts.prefix) else None
        if t < len(opts.prefix):
            token = opts.prefix[t]
        elif term is not None:
            token = term
        else:
            generated = [s.id for s in row.steps]
            banned = repeated_ngram_ends(generated, opts.no_repeat_ngram) if opts.no_repeat_ngram else []
            banned += constraints.written_again(row.terms) if row.terms is not None else []
            if not banned:
                return
            logp[i, banned] = float("-inf")
            token = int(self.backend.top_k(logp[i : i + 1], 1)[1][0, 0])
        self.cache.tokens_in_use[i] = token
        self.cache.best_logp_in_use[i] = logp[i, token]

    def _term_token(self, i: int, out: StepOutput) -> int | None:
        """The glossary term token row i must take now, if any (model/search/constraints.py)."""
        row = self.rows[i]
        if row.terms is None:
            return None
        opts, t = row.request.options, len(row.steps)
        position = constraints.attended(out.cross_attention, opts, i, row.source_length)
        at = constraints.At(t, position, int(self.cache.tokens_in_use[i]), row.source_length, self.special.eos,
                            steps_left=opts.max_new_tokens - t)
        return constraints.choose(row.terms, at)

    def _record(self, out: StepOutput) -> None:
        chosen, chosen_logp = self.cache.tokens_in_use.tolist(), self.cache.best_logp_in_use.tolist()
        k = max(row.request.options.top_k for row in self.rows)
        top_p, top_i = [], []
        if k:
            top_lp, top = self.backend.top_k(out.logp, k)
            top_p, top_i = top_lp.exp().tolist(), top.tolist()
        for i, row in enumerate(self.rows):
            opts = row.request.options
            t = len(row.steps)
            tops = ([TopToken(t, p) for t, p in zip(top_i[i][: opts.top_k], top_p[i][: opts.top_k])]
                    if opts.top_k else [])
            attention = {l: out.cross_attention[l][i, :, : row.source_length].tolist()
                         for l in opts.cross_attention_layers}
            # This step's query saw <s> and the row's tokens so far: its own history, not the batch's longest.
            history = {l: out.self_attention[l][i, :, : t + 1].tolist() for l in opts.self_attention_layers}
            forced = t < len(opts.prefix) or (row.terms is not None and row.terms.forced)
            if row.terms is not None:
                constraints.took(row.terms, chosen[i], t)
            row.steps.append(Step(chosen[i], math.exp(chosen_logp[i]), tops, attention, history, forced=forced))
            row.logp_sum += chosen_logp[i]

    def _leave(self) -> list[tuple[Request, Hypothesis]]:
        done, keep = [], []
        for i, row in enumerate(self.rows):
            ended = row.steps[-1].id == self.special.eos
            if ended or len(row.steps) >= row.request.options.max_new_tokens:
                score = length_normalised(row.logp_sum, len(row.steps), row.request.options.length_penalty)
                done.append((row.request, Hypothesis([s.id for s in row.steps], row.steps, score, ended)))
            else:
                keep.append(i)
        if done:
            self._keep(keep)
        return done

    def _keep(self, keep: list[int]) -> None:
        width = max((self.rows[i].source_length for i in keep), default=1)  # the longest source left
        order = self.cache.keep(keep, width)
        self.rows = [self.rows[i] for i in order]
        self._rows_changed()


def _term_layer(opts: DecodeOptions) -> tuple[int, ...]:
    """The cross-attention layer a row's glossary terms are placed by, when it has terms."""
    return (opts.align_layer,) if opts.constraints else ()


def repeated_ngram_ends(generated: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in `generated`.

    Degenerate loops ("the scenefetetetets") are the commonest failure of small models on text
    unlike their training data; this is the n-gram repeat block of fairseq/HF generate.
    """
    if len(generated) < n:
        return []
    prefix = tuple(generated[len(generated) - n + 1 :])
    return [generated[i + n - 1] for i in range(len(generated) - n + 1) if tuple(generated[i : i + n - 1]) == prefix]


def greedy(backend: Backend, sources: list[list[int]], opts: DecodeOptions, special: SpecialIds) -> list[Hypothesis]:
    """The most probable token at every step, for each source (token ids without padding)."""
    search = GreedySearch(backend, special, rows=len(sources))
    search.add([Request(ids, opts, tag=i) for i, ids in enumerate(sources)])
    results: dict[int, Hypothesis] = {}
    while len(search):
        results |= {request.tag: hypothesis for request, hypothesis in search.step()}
    return [results[i] for i in range(len(sources))]


def stream(backend: Backend, source_ids: list[int], opts: DecodeOptions,
           special: SpecialIds) -> Iterator[tuple[Step, Hypothesis | None]]:
    """Greedy search over one source, one step per `next()`: the step chosen, and with the last one the
    finished hypothesis (None before)."""
    search = GreedySearch(backend, special, rows=1)
    search.add([Request(source_ids, opts)])
    while True:
        finished = search.step()
        if finished:
            hypothesis = finished[0][1]
            yield hypothesis.steps[-1], hypothesis
            return
        yield search.rows[0].steps[-1], None
