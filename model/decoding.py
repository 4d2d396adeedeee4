"""Autoregressive decoding from <s> to </s>: KV cache, greedy search, beam search, step records.

Every generated token comes with a `Step`: its probability under the model given the source and
the tokens before it, the top-k alternatives at that position, and the attention weights that
produced it. Results are plain dataclasses of Python numbers, so callers never touch tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from model.transformer import Transformer


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
    use_cache: bool = True
    no_repeat_ngram: int = 0  # forbid repeating any n-gram of this size; 0 disables the guard
    prefix: tuple[int, ...] = ()  # target ids every output starts with (forced), then decoding goes on freely


@dataclass
class TopToken:
    id: int
    probability: float


@dataclass
class Step:
    id: int
    probability: float  # p(token | source, previous tokens)
    top: list[TopToken]
    cross_attention: dict[int, list[list[float]]] = field(default_factory=dict)  # layer -> [head][src]
    self_attention: dict[int, list[list[float]]] = field(default_factory=dict)  # layer -> [head][pos]
    forced: bool = False  # the token came from DecodeOptions.prefix, not from the search


@dataclass
class Hypothesis:
    ids: list[int]  # generated ids, </s> included when the hypothesis finished
    steps: list[Step]
    score: float  # length-normalised log probability
    finished: bool  # False when max_new_tokens cut it before </s>


class KVCache:
    """Preallocated per-layer keys/values of decoder self-attention, plus cross-attention K/V.

    Self-attention K/V grow by one position per step into a buffer sized for the whole decode,
    so no step reallocates; cross-attention K/V are computed once per source and reused.
    """

    def __init__(self, model: Transformer, batch: int, max_len: int, device, dtype):
        cfg = model.cfg
        shape = (cfg.decoder_layers, batch, cfg.n_heads, max_len, cfg.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        # With model.engine, a reorder is one copy in C into the buffers the last one left (no new pages).
        self._engine = model.engine if model.embedding.weight.device.type == "cpu" and dtype == torch.float32 else None
        self._spare: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self._cross: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * cfg.decoder_layers

    def append_self(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, steps: int = 1) -> None:
        self.length += steps

    def self_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v

    def cross(self, layer: int):
        return self._cross[layer]

    def set_cross(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self._cross[layer] = (k, v)

    def reorder(self, index: torch.Tensor) -> None:
        """Make row i hold what row index[i] held (beam search keeps the survivors' histories).

        A shorter `index` shrinks the batch: finished sentences leave it. Cross K/V are only
        selected then, since beams only move within their own sentence.
        """
        n = self.length
        shrinks = len(index) < self.k.size(1)
        if self._engine is not None:
            k, v = (self._engine.gather_rows(old, index, n, spare) for old, spare in zip((self.k, self.v), self._spare))
            self._spare = (None, None) if shrinks else (self.k, self.v)
            self.k, self.v = k, v
        elif not shrinks:
            self.k[:, :, :, :n] = self.k[:, index, :, :n]
            self.v[:, :, :, :n] = self.v[:, index, :, :n]
        else:
            for name in ("k", "v"):
                old = getattr(self, name)
                new = old.new_empty(old.size(0), len(index), *old.shape[2:])
                new[:, :, :, :n] = old[:, index, :, :n]  # only the positions written so far
                setattr(self, name, new)
        if shrinks:
            self._cross = [None if kv is None else (kv[0][index], kv[1][index]) for kv in self._cross]


class _StepRecorder:
    """Per-row history of what each step produced, kept until a hypothesis is final.

    Rows are decoder batch rows (sentences, or sentences x beams). Beam search does not move the
    history when beams are reordered: each step keeps its rows' parents (the row each continued at
    the step before), and a hypothesis is read back along them, so a step costs the same at step 50
    as at step 1. Chosen ids and their log-probabilities are kept as Python numbers, the rest as tensors.
    """

    def __init__(self, opts: DecodeOptions):
        self.opts = opts
        self.ids: list[list[int]] = []  # each (R,)
        self.logp: list[list[float]] = []  # (R,)
        self.parents: list[list[int] | None] = []  # (R,): row at the step before; None: the same rows
        self.top_p: list[torch.Tensor] = []  # (R, k)
        self.top_i: list[torch.Tensor] = []
        self.cross: list[dict[int, torch.Tensor]] = []  # layer -> (R, H, S)
        self.self_attn: list[dict[int, torch.Tensor]] = []  # layer -> (R, H, t+1)

    @staticmethod
    def current(logp: torch.Tensor, out, opts: DecodeOptions) -> dict:
        """What the step that just ran offers every row, before a token is chosen."""
        rec = {"logp_all": logp, "cross": {}, "self": {}}
        if opts.top_k:
            top_lp, top_i = logp.topk(opts.top_k, dim=-1)
            rec["top_p"], rec["top_i"] = top_lp.exp(), top_i
        for layer, w in out.cross_attention.items():
            rec["cross"][layer] = w[:, :, -1, :].float()  # last query position: (R, H, S)
        for layer, w in out.self_attention.items():
            rec["self"][layer] = w[:, :, -1, :].float()  # (R, H, t+1)
        return rec

    def push(self, rec: dict, rows: torch.Tensor, tokens: torch.Tensor, at: torch.Tensor | None = None, size: int = 0,
             parents: list[int] | None = None) -> None:
        """Append the chosen `tokens` for new rows taken from `rows` of the current step.

        `parents` (beam search): new row i continues the history of row parents[i]. `at` is for a
        decoder batch that has shrunk below the `size` rows recorded (greedy search drops finished
        sentences): the recorder rows the current ones stand for. The rows left out are zero-filled;
        they have finished, so no hypothesis reads them.
        """
        widen = (lambda t: t) if at is None else (lambda t: t.new_zeros(size, *t.shape[1:]).index_copy_(0, at, t))
        self.ids.append(widen(tokens).tolist())
        self.logp.append(widen(rec["logp_all"][rows, tokens]).tolist())
        self.parents.append(parents)
        if self.opts.top_k:
            self.top_p.append(widen(rec["top_p"][rows]))
            self.top_i.append(widen(rec["top_i"][rows]))
        self.cross.append({l: widen(w[rows]) for l, w in rec["cross"].items()})
        self.self_attn.append({l: widen(w[rows]) for l, w in rec["self"].items()})

    def rows_of(self, row: int, n: int) -> list[int]:
        """The row that holds step t of the hypothesis in `row` (current numbering), for t < n."""
        path = [0] * n
        for t in range(n - 1, -1, -1):
            path[t] = row
            if self.parents[t] is not None:
                row = self.parents[t][row]
        return path

    @staticmethod
    def last_step(rec: dict, row: int, token: int) -> dict:
        """What a hypothesis that ends at this step keeps of it (this step is never pushed): one row's
        numbers, so the step's (R, V) tensors are not held."""
        return {"id": token, "logp": float(rec["logp_all"][row, token]),
                "top": (rec["top_i"][row], rec["top_p"][row]) if "top_i" in rec else None,
                "cross": {l: w[row] for l, w in rec["cross"].items()}, "self": {l: w[row] for l, w in rec["self"].items()}}

    def hypothesis(self, path: list[int], src_len: int, score: float, finished: bool, last: dict | None = None) -> Hypothesis:
        """The hypothesis whose step t is in row path[t], plus the `last_step` it ended with (if it did)."""
        steps = [self._step(t, r, src_len) for t, r in enumerate(path)]
        if last is not None:
            top = _tops(*last["top"]) if last["top"] is not None else []
            steps.append(Step(id=last["id"], probability=math.exp(last["logp"]), top=top,
                              cross_attention={l: w[:, :src_len].tolist() for l, w in last["cross"].items()},
                              self_attention={l: w.tolist() for l, w in last["self"].items()},
                              forced=len(path) < len(self.opts.prefix)))
        return Hypothesis([step.id for step in steps], steps, score, finished)

    def _step(self, t: int, r: int, src_len: int) -> Step:
        return Step(
            id=self.ids[t][r],
            probability=math.exp(self.logp[t][r]),
            top=_tops(self.top_i[t][r], self.top_p[t][r]) if self.opts.top_k else [],
            cross_attention={l: w[r, :, :src_len].tolist() for l, w in self.cross[t].items()},
            self_attention={l: w[r].tolist() for l, w in self.self_attn[t].items()},
            forced=t < len(self.opts.prefix),
        )


