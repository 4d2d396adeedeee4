"""Decoding: cache correctness, batching, beam search against greedy, step records, limits."""

import math

import pytest
import torch

from model.search import decode
from model.search.backend import TorchBackend
from model.search.cache import KVCache
from model.search.options import DecodeOptions
from tests.conftest import SPECIAL, copy_task_batch, random_sources


@pytest.fixture(scope="module")
def sources():
    src, _ = copy_task_batch(torch.Generator().manual_seed(11), 6)
    return src


def _run(model, src, **kw):
    return decode(TorchBackend(model), src, DecodeOptions(**kw), SPECIAL)


def _teacher_forced_probs(model, src_row, ids):
    """p(ids[i] | source, ids[:i]) from one uncached, teacher-forced forward pass."""
    tgt = torch.tensor([[SPECIAL.bos, *ids[:-1]]])
    with torch.inference_mode():
        logits = model(src_row[None], tgt)[0].float().softmax(-1)
    return [float(logits[i, t]) for i, t in enumerate(ids)]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_steps_equal_an_uncached_pass_token_for_token(trained, sources, strategy):
    """Each step's top-k and cross-attention, from the KV cache, against one teacher-forced pass over the
    whole output, which recomputes every position from scratch."""
    results = _run(trained, sources, strategy=strategy, beam_size=3, max_new_tokens=12, top_k=3,
                   cross_attention_layers=(0, 1))
    for i, hyps in enumerate(results):
        ids = hyps[0].ids
        n = int((sources[i] != SPECIAL.pad).sum())
        tgt = torch.tensor([[SPECIAL.bos, *ids[:-1]]])
        with torch.inference_mode():
            memory, mask, _ = trained.encode(sources[i : i + 1, :n])
            logits, out = trained.decode(tgt, memory, mask, cross_layers=frozenset({0, 1}))
        logp = logits[0].float().log_softmax(-1)
        logp[:, SPECIAL.forbidden] = float("-inf")
        for t, step in enumerate(hyps[0].steps):
            assert [top.id for top in step.top] == logp[t].topk(3).indices.tolist()
            for layer in (0, 1):
                torch.testing.assert_close(torch.tensor(step.cross_attention[layer]),
                                           out.cross_attention[layer][0, :, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_a_padded_source_decodes_as_it_does_alone(trained, sources, strategy):
    batched = _run(trained, sources, strategy=strategy, max_new_tokens=12, top_k=2)
    for i in range(sources.size(0)):
        n = int((sources[i] != SPECIAL.pad).sum())
        alone = _run(trained, sources[i : i + 1, :n], strategy=strategy, max_new_tokens=12, top_k=2)[0][0]
        assert batched[i][0].ids == alone.ids
        assert batched[i][0].score == pytest.approx(alone.score, abs=1e-5)
    assert len({int((s != 0).sum()) for s in sources}) > 1  # the batch really mixes lengths


def test_beam_size_one_equals_greedy(trained, sources):
    greedy = _run(trained, sources, max_new_tokens=12, top_k=3)
    beam = _run(trained, sources, strategy="beam", beam_size=1, max_new_tokens=12, top_k=3)
    for g, b in zip(greedy, beam):
        assert g[0].ids == b[0].ids
        assert g[0].score == pytest.approx(b[0].score, abs=1e-6)
        assert [s.probability for s in g[0].steps] == pytest.approx([s.probability for s in b[0].steps], abs=1e-6)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_best_beam_never_scores_below_greedy(length_penalty):
    # An undertrained model is uncertain, so beams really diverge from the greedy path.
    from tests.conftest import train_tiny

    model = train_tiny(steps=60, seed=3)
    src = random_sources(7, [5, 8, 3, 9, 6, 7, 4, 8])
    greedy = _run(model, src, max_new_tokens=12, length_penalty=length_penalty)
    beam = _run(model, src, strategy="beam", beam_size=5, max_new_tokens=12, length_penalty=length_penalty)
    differs = 0
    for g, b in zip(greedy, beam):
        assert b[0].score >= g[0].score - 1e-6
        differs += b[0].ids != g[0].ids
    assert differs > 0


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_step_probability_is_the_models_probability_of_that_token(trained, sources, strategy):
    for i, hyps in enumerate(_run(trained, sources, strategy=strategy, max_new_tokens=12, top_k=3)):
        hyp = hyps[0]
        n = int((sources[i] != SPECIAL.pad).sum())
        expected = _teacher_forced_probs(trained, sources[i, :n], hyp.ids)
        assert [s.probability for s in hyp.steps] == pytest.approx(expected, abs=1e-5)
        if strategy == "greedy":
            assert all(s.top[0].id == s.id and s.top[0].probability == pytest.approx(s.probability) for s in hyp.steps)
        assert hyp.score == pytest.approx(sum(math.log(p) for p in expected) / len(expected), abs=1e-5)


def test_attention_rows_sum_to_one_over_the_real_source(trained, sources):
    results = _run(trained, sources, strategy="beam", max_new_tokens=12, cross_attention_layers=(0, 1),
                   self_attention_layers=(1,))
    for i, hyps in enumerate(results):
        n = int((sources[i] != SPECIAL.pad).sum())
        for t, step in enumerate(hyps[0].steps):
            for layer in (0, 1):
                w = torch.tensor(step.cross_attention[layer])
                assert w.shape == (4, n)
                torch.testing.assert_close(w.sum(-1), torch.ones(4))
            own = torch.tensor(step.self_attention[1])
            assert own.shape[-1] == t + 1  # <s> and the tokens before this one
            torch.testing.assert_close(own.sum(-1), torch.ones(4))


def test_end_of_sentence_ends_a_hypothesis(trained, sources):
    for strategy in ("greedy", "beam"):
        for hyps in _run(trained, sources, strategy=strategy, alternatives=2, max_new_tokens=20):
            for hyp in hyps:
                assert hyp.finished and hyp.ids[-1] == SPECIAL.eos
                assert SPECIAL.eos not in hyp.ids[:-1] and SPECIAL.pad not in hyp.ids
    lengths = {len(h[0].ids) for h in _run(trained, sources, max_new_tokens=20)}
    assert len(lengths) > 1  # outputs end at different lengths, not at one fixed cut


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_max_new_tokens_is_honoured(trained, sources, strategy):
    for hyps in _run(trained, sources, strategy=strategy, max_new_tokens=3):
        for hyp in hyps:
            assert len(hyp.ids) <= 3 and len(hyp.steps) == len(hyp.ids)
            assert hyp.finished == (hyp.ids[-1] == SPECIAL.eos)
    assert any(not h[0].finished for h in _run(trained, sources, strategy=strategy, max_new_tokens=3))


def test_beam_returns_ranked_distinct_alternatives(trained, sources):
    for hyps in _run(trained, sources, strategy="beam", beam_size=4, alternatives=2, max_new_tokens=12):
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.ids) for h in hyps}) == 3


def test_cache_reorder_moves_rows(trained):
    backend = TorchBackend(trained)
    cache = KVCache(trained.cfg, 3, 4, backend.device, backend.dtype, backend.gather_rows)
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 4, 1, 8)
    cache.append_self(0, k, k)
    cache.advance()
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.k[0, :, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]


def test_repeat_guard_blocks_repeated_ngrams():
    from tests.conftest import tiny_model

    model = tiny_model(5)  # untrained models loop; the guard must stop every repeated bigram
    src = random_sources(3, [6, 9])
    for hyps in _run(model, src, max_new_tokens=30, no_repeat_ngram=2):
        ids = hyps[0].ids
        bigrams = list(zip(ids, ids[1:]))
        assert len(bigrams) == len(set(bigrams))
    looping = _run(model, src, max_new_tokens=30)
    assert any(len(set(zip(h[0].ids, h[0].ids[1:]))) < len(h[0].ids) - 1 for h in looping)
