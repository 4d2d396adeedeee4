"""The encoder-decoder Transformer of "Attention Is All You Need", one class per block of its figure.

Reading order follows the diagram from the bottom up: embeddings and positional encoding,
scaled dot-product attention, multi-head attention, add & norm, feed forward, the encoder and
decoder layers, and the projection to the vocabulary. Nothing here knows about HTTP, the search
strategies or the C engine: `model.search` drives `Transformer.encode` / `Transformer.decode`
through a backend, and the engine packs these weights for itself.

Shape legend: B batch, S source length, T target length, D d_model, H heads, E head_dim, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    vocab_size: int
    d_model: int = 384
    n_heads: int = 6
    d_ff: int = 1536
    encoder_layers: int = 6
    decoder_layers: int = 3
    dropout: float = 0.1
    max_len: int = 512
    # Pre-norm (LayerNorm inside the residual branch) trains stably without a long warmup;
    # False gives the paper's post-norm placement.
    norm_first: bool = True
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


class LayerCache(Protocol):
    """What a decoder layer needs from a KV cache (implemented by `model.search.cache`)."""

    def append_self(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def cross(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None: ...

    def set_cross(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None: ...


class TokenEmbedding(nn.Module):
    """Input/output embedding; scaled by sqrt(d_model) so it is not drowned by the positional signal."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, d_model))
        nn.init.normal_(self.weight, std=d_model**-0.5)
        with torch.no_grad():
            self.weight[pad_id].zero_()
        self.scale = math.sqrt(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight) * self.scale  # (B, T, D)


