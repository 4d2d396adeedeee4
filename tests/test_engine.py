"""model.engine: the C encoder and decoder step compute the network model/transformer.py defines, a
row's numbers never depend on its batch, and every search runs on it as on PyTorch.

Tiny real models (vocab 40, so the projection's tile padding is exercised); the engine is compiled
from model/engine/engine.c on first use. Where it cannot run (no compiler, no AVX2), these tests skip
and the rest of the suite runs everything on PyTorch.
"""

import threading

import pytest
import torch

from model.engine import binding as engine
from model.engine.backend import EngineBackend, backend_for
from model.engine.build import EngineUnavailable, build
from model.search import decode, encoder_attention
from model.search.backend import TorchBackend
from model.search.cache import KVCache
from model.search.greedy import GreedySearch, Request
from model.search.options import DecodeOptions, SpecialIds
from tests.conftest import SPECIAL, copy_task_batch, random_sources, tiny_model

pytestmark = pytest.mark.skipif(not engine.available(), reason=f"no CPU engine here: {engine.why_unavailable()}")


def with_engine(model, int8: bool) -> EngineBackend:
    return EngineBackend(engine.Engine(model, int8))


def test_the_float_engine_computes_what_pytorch_computes():
    model = tiny_model(seed=3)
    fast = with_engine(model, int8=False)
    src, lengths = random_sources(5, [4, 9, 6]), [4, 9, 6]
    reference = TorchBackend(model)
    with torch.inference_mode():
        want, want_mask, want_w = model.encode(src, frozenset({0, 1}))
        got, got_mask, got_w = fast.engine.encode(src, frozenset({0, 1}))
        assert torch.equal(got_mask, want_mask)
        for row, n in enumerate(lengths):  # padded positions are never read, so only real ones are compared
            torch.testing.assert_close(got[row, :n], want[row, :n], atol=2e-5, rtol=0)
            for layer in (0, 1):
                torch.testing.assert_close(got_w[layer][row, :, :n, :n], want_w[layer][row, :, :n, :n],
                                           atol=2e-6, rtol=0)
        # Three cached steps with every attention weight asked for.
        caches = [KVCache(b.config, 3, 8, b.device, b.dtype, b.gather_rows) for b in (reference, fast)]
        for backend, cache in zip((reference, fast), caches):
            for layer, kv in enumerate(backend.cross_kv(want)):
                cache.set_cross(layer, *kv)
        tokens = torch.tensor([[SPECIAL.bos]] * 3)
        for t in range(3):
            w_out, g_out = (b.step(tokens, cache, t, want_mask, frozenset({0, 1}), frozenset({1}))
                            for b, cache in zip((reference, fast), caches))
            torch.testing.assert_close(g_out.logp, w_out.logp, atol=2e-5, rtol=0)
            assert g_out.logp.shape == (3, model.cfg.vocab_size)
            torch.testing.assert_close(g_out.cross_attention[1], w_out.cross_attention[1], atol=2e-6, rtol=0)
            for layer in (0, 1):
                torch.testing.assert_close(g_out.self_attention[layer], w_out.self_attention[layer], atol=2e-6, rtol=0)
            for cache in caches:
                cache.advance()
            tokens = w_out.logp.argmax(-1, keepdim=True)


@pytest.mark.parametrize("rows", [1, 2, 5])  # one row, pairs of rows, and both kernels in one call
def test_an_int8_linear_is_the_exact_integer_product_scaled(rows):
    """Each input row on a 7-bit grid of its own, weights on 8 bits per column, integer sums exact."""
    torch.manual_seed(rows)
    linear = torch.nn.Linear(64, 48)
    spec_of = engine.Engine(tiny_model(seed=1), int8=True)
    spec = spec_of._linear(linear.weight, linear.bias)
    x = torch.randn(rows, 64) * torch.logspace(-2, 2, rows)[:, None]  # rows of very different ranges
    got = spec_of.linear(spec, x)
    w = linear.weight.detach()
    w_scale = w.abs().amax(dim=1) / 127
    w_q = torch.round(w / w_scale[:, None]).clamp(-127, 127)
    x_scale = x.abs().amax(dim=1) / 63
    x_q = torch.round(x * (1 / x_scale)[:, None])  # the C side multiplies by the reciprocal too
    exact = (x_q.double() @ w_q.double().t()).float()  # integers below 2^24: exact in float32
    want = exact * w_scale * x_scale[:, None] + linear.bias.detach()
    assert torch.equal(got, want)
    torch.testing.assert_close(got, linear(x).detach(), atol=0.05 * float(x.abs().max()), rtol=0.05)


