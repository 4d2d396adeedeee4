"""Decoding a job's texts: beam search through the batcher, greedy search in the running batch,
each text admitted to the queue first and answered within REQUEST_TIMEOUT_S.

A refusal here is an `Unavailable` (429 when the queue is full, 503 on a timeout), with the
seconds a client should wait before retrying.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from dataclasses import astuple, dataclass, replace

import torch

from app.errors import Unavailable
from app.metrics import Metrics
from app.orchestration.job import Job
from app.scheduling.batching import Admission, Batcher, ContinuousBatcher, DecodeThread
from app.settings import Settings
from model.checkpoint import LoadedModel
from model.engine import binding as engine
from model.search import decode, encoder_attention
from model.search.backend import right_padded
from model.search.greedy import GreedySearch, Request
from model.search.options import DecodeOptions, default_max_new_tokens, special_ids
from model.search.records import Hypothesis

# Seconds a refused client should wait: a full queue drains within a few batches; a timeout means overload.
RETRY_BUSY_S, RETRY_TIMEOUT_S = 1, 5


@dataclass
class _Item:
    """One text as the batcher carries it."""

    loaded: LoadedModel
    source_ids: list[int]
    options: DecodeOptions
    auto_length: bool


class Decoder:
    """The decode lanes' threads, the queue's admission and the two batchers, and how a job goes
    through them.

    The first thread loads the models and is lane 0. On PyTorch there is only that lane: the device
    runs one batch at a time anyway, and CUDA state stays on one thread. On the CPU engine,
    `use_lanes` adds lanes; greedy texts run in each lane's running batch, and beam batches on any
    free lane.
    """

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.thread = DecodeThread(settings.decode_nice)
        self.threads = [self.thread]  # the lanes' threads; the batcher reads this list
        self.admission = Admission(settings.max_queue, metrics)
        self.continuous = ContinuousBatcher(self.thread, metrics, settings.batch_max_items, settings.batch_max_tokens)
        # With BATCHING off, texts are decoded one at a time on the first thread, as a baseline.
        self.batcher = Batcher(
            self._decode_batch, self.threads if settings.batching else [self.thread], metrics,
            window_s=settings.batch_window_ms / 1000 if settings.batching else 0.0,
            max_items=settings.batch_max_items, max_tokens=settings.batch_max_tokens,
            quiet_s=settings.batch_quiet_ms / 1000, busy=self.continuous.rows_on,
        )

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.continuous.stop()
        for thread in self.threads:
            thread.shutdown()

    async def use_lanes(self, models: dict[str, LoadedModel], threads: int) -> None:
        """DECODE_LANES, or one lane per engine thread where every model runs on the CPU engine.

        With several lanes each lane's thread gets its share of the cores, for the engine and for
        torch's own operators in the search alike, so that no lane waits on a thread pool another
        lane is using."""
        lanes = self.settings.decode_lanes
        if not lanes:
            on_engine = all(loaded.backend.name == "c" for loaded in models.values())
            lanes = threads if on_engine else 1
        self.threads += [DecodeThread(self.settings.decode_nice) for _ in range(lanes - 1)]
        if lanes > 1:
            share = max(1, threads // lanes)
            await asyncio.gather(*(thread.run(_use_threads, share) for thread in self.threads))
        self.continuous.set_lanes(self.threads)

    # --- admission and refusals --------------------------------------------------------------

    def check_room(self, texts: int) -> None:
        """Refuse now, with a 429, a request the queue has no room for."""
        if not self.admission.has_room(texts):
            raise self.queue_full()

    def admitted(self, texts: int) -> AbstractContextManager[None]:
        """Hold `texts` places in the queue while decoding; a 429 when it has no room for them."""
        self.check_room(texts)
        return self.admission.hold(texts)

    def queue_full(self) -> Unavailable:
        self.metrics.rejected.labels("queue_full").inc()
        return Unavailable(
            429, f"the server is busy: {self.admission.used} texts are already queued (MAX_QUEUE "
            f"{self.settings.max_queue})", RETRY_BUSY_S,
        )

    def timed_out(self) -> Unavailable:
        self.metrics.rejected.labels("timeout").inc()
        return Unavailable(
            503, f"the translation did not finish within {self.settings.request_timeout_s:g} s "
            "(REQUEST_TIMEOUT_S); the server is overloaded", RETRY_TIMEOUT_S,
        )

    # --- decoding ------------------------------------------------------------------------------

    async def decode(self, job: Job) -> list[list[Hypothesis]]:
        """The n-best hypotheses of each of the job's sources (one for greedy search)."""
        continuous = self._continuous(job.options)
        options = [options_for(job, i) for i in range(len(job.source_ids))]
        if continuous:
            futures = [self._submit_continuous(job, ids, opts) for ids, opts in zip(job.source_ids, options)]
        else:
            # With batching off, a key no other request shares keeps each request in a batch of its own.
            # Sources with glossary terms batch only with sources whose terms sit at the same tokens.
            alone = None if self.settings.batching else object()
            futures = [
                self.batcher.submit((job.loaded.name, astuple(opts), job.auto_length, alone),
                                    _Item(job.loaded, ids, opts, job.auto_length), len(ids))
                for ids, opts in zip(job.source_ids, options)
            ]
        try:
            results = await asyncio.wait_for(_results(futures), self.settings.request_timeout_s)
            return [[hypothesis] for hypothesis in results] if continuous else results
        except TimeoutError:
            raise self.timed_out() from None
        finally:
            for future in futures:  # after a timeout or a hang-up, texts still queued leave the queue
                future.cancel()

    async def encoder_attention(self, job: Job) -> list[dict | None]:
        """Per source, the encoder self-attention maps asked for (one more encoder pass on the decode thread)."""
        if not job.encoder_layers:
            return [None] * len(job.source_ids)
        return await self.thread.run(encoder_attention, job.loaded.backend, job.source_ids, tuple(job.encoder_layers))

    def count(self, job: Job, best: list[Hypothesis]) -> None:
        """Count the tokens generated, in the metrics and in the request's log line."""
        generated = sum(len(h.ids) for h in best)
        self.metrics.tokens_generated.labels(job.loaded.name, job.record["direction"]).inc(generated)
        job.record["tokens_out"] = generated

    def _continuous(self, options: DecodeOptions) -> bool:
        s = self.settings
        return s.batching and s.continuous_batching and options.strategy == "greedy"

    def _submit_continuous(self, job: Job, ids: list[int], options: DecodeOptions) -> asyncio.Future:
        """One text into the model's running greedy batch; the future resolves to its hypothesis."""
        loaded = job.loaded
        request = Request(ids, sized(options, job.auto_length, [ids]))

        def running_batch() -> GreedySearch:  # the model's, made on its first text
            return GreedySearch(loaded.backend, special_ids(loaded.tokenizer))

        return self.continuous.submit(loaded.name, running_batch, request)

    def _decode_batch(self, items: list[_Item]) -> list[list[Hypothesis]]:
        """Runs on a decode lane's thread; the batcher only groups items with equal options and model."""
        first = items[0]
        sources = [item.source_ids for item in items]
        options = sized(first.options, first.auto_length, sources)
        return decode(first.loaded.backend, right_padded(sources, first.loaded.tokenizer.pad_id, first.loaded.device),
                      options, special_ids(first.loaded.tokenizer))


def _use_threads(n: int) -> None:
    """On a lane's thread: its engine calls and torch's operators use `n` threads (both per thread)."""
    torch.set_num_threads(n)
    engine.set_threads(n)


def sized(options: DecodeOptions, auto_length: bool, sources: list[list[int]]) -> DecodeOptions:
    """Options for decoding `sources` together. By default the output may grow to twice the longest
    source plus slack (the model's evaluation rule), so a text the model loops on is cut early
    instead of holding its whole batch for MAX_NEW_TOKENS steps."""
    if not auto_length:
        return options
    longest = max(map(len, sources))
    return replace(options, max_new_tokens=min(options.max_new_tokens, default_max_new_tokens(longest)))


def options_for(job: Job, source: int) -> DecodeOptions:
    """The job's options for one of its sources: with that source's glossary terms."""
    terms = job.constraints[source] if job.constraints else ()
    return replace(job.options, constraints=terms) if terms else job.options


async def _results(futures: list[asyncio.Future]) -> list:
    return [await future for future in futures]