class PositionalEncoding(nn.Module):
    """Fixed sinusoids: PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...)."""

    def __init__(self, d_model: int, max_len: int, dropout: float):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        inv_freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * inv_freq)
        table[:, 1::2] = torch.cos(position * inv_freq)
        self.register_buffer("table", table, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        # offset: position of x[:, 0] in the sequence, so cached decoding adds the right sinusoid;
        # a (B,) tensor gives every row its own position (rows of a continuous batch, one step each).
        t = x.size(1)
        last = (int(offset.max()) if offset.numel() else 0) if torch.is_tensor(offset) else offset
        check_positions(last + t, self.table.size(0))
        if torch.is_tensor(offset):
            return self.dropout(x + self.table[offset][:, None, :])
        return self.dropout(x + self.table[offset : offset + t])


def check_positions(positions: int, max_len: int) -> None:
    """A sequence longer than the positional table has no encoding for its last positions."""
    if positions > max_len:
        raise ValueError(f"sequence of {positions} positions exceeds max_len={max_len}")


class RowLengths:
    """How many key positions each row of a batch attends to (always a prefix), rows of one length grouped.

    Attention given a RowLengths computes each group with its padding cut off, so a row meets the
    same tensor shapes, hence the same kernels and the same order of floating-point sums, whatever
    else shares its batch: padded to another width, a row's scores are summed in another order and
    its numbers move in the last bits (on AVX2 CPUs enough to change int8 rounding downstream).
    `cut_queries` says the queries are the key positions themselves (encoder self-attention), so
    padded queries are cut off too and their outputs left at zero.
    """

    def __init__(self, lengths: list[int], device: torch.device, cut_queries: bool = False):
        rows_of: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            rows_of.setdefault(length, []).append(row)
        # Index None: the group is every row in order (always so at batch 1), read without a gather.
        self.groups = [(length, None if len(rows_of) == 1 else torch.tensor(rows, device=device))
                       for length, rows in sorted(rows_of.items())]
        self.cut_queries = cut_queries

    @classmethod
    def of_mask(cls, mask: torch.Tensor, cut_queries: bool = False) -> RowLengths:
        """From an additive key mask (B, 1, 1, W) whose visible positions (0) come before the hidden ones (-inf)."""
        return cls((mask[:, 0, 0, :] == 0).sum(-1).tolist(), mask.device, cut_queries)

    @classmethod
    def full(cls, batch: int, length: int, device: torch.device) -> RowLengths:
        return cls([length] * batch, device)


class ScaledDotProductAttention(nn.Module):
    """softmax(Q K^T / sqrt(E) + mask) V, with an additive mask (-inf where attention is forbidden).

    An additive -inf gives masked positions exactly zero weight after the softmax; multiplying the
    scores by 0 would not. When the caller does not need the weights, PyTorch's fused kernel
    computes the same thing faster (tests check that both paths agree).
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.dropout = dropout

    def forward(
        self,
        q: torch.Tensor,  # (B, H, Tq, E)
        k: torch.Tensor,  # (B, H, Tk, E)
        v: torch.Tensor,  # (B, H, Tk, E)
        mask: torch.Tensor | None,  # broadcastable to (B, H, Tq, Tk), 0 or -inf
        need_weights: bool,
        rows: RowLengths | None = None,  # given: each row computed as if alone (the mask is then implied)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if rows is not None:
            return self._row_by_row(q, k, v, rows, need_weights)
        p = self.dropout if self.training else 0.0
        if mask is not None:
            mask = mask.to(q.dtype)  # under autocast q may be bf16; the fused kernel wants one dtype
        if not need_weights:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
        if mask is not None:
            scores = scores + mask
        weights = scores.softmax(dim=-1)
        return F.dropout(weights, p) @ v, weights  # (B, H, Tq, E), (B, H, Tq, Tk)

    @staticmethod
    def _row_by_row(q, k, v, rows: RowLengths, need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The explicit path per group of rows of one length; cut-off positions get exactly zero weight.

        Not the fused kernel: it splits its work by batch size, so even a row of the same shape
        comes out differently alone and in a batch.
        """
        out = q.new_zeros(q.shape)  # (B, H, Tq, E)
        weights = q.new_zeros(*q.shape[:3], k.size(2)) if need_weights else None  # (B, H, Tq, Tk)
        for length, index in rows.groups:
            tq = length if rows.cut_queries else q.size(2)
            qg, kg, vg = _take(q, index, tq), _take(k, index, length), _take(v, index, length)
            w = (qg @ kg.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(dim=-1)  # (b, H, tq, length)
            if index is None:
                out[:, :, :tq] = w @ vg
                if weights is not None:
                    weights[:, :, :tq, :length] = w
                continue
            out[index, :, :tq] = w @ vg
            if weights is not None:
                weights[index, :, :tq, :length] = w
        return out, weights


def _take(t: torch.Tensor, index: torch.Tensor | None, n: int) -> torch.Tensor:
    """Rows `index` (None: every row, in order) of t (B, H, T, E), their first n positions.

    The same contiguous (b, H, n, E) operands whether gathered or sliced: the same kernels, the same bits.
    """
    return t[:, :, :n].contiguous() if index is None else t[index, :, :n].contiguous()


class MultiHeadAttention(nn.Module):
    """Project to H heads, attend in each, concatenate, and mix with an output linear.

    Self-attention projects Q, K and V from the same input with one fused matrix; cross-attention
    projects Q from the decoder and K, V (fused) from the encoder output. Fusing saves kernel
    launches per decoding step and matches CTranslate2's layout, so weights export unchanged.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, cross: bool):
        super().__init__()
        self.n_heads, self.head_dim, self.cross = n_heads, d_model // n_heads, cross
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attention = ScaledDotProductAttention(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, E)

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of the encoder output: computed once per source."""
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, D) queries (and keys/values for self-attention)
        mask: torch.Tensor | None,
        need_weights: bool = False,
        memory: torch.Tensor | None = None,  # (B, S, D) encoder output, for cross-attention
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,  # precomputed (k, v), overrides memory
        cache: LayerCache | None = None,
        layer: int = 0,
        rows: RowLengths | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.cross:
            q = self.split_heads(self.q_proj(x))
            k, v = kv if kv is not None else self.project_kv(memory)
        else:
            q, k, v = (self.split_heads(t) for t in self.qkv_proj(x).chunk(3, dim=-1))
            if cache is not None:
                k, v = cache.append_self(layer, k, v)  # all positions so far
        out, weights = self.attention(q, k, v, mask, need_weights, rows)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # concat heads
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    """Position-wise FFN(x) = max(0, x W1 + b1) W2 + b2."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class AddNorm(nn.Module):
    """Residual connection around a sub-layer plus LayerNorm ("Add & Norm" in the figure).

    `norm_first` chooses where the norm sits: before the sub-layer (pre-norm) or after the sum
    (the paper's post-norm). Callers pass the sub-layer as a function of its normalised input.
    """

    def __init__(self, d_model: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor, sublayer) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.norm_first:
            out, weights = sublayer(self.norm(x))
            return x + self.dropout(out), weights
        out, weights = sublayer(x)
        return self.norm(x + self.dropout(out)), weights


def _no_weights(fn):
    return lambda x: (fn(x), None)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then feed forward, each wrapped in add & norm."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cross=False)
        self.feed_forward = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.add_norm1 = AddNorm(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.add_norm2 = AddNorm(cfg.d_model, cfg.dropout, cfg.norm_first)

    def forward(
        self, x: torch.Tensor, src_mask: torch.Tensor, rows: RowLengths | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, weights = self.add_norm1(x, lambda h: self.self_attn(h, src_mask, need_weights, rows=rows))
        x, _ = self.add_norm2(x, _no_weights(self.feed_forward))
        return x, weights  # weights: (B, H, S, S) when asked


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, then feed forward."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cross=False)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cross=True)
        self.feed_forward = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.add_norm1 = AddNorm(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.add_norm2 = AddNorm(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.add_norm3 = AddNorm(cfg.d_model, cfg.dropout, cfg.norm_first)

    def forward(
        self,
        y: torch.Tensor,  # (B, T, D)
        memory: torch.Tensor,  # (B, S, D)
        self_mask: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: LayerCache | None = None,
        layer: int = 0,
        need_self: bool = False,
        need_cross: bool = False,
        rows: tuple[RowLengths, RowLengths] | None = None,  # (self, cross), for row-exact decoding
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        self_rows, cross_rows = rows or (None, None)
        y, self_w = self.add_norm1(
            y, lambda h: self.self_attn(h, self_mask, need_self, cache=cache, layer=layer, rows=self_rows)
        )
        kv = cache.cross(layer) if cache is not None else None
        if cache is not None and kv is None:
            kv = self.cross_attn.project_kv(memory)
            cache.set_cross(layer, *kv)
        y, cross_w = self.add_norm2(
            y, lambda h: self.cross_attn(h, src_mask, need_cross, memory=memory, kv=kv, rows=cross_rows)
        )
        y, _ = self.add_norm3(y, _no_weights(self.feed_forward))
        return y, self_w, cross_w


class Encoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        # Pre-norm leaves the residual stream unnormalised, so a final norm is needed.
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(
        self, x: torch.Tensor, src_mask: torch.Tensor, rows: RowLengths | None = None,
        weights_of: frozenset[int] = frozenset(),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The source's representation, and the self-attention weights of the layers in `weights_of`."""
        weights = {}
        for i, layer in enumerate(self.layers):
            x, w = layer(x, src_mask, rows, i in weights_of)
            if w is not None:
                weights[i] = w
        return self.norm(x), weights


@dataclass
class DecoderOutput:
    hidden: torch.Tensor  # (B, T, D)
    self_attention: dict[int, torch.Tensor]  # layer -> (B, H, T, T_total)
    cross_attention: dict[int, torch.Tensor]  # layer -> (B, H, T, S)


class Decoder(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()

    def forward(
        self,
        y: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: LayerCache | None = None,
        self_layers: frozenset[int] = frozenset(),
        cross_layers: frozenset[int] = frozenset(),
        rows: tuple[RowLengths, RowLengths] | None = None,
    ) -> DecoderOutput:
        self_w, cross_w = {}, {}
        for i, layer in enumerate(self.layers):
            y, sw, cw = layer(
                y, memory, self_mask, src_mask, cache, i, i in self_layers, i in cross_layers, rows
            )
            if sw is not None:
                self_w[i] = sw
            if cw is not None:
                cross_w[i] = cw
        return DecoderOutput(self.norm(y), self_w, cross_w)


class Projection(nn.Module):
    """Linear map to vocabulary logits, sharing its matrix with the embeddings as in the paper.

    The softmax half of the figure's "Linear + Softmax" is applied by the loss in training and by
    the decoder strategies at inference, which need log-probabilities anyway.
    """

    def __init__(self, embedding: TokenEmbedding):
        super().__init__()
        self.embedding = embedding

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # F.linear reads the (V, D) matrix in place; `h @ W.t()` is several times slower on CPU.
        return F.linear(h, self.embedding.weight)  # (B, T, V)


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Additive key mask (B, 1, 1, S): -inf on padding so no query ever attends to it."""
    mask = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    return mask.masked_fill(ids == pad_id, float("-inf"))[:, None, None, :]


def causal_mask(t: int, device: torch.device) -> torch.Tensor:
    """Additive (T, T) mask: position i may attend to positions <= i only."""
    return torch.full((t, t), float("-inf"), device=device).triu(1)


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = TokenEmbedding(cfg.vocab_size, cfg.d_model, cfg.pad_id)  # shared src/tgt
        self.positional = PositionalEncoding(cfg.d_model, cfg.max_len, cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.projection = Projection(self.embedding)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 2 and name != "embedding.weight":
                nn.init.xavier_uniform_(p)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(
        self, src: torch.Tensor, attention_layers: frozenset[int] = frozenset(), rows: RowLengths | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """src (B, S) token ids -> memory (B, S, D), its additive key mask (B, 1, 1, S), and the encoder
        self-attention weights (B, H, S, S) of `attention_layers`. `rows`: each row computed as if alone."""
        src_mask = padding_mask(src, self.cfg.pad_id).to(self.embedding.weight.dtype)
        memory, weights = self.encoder(self.positional(self.embedding(src)), src_mask, rows, attention_layers)
        return memory, src_mask, weights

    def decode(
        self,
        tgt: torch.Tensor,  # (B, T) decoder input ids, starting with <s>
        memory: torch.Tensor | None,  # None when `cache` already holds every layer's cross K/V
        src_mask: torch.Tensor,
        cache: LayerCache | None = None,
        offset: int | torch.Tensor = 0,
        self_layers: frozenset[int] = frozenset(),
        cross_layers: frozenset[int] = frozenset(),
        cache_mask: torch.Tensor | None = None,
        rows: tuple[RowLengths, RowLengths] | None = None,
    ) -> tuple[torch.Tensor, DecoderOutput]:
        """Logits (B, T, V) for each decoder position, plus any attention weights asked for.

        With a cache, `tgt` holds only the new positions (usually one), starting at `offset`;
        their keys/values are appended to the cache, so no causal mask is needed, unless rows hold
        histories of different lengths: then `offset` is per row and `cache_mask` (B, 1, 1, L) hides
        each row's unused cache positions. `rows` (self, cross): each row computed as if alone.
        """
        t = tgt.size(1)
        if cache is not None and t > 1 and (torch.is_tensor(offset) or offset > 0):
            raise ValueError("cached decoding feeds one new position at a time")
        self_mask = causal_mask(t, tgt.device).to(src_mask.dtype) if t > 1 else cache_mask
        y = self.positional(self.embedding(tgt), offset)
        out = self.decoder(y, memory, self_mask, src_mask, cache, self_layers, cross_layers, rows)
        return self.projection(out.hidden), out

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for training."""
        memory, src_mask, _ = self.encode(src)
        logits, _ = self.decode(tgt, memory, src_mask)
        return logits

