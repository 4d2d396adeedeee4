"""The model-facing service: checks requests against the limits, queues their texts for batched
decoding, and turns `Hypothesis` objects into the answers of DESIGN §3.

Requests go through two stages so that every refusal is a proper HTTP status: `prepare` (checks,
encoding; raises InputError or Unavailable) and then `translate` or `stream`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import astuple, dataclass, field, replace

import torch

from app.answers import attention_headers, joined_translation, token_event, translation
from app.batching import Admission, Batcher, ContinuousBatcher, DecodeThread, QueueFull
from app.errors import InputError, Unavailable
from app.metrics import Metrics
from app.registry import load_all
from app.schemas import Output, StreamRequest, TranslateRequest
from app.settings import Settings
from model.checkpoint import LoadedModel, ModelLoadError
from model.continuous import ContinuousGreedy, Request
from model.decoding import (
    DecodeOptions,
    Hypothesis,
    KVCache,
    Step,
    TopToken,
    decode,
    default_max_new_tokens,
    encoder_attention,
    right_padded,
    special_ids,
)
from model import langid, segment
from model.tokenizer import LANGUAGES

log = logging.getLogger("app.translator")

AUTO = "auto"  # the `source` that asks for the language to be detected

# Seconds a refused client should wait: a full queue drains within a few batches; loading takes longer.
RETRY_BUSY_S, RETRY_TIMEOUT_S, RETRY_LOADING_S = 1, 5, 10


@dataclass
class Job:
    """The checked, encoded texts of one request and the options they decode with."""

    loaded: LoadedModel
    source_ids: list[list[int]]
    options: DecodeOptions
    output: Output
    layers: list[int]  # cross-attention layers to report, non-negative, in the order asked
    auto_length: bool  # max_new_tokens was not given: options hold its upper bound, see _sized
    record: dict = field(default_factory=dict)  # fields for the request's log line
    # Per input text: how it was split. None = decoded whole (source_ids holds one entry for it).
    layouts: list[Layout | None] = field(default_factory=list)
    # Per input text: fields the answer adds about its language (detected_language, warnings).
    language_notes: list[dict] = field(default_factory=list)
    encoder_layers: list[int] = field(default_factory=list)  # encoder self-attention layers to report
    decoder_layers: list[int] = field(default_factory=list)  # decoder self-attention layers to report


@dataclass
class Layout:
    """A text split into sentences and lines; `sources[i]` indexes job.source_ids, None for a blank line."""

    lead: str
    pieces: list[segment.Piece]
    sources: list[int | None]


@dataclass
class _Item:
    """One text as the batcher carries it."""

    loaded: LoadedModel
    source_ids: list[int]
    options: DecodeOptions
    auto_length: bool


class Translator:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.models: dict[str, LoadedModel] = {}
        self.problem: str | None = None  # why no model is served, once loading failed
        # One thread: the device runs one batch at a time anyway, and CUDA state stays on one thread.
        self.thread = DecodeThread()
        self.admission = Admission(settings.max_queue, metrics)
        self.batcher = Batcher(
            self._decode_batch, self.thread, metrics,
            window_s=settings.batch_window_ms / 1000 if settings.batching else 0.0,
            max_items=settings.batch_max_items, max_tokens=settings.batch_max_tokens,
            quiet_s=settings.batch_quiet_ms / 1000,
        )
        self.continuous = ContinuousBatcher(self.thread, metrics, settings.batch_max_items, settings.batch_max_tokens)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm up every model (on the decode thread), then accept translations."""
        self.batcher.start()
        s = self.settings
        if s.torch_threads:  # set on the decode thread itself: once a thread exists, its count is its own
            await self.thread.run(torch.set_num_threads, s.torch_threads)
        try:
            self.models = await self.thread.run(load_all, s.weights_dir, s.device, s.dtype, s.quantize)
        except ModelLoadError as e:
            self.problem = str(e)
            log.error("serving no model: %s", e)
        except Exception as e:  # e.g. out of device memory in warm-up: still say why we are not ready
            self.problem = f"{type(e).__name__}: {e}"
            log.exception("serving no model: loading failed")

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.continuous.stop()
        self.thread.shutdown()

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def check_ready(self) -> None:
        if self.problem:
            raise Unavailable(503, "no model could be loaded; the server log says why", RETRY_LOADING_S)
        if not self.ready:
            raise Unavailable(503, "the models are still loading", RETRY_LOADING_S)

    # --- catalogue -------------------------------------------------------------------------

    def languages(self) -> list[dict]:
        self.check_ready()
        targets: dict[str, set[str]] = {}
        for loaded in self.models.values():
            for source, target in loaded.directions:
                targets.setdefault(source, set()).add(target)
        return [{"code": c, "name": LANGUAGES[c], "targets": sorted(t)} for c, t in sorted(targets.items())]

    def model_infos(self) -> list[dict]:
        self.check_ready()
        return [
            {
                "name": m.name,
                "directions": [{"source": s, "target": t} for s, t in m.directions],
                "parameters": m.parameters,
                "device": str(m.device),
                "dtype": str(m.dtype).removeprefix("torch."),
                "quantization": m.quantization,
                "weights_sha256": m.weights_sha256,
                "max_source_tokens": self._source_token_limit(m)[0],
                "config": m.config.to_dict(),
                "metrics": m.card.get("metrics", {}),
            }
            for m in self.models.values()
        ]

    # --- checking a request ----------------------------------------------------------------

    def prepare(self, req: TranslateRequest | StreamRequest) -> Job:
        """Check `req` against the limits and the loaded models, and encode its texts."""
        self.check_ready()
        source = resolve_source(req.source, req.target)
        loaded = self._model_for(req, source)
        texts = req.text if isinstance(req.text, list) else [req.text]
        s, d, out = self.settings, req.decoding, req.output
        _at_most(len(texts), s.max_items, "MAX_ITEMS", ("text",), "number of texts")
        _at_most(d.beam_size, s.max_beam_size, "MAX_BEAM_SIZE", ("decoding", "beam_size"), "beam_size")
        _at_most(out.top_k, s.max_top_k, "MAX_TOP_K", ("output", "top_k"), "top_k")
        max_new_tokens = self._max_new_tokens(d.max_new_tokens, loaded)
        prefix = self._prefix(loaded, d.prefix, max_new_tokens)
        # A stream answers one token sequence, and a prefix starts one, so only they are not split into sentences.
        split = isinstance(req, TranslateRequest) and not prefix
        source_ids: list[list[int]] = []
        layouts = [self._encode_text(loaded, text, req.target, _text_loc(texts, i), source_ids, split)
                   for i, text in enumerate(texts)]
        cfg = loaded.config
        layers = _attention_layers(out, "cross", out.attention_layers, "attention_layers", cfg.decoder_layers, "decoder")
        encoder_layers = _attention_layers(out, "encoder", out.encoder_attention_layers, "encoder_attention_layers",
                                           cfg.encoder_layers, "encoder")
        decoder_layers = _attention_layers(out, "decoder", out.decoder_attention_layers, "decoder_attention_layers",
                                           cfg.decoder_layers, "decoder")
        options = DecodeOptions(
            strategy=d.strategy,
            beam_size=d.beam_size if d.strategy == "beam" else 1,  # so greedy requests all batch together
            max_new_tokens=max_new_tokens,
            length_penalty=d.length_penalty,
            alternatives=d.alternatives,
            top_k=out.top_k if out.steps else 0,
            cross_attention_layers=tuple(sorted(layers)),
            self_attention_layers=tuple(sorted(decoder_layers)),
            prefix=prefix,
        )
        if not self.admission.has_room(len(texts)):
            raise self._queue_full()
        record = {"model": loaded.name, "direction": f"{source}-{req.target}", "items": len(texts),
                  "tokens_in": sum(map(len, source_ids))}
        notes = [language_notes(text, req.source, source) for text in texts]
        return Job(loaded, source_ids, options, out, layers, d.max_new_tokens is None, record, layouts, notes,
                   encoder_layers, decoder_layers)

    def _prefix(self, loaded: LoadedModel, text: str | None, max_new_tokens: int) -> tuple[int, ...]:
        """The ids decoding is forced through: the prefix's tokens, without the </s> that would end it."""
        if text is None:
            return ()
        _at_most(len(text), self.settings.max_chars, "MAX_CHARS", ("decoding", "prefix"), "length in characters")
        ids = tuple(loaded.tokenizer.encode_target(text)[:-1])
        if not ids:
            raise InputError(("decoding", "prefix"), "the prefix has no tokens; leave it out or give it some text")
        # The forced tokens and at least one free one must fit in max_new_tokens.
        _at_most(len(ids) + 1, max_new_tokens, "max_new_tokens", ("decoding", "prefix"), "prefix length in tokens + 1")
        return ids

    def _model_for(self, req: TranslateRequest | StreamRequest, source: str) -> LoadedModel:
        direction = (source, req.target)
        if req.model is not None:
            loaded = self.models.get(req.model)
            if loaded is None:
                raise InputError(("model",), f"no model named {req.model!r}; GET /models lists them", "value_error")
            if direction not in loaded.directions:
                raise InputError(("model",), f"model {req.model!r} does not translate {source} to {req.target}",
                                 "value_error")
            return loaded
        for loaded in self.models.values():
            if direction in loaded.directions:
                return loaded
        raise InputError(("target",), f"no loaded model translates {source} to {req.target}", "value_error")

    def _encode_text(self, loaded: LoadedModel, text: str, target: str, loc: tuple, sources: list[list[int]],
                     split: bool) -> Layout | None:
        """Append the text's encoded sources to `sources`: the whole text, or one per sentence or line.

        The model learned from sentences and short paragraphs; a page of text decoded as one sequence
        drifts and loops, so a text with several sentences is decoded piece by piece, in one batch.
        """
        _at_most(len(text), self.settings.max_chars, "MAX_CHARS", loc, "length in characters")
        lead, pieces = segment.split(text) if split else ("", [])
        if len(pieces) < 2:
            sources.append(self._encode(loaded, text, target, loc))
            return None
        indices: list[int | None] = []
        for piece in pieces:
            if piece.text:
                sources.append(self._encode(loaded, piece.text, target, loc))
            indices.append(len(sources) - 1 if piece.text else None)
        return Layout(lead, pieces, indices)

    def _encode(self, loaded: LoadedModel, text: str, target: str, loc: tuple) -> list[int]:
        ids = loaded.tokenizer.encode_source(text, target)
        _at_most(len(ids), *self._source_token_limit(loaded), loc, "length in tokens")
        return ids

    def _source_token_limit(self, loaded: LoadedModel) -> tuple[int, str]:
        return _tighter(self.settings.max_source_tokens, "MAX_SOURCE_TOKENS", loaded.config.max_len)

    def _max_new_tokens(self, asked: int | None, loaded: LoadedModel) -> int:
        """The number asked for, checked, or when none was, the most the default may grow to."""
        # The decoder's positions are <s> plus the generated tokens, all within max_len.
        limit, setting = _tighter(self.settings.max_new_tokens, "MAX_NEW_TOKENS", loaded.config.max_len - 1)
        if asked is None:
            return limit
        _at_most(asked, limit, setting, ("decoding", "max_new_tokens"), "max_new_tokens")
        return asked

    def _queue_full(self) -> Unavailable:
        self.metrics.rejected.labels("queue_full").inc()
        return Unavailable(
            429, f"the server is busy: {self.admission.used} texts are already queued (MAX_QUEUE "
            f"{self.settings.max_queue})", RETRY_BUSY_S,
        )

    # --- translating -----------------------------------------------------------------------

    async def translate(self, job: Job) -> dict:
        try:
            with self.admission.hold(len(job.source_ids)):
                results = await self._decode(job)
        except QueueFull:
            raise self._queue_full() from None
        self._count([hyps[0] for hyps in results], job)
        encoder = await self._encoder_attention(job)
        pieces = [translation(job, ids, hyps, maps) for ids, hyps, maps in zip(job.source_ids, results, encoder)]
        answers, next_piece = [], 0
        for layout in job.layouts:
            if layout is None:
                answers.append(pieces[next_piece])
                next_piece += 1
            else:
                answers.append(joined_translation(job, layout, pieces))
                next_piece += sum(i is not None for i in layout.sources)
        return {"model": job.loaded.name, "translations": [a | n for a, n in zip(answers, job.language_notes)]}

    async def _encoder_attention(self, job: Job) -> list[dict | None]:
        """Per source, the encoder self-attention maps asked for (one more encoder pass on the decode thread)."""
        if not job.encoder_layers:
            return [None] * len(job.source_ids)
        return await self.thread.run(encoder_attention, job.loaded.model, job.source_ids, tuple(job.encoder_layers),
                                     job.loaded.tokenizer.pad_id)

    async def _decode(self, job: Job) -> list[list[Hypothesis]]:
        """The n-best hypotheses of each of the job's texts (one for greedy search)."""
        continuous = self._continuous(job.options)
        if continuous:
            futures = [self._submit_continuous(job, ids) for ids in job.source_ids]
        else:
            # With batching off, a key no other request shares keeps each request in a batch of its own.
            key = (job.loaded.name, astuple(job.options), job.auto_length, None if self.settings.batching else object())
            futures = [
                self.batcher.submit(key, _Item(job.loaded, ids, job.options, job.auto_length), len(ids))
                for ids in job.source_ids
            ]
        try:
            results = await asyncio.wait_for(_results(futures), self.settings.request_timeout_s)
            return [[hypothesis] for hypothesis in results] if continuous else results
        except TimeoutError:
            raise self._timed_out() from None
        finally:
            for future in futures:  # after a timeout or a hang-up, texts still queued leave the queue
                future.cancel()

    def _continuous(self, options: DecodeOptions) -> bool:
        s = self.settings
        return (s.batching and s.continuous_batching and options.strategy == "greedy" and not options.no_repeat_ngram
                and not options.prefix)  # the running batch has no forced steps

    def _submit_continuous(self, job: Job, ids: list[int]) -> asyncio.Future:
        """One text into the model's running greedy batch; the future resolves to its hypothesis."""
        loaded = job.loaded
        request = Request(ids, _sized(job.options, job.auto_length, [ids]))
        return self.continuous.submit(loaded.name, lambda: ContinuousGreedy(loaded.model, special_ids(loaded.tokenizer)), request)

    def _timed_out(self) -> Unavailable:
        self.metrics.rejected.labels("timeout").inc()
        return Unavailable(
            503, f"the translation did not finish within {self.settings.request_timeout_s:g} s "
            "(REQUEST_TIMEOUT_S); the server is overloaded", RETRY_TIMEOUT_S,
        )

    def _decode_batch(self, items: list[_Item]) -> list[list[Hypothesis]]:
        """Runs on the decode thread; the batcher only groups items with equal options and model."""
        first = items[0]
        sources = [item.source_ids for item in items]
        options = _sized(first.options, first.auto_length, sources)
        return decode(first.loaded.model, right_padded(sources, first.loaded.tokenizer.pad_id, first.loaded.device),
                      options, special_ids(first.loaded.tokenizer))

    def _count(self, best: list[Hypothesis], job: Job) -> None:
        generated = sum(len(h.ids) for h in best)
        self.metrics.tokens_generated.labels(job.loaded.name, job.record["direction"]).inc(generated)
        job.record["tokens_out"] = generated

    # --- streaming -------------------------------------------------------------------------

    async def stream(self, job: Job) -> AsyncIterator[tuple[str, dict]]:
        """Events `start`, one `token` per generated token, then `done` (or `error`).

        Greedy search streams each token as soon as it is chosen; beam search cannot (the best
        hypothesis is only known at the end), so it decodes through the batcher, then replays.
        """
        yield "start", {"model": job.loaded.name, "source_tokens": job.loaded.tokenizer.tokens(job.source_ids[0]),
                        **attention_headers(job)}
        try:
            with self.admission.hold(1):
                if job.options.strategy == "greedy":
                    steps = []
                    async for step in self._greedy_steps(job):
                        steps.append(step)
                        yield "token", token_event(job, len(steps) - 1, step)
                    hyps = [_greedy_hypothesis(steps, job)]
                else:
                    hyps = (await self._decode(job))[0]
                    for i, step in enumerate(hyps[0].steps):
                        yield "token", token_event(job, i, step)
        except QueueFull:
            yield "error", {"detail": self._queue_full().detail}
            return
        except Unavailable as e:
            yield "error", {"detail": e.detail}
            return
        self._count([hyps[0]], job)
        (encoder,) = await self._encoder_attention(job)
        yield "done", {"model": job.loaded.name,
                       "translations": [translation(job, job.source_ids[0], hyps, encoder) | job.language_notes[0]]}

    async def _greedy_steps(self, job: Job) -> AsyncIterator[Step]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_s
        options = _sized(job.options, job.auto_length, job.source_ids)
        search = await self.thread.run(GreedyStream, job.loaded, job.source_ids[0], options)
        while not search.finished:
            if loop.time() > deadline:
                raise self._timed_out()
            yield await self.thread.run(search.step)


