"""Dynamic batching: concurrent texts share a decode when their options match, each caller gets its
own answer, the bounds hold, and a caller that gives up frees its place."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.api.schemas import TranslateRequest
from app.deps import unless_disconnected
from app.metrics import Metrics
from app.scheduling.batching import Batcher, DecodeThread
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    PAIRS,
    anyio_backend,
    one_torch_thread,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio


class Recorder:
    """A stand-in for decoding: records each batch, answers every payload with its double."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __call__(self, payloads: list[int]) -> list[int]:
        self.batches.append(payloads)
        return [2 * p for p in payloads]


@pytest.fixture
async def make_batcher():
    made = []

    def make(run, **bounds) -> Batcher:
        settings = {"window_s": 0.05, "max_items": 8, "max_tokens": 10_000, "threads": [DecodeThread()], **bounds}
        batcher = Batcher(run, metrics=Metrics(), **settings)
        batcher.start()
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        await batcher.stop()


async def test_same_key_shares_a_batch_and_each_caller_gets_its_own_result(make_batcher):
    run = Recorder()
    batcher = make_batcher(run)
    results = await asyncio.gather(*(batcher.submit("greedy", i, 5) for i in range(5)),
                                   *(batcher.submit("beam", i, 5) for i in range(10, 13)))
    assert results == [0, 2, 4, 6, 8, 20, 22, 24]
    assert sorted(run.batches) == [[0, 1, 2, 3, 4], [10, 11, 12]]


async def test_batches_respect_the_item_and_token_bounds(make_batcher):
    run = Recorder()
    batcher = make_batcher(run, max_items=2)
    await asyncio.gather(*(batcher.submit("k", i, 5) for i in range(5)))
    assert run.batches == [[0, 1], [2, 3], [4]]

    run = Recorder()
    batcher = make_batcher(run, max_tokens=25)  # padded cost: items x longest source
    await asyncio.gather(batcher.submit("k", 0, 10), batcher.submit("k", 1, 10), batcher.submit("k", 2, 12))
    assert run.batches == [[0, 1], [2]]


async def test_a_full_batch_leaves_without_waiting_out_the_window(make_batcher):
    run = Recorder()
    batcher = make_batcher(run, window_s=30, max_items=3)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit("k", i, 1) for i in range(3))), 5)
    assert results == [0, 2, 4]


async def test_a_lone_caller_leaves_once_arrivals_pause_not_when_the_window_closes(make_batcher):
    run = Recorder()
    batcher = make_batcher(run, window_s=30, quiet_s=0.05)
    assert await asyncio.wait_for(batcher.submit("k", 1, 1), 5) == 2


async def test_callers_arriving_within_the_quiet_gap_share_a_batch(make_batcher):
    run = Recorder()
    batcher = make_batcher(run, window_s=30, quiet_s=0.5)
    futures = []
    for i in range(3):  # 50 ms apart: each arrival restarts the 500 ms quiet gap
        futures.append(batcher.submit("k", i, 1))
        await asyncio.sleep(0.05)
    assert await asyncio.wait_for(asyncio.gather(*futures), 5) == [0, 2, 4]
    assert run.batches == [[0, 1, 2]]


async def test_at_an_idle_decoder_a_text_starts_at_once_and_the_next_batch_holds_those_that_waited(make_batcher):
    """Window 0 (the default): the first text runs alone, without waiting for company; texts that
    arrive while it decodes leave together as the next batch."""
    release, started = threading.Event(), threading.Event()

    def run(payloads):
        started.set()
        release.wait(5)  # the first batch decodes until the others have arrived
        return Recorder.__call__(recorder, payloads)

    recorder = Recorder()
    batcher = make_batcher(run, window_s=0.0)
    first = batcher.submit("k", 0, 1)
    assert await asyncio.to_thread(started.wait, 5)
    later = [batcher.submit("k", i, 1) for i in (1, 2, 3)]
    release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == [0, 2, 4, 6]
    assert recorder.batches == [[0], [1, 2, 3]]


