"""The interface every search runs against, and the reference implementation on PyTorch.

A search (greedy, beam, the running batch) asks a `Backend` for five things: encode sources,
project cross-attention keys/values, run one cached decoder step, pick the top-k of a row, and
move cache rows. `TorchBackend` answers with the Transformer's own modules on any device;
`model.engine.backend.EngineBackend` answers with the C engine. The network knows neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from model.transformer import RowLengths, Transformer, TransformerConfig

if TYPE_CHECKING:
    from model.search.cache import KVCache, RowCache


@dataclass
class Encoded:
    memory: torch.Tensor  # (B, S, D)
    source_mask: torch.Tensor  # (B, 1, 1, S) additive key mask
    attention: dict[int, torch.Tensor]  # encoder layer -> (B, H, S, S), the layers asked for


@dataclass
class StepOutput:
    logp: torch.Tensor  # (R, V) float32 log-probabilities of the next token
    cross_attention: dict[int, torch.Tensor]  # decoder layer -> (R, H, S): this step's query over the source
    self_attention: dict[int, torch.Tensor]  # decoder layer -> (R, H, T): this step's query over the history


class Backend(Protocol):
    name: str  # "torch" or "c", as GET /models reports it
    config: TransformerConfig
    device: torch.device
    dtype: torch.dtype

    def encode(self, src: torch.Tensor, attention_layers: frozenset[int] = frozenset()) -> Encoded:
        """Right-padded source ids (B, S) -> the encoder output and the self-attention of `attention_layers`."""
        ...

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer, the cross-attention keys and values (B, H, S, E) of `memory`."""
        ...

    def step(self, tokens: torch.Tensor, cache: KVCache, position: int, source_mask: torch.Tensor,
             self_layers: frozenset[int], cross_layers: frozenset[int]) -> StepOutput:
        """One decoder step for every row: `tokens` (R, 1) at `position`, keys/values appended to `cache`."""
        ...

    def top_k(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`x.topk(k, dim=-1)` of (R, V) rows: largest first, the first column winning ties."""
        ...

    def gather_rows(self, kv: torch.Tensor, index: torch.Tensor, n: int, out: torch.Tensor | None) -> torch.Tensor:
        """Rows `index` of a cache buffer (L, R, H, T, E), their first `n` positions, into `out` when it fits."""
        ...

    def join(self, sources: list[list[int]], cache: RowCache, first_token: int) -> None:
        """Encode `sources` and let them join the running batch `cache`, each to be fed `first_token` first."""
        ...

    def greedy_step(self, cache: RowCache, forbidden: torch.Tensor, self_layers: frozenset[int],
                    cross_layers: frozenset[int]) -> StepOutput:
        """One step of the running batch: log-probabilities with `forbidden` set to -inf, each row's argmax
        written as its next input (`cache.tokens_in_use`, `cache.best_logp_in_use`), lengths advanced."""
        ...


def right_padded(rows: list[list[int]], pad: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Token id lists as one (B, longest) batch, padded on the right: what `Backend.encode` takes."""
    batch = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = torch.tensor(row)
    return batch.to(device)


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(R, V) float32 log-probabilities of the last position of decoder logits (R, T, V)."""
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


class TorchBackend:
    """The reference backend: the Transformer's modules, on whatever device and dtype they are.

    `row_exact`: attention computes every row as if it were alone (`RowLengths`), so that with
    row-exact linear layers (`model.quantize`) a translation never depends on its batch-mates.
    """

    name = "torch"

    def __init__(self, model: Transformer, row_exact: bool = False):
        self.model, self.row_exact = model, row_exact
        self.config = model.cfg
        weight = model.embedding.weight
        self.device, self.dtype = weight.device, weight.dtype
        self._source_rows: tuple[torch.Tensor | None, RowLengths | None] = (None, None)

    def _eval(self) -> Transformer:
        """The model without dropout; checked first, since eval() walks every submodule (~1.5 ms a call)."""
        if self.model.training:
            self.model.eval()
        return self.model

    def encode(self, src: torch.Tensor, attention_layers: frozenset[int] = frozenset()) -> Encoded:
        rows = None
        if self.row_exact:
            rows = RowLengths((src != self.config.pad_id).sum(dim=1).tolist(), src.device, cut_queries=True)
        memory, source_mask, attention = self._eval().encode(src, attention_layers, rows)
        return Encoded(memory, source_mask, attention)

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [layer.cross_attn.project_kv(memory) for layer in self.model.decoder.layers]

    def step(self, tokens, cache, position, source_mask, self_layers, cross_layers) -> StepOutput:
        rows = self._step_rows(tokens.size(0), position, source_mask)
        logits, out = self._eval().decode(tokens, None, source_mask, cache, offset=position, self_layers=self_layers,
                                          cross_layers=cross_layers, rows=rows)
        return _output(log_probabilities(logits), out)

    def top_k(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return x.topk(k, dim=-1)

    def gather_rows(self, kv, index, n, out=None) -> torch.Tensor:
        shape = (kv.size(0), len(index), *kv.shape[2:])
        if out is None or out.shape != shape:
            out = kv.new_empty(shape)
        out[:, :, :, :n] = kv[:, index, :, :n]  # only the positions written so far
        return out

    def join(self, sources, cache, first_token) -> None:
        encoded = self.encode(right_padded(sources, self.config.pad_id, self.device))
        cache.add(self.cross_kv(encoded.memory), encoded.source_mask, first_token)

    def greedy_step(self, cache, forbidden, self_layers, cross_layers) -> StepOutput:
        mask = cache.step_mask()
        rows = self._step_rows(cache.n, None, cache.mask_of_sources, mask)
        logits, out = self._eval().decode(cache.tokens_in_use[:, None], None, cache.mask_of_sources, cache,
                                          offset=cache.lengths_in_use, self_layers=self_layers,
                                          cross_layers=cross_layers, cache_mask=mask, rows=rows)
        cache.advance()
        logp = log_probabilities(logits)
        logp.index_fill_(1, forbidden, float("-inf"))  # after the softmax: reported probabilities stay the model's
        best_logp, best = self.top_k(logp, 1)
        cache.tokens_in_use.copy_(best[:, 0])
        cache.best_logp_in_use.copy_(best_logp[:, 0])
        return _output(logp, out)

    def _step_rows(self, batch: int, position: int | None, source_mask: torch.Tensor,
                   cache_mask: torch.Tensor | None = None) -> tuple[RowLengths, RowLengths] | None:
        """Row lengths of one row-exact step: the history after this step's key (every row at `position`,
        or as `cache_mask` shows), and the source.

        The source's lengths are kept while the same mask comes back (every step of one decoding
        run): reading them costs a device sync and Python work that a step should not repeat.
        """
        if not self.row_exact:
            return None
        history = (RowLengths.of_mask(cache_mask) if cache_mask is not None
                   else RowLengths.full(batch, position + 1, source_mask.device))
        mask, cross = self._source_rows
        if mask is not source_mask:
            cross = RowLengths.of_mask(source_mask)
            self._source_rows = (source_mask, cross)  # the mask itself is held, so its identity cannot be reused
        return history, cross


def _output(logp: torch.Tensor, out) -> StepOutput:
    """The step's log-probabilities and, of the attention asked for, the last query's row."""
    return StepOutput(logp, {l: w[:, :, -1, :].float() for l, w in out.cross_attention.items()},
                      {l: w[:, :, -1, :].float() for l, w in out.self_attention.items()})
