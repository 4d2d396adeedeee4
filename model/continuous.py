"""Greedy search over a batch that sources join and leave between steps (continuous batching).

A static batch (`model.decoding.greedy`) runs until its longest sentence ends, and a sentence that
arrives meanwhile waits for the next batch. Here every row is a sentence at its own position: new
sources are encoded and join the running batch between two steps, and a row leaves as soon as it
has produced </s>, so under steady traffic the decoder keeps running with full rows. Every row
gets what `greedy` gives the same source decoded alone: the same tokens, and probabilities and
attention equal within float rounding (tests check it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from model.decoding import (
    DecodeOptions,
    Hypothesis,
    SpecialIds,
    Step,
    TopToken,
    right_padded,
    top_of,
)
from model.transformer import DecoderOutput, Transformer

GROW = 32  # cache positions added at a time when the longest row outgrows the buffer


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

    @property
    def source_length(self) -> int:
        return len(self.request.source_ids)


class RowCache:
    """The running batch's per-row state: decoder self-attention keys/values for rows of different
    lengths, each row's cross K/V and source, and its last token.

    Rows live at the front of preallocated buffers, row r at index r, whose capacity (rows, cached
    positions, source positions) grows when outgrown. A row that leaves is replaced by the last
    rows, so joining and leaving copy only the rows that arrive or move, never the running batch
    (copying it on every join and leave cost 12% of a busy server's decode thread). Row r has
    written `lengths[r]` positions; a step writes each row's new key at its own position, and
    `prepare_step()` masks the positions a row has not reached. Implements `model.transformer.LayerCache`.
    """

    def __init__(self, model: Transformer, device: torch.device, dtype: torch.dtype, rows: int = 8):
        cfg = model.cfg
        self._shape = (cfg.decoder_layers, cfg.n_heads, cfg.head_dim)
        self.device, self.dtype = device, dtype
        self.n = 0  # rows in use
        self.width = 1  # source positions in use: the longest source among the rows
        self.end = 0  # positions the current step covers, set by prepare_step
        self._allocate(rows, GROW, GROW)

    def _allocate(self, rows: int, positions: int, sources: int) -> None:
        layers, heads, e = self._shape

        def kv(positions: int) -> torch.Tensor:
            return torch.zeros(layers, rows, heads, positions, e, device=self.device, dtype=self.dtype)

        def per_row() -> torch.Tensor:
            return torch.zeros(rows, dtype=torch.long, device=self.device)

        self.k, self.v = kv(positions), kv(positions)  # (L, rows, H, T, E)
        self.cross_k, self.cross_v = kv(sources), kv(sources)  # (L, rows, H, S, E)
        self.source_mask = torch.full((rows, 1, 1, sources), float("-inf"), device=self.device, dtype=self.dtype)
        self.lengths, self.source_lengths, self.tokens = per_row(), per_row(), per_row()
        self.best_logp = torch.zeros(rows, device=self.device)  # each step's chosen tokens' log-probabilities
        self._views()

    def _row_buffers(self) -> tuple[torch.Tensor, ...]:
        """The per-row buffers indexed by row first (K/V are indexed by layer, then row)."""
        return self.lengths, self.source_lengths, self.tokens, self.source_mask

    def _views(self) -> None:
        """The rows in use, as views that stay the same objects until rows join or leave."""
        n, s = self.n, self.width
        self._rows = torch.arange(n, device=self.device)
        self.lengths_in_use, self.tokens_in_use = self.lengths[:n], self.tokens[:n]
        self.source_lengths_in_use, self.best_logp_in_use = self.source_lengths[:n], self.best_logp[:n]
        self._self_kv = (self.k[:, :n], self.v[:, :n])
        self._mask = self.source_mask[:n, :, :, :s]
        self._cross = [(self.cross_k[l, :n, :, :s], self.cross_v[l, :n, :, :s]) for l in range(self._shape[0])]
        self.prepared = None  # the engine's arguments for these views (model.engine.Engine.greedy_step)

    # --- LayerCache ----------------------------------------------------------------------------

    def append_self(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths_in_use
        self.k[layer, self._rows, :, lengths] = k[:, :, 0]  # (R, H, E) at each row's own position
        self.v[layer, self._rows, :, lengths] = v[:, :, 0]
        return self.k[layer, : self.n, :, : self.end], self.v[layer, : self.n, :, : self.end]

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cross[layer]

    def set_cross(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        raise AssertionError("cross-attention K/V are set when rows join")  # DecoderLayer never calls it here

    def self_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._self_kv

    # --- rows ----------------------------------------------------------------------------------

    @property
    def mask_of_sources(self) -> torch.Tensor:
        """The additive (R, 1, 1, S) key mask of the rows' sources."""
        return self._mask

    def prepare_step(self, longest: int, need_mask: bool = True) -> torch.Tensor | None:
        """Room for the step about to run, whose longest row has `longest` positions written; returns
        its additive (R, 1, 1, end) self-attention mask (None when not `need_mask`: the engine reads
        each row's length instead).

        The step covers positions 0..end-1 (the longest history plus its new position); row r sees
        0..lengths[r], its own new position included.
        """
        self.end = longest + 1
        if self.end > self.k.size(3):
            pad = (0, 0, 0, GROW)
            self.k, self.v = F.pad(self.k, pad), F.pad(self.v, pad)
            self._views()
        if not need_mask:
            return None
        hidden = torch.arange(self.end, device=self.device)[None, :] > self.lengths_in_use[:, None]
        mask = torch.zeros(hidden.shape, dtype=self.dtype, device=self.device).masked_fill_(hidden, float("-inf"))
        return mask[:, None, None, :]

    def advance(self) -> None:
        self.lengths_in_use += 1

    def reserve(self, rows: int, positions: int) -> int:
        """Room for `rows` new rows whose sources have up to `positions` tokens; returns the first one's index."""
        self._fit(self.n + rows, positions)
        return self.n

    def add(self, cross: list[tuple[torch.Tensor, torch.Tensor]], source_mask: torch.Tensor, first_token: int) -> None:
        """New rows with empty histories, their cross K/V (R, H, S, E) per layer and source mask
        (R, 1, 1, S), each to be fed `first_token` first."""
        m, s = source_mask.size(0), source_mask.size(-1)
        new = slice(self.reserve(m, s), self.n + m)
        for layer, (k, v) in enumerate(cross):
            self.cross_k[layer, new, :, :s] = k
            self.cross_v[layer, new, :, :s] = v
        self.admit((source_mask[:, 0, 0, :] == 0).sum(dim=-1).tolist(), first_token)

    def admit(self, source_lengths: list[int], first_token: int) -> None:
        """Rows reserved, whose cross K/V are written, join with empty histories and `first_token` to feed."""
        m, new = len(source_lengths), slice(self.n, self.n + len(source_lengths))
        self.source_mask[new] = float("-inf")
        for r, length in enumerate(source_lengths, start=self.n):
            self.source_mask[r, :, :, :length] = 0.0
        self.source_lengths[new] = torch.tensor(source_lengths)
        self.lengths[new], self.tokens[new] = 0, first_token
        self.n, self.width = self.n + m, max(self.width if self.n else 1, *source_lengths)
        self._views()

    def keep(self, keep: list[int], width: int) -> list[int]:
        """Keep only rows `keep` (ascending), whose longest source has `width` positions; returns
        the kept rows in their new order. The last rows kept move into the places of those that left."""
        n = len(keep)
        holes = sorted(set(range(n)) - set(keep))
        movers = [r for r in keep if r >= n]
        written = int(self.lengths[movers].max()) if movers else 0
        for to, of in zip(holes, movers):  # only what the row has written: small copies, not thread-pool work
            for buffer, used in ((self.k, written), (self.v, written), (self.cross_k, width), (self.cross_v, width)):
                buffer[:, to, :, :used] = buffer[:, of, :, :used]
            for buffer in self._row_buffers():
                buffer[to] = buffer[of]
        position = dict(zip(holes, movers))
        order = [position.get(i, i) for i in range(n)]
        self.n, self.width = n, max(width, 1)
        if not n and (self.k.size(3) > GROW or self.cross_k.size(3) > GROW):  # an empty batch gives back what a long row grew
            self._allocate(self.k.size(1), GROW, GROW)
        self._views()
        return order

    def _fit(self, rows: int, sources: int) -> None:
        """Grow the buffers to hold `rows` rows and `sources` source positions, keeping what they hold."""
        have_rows, have_sources = self.k.size(1), self.cross_k.size(3)
        if rows <= have_rows and sources <= have_sources:
            return
        rows = max(rows, 2 * have_rows) if rows > have_rows else have_rows
        sources = -(-max(sources, have_sources) // GROW) * GROW
        old_kv, old_rows = (self.k, self.v, self.cross_k, self.cross_v), self._row_buffers()
        self._allocate(rows, self.k.size(3), sources)
        n = self.n
        for new, was in zip((self.k, self.v, self.cross_k, self.cross_v), old_kv):
            new[:, :n, :, : was.size(3)] = was[:, :n]
        for new, was in zip(self._row_buffers(), old_rows):
            if was.dim() == 1:
                new[:n] = was[:n]
            else:  # the source mask (rows, 1, 1, S)
                new[:n, :, :, : was.size(-1)] = was[:n]
        self._views()


class ContinuousGreedy:
    """The running batch: `add` sources between steps, `step` decodes one token for every row."""

    def __init__(self, model: Transformer, special: SpecialIds):
        self.model, self.special = model, special
        weight = model.embedding.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.rows: list[_Row] = []
        self.cache = RowCache(model, self.device, self.dtype)
        self._forbidden = torch.tensor(list(special.forbidden), dtype=torch.long, device=self.device)
        self._layers: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())  # the rows' (cross, self)

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
        if self.model.training:
            self.model.eval()
        sources = [r.source_ids for r in requests]
        if self.model.engine_runs():  # one C call encodes and writes the cross K/V into the rows' places
            first = self.cache.reserve(len(sources), max(map(len, sources)))
            self.model.engine.encode_into(sources, self.cache.cross_k, self.cache.cross_v, first)
            self.cache.admit([len(ids) for ids in sources], self.special.bos)
        else:
            memory, src_mask = self.model.encode(right_padded(sources, self.model.cfg.pad_id, self.device))
            self.cache.add(self.model.cross_kv(memory), src_mask, self.special.bos)
        self.rows += [_Row(r) for r in requests]
        self._rows_changed()

    def _rows_changed(self) -> None:
        """The attention layers some row asks for, worked out when rows join or leave, not every step."""
        options = [row.request.options for row in self.rows]
        self._layers = (frozenset(l for o in options for l in o.cross_attention_layers),
                        frozenset(l for o in options for l in o.self_attention_layers))

    @torch.inference_mode()
    def step(self) -> list[tuple[Request, Hypothesis]]:
        """One token for every row; returns the rows that finished, which leave the batch."""
        if not self.rows:
            return []
        longest = max(len(row.steps) for row in self.rows)  # a row has written one position per step
        if self.model.engine_runs():
            logp, out = self._engine_step(longest)
        else:
            logp, out = self._torch_step(longest)
        self._record(logp, {l: w[:, :, -1, :].float() for l, w in out.cross_attention.items()},
                     {l: w[:, :, -1, :].float() for l, w in out.self_attention.items()})
        return self._leave()

    def _engine_step(self, longest: int) -> tuple[torch.Tensor, DecoderOutput]:
        # One C call: the step, the forbidden tokens, each row's argmax and its length advanced (a
        # busy server spent half its decoding threads' time in the Python between such calls).
        self.cache.prepare_step(longest, need_mask=False)
        cross_layers, self_layers = self._layers
        return self.model.engine.greedy_step(self.cache, self._forbidden, self_layers, cross_layers)

    def _torch_step(self, longest: int) -> tuple[torch.Tensor, DecoderOutput]:
        cross_layers, self_layers = self._layers
        cache = self.cache
        mask = cache.prepare_step(longest)
        logits, out = self.model.decode(cache.tokens_in_use[:, None], None, cache.mask_of_sources, cache,
                                        offset=cache.lengths_in_use, self_layers=self_layers, cross_layers=cross_layers,
                                        cache_mask=mask)
        cache.advance()
        logp = logits[:, -1].float() if out.normalized else torch.log_softmax(logits[:, -1].float(), dim=-1)
        logp.index_fill_(1, self._forbidden, float("-inf"))  # after the softmax, as greedy does
        best_logp, best = top_of(self.model, logp, 1)  # the argmax, as greedy takes it
        cache.tokens_in_use.copy_(best[:, 0])
        cache.best_logp_in_use.copy_(best_logp[:, 0])
        return logp, out

    def remove(self, tags: set) -> None:
        """Drop the rows of callers who gave up (their requests' tags)."""
        keep = [i for i, row in enumerate(self.rows) if row.request.tag not in tags]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _record(self, logp: torch.Tensor, cross: dict[int, torch.Tensor], own: dict[int, torch.Tensor]) -> None:
        chosen, chosen_logp = self.cache.tokens_in_use.tolist(), self.cache.best_logp_in_use.tolist()
        k = max(row.request.options.top_k for row in self.rows)
        top_p, top_i = [], []
        if k:
            top_lp, top = top_of(self.model, logp, k)
            top_p, top_i = top_lp.exp().tolist(), top.tolist()
        for i, row in enumerate(self.rows):
            opts = row.request.options
            tops = [TopToken(t, p) for t, p in zip(top_i[i][: opts.top_k], top_p[i][: opts.top_k])] if opts.top_k else []
            attention = {l: cross[l][i, :, : row.source_length].tolist() for l in opts.cross_attention_layers}
            # This step's query saw <s> and the row's tokens so far: its own history, not the batch's longest.
            history = {l: own[l][i, :, : len(row.steps) + 1].tolist() for l in opts.self_attention_layers}
            row.steps.append(Step(chosen[i], math.exp(chosen_logp[i]), tops, attention, history))
            row.logp_sum += chosen_logp[i]

    def _leave(self) -> list[tuple[Request, Hypothesis]]:
        done, keep = [], []
        for i, row in enumerate(self.rows):
            ended = row.steps[-1].id == self.special.eos
            if ended or len(row.steps) >= row.request.options.max_new_tokens:
                n = len(row.steps)
                score = row.logp_sum / (max(n, 1) ** row.request.options.length_penalty)
                ids = [s.id for s in row.steps]
                done.append((row.request, Hypothesis(ids, row.steps, score, ended)))
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