def resolve_source(declared: str, target: str) -> str:
    """The language translated from: with two languages, `auto` can only mean the one that is not the target."""
    return next(code for code in sorted(LANGUAGES) if code != target) if declared == AUTO else declared


def language_notes(text: str, declared: str, source: str) -> dict:
    """`detected_language` when the source was `auto`, and a warning when the text is clearly not in `source`."""
    notes: dict = {}
    if declared == AUTO:
        language, confidence = langid.detect(text)
        notes["detected_language"] = {"language": language or source, "confidence": confidence}
    if other := langid.clearly_not(text, source):
        language, confidence = other
        notes["warnings"] = [f"the text looks {LANGUAGES[language]} ({confidence:.0f}% sure), not "
                             f"{LANGUAGES[source]}; it was translated as {LANGUAGES[source]} anyway"]
    return notes


def _sized(options: DecodeOptions, auto_length: bool, sources: list[list[int]]) -> DecodeOptions:
    """Options for decoding `sources` together. By default the output may grow to twice the longest
    source plus slack (the model's evaluation rule), so a text the model loops on is cut early
    instead of holding its whole batch for MAX_NEW_TOKENS steps."""
    if not auto_length:
        return options
    longest = max(map(len, sources))
    return replace(options, max_new_tokens=min(options.max_new_tokens, default_max_new_tokens(longest)))


