"""`EngineBackend`: the search's `Backend` answered by the C engine, and the choice between backends.

The engine never reaches into the network: `Engine` packs a trained `Transformer`'s weights once
(as a converter would), and every search in `model.search` runs on it unchanged.
"""

from __future__ import annotations

import logging

import torch

from model.engine.binding import Engine
from model.engine.build import EngineUnavailable
from model.quantize import quantize_int8
from model.search.backend import Backend, Encoded, StepOutput, TorchBackend
from model.search.cache import KVCache, RowCache
from model.transformer import Transformer

log = logging.getLogger("model.engine")


class EngineBackend:
    """The C engine's answers to the search: one C call per encoder pass or decoder step."""

    name = "c"

    def __init__(self, engine: Engine):
        self.engine, self.config = engine, engine.cfg
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def encode(self, src: torch.Tensor, attention_layers: frozenset[int] = frozenset()) -> Encoded:
        return Encoded(*self.engine.encode(src, attention_layers))

    def cross_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.engine.cross_kv(memory)

    def step(self, tokens: torch.Tensor, cache: KVCache, position: int, source_mask: torch.Tensor,
             self_layers: frozenset[int], cross_layers: frozenset[int]) -> StepOutput:
        logits, self_w, cross_w = self.engine.decode_step(tokens, source_mask, cache, position, self_layers,
                                                          cross_layers)
        return _output(logits[:, -1], self_w, cross_w)

    def top_k(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # On a 16,000-token vocabulary several times faster than PyTorch's, which sorts more than it needs.
        return self.engine.topk(x, k)

    def gather_rows(self, kv: torch.Tensor, index: torch.Tensor, n: int, out: torch.Tensor | None) -> torch.Tensor:
        return self.engine.gather_rows(kv, index, n, out)

    def join(self, sources: list[list[int]], cache: RowCache, first_token: int) -> None:
        # One C call encodes the sources and writes every layer's cross K/V into the rows' places.
        first = cache.reserve(len(sources), max(map(len, sources)))
        self.engine.encode_into(sources, cache.cross_k, cache.cross_v, first)
        cache.admit([len(ids) for ids in sources], first_token)

    def greedy_step(self, cache: RowCache, forbidden: torch.Tensor, self_layers: frozenset[int],
                    cross_layers: frozenset[int]) -> StepOutput:
        # One C call: the step, the forbidden tokens, each row's argmax and its length advanced (a busy
        # server spent half its decoding threads' time in the Python between such calls).
        return _output(*self.engine.greedy_step(cache, forbidden, self_layers, cross_layers))


def _output(logp: torch.Tensor, self_w: dict, cross_w: dict) -> StepOutput:
    return StepOutput(logp, {l: w[:, :, -1, :] for l, w in cross_w.items()},
                      {l: w[:, :, -1, :] for l, w in self_w.items()})


def backend_for(model: Transformer, int8: bool = False, engine: bool = True) -> Backend:
    """The backend that runs `model` (float weights) for inference: the C engine where asked and able
    (a CPU model in float32 on x86-64 with AVX2), else PyTorch. With `int8`, linear layers hold int8
    weights (the engine's own packing, or `quantize_int8`'s row-exact copy on PyTorch)."""
    on_cpu_float = model.embedding.weight.device.type == "cpu" and model.embedding.weight.dtype == torch.float32
    if engine and on_cpu_float:
        try:
            with torch.no_grad():
                return EngineBackend(Engine(model, int8))
        except EngineUnavailable as e:
            log.warning("the C engine cannot run this model, PyTorch will: %s", e)
    if int8:
        return TorchBackend(quantize_int8(model), row_exact=True)  # no number of a row depends on its batch
    return TorchBackend(model)
