"""Decoder caches: keys and values kept between steps so that a step computes one position, not all.

`KVCache` serves a batch whose rows all stand at the same position (beam search); `RowCache` serves
the running batch, whose rows each stand at their own. Both implement `model.transformer.LayerCache`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from model.transformer import TransformerConfig

GROW = 32  # cache positions added at a time when the longest row outgrows the buffer


class KVCache:
    """Preallocated per-layer keys/values of decoder self-attention, plus cross-attention K/V.

    Self-attention K/V grow by one position per step into a buffer sized for the whole decode,
    so no step reallocates; cross-attention K/V are computed once per source and reused.
    """

    def __init__(self, cfg: TransformerConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype,
                 gather: Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor | None], torch.Tensor]):
        """`gather`: the backend's `gather_rows`, which a reorder uses."""
        shape = (cfg.decoder_layers, batch, cfg.n_heads, max_len, cfg.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        # A reorder copies into the buffers the one before left behind (no new pages per step).
        self._gather = gather
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
        shrinks = len(index) < self.k.size(1)
        k, v = (self._gather(old, index, self.length, spare) for old, spare in zip((self.k, self.v), self._spare))
        self._spare = (None, None) if shrinks else (self.k, self.v)
        self.k, self.v = k, v
        if shrinks:
            self._cross = [None if kv is None else (kv[0][index], kv[1][index]) for kv in self._cross]


class RowCache:
    """The running batch's per-row state: decoder self-attention keys/values for rows of different
    lengths, each row's cross K/V and source, and its last token.

    Rows live at the front of preallocated buffers, row r at index r, whose capacity (rows, cached
    positions, source positions) grows when outgrown. A row that leaves is replaced by the last
    rows, so joining and leaving copy only the rows that arrive or move, never the running batch
    (copying it on every join and leave cost 12% of a busy server's decode thread). Row r has
    written `lengths[r]` positions; a step writes each row's new key at its own position, and
    `step_mask()` hides the positions a row has not reached.
    """

    def __init__(self, cfg: TransformerConfig, device: torch.device, dtype: torch.dtype, rows: int = 8):
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
        self.prepared = None  # the engine's C arguments for these views (EngineBackend.greedy_step)

    # --- LayerCache ----------------------------------------------------------------------------

    def append_self(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths_in_use
        # (R, H, E) at each row's own position; cast, as a slice copy would, for keys computed under autocast.
        self.k[layer, self._rows, :, lengths] = k[:, :, 0].to(self.k.dtype)
        self.v[layer, self._rows, :, lengths] = v[:, :, 0].to(self.v.dtype)
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

    def prepare_step(self, longest: int) -> None:
        """Room for the step about to run, whose longest row has `longest` positions written.

        The step covers positions 0..end-1 (the longest history plus its new position); row r sees
        0..lengths[r], its own new position included.
        """
        self.end = longest + 1
        if self.end > self.k.size(3):
            pad = (0, 0, 0, GROW)
            self.k, self.v = F.pad(self.k, pad), F.pad(self.v, pad)
            self._views()

    def step_mask(self) -> torch.Tensor:
        """The additive (R, 1, 1, end) self-attention mask of the prepared step (the engine reads each
        row's length instead)."""
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
        # An empty batch gives back what a long row grew.
        if not n and (self.k.size(3) > GROW or self.cross_k.size(3) > GROW):
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