def _tops(ids: torch.Tensor, probs: torch.Tensor) -> list[TopToken]:
    return [TopToken(int(i), float(p)) for i, p in zip(ids.tolist(), probs.tolist())]


def _normalise(logp_sum: float, length: int, alpha: float) -> float:
    return logp_sum / (max(length, 1) ** alpha)


class _Decoder:
    """One decoding run: the encoder output, the cache and a helper that runs one decoder step."""

    def __init__(self, model: Transformer, src: torch.Tensor, rows_per_source: int, opts: DecodeOptions, special: SpecialIds):
        self.model, self.opts, self.special = model, opts, special
        memory, src_mask = model.encode(src)
        self.memory = memory.repeat_interleave(rows_per_source, dim=0)
        self.src_mask = src_mask.repeat_interleave(rows_per_source, dim=0)
        rows = self.memory.size(0)
        self.cache = (
            KVCache(model, rows, opts.max_new_tokens + 1, memory.device, memory.dtype) if opts.use_cache else None
        )
        if self.cache is not None and rows_per_source > 1:
            # Each source's cross-attention keys/values computed once and copied to its beams, not k times.
            for layer, kv in enumerate(model.cross_kv(memory)):
                self.cache.set_cross(layer, *(t.repeat_interleave(rows_per_source, dim=0) for t in kv))
        self.inputs = torch.full((rows, 1), special.bos, dtype=torch.long, device=src.device)
        self.cross_layers = frozenset(opts.cross_attention_layers)
        self.self_layers = frozenset(opts.self_attention_layers)

    def step(self) -> tuple[torch.Tensor, object]:
        """Log-probabilities (R, V) of the next token for every row, and the attention weights."""
        t = self.inputs.size(1) - 1
        tgt = self.inputs[:, -1:] if self.cache is not None else self.inputs
        logits, out = self.model.decode(
            tgt, self.memory, self.src_mask, self.cache, offset=t if self.cache is not None else 0,
            self_layers=self.self_layers, cross_layers=self.cross_layers,
        )
        if self.cache is not None:
            self.cache.advance()
        logp = logits[:, -1].float() if out.normalized else torch.log_softmax(logits[:, -1].float(), dim=-1)
        # Masked after the softmax, so reported probabilities stay the model's own.
        logp[:, self.special.forbidden] = float("-inf")
        if self.opts.no_repeat_ngram:
            _block_repeated_ngrams(logp, self.inputs, self.opts.no_repeat_ngram)
        return logp, out

    def append(self, tokens: torch.Tensor, reorder: torch.Tensor | None = None) -> None:
        if reorder is not None:
            self.reorder(reorder)
        self.inputs = torch.cat([self.inputs, tokens[:, None]], dim=1)

    def reorder(self, index: torch.Tensor) -> None:
        """Row i continues what row index[i] held; a shorter `index` drops finished sentences."""
        self.inputs = self.inputs[index]
        if len(index) < self.memory.size(0):
            self.memory, self.src_mask = self.memory[index], self.src_mask[index]
        if self.cache is not None:
            self.cache.reorder(index)


