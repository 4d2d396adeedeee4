"""Streaming a translation token by token, for Server-Sent Events: `start`, a `token` per generated
token, then `done` (or `error`).

Greedy search streams each token as soon as it is chosen (`model.search.greedy.stream`, one decoder
step per call on the decode thread); beam search cannot (the best hypothesis is only known at the end), so it
decodes through the batcher, then replays its steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app.errors import Unavailable
from app.orchestration.answers import answers, attention_headers, token_event
from app.orchestration.decoding import Decoder, options_for, sized
from app.orchestration.job import Job
from model.search.greedy import stream
from model.search.options import special_ids
from model.search.records import Hypothesis, Step


async def events(job: Job, decoder: Decoder) -> AsyncIterator[tuple[str, dict]]:
    """The stream's events, as (name, data): `start`, one `token` per generated token, then `done` or `error`."""
    yield "start", {"model": job.loaded.name, "source_tokens": job.loaded.tokenizer.tokens(job.source_ids[0]),
                    **attention_headers(job)}
    try:
        with decoder.admitted(1):
            if job.options.strategy == "greedy":
                generated = 0
                async for step, done in _greedy_steps(job, decoder):
                    yield "token", token_event(job, generated, step)
                    generated += 1
                    hyps = [done]  # None until the last step, which carries the finished hypothesis
            else:
                hyps = (await decoder.decode(job))[0]
                for i, step in enumerate(hyps[0].steps):
                    yield "token", token_event(job, i, step)
    except Unavailable as e:  # a full queue or a timeout, once the stream has started
        yield "error", {"detail": e.detail}
        return
    decoder.count(job, [hyps[0]])
    encoder = await decoder.encoder_attention(job)
    yield "done", {"model": job.loaded.name, "translations": answers(job, [hyps], encoder)}


async def _greedy_steps(job: Job, decoder: Decoder) -> AsyncIterator[tuple[Step, Hypothesis | None]]:
    """The greedy search's steps as it chooses them, each `next()` on the decode thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + decoder.settings.request_timeout_s
    options = sized(options_for(job, 0), job.auto_length, job.source_ids)
    steps = stream(job.loaded.backend, job.source_ids[0], options, special_ids(job.loaded.tokenizer))
    done = None
    while done is None:
        if loop.time() > deadline:
            raise decoder.timed_out()
        step, done = await decoder.thread.run(next, steps)
        yield step, done