async def _results(futures: list[asyncio.Future]) -> list:
    return [await future for future in futures]


class GreedyStream:
    """Greedy search over one source, one token per `step()` call, for Server-Sent Events.

    It follows `model.decoding.greedy` for a batch of one (same KV cache, same forbidden tokens,
    probabilities taken before masking); the tests check that both give the same tokens.
    """

    @torch.inference_mode()
    def __init__(self, loaded: LoadedModel, source_ids: list[int], options: DecodeOptions):
        self.model, self.options, self.special = loaded.model, options, special_ids(loaded.tokenizer)
        src = torch.tensor([source_ids], device=loaded.device)
        self.memory, self.src_mask = self.model.encode(src)
        self.cache = KVCache(self.model, 1, options.max_new_tokens + 1, loaded.device, self.memory.dtype)
        self.layers = frozenset(options.cross_attention_layers)
        self.self_layers = frozenset(options.self_attention_layers)
        self.generated: list[int] = []

    @property
    def finished(self) -> bool:
        ended = bool(self.generated) and self.generated[-1] == self.special.eos
        return ended or len(self.generated) >= self.options.max_new_tokens

    @torch.inference_mode()
    def step(self) -> Step:
        previous = self.generated[-1] if self.generated else self.special.bos
        logits, out = self.model.decode(
            torch.tensor([[previous]], device=self.memory.device), self.memory, self.src_mask, self.cache,
            offset=len(self.generated), self_layers=self.self_layers, cross_layers=self.layers,
        )
        self.cache.advance()
        logp = torch.log_softmax(logits[0, -1].float(), dim=-1)
        logp[self.special.forbidden] = float("-inf")
        forced = len(self.generated) < len(self.options.prefix)
        token = self.options.prefix[len(self.generated)] if forced else int(logp.argmax())
        self.generated.append(token)
        top = []
        if self.options.top_k:
            top_lp, top_ids = logp.topk(self.options.top_k)
            top = [TopToken(int(i), math.exp(float(p))) for i, p in zip(top_ids, top_lp)]
        cross = {layer: w[0, :, -1, :].float().tolist() for layer, w in out.cross_attention.items()}  # [head][src]
        history = {layer: w[0, :, -1, :].float().tolist() for layer, w in out.self_attention.items()}  # [head][pos]
        return Step(token, math.exp(float(logp[token])), top, cross, history, forced)


