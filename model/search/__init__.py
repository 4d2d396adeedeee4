"""Decoding from <s> to </s>: greedy search and beam search, written once over a `Backend`.

`decode` is the entry point for a batch; `model.search.greedy` also offers the running batch that
the server keeps and the step-by-step stream. Both backends (`TorchBackend` here, the C engine's
`EngineBackend`) run every search.
"""

from __future__ import annotations

import torch

from model.search.backend import Backend, right_padded
from model.search.beam import beam_search
from model.search.greedy import greedy
from model.search.options import DecodeOptions, SpecialIds
from model.search.records import Hypothesis


def decode(backend: Backend, src: torch.Tensor, opts: DecodeOptions, special: SpecialIds) -> list[list[Hypothesis]]:
    """The n-best hypotheses (one for greedy search) of each right-padded source (B, S), by `opts.strategy`."""
    if opts.strategy == "greedy":
        lengths = (src != special.pad).sum(dim=1).tolist()
        return [[h] for h in greedy(backend, [row[:n].tolist() for row, n in zip(src, lengths)], opts, special)]
    if opts.strategy == "beam":
        return beam_search(backend, src, opts, special)
    raise ValueError(f"unknown decoding strategy {opts.strategy!r}")


@torch.inference_mode()
def encoder_attention(backend: Backend, sources: list[list[int]], layers: tuple[int, ...]) -> list[dict[int, list]]:
    """Per source, the encoder self-attention of `layers`: layer -> [head][query][key] over its own tokens."""
    src = right_padded(sources, backend.config.pad_id, backend.device)
    weights = backend.encode(src, frozenset(layers)).attention
    return [{l: weights[l][row, :, :n, :n].float().tolist() for l in layers} for row, n in enumerate(map(len, sources))]
