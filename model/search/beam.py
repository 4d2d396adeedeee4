"""Beam search over a batch of sentences x beams, and the step records it keeps until a hypothesis is final.

Every generated token comes with a `Step`: its probability under the model given the source and
the tokens before it, the top-k alternatives at that position, and the attention weights that
produced it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

import model.search.constraints as constraints
from model.search.backend import Backend, StepOutput
from model.search.cache import KVCache
from model.search.greedy import repeated_ngram_ends
from model.search.options import DecodeOptions, SpecialIds
from model.search.records import Hypothesis, Step, length_normalised, top_tokens


@dataclass
class _Offered:
    """What the step that just ran offers every row (R rows), before its tokens are chosen."""

    logp: torch.Tensor  # (R, V) log-probabilities, forbidden tokens at -inf
    cross: dict[int, torch.Tensor]  # layer -> (R, H, S)
    own: dict[int, torch.Tensor]  # layer -> (R, H, t+1): decoder self-attention
    top_p: torch.Tensor | None = None  # (R, top_k) probabilities of each row's best tokens
    top_i: torch.Tensor | None = None  # (R, top_k) their ids


@dataclass
class _LastStep:
    """One row's numbers of the step a hypothesis ends with (never pushed, so its (R, V) tensors are not held)."""

    id: int
    logp: float
    top: tuple[torch.Tensor, torch.Tensor] | None  # (ids, probabilities), when top-k is asked for
    cross: dict[int, torch.Tensor]  # layer -> (H, S)
    own: dict[int, torch.Tensor]  # layer -> (H, t+1)


class _StepRecorder:
    """Per-row history of what each step produced, kept until a hypothesis is final.

    Rows are decoder batch rows (sentences x beams). Beam search does not move the
    history when beams are reordered: each step keeps its rows' parents (the row each continued at
    the step before), and a hypothesis is read back along them, so a step costs the same at step 50
    as at step 1. Chosen ids and their log-probabilities are kept as Python numbers, the rest as tensors.
    """

    def __init__(self, opts: DecodeOptions):
        self.opts = opts
        self.ids: list[list[int]] = []  # each (R,)
        self.logp: list[list[float]] = []  # (R,)
        self.parents: list[list[int]] = []  # (R,): the row each continues, at the step before
        self.top_p: list[torch.Tensor] = []  # (R, k)
        self.top_i: list[torch.Tensor] = []
        self.cross: list[dict[int, torch.Tensor]] = []  # layer -> (R, H, S)
        self.self_attn: list[dict[int, torch.Tensor]] = []  # layer -> (R, H, t+1)
        self.forced: list[list[bool]] = []  # (R,): the token was a glossary term's, forced (not for a prefix)

    @staticmethod
    def current(logp: torch.Tensor, out: StepOutput, opts: DecodeOptions) -> _Offered:
        """What the step that just ran offers every row, before a token is chosen."""
        offered = _Offered(logp, out.cross_attention, out.self_attention)
        if opts.top_k:
            top_lp, offered.top_i = logp.topk(opts.top_k, dim=-1)
            offered.top_p = top_lp.exp()
        return offered

    def push(self, offered: _Offered, rows: torch.Tensor, tokens: torch.Tensor, parents: list[int],
             forced: list[bool] | None = None) -> None:
        """Append the chosen `tokens` for new rows taken from `rows` of the current step: new row i
        continues the history of row parents[i]; `forced` says which tokens a glossary term forced."""
        self.ids.append(tokens.tolist())
        self.forced.append(forced or [False] * len(parents))
        self.logp.append(offered.logp[rows, tokens].tolist())
        self.parents.append(parents)
        if self.opts.top_k:
            self.top_p.append(offered.top_p[rows])
            self.top_i.append(offered.top_i[rows])
        self.cross.append({l: w[rows] for l, w in offered.cross.items()})
        self.self_attn.append({l: w[rows] for l, w in offered.own.items()})

    def rows_of(self, row: int, n: int) -> list[int]:
        """The row that holds step t of the hypothesis in `row` (current numbering), for t < n."""
        path = [0] * n
        for t in range(n - 1, -1, -1):
            path[t] = row
            row = self.parents[t][row]
        return path

    @staticmethod
    def last_step(offered: _Offered, row: int, token: int) -> _LastStep:
        """What a hypothesis that ends at this step keeps of it."""
        return _LastStep(id=token, logp=float(offered.logp[row, token]),
                         top=(offered.top_i[row], offered.top_p[row]) if offered.top_i is not None else None,
                         cross={l: w[row] for l, w in offered.cross.items()},
                         own={l: w[row] for l, w in offered.own.items()})

    def hypothesis(self, path: list[int], src_len: int, score: float, finished: bool,
                   last: _LastStep | None = None) -> Hypothesis:
        """The hypothesis whose step t is in row path[t], plus the `last_step` it ended with (if it did)."""
        steps = [self._step(t, r, src_len) for t, r in enumerate(path)]
        if last is not None:
            steps.append(Step(id=last.id, probability=math.exp(last.logp), top=_tops(*last.top) if last.top else [],
                              cross_attention={l: w[:, :src_len].tolist() for l, w in last.cross.items()},
                              self_attention={l: w.tolist() for l, w in last.own.items()},
                              forced=len(path) < len(self.opts.prefix)))
        return Hypothesis([step.id for step in steps], steps, score, finished)

    def _step(self, t: int, r: int, src_len: int) -> Step:
        return Step(
            id=self.ids[t][r],
            probability=math.exp(self.logp[t][r]),
            top=_tops(self.top_i[t][r], self.top_p[t][r]) if self.opts.top_k else [],
            cross_attention={l: w[r, :, :src_len].tolist() for l, w in self.cross[t].items()},
            self_attention={l: w[r].tolist() for l, w in self.self_attn[t].items()},
            forced=t < len(self.opts.prefix) or self.forced[t][r],
        )


