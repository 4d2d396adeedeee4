"""Continuous batching: sources that join a running greedy batch between steps, and leave it as soon
as they end, get exactly what greedy search gives each of them alone."""

import pytest
import torch

from model.continuous import ContinuousGreedy, Request
from model.decoding import DecodeOptions, decode
from model.quantize import quantize_int8
from tests.conftest import SPECIAL, copy_task_batch, tiny_model


@pytest.fixture(scope="module")
def sources() -> list[list[int]]:
    src, _ = copy_task_batch(torch.Generator().manual_seed(21), 7)
    return [row[row != SPECIAL.pad].tolist() for row in src]


def _alone(model, ids: list[int], options: DecodeOptions):
    return decode(model, torch.tensor([ids]), options, SPECIAL)[0][0]


def _run(batch: ContinuousGreedy, arrivals: dict[int, list[Request]]) -> dict:
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
    model = quantize_int8(trained, engine=int8 is True) if int8 else trained
    options = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=3, cross_attention_layers=(0, 1),
                            self_attention_layers=(1,))
    requests = [Request(ids, options, tag=i) for i, ids in enumerate(sources)]
    # Two start, two join after two steps, the rest after five (some of the first have left by then).
    results = _run(ContinuousGreedy(model, SPECIAL), {0: requests[:2], 2: requests[2:4], 5: requests[4:]})
    assert sorted(results) == list(range(len(sources)))
    for i, ids in enumerate(sources):
        _assert_same(results[i], _alone(model, ids, options), layers=(0, 1), exact=int8)
    assert len({len(h.ids) for h in results.values()}) > 1  # rows really leave at different steps


def test_each_row_keeps_its_own_options(trained, sources):
    short = DecodeOptions(strategy="greedy", max_new_tokens=2, top_k=0)
    detailed = DecodeOptions(strategy="greedy", max_new_tokens=12, top_k=5, cross_attention_layers=(1,), length_penalty=0.6)
    requests = [Request(sources[0], short, tag="short"), Request(sources[1], detailed, tag="detailed")]
    results = _run(ContinuousGreedy(trained, SPECIAL), {0: requests})
    assert len(results["short"].ids) == 2 and not results["short"].finished
    assert results["short"].steps[0].top == [] and results["short"].steps[0].cross_attention == {}
    _assert_same(results["short"], _alone(trained, sources[0], short))
    _assert_same(results["detailed"], _alone(trained, sources[1], detailed), layers=(1,))
    assert set(results["detailed"].steps[0].cross_attention) == {1}


def test_a_removed_row_leaves_and_the_others_are_unaffected(trained, sources):
    options = DecodeOptions(strategy="greedy", max_new_tokens=12)
    batch = ContinuousGreedy(trained, SPECIAL)
    batch.add([Request(ids, options, tag=i) for i, ids in enumerate(sources[:3])])
    batch.step()
    batch.remove({1})
    assert len(batch) == 2
    results = _run(batch, {0: []})
    assert sorted(results) == [0, 2]
    for i in (0, 2):
        _assert_same(results[i], _alone(trained, sources[i], options))


def test_a_batch_that_empties_accepts_new_rows(trained, sources):
    options = DecodeOptions(strategy="greedy", max_new_tokens=12)
    batch = ContinuousGreedy(trained, SPECIAL)
    first = _run(batch, {0: [Request(sources[0], options, tag="a")]})
    assert len(batch) == 0
    second = _run(batch, {0: [Request(sources[5], options, tag="b")]})
    _assert_same(first["a"], _alone(trained, sources[0], options))
    _assert_same(second["b"], _alone(trained, sources[5], options))


def test_rows_longer_than_the_cache_buffer_grow_it(sources):
    """An untrained model rarely says </s>: its rows run past the first 32 cached positions."""
    model = tiny_model(seed=3)
    options = DecodeOptions(strategy="greedy", max_new_tokens=45, top_k=2)
    requests = [Request(ids, options, tag=i) for i, ids in enumerate(sources[:3])]
    results = _run(ContinuousGreedy(model, SPECIAL), {0: requests[:1], 7: requests[1:]})
    assert max(len(h.ids) for h in results.values()) > 32
    for i in range(3):
        _assert_same(results[i], _alone(model, sources[i], options))


def test_an_emptied_batch_gives_back_the_cache_a_long_row_grew(sources):
    model = tiny_model(seed=3)  # untrained: runs to max_new_tokens
    batch = ContinuousGreedy(model, SPECIAL)
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
    model = quantize_int8(trained, engine=True) if int8 else trained
    long_source = [t for ids in sources * 4 for t in ids][:40]
    inputs = sources + sources[::-1] + [long_source]  # 15 rows
    lengths = [3, 12, 5, 12, 2, 9, 12, 4, 12, 6, 12, 3, 12, 7, 12]
    requests = [Request(ids, DecodeOptions(strategy="greedy", max_new_tokens=n, top_k=2), tag=i)
                for i, (ids, n) in enumerate(zip(inputs, lengths))]
    batch, results, capacity = ContinuousGreedy(model, SPECIAL), {}, set()
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
