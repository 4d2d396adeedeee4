"""Continuous batching: sources that join a running greedy batch between steps, and leave it as soon
as they end, get exactly what greedy search gives each of them alone."""

import pytest
import torch

from model.engine.backend import backend_for
from model.search import decode
from model.search.backend import TorchBackend, right_padded
from model.search.greedy import GreedySearch, Request, stream
from model.search.options import DecodeOptions
from tests.conftest import SPECIAL, copy_task_batch, tiny_model


@pytest.fixture(scope="module")
def sources() -> list[list[int]]:
    src, _ = copy_task_batch(torch.Generator().manual_seed(21), 7)
    return [row[row != SPECIAL.pad].tolist() for row in src]


def _alone(backend, ids: list[int], options: DecodeOptions):
    return decode(backend, torch.tensor([ids]), options, SPECIAL)[0][0]


def _backend(model, int8):
    """float32 on PyTorch; int8 on the C engine where it runs (True), or on PyTorch's int8 layers ("pytorch")."""
    return backend_for(model, int8=True, engine=int8 is True) if int8 else TorchBackend(model)


def _run(batch: GreedySearch, arrivals: dict[int, list[Request]]) -> dict:
    """Step until every request is done; `arrivals[t]` join before step t."""
    results, t = {}, 0
    while t <= max(arrivals) or len(batch):
        batch.add(arrivals.get(t, []))
        results |= {request.tag: hyp for request, hyp in batch.step()}
        t += 1
    return results


def _assert_same(got, want, layers=(), exact=False):
    """Float32 rows agree within rounding; int8 rows (row-exact linears and attention) to the bit."""
    if exact:
        assert got == want
        return
    assert got.ids == want.ids and got.finished == want.finished
    assert got.score == pytest.approx(want.score, abs=1e-5)
    for g, w in zip(got.steps, want.steps, strict=True):
        assert g.probability == pytest.approx(w.probability, abs=1e-5)
        assert [t.id for t in g.top] == [t.id for t in w.top]
        assert [t.probability for t in g.top] == pytest.approx([t.probability for t in w.top], abs=1e-5)
        for layer in layers:
            torch.testing.assert_close(torch.tensor(g.cross_attention[layer]), torch.tensor(w.cross_attention[layer]),
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("int8", [False, True, "pytorch"])  # "pytorch": int8 without the C engine
def test_rows_joining_at_different_steps_decode_as_they_would_alone(trained, sources, int8):
    model = _backend(trained, int8)
    options = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=3, cross_attention_layers=(0, 1),
                            self_attention_layers=(1,))
    requests = [Request(ids, options, tag=i) for i, ids in enumerate(sources)]
    # Two start, two join after two steps, the rest after five (some of the first have left by then).
    results = _run(GreedySearch(model, SPECIAL), {0: requests[:2], 2: requests[2:4], 5: requests[4:]})
    assert sorted(results) == list(range(len(sources)))
    for i, ids in enumerate(sources):
        _assert_same(results[i], _alone(model, ids, options), layers=(0, 1), exact=int8)
    assert len({len(h.ids) for h in results.values()}) > 1  # rows really leave at different steps


def test_each_row_keeps_its_own_options(trained, sources):
    short = DecodeOptions(strategy="greedy", max_new_tokens=2, top_k=0)
    detailed = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=5, cross_attention_layers=(1,),
                             length_penalty=0.6)
    requests = [Request(sources[0], short, tag="short"), Request(sources[1], detailed, tag="detailed")]
    results = _run(GreedySearch(TorchBackend(trained), SPECIAL), {0: requests})
    assert len(results["short"].ids) == 2 and not results["short"].finished
    assert results["short"].steps[0].top == [] and results["short"].steps[0].cross_attention == {}
    _assert_same(results["short"], _alone(TorchBackend(trained), sources[0], short))
    _assert_same(results["detailed"], _alone(TorchBackend(trained), sources[1], detailed), layers=(1,))
    assert set(results["detailed"].steps[0].cross_attention) == {1}


def test_a_removed_row_leaves_and_the_others_are_unaffected(trained, sources):
    options = DecodeOptions(strategy="greedy", max_new_tokens=12)
    batch = GreedySearch(TorchBackend(trained), SPECIAL)
    batch.add([Request(ids, options, tag=i) for i, ids in enumerate(sources[:3])])
    batch.step()
    batch.remove({1})
    assert len(batch) == 2
    results = _run(batch, {0: []})
    assert sorted(results) == [0, 2]
    for i in (0, 2):
        _assert_same(results[i], _alone(TorchBackend(trained), sources[i], options))


def test_a_batch_that_empties_accepts_new_rows(trained, sources):
    options = DecodeOptions(strategy="greedy", max_new_tokens=12)
    batch = GreedySearch(TorchBackend(trained), SPECIAL)
    first = _run(batch, {0: [Request(sources[0], options, tag="a")]})
    assert len(batch) == 0
    second = _run(batch, {0: [Request(sources[5], options, tag="b")]})
    _assert_same(first["a"], _alone(TorchBackend(trained), sources[0], options))
    _assert_same(second["b"], _alone(TorchBackend(trained), sources[5], options))


def test_rows_longer_than_the_cache_buffer_grow_it(sources):
    """An untrained model rarely says </s>: its rows run past the first 32 cached positions."""
    model = TorchBackend(tiny_model(seed=3))
    options = DecodeOptions(strategy="greedy", max_new_tokens=45, top_k=2)
    requests = [Request(ids, options, tag=i) for i, ids in enumerate(sources[:3])]
    results = _run(GreedySearch(model, SPECIAL), {0: requests[:1], 7: requests[1:]})
    assert max(len(h.ids) for h in results.values()) > 32
    for i in range(3):
        _assert_same(results[i], _alone(model, sources[i], options))


