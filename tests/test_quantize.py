"""model.quantize: int8 weights that approximate the float model and never mix rows of a batch."""

import pytest
import torch
from torch import nn

from app.registry import resolve_quantization
from model.checkpoint import ModelLoadError
from model.engine.backend import backend_for
from model.engine.binding import available as engine_available
from model.quantize import Int8Linear, quantize_int8
from model.search import decode
from model.search.options import DecodeOptions
from model.transformer import Projection
from tests.conftest import SPECIAL, copy_task_batch, random_sources, tiny_model


def test_int8_copy_approximates_the_model_and_leaves_it_alone():
    model = tiny_model(seed=4)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    quantized = quantize_int8(model)
    src, tgt = random_sources(9, [3, 7, 5, 11]), random_sources(10, [6, 4, 9, 7])
    with torch.inference_mode():
        exact, approx = model(src, tgt).log_softmax(-1), quantized(src, tgt).log_softmax(-1)
    assert 0 < float((exact - approx).abs().max()) < 0.25  # quantised, and close
    assert isinstance(model.projection, Projection) and isinstance(quantized.projection, Int8Linear)
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_a_row_gets_the_same_output_whatever_shares_its_batch():
    """Per-tensor dynamic quantisation fails this: one loud row coarsens every other row's grid."""
    torch.manual_seed(0)
    linear = nn.Linear(24, 10)
    layer = Int8Linear(linear)
    quiet = torch.randn(1, 24) * 0.01
    loud = torch.randn(5, 24) * 100
    with torch.inference_mode():
        alone, together = layer(quiet), layer(torch.cat([quiet, loud]))[:1]
        assert torch.equal(alone, together)
        torch.testing.assert_close(alone, linear(quiet), atol=2e-4, rtol=0.02)


@pytest.mark.parametrize("engine", [True, False], ids=["engine", "pytorch"])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_int8_decoding_of_a_padded_source_equals_decoding_it_alone(trained, strategy, engine):
    """The service batches strangers' requests: their company must not change a translation (on the
    C engine where it runs, and on PyTorch's int8 layers, the path without it)."""
    quantized = backend_for(trained, int8=True, engine=engine)
    assert quantized.name == ("c" if engine and engine_available() else "torch")
    src, _ = copy_task_batch(torch.Generator().manual_seed(11), 6)
    options = DecodeOptions(strategy=strategy, beam_size=3, max_new_tokens=12, top_k=2, cross_attention_layers=(1,))
    batched = decode(quantized, src, options, SPECIAL)
    for i in range(src.size(0)):
        n = int((src[i] != SPECIAL.pad).sum())
        alone = decode(quantized, src[i : i + 1, :n], options, SPECIAL)[0][0]
        assert batched[i][0] == alone  # every id, probability, top-k entry, attention weight and score
    assert len({int((s != SPECIAL.pad).sum()) for s in src}) > 1  # the batch really mixes lengths


def test_the_quantize_setting_resolves_per_device_and_refuses_what_has_no_kernels():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_quantization("auto", cpu, torch.float32) == "int8"
    assert resolve_quantization("auto", cuda, torch.float32) == "none"
    assert resolve_quantization("auto", cpu, torch.bfloat16) == "none"
    assert resolve_quantization("none", cpu, torch.float32) == "none"
    for device, dtype in ((cuda, torch.float32), (cpu, torch.bfloat16)):
        with pytest.raises(ModelLoadError, match="QUANTIZE=int8 needs DEVICE=cpu and float32"):
            resolve_quantization("int8", device, dtype)