def test_int8_engine_approximates_the_float_model():
    model = tiny_model(seed=4)
    fast = with_engine(model, int8=True)
    assert fast.engine.int8
    src = random_sources(7, [5, 8])
    with torch.inference_mode():
        want = TorchBackend(model).encode(src).memory
        got = fast.encode(src).memory
        error = float((got[0, :5] - want[0, :5]).abs().max())
        assert 0 < error < 0.1 * float(want[0, :5].abs().max())  # quantised, and close


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_a_source_decodes_to_the_same_bits_alone_and_in_a_padded_batch(trained, int8, strategy):
    fast = with_engine(trained, int8)
    src, _ = copy_task_batch(torch.Generator().manual_seed(12), 6)
    options = DecodeOptions(strategy=strategy, beam_size=3, max_new_tokens=12, top_k=2,
                            cross_attention_layers=(1,), self_attention_layers=(0,))
    batched = decode(fast, src, options, SPECIAL)
    for i in range(src.size(0)):
        n = int((src[i] != SPECIAL.pad).sum())
        assert batched[i][0] == decode(fast, src[i : i + 1, :n], options, SPECIAL)[0][0]
    assert len({int((s != SPECIAL.pad).sum()) for s in src}) > 1


def test_engine_translations_follow_pytorch_ones(trained):
    """On a model with clear preferences the float engine picks the same tokens, with the same probabilities."""
    fast = with_engine(trained, int8=False)
    src, _ = copy_task_batch(torch.Generator().manual_seed(13), 8)
    options = DecodeOptions(strategy="beam", beam_size=3, max_new_tokens=12, top_k=3)
    for got, want in zip(decode(fast, src, options, SPECIAL), decode(TorchBackend(trained), src, options, SPECIAL),
                         strict=True):
        assert got[0].ids == want[0].ids
        assert [s.probability for s in got[0].steps] == pytest.approx([s.probability for s in want[0].steps], abs=1e-5)


def test_encoder_attention_of_the_viewer_comes_from_the_engine(trained):
    fast = with_engine(trained, int8=True)
    sources = [[5, 6, 7, SPECIAL.eos], [8, 9, SPECIAL.eos]]
    got = encoder_attention(fast, sources, (0, 1))
    for source, layers in zip(sources, got):
        for layer in (0, 1):
            weights = torch.tensor(layers[layer])  # (H, S, S) over the source's own tokens
            assert weights.shape == (trained.cfg.n_heads, len(source), len(source))
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


def test_the_engine_is_chosen_where_it_runs_and_pytorch_elsewhere(trained):
    assert backend_for(trained).name == "c"
    assert backend_for(trained, engine=False).name == "torch"
    int8 = backend_for(trained, int8=True, engine=False)
    assert int8.name == "torch" and int8.row_exact  # PyTorch's int8 copy keeps rows independent too
    post_norm = tiny_model(seed=2, norm_first=False)
    assert backend_for(post_norm).name == "torch"  # the engine runs pre-norm models only


def test_without_a_compiler_the_build_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(EngineUnavailable):
        build(tmp_path)
    assert not list(tmp_path.glob("*.so"))  # nothing half-built left behind


def test_the_build_is_reused_while_the_source_is_unchanged(tmp_path):
    first = build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build(tmp_path) == first and first.stat().st_mtime_ns == stamp


