"""The engine's kernel families (model/engine/engine.c): each family this CPU can run gives the same
bits as the AVX2 reference, int8 and float32, one linear layer and whole translations alike.

Only families the CPU has are run (an AVX2-only machine runs the reference alone); every family's
kernels are chosen per model, so one process compares them side by side.
"""

import pytest
import torch

from model.engine import binding as engine
from model.engine.backend import EngineBackend
from model.engine.build import EngineUnavailable
from model.search import decode
from model.search.greedy import GreedySearch, Request
from model.search.options import DecodeOptions
from tests.conftest import SPECIAL, copy_task_batch, tiny_model

pytestmark = pytest.mark.skipif(not engine.available(), reason=f"no CPU engine here: {engine.why_unavailable()}")
FAMILIES = engine.kernels_here() if engine.available() else []


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("int8", [False, True])
def test_a_linear_layer_gives_the_reference_bits_for_every_tile(family, int8):
    """Rows 1 to 27 cover every row tile (12, 8, 6, 4, 2, 1) and their remainders; 80 columns are five
    16-column pairs, so the prefetch of a pair ahead runs out inside the layer."""
    torch.manual_seed(7)
    model, linear = tiny_model(seed=2), torch.nn.Linear(96, 80)
    reference, other = engine.Engine(model, int8, kernels="avx2"), engine.Engine(model, int8, kernels=family)
    spec_ref, spec = reference._linear(linear.weight, linear.bias), other._linear(linear.weight, linear.bias)
    for rows in range(1, 28):
        x = torch.randn(rows, 96) * torch.logspace(-2, 2, rows)[:, None]
        assert torch.equal(other.linear(spec, x), reference.linear(spec_ref, x)), rows


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_translations_and_their_log_probabilities_are_the_reference_ones(trained, family, int8, strategy):
    reference = EngineBackend(engine.Engine(trained, int8, kernels="avx2"))
    other = EngineBackend(engine.Engine(trained, int8, kernels=family))
    src, _ = copy_task_batch(torch.Generator().manual_seed(21), 14)
    options = DecodeOptions(strategy=strategy, beam_size=3, max_new_tokens=12, top_k=3, cross_attention_layers=(1,))
    for got, want in zip(decode(other, src, options, SPECIAL), decode(reference, src, options, SPECIAL), strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.ids == w.ids
            assert [s.probability for s in g.steps] == [s.probability for s in w.steps]
            assert [s.top for s in g.steps] == [s.top for s in w.steps]
            assert g.score == w.score


@pytest.mark.parametrize("family", FAMILIES)
def test_the_running_batch_gives_the_reference_bits(trained, family):
    """The server's path: rows join a running batch and every step is one C call with the argmax in C."""
    src, _ = copy_task_batch(torch.Generator().manual_seed(22), 6)
    sources = [row[row != SPECIAL.pad].tolist() for row in src]
    options = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=2)
    results = []
    for kernels in ("avx2", family):
        search = GreedySearch(EngineBackend(engine.Engine(trained, True, kernels=kernels)), SPECIAL)
        search.add([Request(ids, options, tag=i) for i, ids in enumerate(sources[:3])])
        done, t = {}, 0
        while len(search) or t < 3:
            if t == 2:  # the others join mid-way, as requests reach a busy server
                search.add([Request(ids, options, tag=i + 3) for i, ids in enumerate(sources[3:])])
            done |= {request.tag: (h.ids, [(s.probability, s.top) for s in h.steps])
                     for request, h in search.step()}
            t += 1
        results.append(done)
    assert sorted(results[0]) == list(range(len(sources)))
    assert results[1] == results[0]


def test_the_kernel_family_is_chosen_by_argument_then_environment_then_cpu(monkeypatch):
    monkeypatch.delenv("TRANSLATE_ENGINE_KERNELS", raising=False)
    assert engine.chosen_kernels() == FAMILIES[-1]
    assert engine.chosen_kernels("avx2") == "avx2"
    monkeypatch.setenv("TRANSLATE_ENGINE_KERNELS", "avx2")
    assert engine.chosen_kernels() == "avx2"
    assert engine.Engine(tiny_model(), True).kernels == "avx2"
    with pytest.raises(ValueError, match="unknown engine kernels"):
        engine.chosen_kernels("sse2")
    missing = [name for name in engine.KERNELS if name not in FAMILIES]
    for name in missing:  # only on a CPU without the family: it is refused, never run
        with pytest.raises(EngineUnavailable, match=name):
            engine.chosen_kernels(name)


@pytest.mark.parametrize("int8", [False, True])
def test_threads_splitting_the_rows_give_the_bits_of_one_thread(trained, int8):
    """With enough rows each thread runs whole steps (and encoder passes) on its share of the rows;
    with few, the threads share each layer. Tokens, probabilities and attention are those of one thread."""
    backend = EngineBackend(engine.Engine(trained, int8))
    src, _ = copy_task_batch(torch.Generator().manual_seed(23), 25)  # enough rows for 2 and 3 shares
    options = DecodeOptions(strategy="beam", beam_size=3, max_new_tokens=10, top_k=2, cross_attention_layers=(0, 1),
                            self_attention_layers=(1,))
    sources = [row[row != SPECIAL.pad].tolist() for row in src]
    results = []
    try:
        for threads in (1, 2, 3):
            engine.set_threads(threads)
            beams = decode(backend, src, options, SPECIAL)
            memory = backend.engine.encode(src, frozenset({0, 1}))
            search = GreedySearch(backend, SPECIAL)
            search.add([Request(ids, DecodeOptions(max_new_tokens=10, cross_attention_layers=(1,)), tag=i)
                        for i, ids in enumerate(sources)])
            greedy = {}
            while len(search):
                greedy |= {r.tag: h for r, h in search.step()}
            results.append((beams, memory[0], memory[2], greedy))
    finally:
        engine.set_threads(None)
    (beams, memory, weights, greedy) = results[0]
    for other_beams, other_memory, other_weights, other_greedy in results[1:]:
        assert other_beams == beams and other_greedy == greedy
        assert torch.equal(other_memory, memory)
        assert all(torch.equal(other_weights[l], weights[l]) for l in (0, 1))