async def test_batches_run_side_by_side_on_the_free_threads(make_batcher):
    """Two threads: a second batch does not wait for the first (each blocks until the other has begun)."""
    both = threading.Barrier(2, timeout=5)
    threads = [DecodeThread(), DecodeThread()]
    seen = []

    def run(payloads):
        seen.append(threading.get_ident())
        both.wait()  # BrokenBarrierError (a failed test) unless the two batches run at once
        return payloads

    batcher = make_batcher(run, threads=threads, max_items=1)
    assert await asyncio.wait_for(asyncio.gather(batcher.submit("k", 1, 1), batcher.submit("k", 2, 1)), 10) == [1, 2]
    assert len(set(seen)) == 2
    for thread in threads:
        thread.shutdown()


async def test_a_caller_that_gives_up_frees_its_place(make_batcher):
    run = Recorder()
    batcher = make_batcher(run, window_s=0.2)
    kept, abandoned = batcher.submit("k", 1, 5), batcher.submit("k", 2, 5)
    abandoned.cancel()
    await asyncio.sleep(0)
    assert len(batcher.waiting) == 1
    assert await kept == 2 and run.batches == [[1]]


async def test_a_batch_that_fails_fails_only_its_callers(make_batcher):
    def broken(payloads):
        if 0 in payloads:
            raise RuntimeError("boom")
        return payloads

    batcher = make_batcher(broken)
    failing, fine = batcher.submit("a", 0, 1), batcher.submit("b", 7, 1)
    with pytest.raises(RuntimeError):
        await failing
    assert await fine == 7


def _texts(n: int) -> list[str]:
    return [PAIRS[i % len(PAIRS)][0] for i in range(n)]