class _Beams:
    """One beam search run's decoder state: the inputs so far, the source mask, the KV cache."""

    def __init__(self, backend: Backend, src: torch.Tensor, k: int, opts: DecodeOptions, special: SpecialIds):
        self.backend, self.config, self.k, self.opts, self.special = backend, backend.config, k, opts, special
        encoded = backend.encode(src)
        self.src_mask = encoded.source_mask.repeat_interleave(k, dim=0)
        rows = self.src_mask.size(0)
        self.cache = KVCache(backend.config, rows, opts.max_new_tokens + 1, backend.device, backend.dtype,
                             backend.gather_rows)
        # Each source's cross-attention keys/values computed once and copied to its beams, not k times.
        for layer, kv in enumerate(backend.cross_kv(encoded.memory)):
            self.cache.set_cross(layer, *(t.repeat_interleave(k, dim=0) if k > 1 else t for t in kv))
        self.inputs = torch.full((rows, 1), special.bos, dtype=torch.long, device=src.device)
        self.cross_layers = frozenset(opts.cross_attention_layers) | ({opts.align_layer} if opts.constraints else set())
        self.self_layers = frozenset(opts.self_attention_layers)

    def step(self) -> tuple[torch.Tensor, StepOutput]:
        """Log-probabilities (R, V) of the next token for every row, and the attention weights."""
        out = self.backend.step(self.inputs[:, -1:], self.cache, self.inputs.size(1) - 1, self.src_mask,
                                self.self_layers, self.cross_layers)
        self.cache.advance()
        logp = out.logp
        # Masked after the softmax, so reported probabilities stay the model's own.
        logp[:, self.special.forbidden] = float("-inf")
        if self.opts.no_repeat_ngram:
            for row, generated in enumerate(self.inputs[:, 1:].tolist()):
                if banned := repeated_ngram_ends(generated, self.opts.no_repeat_ngram):
                    logp[row, banned] = float("-inf")
        return logp, out

    def append(self, tokens: torch.Tensor, reorder: torch.Tensor) -> None:
        """Row i continues what row reorder[i] held, then takes tokens[i]; a shorter `reorder` drops
        finished sentences."""
        self.inputs = self.inputs[reorder]
        if len(reorder) < self.src_mask.size(0):
            self.src_mask = self.src_mask[reorder]
        self.cache.reorder(reorder)
        self.inputs = torch.cat([self.inputs, tokens[:, None]], dim=1)


@dataclass
class _Finished:
    """A candidate hypothesis, built only if it ranks among those returned (most never are)."""

    score: float
    build: Callable[[], Hypothesis]