def _block_repeated_ngrams(logp: torch.Tensor, inputs: torch.Tensor, n: int) -> None:
    """Forbid any token that would complete an n-gram already present in the row's output.

    Degenerate loops ("the scenefetetetets") are the commonest failure of small models on text
    unlike their training data; this is the n-gram repeat block of fairseq/HF generate.
    """
    generated = inputs[:, 1:].tolist()
    for row, seq in enumerate(generated):
        if len(seq) < n:
            continue
        prefix = tuple(seq[len(seq) - n + 1 :])
        banned = [seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix]
        if banned:
            logp[row, banned] = float("-inf")


def _eval_mode(model: Transformer) -> None:
    """Switch off dropout; checked first, since eval() walks every submodule (~1.5 ms per call)."""
    if model.training:
        model.eval()


def _source_lengths(src: torch.Tensor, pad: int) -> list[int]:
    return (src != pad).sum(dim=1).tolist()


@torch.inference_mode()
def greedy(model: Transformer, src: torch.Tensor, opts: DecodeOptions, special: SpecialIds = SpecialIds()) -> list[list[Hypothesis]]:
    """Pick the most probable token at every step, for a batch of right-padded sources (B, S).

    A sentence leaves the decoder batch once it has produced </s>, so no step computes rows whose
    output is already complete (in batches of 32 test sentences, a third of all row-steps).
    """
    _eval_mode(model)
    run = _Decoder(model, src, 1, opts, special)
    rec = _StepRecorder(opts)
    b = src.size(0)
    running = torch.arange(b, device=src.device)  # the source row of every decoder row
    for t in range(opts.max_new_tokens):
        logp, out = run.step()
        tokens = top_of(model, logp, 1)[1][:, 0] if t >= len(opts.prefix) else torch.full_like(running, opts.prefix[t])
        every_row = torch.arange(len(running), device=src.device)
        rec.push(_StepRecorder.current(logp, out, opts), every_row, tokens, at=running, size=b)
        run.append(tokens)
        going_on = tokens != special.eos
        if not bool(going_on.all()):
            if not bool(going_on.any()):
                break
            rows = going_on.nonzero().squeeze(1)
            running = running[rows]
            run.reorder(rows)
    return [[_greedy_hypothesis(rec, row, n_src, special, opts)] for row, n_src in enumerate(_source_lengths(src, special.pad))]


