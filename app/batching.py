"""Dynamic batching: texts that arrive within a short window are decoded in one model call.

A decoder step costs nearly the same for one sentence as for sixteen, so serving concurrent
callers together multiplies throughput. Only texts with the same key (model and decoding
options) share a batch; the oldest waiting text decides which key goes next, so no key starves.
Decoding runs on one worker thread: torch releases the GIL inside its kernels, so the event
loop keeps accepting requests, and the device never runs two batches that would only contend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.metrics import Metrics

log = logging.getLogger("app.batching")


class QueueFull(Exception):
    """More texts are waiting than MAX_QUEUE allows."""


class Admission:
    """Counts texts admitted and not yet answered, so an overloaded server refuses instead of queueing."""

    def __init__(self, capacity: int, metrics: Metrics):
        self.capacity, self.used, self.metrics = capacity, 0, metrics

    def has_room(self, n: int) -> bool:
        return self.used + n <= self.capacity

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        if not self.has_room(n):
            raise QueueFull
        self._add(n)
        try:
            yield
        finally:
            self._add(-n)

    def _add(self, n: int) -> None:
        self.used += n
        self.metrics.in_flight.set(self.used)


@dataclass
class _Waiting:
    key: Hashable
    payload: Any
    length: int  # source tokens: the padded batch costs items x longest
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects submitted payloads into batches and runs `run_batch(payloads) -> results` on `executor`."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        executor: Executor,
        metrics: Metrics,
        window_s: float,
        max_items: int,
        max_tokens: int,
    ):
        self.run_batch, self.executor, self.metrics = run_batch, executor, metrics
        self.window_s, self.max_items, self.max_tokens = window_s, max_items, max_tokens
        self.waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self.waiting:
            item.future.cancel()
        self.waiting.clear()

    def submit(self, key: Hashable, payload: Any, length: int) -> asyncio.Future:
        """Queue one payload; its future resolves to its result. Cancelling it frees its place."""
        item = _Waiting(key, payload, length, asyncio.get_running_loop().create_future())
        item.future.add_done_callback(lambda _: self._forget(item))
        self.waiting.append(item)
        self._changed()
        self._arrived.set()
        return item.future

    def _forget(self, item: _Waiting) -> None:
        if item in self.waiting:  # a caller gave up (timeout, disconnect) before its batch left
            self.waiting.remove(item)
            self._changed()

    def _changed(self) -> None:
        self.metrics.queue_depth.set(len(self.waiting))

    async def _serve(self) -> None:
        while True:
            if not self.waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            oldest = self.waiting[0]
            wait = oldest.since + self.window_s - time.monotonic()
            if wait > 0 and not self._full(oldest.key):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    pass
                continue
            await self._run(self._take(oldest.key))

    def _compatible(self, key: Hashable) -> list[_Waiting]:
        return [w for w in self.waiting if w.key == key]

    def _full(self, key: Hashable) -> bool:
        """True when waiting longer could not make this key's next batch any bigger."""
        compatible = self._compatible(key)
        return len(compatible) >= self.max_items or len(self._take_plan(compatible)) < len(compatible)

    def _take_plan(self, candidates: list[_Waiting]) -> list[_Waiting]:
        """The longest prefix of `candidates` within the item and padded-token bounds (at least one)."""
        batch: list[_Waiting] = []
        longest = 0
        for item in candidates[: self.max_items]:
            longest_if_added = max(longest, item.length)
            if batch and longest_if_added * (len(batch) + 1) > self.max_tokens:
                break
            batch.append(item)
            longest = longest_if_added
        return batch

    def _take(self, key: Hashable) -> list[_Waiting]:
        batch = self._take_plan(self._compatible(key))
        for item in batch:
            self.waiting.remove(item)
        self._changed()
        return batch

    async def _run(self, batch: list[_Waiting]) -> None:
        self.metrics.batch_size.observe(len(batch))
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.run_batch, [item.payload for item in batch]
            )
        except asyncio.CancelledError:  # shutting down: nobody will collect these results
            for item in batch:
                item.future.cancel()
            raise
        except Exception as e:  # a bug in decoding: fail this batch's callers, keep serving others
            log.exception("decoding a batch of %d failed", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        finally:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for item, result in zip(batch, results):
            if not item.future.done():  # its caller may have timed out meanwhile
                item.future.set_result(result)
