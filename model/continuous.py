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

from model.decoding import DecodeOptions, Hypothesis, SpecialIds, Step, TopToken, right_padded, top_of
from model.transformer import Transformer

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
    """Decoder self-attention keys/values for rows of different lengths, and each row's cross K/V.

    Row r has written `lengths[r]` positions; a step writes each row's new key at its own position,
    and `mask()` hides the positions a row has not reached. Implements `model.transformer.LayerCache`.
    """

    def __init__(self, model: Transformer, device: torch.device, dtype: torch.dtype):
        cfg = model.cfg
        self.k = torch.zeros(cfg.decoder_layers, 0, cfg.n_heads, GROW, cfg.head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.lengths = torch.zeros(0, dtype=torch.long, device=device)
        self._end = 0  # positions the current step covers, set by prepare_step
        self._cross: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: (R, H, S, E) each

    # --- LayerCache ----------------------------------------------------------------------------

    def append_self(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(k.size(0), device=k.device)
        self.k[layer, rows, :, self.lengths] = k[:, :, 0]  # (R, H, E) at each row's own position
        self.v[layer, rows, :, self.lengths] = v[:, :, 0]
        return self.k[layer, :, :, : self._end], self.v[layer, :, :, : self._end]

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cross[layer]

    def set_cross(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        raise AssertionError("cross-attention K/V are set when rows join")  # DecoderLayer never calls it here

    def self_kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k, self.v

    # --- rows ----------------------------------------------------------------------------------

    def prepare_step(self) -> torch.Tensor:
        """Room for the step about to run; returns its additive (R, 1, 1, end) self-attention mask.

        The step covers positions 0..end-1 (the longest history plus its new position); row r sees
        0..lengths[r], its own new position included.
        """
        self._end = int(self.lengths.max()) + 1
        if self._end > self.k.size(3):
            pad = (0, 0, 0, GROW)
            self.k, self.v = F.pad(self.k, pad), F.pad(self.v, pad)
        positions = torch.arange(self._end, device=self.lengths.device)
        hidden = positions[None, :] > self.lengths[:, None]
        mask = torch.zeros(hidden.shape, dtype=self.k.dtype, device=hidden.device).masked_fill_(hidden, float("-inf"))
        return mask[:, None, None, :]

    def advance(self) -> None:
        self.lengths += 1

    def add(self, cross: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """New rows with empty histories and these cross K/V (already padded to the batch's S)."""
        n = cross[0][0].size(0)
        shape = (self.k.size(0), n, *self.k.shape[2:])
        self.k = torch.cat([self.k, self.k.new_zeros(shape)], dim=1)
        self.v = torch.cat([self.v, self.v.new_zeros(shape)], dim=1)
        self.lengths = torch.cat([self.lengths, self.lengths.new_zeros(n)])
        if not self._cross:
            self._cross = cross
        else:
            self._cross = [(torch.cat([k0, k1]), torch.cat([v0, v1])) for (k0, v0), (k1, v1) in zip(self._cross, cross)]

    def keep(self, index: torch.Tensor, source_positions: int) -> None:
        """Keep only rows `index`, and the first `source_positions` source positions."""
        positions = self.k.size(3) if len(index) else GROW  # an empty batch gives back what a long row grew
        self.k, self.v = self.k[:, index, :, :positions], self.v[:, index, :, :positions]
        self.lengths = self.lengths[index]
        self._cross = [(k[index, :, :source_positions], v[index, :, :source_positions]) for k, v in self._cross]

    def pad_source(self, positions: int) -> None:
        self._cross = [(_pad_dim(k, 2, positions), _pad_dim(v, 2, positions)) for k, v in self._cross]


class ContinuousGreedy:
    """The running batch: `add` sources between steps, `step` decodes one token for every row."""

    def __init__(self, model: Transformer, special: SpecialIds):
        self.model, self.special = model, special
        weight = model.embedding.weight
        self.device, self.dtype = weight.device, weight.dtype
        self.rows: list[_Row] = []
        self.memory = torch.zeros(0, 1, model.cfg.d_model, device=self.device, dtype=self.dtype)  # (R, S, D)
        self.src_mask = torch.zeros(0, 1, 1, 1, device=self.device, dtype=self.dtype)  # (R, 1, 1, S)
        self.cache = RowCache(model, self.device, self.dtype)
        self.tokens = torch.zeros(0, dtype=torch.long, device=self.device)  # each row's last token

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def source_positions(self) -> int:
        return self.memory.size(1)

    @torch.inference_mode()
    def add(self, requests: list[Request]) -> None:
        """Encode `requests` together and let them join the batch at the next step."""
        if not requests:
            return
        if self.model.training:
            self.model.eval()
        src = right_padded([r.source_ids for r in requests], self.model.cfg.pad_id, self.device)
        longest = src.size(1)
        memory, src_mask = self.model.encode(src)
        cross = self.model.cross_kv(memory)
        # Old and new rows share one source width; padded positions are masked (-inf) in both.
        width = max(self.source_positions, longest) if self.rows else longest
        self.memory = torch.cat([_pad_dim(self.memory, 1, width), _pad_dim(memory, 1, width)])
        self.src_mask = torch.cat([_pad_dim(self.src_mask, 3, width, float("-inf")),
                                   _pad_dim(src_mask, 3, width, float("-inf"))])
        self.cache.pad_source(width)
        self.cache.add([(_pad_dim(k, 2, width), _pad_dim(v, 2, width)) for k, v in cross])
        self.tokens = torch.cat([self.tokens, self.tokens.new_full((len(requests),), self.special.bos)])
        self.rows += [_Row(r) for r in requests]

    @torch.inference_mode()
    def step(self) -> list[tuple[Request, Hypothesis]]:
        """One token for every row; returns the rows that finished, which leave the batch."""
        if not self.rows:
            return []
        layers = frozenset(l for row in self.rows for l in row.request.options.cross_attention_layers)
        self_layers = frozenset(l for row in self.rows for l in row.request.options.self_attention_layers)
        mask = self.cache.prepare_step()
        logits, out = self.model.decode(
            self.tokens[:, None], self.memory, self.src_mask, self.cache, offset=self.cache.lengths,
            self_layers=self_layers, cross_layers=layers, cache_mask=mask,
        )
        self.cache.advance()
        logp = logits[:, -1].float() if out.normalized else torch.log_softmax(logits[:, -1].float(), dim=-1)
        logp[:, self.special.forbidden] = float("-inf")  # after the softmax, as greedy does
        self.tokens = top_of(self.model, logp, 1)[1][:, 0]  # the argmax (first of equals), in C with the engine
        self._record(logp, {l: w[:, :, -1, :].float() for l, w in out.cross_attention.items()},
                     {l: w[:, :, -1, :].float() for l, w in out.self_attention.items()})
        return self._leave()

    def remove(self, tags: set) -> None:
        """Drop the rows of callers who gave up (their requests' tags)."""
        keep = [i for i, row in enumerate(self.rows) if row.request.tag not in tags]
        if len(keep) < len(self.rows):
            self._keep(keep)

    def _record(self, logp: torch.Tensor, cross: dict[int, torch.Tensor], own: dict[int, torch.Tensor]) -> None:
        chosen = self.tokens.tolist()
        chosen_logp = logp.gather(1, self.tokens[:, None])[:, 0].tolist()
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
        self.rows = [self.rows[i] for i in keep]
        width = max((row.source_length for row in self.rows), default=1)  # the longest source left
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.memory, self.src_mask = self.memory[index, :width], self.src_mask[index, ..., :width]
        self.tokens = self.tokens[index]
        self.cache.keep(index, width)


def _pad_dim(t: torch.Tensor, dim: int, size: int, value: float = 0.0) -> torch.Tensor:
    """`t` grown along `dim` to `size` with `value`."""
    missing = size - t.size(dim)
    if missing <= 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim) + [0, missing]
    return F.pad(t, pad, value=value)