async def _translate_concurrently(client, bodies: list[dict]) -> list[dict]:
    responses = await asyncio.gather(*(client.post("/translate", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json()["translations"][0] for r in responses]


def _histogram(app, name: str = "translate_batch_size") -> list[float]:
    """(count, sum) of a histogram: batches and texts for translate_batch_size."""
    registry = app.state.metrics.registry
    return [registry.get_sample_value(f"{name}_{s}") for s in ("count", "sum")]


def _assert_same_answers(together: list[dict], alone: list[dict]) -> None:
    for t, a in zip(together, alone, strict=True):
        assert t["tokens"] == a["tokens"] and t["score"] == pytest.approx(a["score"], abs=1e-5)
        assert [s["probability"] for s in t["steps"]] == pytest.approx([s["probability"] for s in a["steps"]], abs=1e-5)


async def test_concurrent_requests_are_decoded_together_with_compatible_options(tiny_weights):
    greedy = [{"text": t, "source": "es", "target": "en", "decoding": {"strategy": "greedy"}} for t in _texts(6)]
    beam = [{"text": t, "source": "es", "target": "en"} for t in _texts(4)]
    async with serving(tiny_weights, batch_window_ms=200, batch_quiet_ms=200, continuous_batching=False) as client:
        together = await _translate_concurrently(client, greedy + beam)
        assert _histogram(client.app) == [2, 10]  # one greedy batch of 6, one beam batch of 4
        alone = [(await _translate_concurrently(client, [body]))[0] for body in greedy + beam]
    _assert_same_answers(together, alone)
    assert [t["text"] for t in together[:6]] == [en for _, en in PAIRS[:6]]


async def test_greedy_requests_join_the_running_batch_and_get_what_they_get_alone(tiny_weights):
    greedy = [{"text": t, "source": "es", "target": "en", "decoding": {"strategy": "greedy"}} for t in _texts(6)]
    async with serving(tiny_weights) as client:  # continuous batching is the default
        together = await _translate_concurrently(client, greedy)
        steps, rows = _histogram(client.app, "translate_continuous_rows")
        assert rows > steps  # steps decoded several texts at once
        assert _histogram(client.app) == [0, 0]  # no static batch was involved
        alone = [(await _translate_concurrently(client, [body]))[0] for body in greedy]
    _assert_same_answers(together, alone)
    assert [t["text"] for t in together] == [en for _, en in PAIRS[:6]]


async def _callers(client, callers: int, texts: int) -> list[tuple[str, str]]:
    """`callers` callers, each sending its next text as soon as the last is answered: (answer, expected) pairs."""
    async def caller(k: int) -> list[tuple[str, str]]:
        got = []
        for i in range(texts):
            es, en = PAIRS[(k + i) % len(PAIRS)]
            body = {"text": es, "source": "es", "target": "en", "decoding": {"strategy": "greedy"}}
            response = await client.post("/translate", json=body)
            got.append((response.json()["translations"][0]["text"], en))
        return got

    return [pair for got in await asyncio.gather(*(caller(k) for k in range(callers))) for pair in got]


async def test_callers_joining_and_leaving_a_running_batch_each_get_their_own_answer(tiny_weights):
    """8 callers, each sending its next text as soon as the last is answered: rows keep joining and
    leaving one running batch, and no answer ever goes to the wrong caller."""
    async with serving(tiny_weights) as client:
        answers = await _callers(client, 8, 30)
        steps, rows = _histogram(client.app, "translate_continuous_rows")
    assert all(text == expected for text, expected in answers)
    assert len(answers) == 240 and rows > steps


async def test_two_decode_lanes_share_the_callers_and_each_caller_gets_its_own_answer(tiny_weights):
    """DECODE_LANES=2: texts go to the lane with fewer rows, each lane steps its own running batch on
    its own thread, and every answer is the one the text gets alone."""
    async with serving(tiny_weights, decode_lanes=2) as client:
        lanes = client.app.state.translator.decoder.continuous.lanes
        assert len(lanes) == 2 and lanes[0].thread is not lanes[1].thread
        answers = await _callers(client, 6, 10)
        assert all(lane.batches for lane in lanes)  # both lanes decoded texts
    assert len(answers) == 60 and all(text == expected for text, expected in answers)


async def test_beam_texts_decode_on_two_lanes_and_each_caller_gets_the_answer_it_gets_alone(tiny_weights):
    bodies = [{"text": t, "source": "es", "target": "en", "decoding": {"strategy": "beam", "beam_size": 3}}
              for t in _texts(6)]
    async with serving(tiny_weights, decode_lanes=2) as client:
        decoder = client.app.state.translator.decoder
        assert decoder.batcher.threads == [lane.thread for lane in decoder.continuous.lanes]
        alone = [await _translate_concurrently(client, [body]) for body in bodies]
        together = await _translate_concurrently(client, bodies)
    _assert_same_answers(together, [a[0] for a in alone])


async def test_with_batching_off_each_request_is_decoded_alone(tiny_weights):
    bodies = [{"text": t, "source": "es", "target": "en"} for t in _texts(4)]
    async with serving(tiny_weights, batching=False, batch_window_ms=200) as client:
        await _translate_concurrently(client, bodies)
        assert _histogram(client.app) == [4, 4]
        # The texts of one request still share a batch.
        await _translate_concurrently(client, [{"text": _texts(3), "source": "es", "target": "en"}])
        assert _histogram(client.app) == [5, 7]


async def test_a_client_that_hangs_up_leaves_the_queue(tiny_weights):
    async with serving(tiny_weights, batch_window_ms=5000, batch_quiet_ms=5000) as client:
        translator = client.app.state.translator
        job = translator.prepare(TranslateRequest(text=_texts(3), source="es", target="en"))

        async def hang_up_soon():
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "headers": []}, receive=hang_up_soon)
        with pytest.raises(HTTPException) as closed:
            await unless_disconnected(request, translator.translate(job))
        assert closed.value.status_code == 499
        assert translator.decoder.batcher.waiting == [] and translator.decoder.admission.used == 0


async def test_the_event_loop_answers_while_a_batch_decodes(tiny_weights):
    async with serving(tiny_weights) as client:
        batcher = client.app.state.translator.decoder.batcher
        decode, started = batcher.run_batch, asyncio.Event()
        loop = asyncio.get_running_loop()

        def slow_decode(items):
            loop.call_soon_threadsafe(started.set)
            time.sleep(0.5)  # a long decode, on the decode thread
            return decode(items)

        batcher.run_batch = slow_decode
        translating = asyncio.create_task(client.post("/translate", json={"text": PAIRS[0][0], "source": "es",
                                                                          "target": "en"}))
        await started.wait()
        began = time.perf_counter()
        assert (await client.get("/health")).status_code == 200
        assert time.perf_counter() - began < 0.25 and not translating.done()
        assert (await translating).status_code == 200


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
async def test_decoding_threads_run_below_the_event_loop_priority():
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = DecodeThread(nice=3)
    try:
        niceness = await thread.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    finally:
        thread.shutdown()
    assert niceness == min(here + 3, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == here  # the loop's own is unchanged