def test_an_emptied_batch_gives_back_the_cache_a_long_row_grew(sources):
    model = TorchBackend(tiny_model(seed=3))  # untrained: runs to max_new_tokens
    batch = GreedySearch(model, SPECIAL)
    long = _run(batch, {0: [Request(sources[0], DecodeOptions(strategy="greedy", max_new_tokens=70), tag="long")]})
    assert len(long["long"].ids) > 32  # the buffer grew past its first 32 positions
    assert len(batch) == 0 and batch.cache.k.size(3) == 32
    options = DecodeOptions(strategy="greedy", max_new_tokens=12)
    after = _run(batch, {0: [Request(sources[1], options, tag="next")]})
    _assert_same(after["next"], _alone(model, sources[1], options))


@pytest.mark.parametrize("int8", [False, True])
def test_rows_that_outgrow_the_buffers_and_leave_from_the_middle_decode_as_alone(trained, sources, int8):
    """More rows than the buffers first hold, a source longer than their first 32 positions, and rows
    that leave while later ones stay (the last rows then move into the places left)."""
    model = _backend(trained, int8)
    long_source = [t for ids in sources * 4 for t in ids][:40]
    inputs = sources + sources[::-1] + [long_source]  # 15 rows
    lengths = [3, 12, 5, 12, 2, 9, 12, 4, 12, 6, 12, 3, 12, 7, 12]
    requests = [Request(ids, DecodeOptions(strategy="greedy", max_new_tokens=n, top_k=2), tag=i)
                for i, (ids, n) in enumerate(zip(inputs, lengths))]
    batch, results, capacity = GreedySearch(model, SPECIAL), {}, set()
    arrivals = {0: requests[:10], 1: requests[10:14], 4: requests[14:]}
    for t in range(13):
        batch.add(arrivals.get(t, []))
        capacity.add((batch.cache.k.size(1), batch.cache.cross_k.size(3)))
        results |= {request.tag: hyp for request, hyp in batch.step()}
    assert len(batch) == 0 and max(capacity) == (16, 64)  # both grew, and the emptied batch gave back its sources
    assert batch.cache.cross_k.size(3) == 32
    assert sorted(results) == list(range(len(inputs)))
    for i, ids in enumerate(inputs):
        _assert_same(results[i], _alone(model, ids, requests[i].options), exact=int8)


@pytest.mark.parametrize("int8", [False, True])
def test_the_stream_the_running_batch_and_a_static_batch_give_the_same_steps(trained, sources, int8):
    """One greedy algorithm, three drivers: a batch decoded together, a stream of one source, and rows
    joining a running batch at different steps."""
    backend = _backend(trained, int8)
    options = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=3, cross_attention_layers=(1,),
                            self_attention_layers=(0,))
    together = [hyps[0] for hyps in decode(backend, right_padded(sources, SPECIAL.pad), options, SPECIAL)]
    requests = [Request(ids, options, tag=i) for i, ids in enumerate(sources)]
    running = _run(GreedySearch(backend, SPECIAL), {0: requests[:3], 3: requests[3:]})
    for i, ids in enumerate(sources):
        streamed = list(stream(backend, ids, options, SPECIAL))
        assert [done is not None for _, done in streamed] == [False] * (len(streamed) - 1) + [True]
        _assert_same(streamed[-1][1], together[i], layers=(1,), exact=int8)
        assert [step for step, _ in streamed] == streamed[-1][1].steps
        _assert_same(running[i], together[i], layers=(1,), exact=int8)


def test_a_prefix_and_the_repeat_guard_steer_rows_of_the_running_batch(sources):
    """Rows with forced first tokens or the n-gram guard join a batch beside plain rows and get what
    they get alone; the forced steps keep the model's own probabilities."""
    backend = TorchBackend(tiny_model(seed=5))  # untrained: loops without the guard
    plain = DecodeOptions(strategy="greedy", max_new_tokens=16, top_k=2)
    prefixed = DecodeOptions(strategy="greedy", max_new_tokens=16, top_k=2, prefix=(7, 7, 9))
    guarded = DecodeOptions(strategy="greedy", max_new_tokens=16, top_k=2, no_repeat_ngram=2)
    requests = [Request(sources[0], plain, tag="plain"), Request(sources[1], prefixed, tag="prefix"),
                Request(sources[2], guarded, tag="guard")]
    results = _run(GreedySearch(backend, SPECIAL), {0: requests[:1], 2: requests[1:]})
    assert results["prefix"].ids[:3] == [7, 7, 9]
    assert [s.forced for s in results["prefix"].steps[:4]] == [True] * 3 + [False]
    with torch.inference_mode():  # p(7 | source), p(7 | source, 7), p(9 | source, 7 7): one teacher-forced pass
        p = backend.model(torch.tensor([sources[1]]), torch.tensor([[SPECIAL.bos, 7, 7]]))[0].float().softmax(-1)
    assert [s.probability for s in results["prefix"].steps[:3]] == pytest.approx(
        [float(p[i, t]) for i, t in enumerate((7, 7, 9))], abs=1e-5)
    bigrams = list(zip(results["guard"].ids, results["guard"].ids[1:]))
    assert len(bigrams) == len(set(bigrams))
    for tag, ids, options in (("plain", sources[0], plain), ("prefix", sources[1], prefixed),
                              ("guard", sources[2], guarded)):
        _assert_same(results[tag], _alone(backend, ids, options))
    unguarded = _alone(backend, sources[2], plain)
    assert len(set(zip(unguarded.ids, unguarded.ids[1:]))) < len(unguarded.ids) - 1  # the guard had work to do