def _greedy_hypothesis(rec: _StepRecorder, row: int, src_len: int, special: SpecialIds, opts: DecodeOptions) -> Hypothesis:
    ids = [step[row] for step in rec.ids]
    n = ids.index(special.eos) + 1 if special.eos in ids else len(ids)
    logp_sum = sum(rec.logp[t][row] for t in range(n))
    return rec.hypothesis([row] * n, src_len, _normalise(logp_sum, n, opts.length_penalty), special.eos in ids[:n])


@dataclass
class _Finished:
    """A candidate hypothesis, built only if it ranks among those returned (most never are)."""

    score: float
    build: Callable[[], Hypothesis]


@torch.inference_mode()
def beam_search(model: Transformer, src: torch.Tensor, opts: DecodeOptions, special: SpecialIds = SpecialIds()) -> list[list[Hypothesis]]:
    """Beam search batched over sentences x beams; returns 1 + alternatives hypotheses per source.

    Batch position p holds the k beams of sentence `sentences[p]` in rows p*k .. p*k+k-1; a
    sentence leaves the batch once it is done, so later steps only compute the ones still open.
    """
    _eval_mode(model)
    b, k = src.size(0), opts.beam_size
    n_best = min(1 + opts.alternatives, k)
    run = _Decoder(model, src, k, opts, special)
    rec = _StepRecorder(opts)
    src_lens = _source_lengths(src, special.pad)
    device = src.device
    sentences = list(range(b))
    # Only beam 0 is live at first, so the k beams do not start as k copies of one hypothesis.
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    done: list[list[_Finished]] = [[] for _ in range(b)]
    for t in range(opts.max_new_tokens):
        logp, out = run.step()
        current = _StepRecorder.current(logp, out, opts)
        vocab = logp.size(-1)
        top_scores, top_idx = _best_candidates(model, scores, logp if t >= len(opts.prefix) else _only(logp, opts.prefix[t]), k)
        still_open, rows, tokens, new_scores = [], [], [], []
        for p, (s, s_scores, s_idx) in enumerate(zip(sentences, top_scores.tolist(), top_idx.tolist())):
            chosen = _expand(p, s_scores, s_idx, vocab, k, t, current, rec, done[s], src_lens[s], special, opts)
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
        rec.push(current, rows_t, tokens_t, parents=rows)
        run.append(tokens_t, reorder=rows_t)
        scores = torch.tensor(new_scores, device=device).view(len(sentences), k)
    # Sentences still open were cut by max_new_tokens: their live beams are unfinished hypotheses.
    n = len(rec.ids)
    for p, s in enumerate(sentences):
        for j, raw in enumerate(scores[p].tolist()):
            if raw == float("-inf"):
                continue
            score = _normalise(raw, n, opts.length_penalty)
            done[s].append(_Finished(score, partial(rec.hypothesis, rec.rows_of(p * k + j, n), src_lens[s], score, False)))
    results = []
    for s in range(b):
        ranked = sorted(done[s], key=lambda f: f.score, reverse=True)
        results.append([f.build() for f in ranked[:n_best]])
    return results