@torch.inference_mode()
def beam_search(backend: Backend, src: torch.Tensor, opts: DecodeOptions,
                special: SpecialIds) -> list[list[Hypothesis]]:
    """Beam search batched over sentences x beams; returns 1 + alternatives hypotheses per source.

    Batch position p holds the k beams of sentence `sentences[p]` in rows p*k .. p*k+k-1; a
    sentence leaves the batch once it is done, so later steps only compute the ones still open.
    """
    b, k = src.size(0), opts.beam_size
    n_best = min(1 + opts.alternatives, k)
    run = _Beams(backend, src, k, opts, special)
    rec = _StepRecorder(opts)
    src_lens = _source_lengths(src, special.pad)
    device = src.device
    sentences = list(range(b))
    # Only beam 0 is live at first, so the k beams do not start as k copies of one hypothesis.
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    done: list[list[_Finished]] = [[] for _ in range(b)]
    terms = constraints.states(opts, b * k)  # per row: glossary terms still to write (None: no terms)
    for t in range(opts.max_new_tokens):
        logp, out = run.step()
        current = _StepRecorder.current(logp, out, opts)
        ranked = logp if t >= len(opts.prefix) else _only(logp, opts.prefix[t])
        if terms is not None and t >= len(opts.prefix):
            lengths = [src_lens[sentences[row // k]] for row in range(len(terms))]
            ranked = constraints.steer_beams(terms, logp, out.cross_attention, opts, lengths, t, special.eos)
        top_scores, top_idx = _best_candidates(backend, scores, ranked, k)
        still_open, rows, tokens, new_scores = [], [], [], []
        for p, (s, s_scores, s_idx) in enumerate(zip(sentences, top_scores.tolist(), top_idx.tolist())):
            chosen = _expand(p, s_scores, s_idx, beams=run, t=t, current=current, rec=rec, finished=done[s],
                             src_len=src_lens[s])
            if len(done[s]) >= k or not chosen:
                continue
            still_open.append(s)
            # Fewer than k live candidates: the spare rows carry -inf scores.
            chosen += [(p * k, special.pad, float("-inf"))] * (k - len(chosen))
            for row, token, score in chosen:
                rows.append(row)
                tokens.append(token)
                new_scores.append(score)
        sentences = still_open
        if not sentences:
            break
        rows_t = torch.tensor(rows, device=device)
        tokens_t = torch.tensor(tokens, device=device)
        # This step's records come from the surviving beams' parents, whose histories they continue.
        if terms is not None:
            terms = [terms[row].copy() for row in rows]
            for state, token in zip(terms, tokens):
                constraints.took(state, token, t)
        rec.push(current, rows_t, tokens_t, parents=rows, forced=[s.forced for s in terms] if terms else None)
        run.append(tokens_t, reorder=rows_t)
        scores = torch.tensor(new_scores, device=device).view(len(sentences), k)
    # Sentences still open were cut by max_new_tokens: their live beams are unfinished hypotheses.
    n = len(rec.ids)
    for p, s in enumerate(sentences):
        for j, raw in enumerate(scores[p].tolist()):
            if raw == float("-inf"):
                continue
            score = length_normalised(raw, n, opts.length_penalty)
            done[s].append(_Finished(score, partial(rec.hypothesis, rec.rows_of(p * k + j, n), src_lens[s], score,
                                                    False)))
    results = []
    for s in range(b):
        ranked = sorted(done[s], key=lambda f: f.score, reverse=True)
        results.append([f.build() for f in ranked[:n_best]])
    return results


def _best_candidates(backend: Backend, scores: torch.Tensor, logp: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2k best (beam, token) continuations of each sentence: scores (n, 2k), and beam * V + token.

    The best 2k of a sentence are among each of its beams' own best 2k, so each row is cut to its
    best 2k first and only n x k x 2k candidates are ranked, not n x k x V.
    """
    n, vocab = scores.size(0), logp.size(-1)
    width = min(2 * k, vocab)
    row_lp, row_tok = backend.top_k(logp, width)  # (n*k, width)
    cand = (scores.view(-1, 1) + row_lp).view(n, k * width)
    top_scores, at = cand.topk(min(2 * k, k * width), dim=-1)
    tokens = row_tok.view(n, k * width).gather(1, at)
    return top_scores, torch.div(at, width, rounding_mode="floor") * vocab + tokens


def _only(logp: torch.Tensor, token: int) -> torch.Tensor:
    """`logp` with every token but `token` ruled out: a forced step keeps its true probability."""
    forced = torch.full_like(logp, float("-inf"))
    forced[:, token] = logp[:, token]
    return forced


def _expand(p: int, s_scores: list[float], s_idx: list[int], *, beams: _Beams, t: int, current: _Offered,
            rec: _StepRecorder, finished: list[_Finished], src_len: int) -> list[tuple[int, int, float]]:
    """Turn the best 2k candidates of the sentence at batch position p into its k live beams,
    finishing those that end; returns the (row, token, score) of the beams that go on.

    A candidate ending in </s> is only accepted when it ranks within the top k, as in fairseq:
    that keeps beam search equal to greedy search at beam size 1.
    """
    k, vocab, special, opts = beams.k, beams.config.vocab_size, beams.special, beams.opts
    chosen = []
    for rank, (score, idx) in enumerate(zip(s_scores, s_idx)):
        if score == float("-inf"):
            break
        beam, token = divmod(idx, vocab)
        row = p * k + beam
        if token == special.eos:
            if rank < k:
                final = length_normalised(score, t + 1, opts.length_penalty)
                last = _StepRecorder.last_step(current, row, token)
                finished.append(_Finished(final, partial(rec.hypothesis, rec.rows_of(row, t), src_len, final, True,
                                                         last)))
            continue
        chosen.append((row, token, score))
        if len(chosen) == k:
            break
    return chosen


def _tops(ids: torch.Tensor, probs: torch.Tensor):
    return top_tokens(ids.tolist(), probs.tolist())


def _source_lengths(src: torch.Tensor, pad: int) -> list[int]:
    return (src != pad).sum(dim=1).tolist()