def _greedy_hypothesis(steps: list[Step], job: Job) -> Hypothesis:
    ids = [s.id for s in steps]
    logp = sum(math.log(s.probability) for s in steps)
    score = logp / len(ids) ** job.options.length_penalty
    return Hypothesis(ids, steps, score, finished=ids[-1] == job.loaded.tokenizer.eos_id)


# --- helpers --------------------------------------------------------------------------------


def _at_most(value: int, limit: int, setting: str, loc: tuple, what: str) -> None:
    if value > limit:
        raise InputError(loc, f"{what} is {value}, over the limit of {limit} ({setting})")


def _tighter(setting_value: int, setting: str, model_value: int) -> tuple[int, str]:
    """The lower of a setting and the model's own bound, named so the message blames the right one."""
    return (setting_value, setting) if setting_value <= model_value else (model_value, "the model's max_len")


def _text_loc(texts: list[str], i: int) -> tuple:
    return ("text",) if len(texts) == 1 else ("text", i)


def _attention_layers(out: Output, kind: str, asked: list[int] | None, field_name: str, n_layers: int,
                      stack: str) -> list[int]:
    """Layers of one attention kind to report, non-negative and in the order asked; none if not asked for."""
    if out.attention == "none" or kind not in out.attention_kinds:
        return []
    layers: list[int] = []
    for i in asked or [-1]:
        if not -n_layers <= i < n_layers:
            raise InputError(
                ("output", field_name),
                f"layer {i} does not exist: the model has {n_layers} {stack} layers "
                f"(0 to {n_layers - 1}, or -{n_layers} to -1)",
            )
        if i % n_layers not in layers:
            layers.append(i % n_layers)
    return layers
