"""Int8 weights for CPU inference, with results that do not depend on the rest of the batch.

PyTorch's dynamic quantisation (`torch.ao...quantize_dynamic`) quantises each layer's input with one
scale for the whole batch, so a sentence's probabilities, and now and then its tokens, changed with
whatever other requests shared its batch (5 of the first 96 es->en Tatoeba test sentences, greedy,
came out differently alone and in batches of 8). A server that batches strangers' requests must not
do that. `Int8Linear` gives every row its own scale: it divides each input row by its largest
magnitude, so every row lies in [-1, 1], and appends two constant columns +1 and -1 (multiplied by
zero weights), so the batch's range is exactly [-1, 1] whatever its rows. The quantisation grid is
then the same for every batch, the int32 accumulation is exact, and a row's output depends on that
row alone.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from model.transformer import Transformer


def int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 weights, one scale per output row: (q (N, K) int8, scale (N,) float32), weight ~ q * scale.

    The one quantisation of weights in the project: the PyTorch layers below and the C engine's
    packed matrices (model.engine.binding) both start from it, so both hold the same integers.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    return torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


def _packed(q: torch.Tensor, scale: torch.Tensor):
    """fbgemm's packed form of int8 weights with per-row scales, for torch.ops.quantized.linear_dynamic."""
    with warnings.catch_warnings():
        # torch.ao announces its move to the separate torchao package; the ops work as documented in 2.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
        weight = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(len(scale), dtype=torch.long), 0)
        return torch.ops.quantized.linear_prepack(weight, None)


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 and x quantised row by row (see the module docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        q, scale = int8_weight(linear.weight)
        self.packed = _packed(torch.cat([q, q.new_zeros(q.size(0), 2)], dim=1), scale)  # the two end columns: zero
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.register_buffer("ends", torch.tensor([1.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-12)
        rows = torch.cat([x / scale, self.ends.expand(*x.shape[:-1], 2)], dim=-1)
        # The op torch's dynamically quantised Linear calls, without its Python checks (a third of the
        # cost at decoding batch sizes); reduce_range as that module sets it for fbgemm.
        y = torch.ops.quantized.linear_dynamic(rows, self.packed, True)
        return y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale)

def quantize_int8(model: Transformer) -> Transformer:
    """A copy of `model` for CPU inference whose linear layers, the projection included, hold int8 weights.

    A decoding step of a small batch mostly waits for weights to arrive from memory, so a quarter
    of the bytes makes it several times faster; bench.quality measures what it costs in BLEU. The
    copy is for inference only and cannot be exported or trained. Decode it with a row-exact
    `TorchBackend`, so that attention too computes every row on its own; on a CPU the C engine packs
    its own int8 weights instead (`model.engine.backend.backend_for`).
    """
    quantized = copy.deepcopy(model).eval()
    # The tied projection becomes a Linear over the same matrix so that it is quantised as well;
    # the embedding lookup keeps the float matrix.
    projection = nn.Linear(model.cfg.d_model, model.cfg.vocab_size, bias=False)
    projection.weight = quantized.embedding.weight
    quantized.projection = projection
    _swap_linears(quantized)
    return quantized


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _swap_linears(child)