def test_out_of_range_ids_and_positions_are_refused_not_read(trained):
    """C would read past the embedding or the sinusoid table; PyTorch raises, and so does the engine."""
    fast = with_engine(trained, int8=True)
    with torch.inference_mode():
        with pytest.raises(IndexError):
            fast.encode(torch.tensor([[5, trained.cfg.vocab_size, SPECIAL.eos]]))
        with pytest.raises(ValueError):
            fast.encode(torch.full((1, trained.cfg.max_len + 1), 5))
        encoded = fast.encode(torch.tensor([[5, 6, SPECIAL.eos]]))
        cache = KVCache(fast.config, 1, 4, fast.device, fast.dtype, fast.gather_rows)
        for layer, kv in enumerate(fast.cross_kv(encoded.memory)):
            cache.set_cross(layer, *kv)
        with pytest.raises(ValueError):  # the cache holds positions 0..3
            fast.step(torch.tensor([[SPECIAL.bos]]), cache, 4, encoded.source_mask, frozenset(), frozenset())


@pytest.mark.parametrize("int8", [False, True])
def test_each_thread_sets_its_own_engine_threads_and_gets_the_same_bits(trained, int8):
    """The server's decode lanes each set the engine threads of their own thread (engine.set_threads);
    a sentence decodes to the same bits on one thread as on two."""
    fast = with_engine(trained, int8)
    src, _ = copy_task_batch(torch.Generator().manual_seed(13), 4)
    options = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=2, cross_attention_layers=(1,))
    seen, results = {}, {}

    def lane(n: int) -> None:
        engine.set_threads(n)
        seen[n] = engine.threads_here()
        results[n] = decode(fast, src, options, SPECIAL)

    threads = [threading.Thread(target=lane, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {1: 1, 2: 2} and engine.threads_here() == torch.get_num_threads()  # this thread: torch's count
    assert results[1] == results[2]


def _greedy_step_by_hand(fast: EngineBackend, batch: GreedySearch, step: int) -> torch.Tensor:
    """The engine's plain decoder step, then PyTorch's masking and argmax, as the running batch needs them."""
    cache = batch.cache
    cache.prepare_step(step)
    logits, _, _ = fast.engine.decode_step(cache.tokens_in_use[:, None], cache.mask_of_sources, cache,
                                           cache.lengths_in_use, frozenset(), frozenset())
    cache.advance()
    logp = logits[:, -1].clone()
    logp.index_fill_(1, batch._forbidden, float("-inf"))
    best_logp, best = logp.topk(1, dim=-1)
    cache.tokens_in_use.copy_(best[:, 0])
    cache.best_logp_in_use.copy_(best_logp[:, 0])
    return logp


@pytest.mark.parametrize("int8", [False, True])
def test_the_greedy_step_in_c_forbids_picks_and_advances_as_pytorch_does(trained, int8):
    """The running batch's one-call step (Engine.greedy_step) against the engine's decoder step followed
    by PyTorch's own masking and argmax, with the tokens each row would pick first forbidden."""
    fast = with_engine(trained, int8)
    src, _ = copy_task_batch(torch.Generator().manual_seed(14), 5)
    sources = [row[row != SPECIAL.pad].tolist() for row in src]
    with torch.inference_mode():  # as GreedySearch.step runs them
        probe = GreedySearch(fast, SPECIAL)
        probe.add([Request(ids, DecodeOptions(strategy="greedy")) for ids in sources])
        _greedy_step_by_hand(fast, probe, 0)
        first = set(probe.cache.tokens_in_use.tolist()) - {0, 1}
        special = SpecialIds(pad=0, bos=1, eos=2, never=tuple(sorted(first)))
        batches = [GreedySearch(fast, special) for _ in range(2)]
        for batch in batches:
            batch.add([Request(ids, DecodeOptions(strategy="greedy")) for ids in sources])
        for step in range(4):
            want = _greedy_step_by_hand(fast, batches[0], step)
            batches[1].cache.prepare_step(step)
            got = fast.greedy_step(batches[1].cache, batches[1]._forbidden, frozenset(), frozenset()).logp
            assert torch.equal(got, want)
            for name in ("tokens_in_use", "best_logp_in_use", "lengths_in_use"):
                assert torch.equal(getattr(batches[1].cache, name), getattr(batches[0].cache, name)), name
            assert step or not set(batches[1].cache.tokens_in_use.tolist()) & first  # forbidding mattered
    assert first and batches[1].cache.lengths_in_use.tolist() == [4] * len(sources)