def top_of(model: Transformer, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x.topk(k, dim=-1) for (R, V) rows; the engine's C selection when the model has one (on a
    16,000-token vocabulary, several times faster than PyTorch's, which sorts more than it needs)."""
    return model.engine.topk(x, k) if model.engine is not None else x.topk(k, dim=-1)


def _best_candidates(model: Transformer, scores: torch.Tensor, logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2k best (beam, token) continuations of each sentence: scores (n, 2k), and beam * V + token.

    The best 2k of a sentence are among each of its beams' own best 2k, so each row is cut to its
    best 2k first and only n x k x 2k candidates are ranked, not n x k x V.
    """
    n, vocab = scores.size(0), logp.size(-1)
    width = min(2 * k, vocab)
    row_lp, row_tok = top_of(model, logp, width)  # (n*k, width)
    cand = (scores.view(-1, 1) + row_lp).view(n, k * width)
    top_scores, at = cand.topk(min(2 * k, k * width), dim=-1)
    tokens = row_tok.view(n, k * width).gather(1, at)
    return top_scores, torch.div(at, width, rounding_mode="floor") * vocab + tokens


def _only(logp: torch.Tensor, token: int) -> torch.Tensor:
    """`logp` with every token but `token` ruled out: a forced step keeps its true probability."""
    forced = torch.full_like(logp, float("-inf"))
    forced[:, token] = logp[:, token]
    return forced


def _expand(p, s_scores, s_idx, vocab, k, t, current, rec, finished, src_len, special, opts):
    """Turn the best 2k candidates of the sentence at batch position p into its k live beams,
    finishing those that end.

    A candidate ending in </s> is only accepted when it ranks within the top k, as in fairseq:
    that keeps beam search equal to greedy search at beam size 1.
    """
    chosen = []
    for rank, (score, idx) in enumerate(zip(s_scores, s_idx)):
        if score == float("-inf"):
            break
        beam, token = divmod(idx, vocab)
        row = p * k + beam
        if token == special.eos:
            if rank < k:
                final = _normalise(score, t + 1, opts.length_penalty)
                last = _StepRecorder.last_step(current, row, token)
                finished.append(_Finished(final, partial(rec.hypothesis, rec.rows_of(row, t), src_len, final, True, last)))
            continue
        chosen.append((row, token, score))
        if len(chosen) == k:
            break
    return chosen


@torch.inference_mode()
def encoder_attention(model: Transformer, sources: list[list[int]], layers: tuple[int, ...], pad: int) -> list[dict[int, list]]:
    """Per source, the encoder self-attention of `layers`: layer -> [head][query][key] over its own tokens."""
    _eval_mode(model)
    src = right_padded(sources, pad, model.embedding.weight.device)
    _, _, weights = model.encode_with_attention(src, frozenset(layers))
    return [{l: weights[l][row, :, :n, :n].float().tolist() for l in layers} for row, n in enumerate(map(len, sources))]


def right_padded(rows: list[list[int]], pad: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Token id lists as one (B, longest) batch, padded on the right: what `decode` takes."""
    batch = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row)
    return batch.to(device)


def decode(model: Transformer, src: torch.Tensor, opts: DecodeOptions, special: SpecialIds = SpecialIds()) -> list[list[Hypothesis]]:
    """Decode a batch of right-padded sources with the strategy in `opts`."""
    if opts.strategy == "greedy":
        return greedy(model, src, opts, special)
    if opts.strategy == "beam":
        return beam_search(model, src, opts, special)
    raise ValueError(f"unknown decoding strategy {opts.strategy!r}")
