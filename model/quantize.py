"""Int8 weights for CPU inference, with results that do not depend on the rest of the batch.

PyTorch's dynamic quantisation (`torch.ao...quantize_dynamic`) quantises each layer's input with one
scale for the whole batch, so a sentence's probabilities, and now and then its tokens, changed with
whatever other requests shared its batch (5 of the first 96 es->en Tatoeba test sentences, greedy,
came out differently alone and in batches of 8). A server that batches strangers' requests must not do that. `Int8Linear` gives
every row its own scale: it divides each input row by its largest magnitude, so every row lies in
[-1, 1], and appends two constant columns +1 and -1 (multiplied by zero weights), so the batch's
range is exactly [-1, 1] whatever its rows. The quantisation grid is then the same for every batch,
the int32 accumulation is exact, and a row's output depends on that row alone.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from model.engine import attach
from model.transformer import Transformer


def _dynamic_int8(linear: nn.Linear) -> nn.Module:
    """torch's dynamically quantised Linear (int8 weights, one scale per output channel)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao announces its move to the separate torchao package; the API works as documented in 2.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
        return quantize_dynamic(nn.Sequential(linear), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 and x quantised row by row (see the module docstring)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        out_features, in_features = linear.weight.shape
        padded = nn.Linear(in_features + 2, out_features, bias=False)
        with torch.no_grad():
            padded.weight.copy_(torch.cat([linear.weight.float(), linear.weight.new_zeros(out_features, 2)], dim=1))
        self.inner = _dynamic_int8(padded)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.register_buffer("ends", torch.tensor([1.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_min_(1e-12)
        rows = torch.cat([x / scale, self.ends.expand(*x.shape[:-1], 2)], dim=-1)
        # The op the quantised module's forward calls, without its Python checks (a third of the
        # cost at decoding batch sizes); reduce_range as that module sets it for fbgemm.
        y = torch.ops.quantized.linear_dynamic(rows, self.inner._packed_params._packed_params, True)
        return y.mul_(scale) if self.bias is None else torch.addcmul(self.bias, y, scale)

def quantize_int8(model: Transformer, engine: bool = True) -> Transformer:
    """A copy of `model` for CPU inference whose linear layers, the projection included, hold int8 weights.

    A decoding step of a small batch mostly waits for weights to arrive from memory, so a quarter
    of the bytes makes it several times faster; bench.quality measures what it costs in BLEU. The
    copy is for inference only and cannot be exported or trained.

    With `engine` (and where model.engine can run) the copy's inference calls go to the C engine's
    int8 kernels, packed from `model`'s float weights; the PyTorch int8 layers below stay as the
    path for everything else (and for CPUs the engine does not run on).
    """
    quantized = copy.deepcopy(model).eval()
    quantized.row_exact = True  # with row-exact attention too, no number of a row depends on its batch
    # The tied projection becomes a Linear over the same matrix so that it is quantised as well;
    # the embedding lookup keeps the float matrix.
    projection = nn.Linear(model.cfg.d_model, model.cfg.vocab_size, bias=False)
    projection.weight = quantized.embedding.weight
    quantized.projection = projection
    _swap_linears(quantized)
    if engine:
        attach(quantized, int8=True, weights_of=model)
    return quantized


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _swap_linears(child)
