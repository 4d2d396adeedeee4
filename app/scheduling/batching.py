"""Dynamic batching: texts waiting for the decoder are decoded in one model call.

One decoder step for sixteen sentences costs far less than sixteen steps for one (on a GPU
nearly the same as one), so serving concurrent callers together multiplies throughput; on the CPU
engine, beam search gains least, as a single beam's rows already keep the int8 multipliers busy.
A text that reaches an idle decoder starts at once; the texts that arrive while a batch decodes
wait, and leave together as the next batch (BATCH_WINDOW_MS can make a first text wait for
company, for devices where a bigger batch is worth the wait). Only
texts with the same key (model and decoding options) share a batch; the oldest waiting text decides
which key goes next, so no key starves. Decoding runs on worker threads (decode lanes): torch and
the C engine release the GIL, so the event loop keeps accepting requests.

Greedy texts go further (`ContinuousBatcher`, iteration-level batching): they join a running
batch at its next decoder step and leave it with their last token, so a short sentence is not
held back by a long one. Beam batches (`Batcher`) run on whichever lane is free, so on the CPU
engine two of them decode side by side, each lane on a core of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.metrics import Metrics
from model.search.greedy import GreedySearch, Request
from model.search.records import Hypothesis

log = logging.getLogger("app.scheduling.batching")


class DecodeThread:
    """A thread that runs the model (a decode lane's), jobs in submission order (on PyTorch there is
    one, so CUDA state stays on one thread).

    It counts the jobs queued, so that a long-running job (the continuous batch) can step aside
    after a decoder step and let a beam batch or a streamed token run before it continues. `nice`
    lowers its scheduling priority (and that of the engine threads it starts) below the event loop's.
    """

    def __init__(self, nice: int = 0) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode", initializer=_lower_priority,
                                           initargs=(nice,))
        self._queued = 0
        self._lock = threading.Lock()

    async def run(self, fn: Callable, *args: Any) -> Any:
        with self._lock:
            self._queued += 1

        def job() -> Any:
            with self._lock:
                self._queued -= 1
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.executor, job)

    @property
    def others_waiting(self) -> bool:
        return self._queued > 0

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority(nice: int) -> None:
    """Raise this thread's niceness by `nice` over the thread that started it (the event loop's), on
    Linux (where it is per thread; elsewhere it would be the process's).

    On a machine with fewer cores than busy threads, decoding threads at the event loop's priority
    take its time slices: the HTTP side then queues requests while the running batches hold few
    rows. Below it, the loop admits texts as they come."""
    if nice and sys.platform == "linux":
        thread = threading.get_native_id()  # a new thread starts at its creator's niceness
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + nice, 19))


class QueueFull(Exception):
    """More texts are waiting than MAX_QUEUE allows."""


class Admission:
    """Counts texts admitted and not yet answered, so an overloaded server refuses instead of queueing.

    A request with more pieces than the whole queue holds (a long document's sentences) counts as a
    full queue: an idle server takes it, so a 429 always means a busy server, one worth retrying.
    """

    def __init__(self, capacity: int, metrics: Metrics):
        self.capacity, self.used, self.metrics = capacity, 0, metrics

    def has_room(self, n: int) -> bool:
        return self.used + min(n, self.capacity) <= self.capacity

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        if not self.has_room(n):
            raise QueueFull
        n = min(n, self.capacity)
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
    """Collects submitted payloads into batches and runs `run_batch(payloads) -> results` on one of
    `threads` (the decode lanes' threads: the list may grow once models are loaded), one batch per
    thread at a time. `busy(thread)` ranks the free threads by their other work (running greedy
    rows), so a batch goes where it waits least."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        threads: list[DecodeThread],
        metrics: Metrics,
        window_s: float,
        max_items: int,
        max_tokens: int,
        quiet_s: float | None = None,
        busy: Callable[[DecodeThread], int] = lambda thread: 0,
    ):
        self.run_batch, self.threads, self.metrics, self.busy = run_batch, threads, metrics, busy
        self.window_s, self.max_items, self.max_tokens = window_s, max_items, max_tokens
        self.quiet_s = window_s if quiet_s is None else min(quiet_s, window_s)
        self._last_arrival = 0.0
        self.waiting: list[_Waiting] = []
        self._arrived = asyncio.Event()  # a text arrived or a thread came free
        self._task: asyncio.Task | None = None
        self._running: dict[asyncio.Task, DecodeThread] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="batcher")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self.waiting:
            item.future.cancel()
        self.waiting.clear()

    def submit(self, key: Hashable, payload: Any, length: int) -> asyncio.Future:
        """Queue one payload; its future resolves to its result. Cancelling it frees its place."""
        item = _Waiting(key, payload, length, asyncio.get_running_loop().create_future())
        item.future.add_done_callback(lambda _: self._forget(item))
        self.waiting.append(item)
        self._last_arrival = item.since
        self._changed()
        self._arrived.set()
        return item.future

    def _forget(self, item: _Waiting) -> None:
        if item in self.waiting:  # a caller gave up (timeout, disconnect) before its batch left
            self.waiting.remove(item)
            self._changed()

    def _changed(self) -> None:
        self.metrics.queue_depth.set(len(self.waiting))

    def _free_thread(self) -> DecodeThread | None:
        taken = set(self._running.values())
        free = [t for t in self.threads if t not in taken]
        return min(free, key=self.busy) if free else None

    async def _serve(self) -> None:
        while True:
            thread = self._free_thread()
            if not self.waiting or thread is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            oldest = self.waiting[0]
            # Wait for company until the window closes, or earlier once arrivals pause: callers
            # that send together arrive within a millisecond or two of each other, and a lone
            # caller should not pay the whole window.
            wait = min(oldest.since + self.window_s, self._last_arrival + self.quiet_s) - time.monotonic()
            if wait > 0 and not self._full(oldest.key):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    pass
                continue
            task = asyncio.create_task(self._run(self._take(oldest.key), thread), name="batch")
            self._running[task] = thread
            task.add_done_callback(self._thread_free)

    def _thread_free(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        self._arrived.set()

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

    async def _run(self, batch: list[_Waiting], thread: DecodeThread) -> None:
        self.metrics.batch_size.observe(len(batch))
        started = time.perf_counter()
        try:
            results = await thread.run(self.run_batch, [item.payload for item in batch])
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


@dataclass
class _Lane:
    """Running batches (one per model) decoded on one thread, and the texts waiting to join them."""

    thread: DecodeThread
    batches: dict[str, GreedySearch] = field(default_factory=dict)
    waiting: list[_Waiting] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)  # tags of its callers who gave up
    driver: asyncio.Task | None = None

    def rows(self) -> int:
        return sum(len(b) for b in self.batches.values())


class ContinuousBatcher:
    """Iteration-level batching of greedy texts: running `GreedySearch` batches, one per model and lane.

    Callers `submit` on the event loop; a lane's thread admits its waiting texts before each step
    (within `max_items` rows and `max_tokens` padded source tokens), steps its batches, and answers
    each caller as soon as its text ends. A caller that gives up is dropped at the next step.

    Lanes (`set_lanes`): on a CPU, several running batches decoded side by side, one per thread, a
    new text going to the lane with the fewest rows. Each lane keeps its share of the cores (one
    engine thread each on the engine), at low load too: threads that each run their own batch never
    wait for one another, where two threads sharing every layer meet at a barrier many times a step,
    and a sleeping team thread takes longer to wake than a one-sentence layer takes to compute. A
    lane steps aside after a step when a beam batch is queued on its thread.
    """

    def __init__(self, thread: DecodeThread, metrics: Metrics, max_items: int, max_tokens: int):
        self.metrics = metrics
        self.max_items, self.max_tokens = max_items, max_tokens
        # Shared by the event loop and the lanes' threads, so only touched under _lock:
        self.lanes = [_Lane(thread)]
        self._futures: dict[int, asyncio.Future] = {}  # request tag -> its caller's future
        self._lane_of: dict[int, _Lane] = {}  # request tag -> the lane decoding it
        self._lock = threading.Lock()
        self._tags = itertools.count()
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def set_lanes(self, threads: list[DecodeThread]) -> None:
        """Decode on a lane per thread of `threads`, the first one's included (before the first submit)."""
        self.lanes = [_Lane(thread) for thread in threads]

    def rows_on(self, thread: DecodeThread) -> int:
        """Rows running or waiting on the lane of `thread`: how busy it is with greedy texts."""
        with self._lock:
            return sum(lane.rows() + len(lane.waiting) for lane in self.lanes if lane.thread is thread)

    @property
    def _waiting(self) -> list[_Waiting]:
        return [w for lane in self.lanes for w in lane.waiting]

    def submit(self, model: str, make: Callable[[], GreedySearch], request: Request) -> asyncio.Future:
        """Queue `request` for `model`'s running batch in the least busy lane (built by `make` on first use)."""
        self._loop = asyncio.get_running_loop()
        item = _Waiting(model, request, len(request.source_ids), self._loop.create_future())
        request.tag = next(self._tags)  # not id(item): ids are reused once an object is freed
        item.future.add_done_callback(lambda future: self._forget(request.tag, future))
        with self._lock:
            lane = min(self.lanes, key=lambda lane: lane.rows() + len(lane.waiting))
            if model not in lane.batches:
                lane.batches[model] = make()
            lane.waiting.append(item)
            self._futures[request.tag], self._lane_of[request.tag] = item.future, lane
            self.metrics.queue_depth.set(len(self._waiting))
        if lane.driver is None or lane.driver.done():
            lane.driver = asyncio.create_task(self._drive(lane), name="continuous-batch")
        return item.future

    async def stop(self) -> None:
        self._stopped = True  # each lane leaves its loop after the step it is in
        drivers = [lane.driver for lane in self.lanes if lane.driver]
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)
        with self._lock:
            futures, self._futures = list(self._futures.values()), {}
            for lane in self.lanes:
                lane.waiting = []
        for future in futures:
            future.cancel()

    def _forget(self, tag: int, future: asyncio.Future) -> None:
        with self._lock:
            self._futures.pop(tag, None)
            lane = self._lane_of.pop(tag, None)
            if future.cancelled() and lane is not None:  # timed out or hung up: its row leaves at the next step
                lane.gone.add(tag)

    def _has_work(self, lane: _Lane | None = None) -> bool:
        with self._lock:
            return any(bool(l.waiting) or l.rows() > 0 for l in ([lane] if lane else self.lanes))

    async def _drive(self, lane: _Lane) -> None:
        # Checked and ended on the event loop, where `submit` runs: a text submitted after the last
        # check finds this task done and starts a new one.
        while self._has_work(lane):
            try:
                await lane.thread.run(self._steps, lane)
            except Exception as e:  # a bug in decoding: fail the lane's texts in flight, keep serving
                log.exception("continuous decoding failed")
                self._fail_lane(lane, e)

    def _steps(self, lane: _Lane) -> None:
        """On the lane's thread: admit, step and answer until idle or until another job is queued."""
        while True:
            running = [batch for batch in self._admit(lane) if len(batch)]
            if not running:
                return
            for batch in running:
                self.metrics.continuous_rows.observe(len(batch))
                finished = batch.step()
                with self._lock:
                    answers = [(self._futures.get(request.tag), hyp) for request, hyp in finished]
                for future, hypothesis in answers:
                    if future is not None:
                        self._loop.call_soon_threadsafe(_answer, future, hypothesis)
            if lane.thread.others_waiting or self._stopped:
                return

    def _admit(self, lane: _Lane) -> list[GreedySearch]:
        """Drop the rows of callers who left, let waiting texts join; returns the lane's batches."""
        with self._lock:
            gone, lane.gone = lane.gone, set()
            batches = dict(lane.batches)
            joining: dict[str, list[Request]] = {}
            still_waiting = []
            for w in lane.waiting:
                if w.payload.tag in gone:
                    continue
                batch, group = batches[w.key], joining.setdefault(w.key, [])
                rows = len(batch) + len(group) + 1
                width = max([batch.source_positions if len(batch) else 0, w.length,
                             *(len(r.source_ids) for r in group)])
                if rows > 1 and (rows > self.max_items or rows * width > self.max_tokens):
                    still_waiting.append(w)
                else:
                    group.append(w.payload)
            lane.waiting = still_waiting
            self.metrics.queue_depth.set(len(self._waiting))
        for name, batch in batches.items():
            if gone:
                batch.remove(gone)
            batch.add(joining.get(name, []))
        return list(batches.values())

    def _fail_lane(self, lane: _Lane, error: Exception) -> None:
        """Fail the texts of `lane`, whose thread has stopped stepping: waiting and running alike."""
        with self._lock:
            tags = [w.payload.tag for w in lane.waiting]
            tags += [row.request.tag for b in lane.batches.values() for row in b.rows]
            futures = [self._futures.pop(tag) for tag in tags if tag in self._futures]
            lane.waiting = []
            batches = list(lane.batches.values())
        for batch in batches:
            batch.remove({row.request.tag for row in batch.rows})
        for future in futures:
            self._loop.call_soon(_answer_error, future, error)


def _answer(future: asyncio.Future, hypothesis: Hypothesis) -> None:
    if not future.done():  # its caller may have timed out meanwhile
        future.set_result(hypothesis)


def _answer_error(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
