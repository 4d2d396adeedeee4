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

from app.answers import alignment_answer, attention_headers, joined_translation, token_event, translation
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
from model import align, compose, glossary, langid, markup
from model.markup import MarkupError
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
    # Per input text: its plan (sentences, markup, protected spans). None = decoded whole as given
    # (source_ids holds one entry for it).
    layouts: list[Layout | None] = field(default_factory=list)
    # Per input text: fields the answer adds about its language (detected_language, warnings).
    language_notes: list[dict] = field(default_factory=list)
    encoder_layers: list[int] = field(default_factory=list)  # encoder self-attention layers to report
    decoder_layers: list[int] = field(default_factory=list)  # decoder self-attention layers to report
    align_layer: int | None = None  # cross-attention layer the word alignment is read from, when needed
    source_texts: list[str] = field(default_factory=list)  # the text each entry of source_ids encodes


@dataclass
class Layout:
    """A text's plan; `sources[i]` indexes job.source_ids for plan.units[i], None for a unit with nothing to decode."""

    plan: compose.Plan
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
        self.glossaries: dict[tuple[str, str, str], glossary.Named] = {}  # (name, source, target) -> terms
        self.problem: str | None = None  # why no model is served, once loading failed
        # One thread for beam batches and the first running greedy batch: the device runs one batch at a
        # time anyway, and CUDA state stays on one thread. On the CPU engine, start() adds decode lanes.
        self.thread = DecodeThread(settings.decode_nice)
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
        self.glossaries = load_glossaries(s.glossaries_dir)
        try:
            self.models = await self.thread.run(load_all, s.weights_dir, s.device, s.dtype, s.quantize, s.engine)
            threads = await self.thread.run(torch.get_num_threads)
            self.continuous.set_lanes(self._lanes(threads), threads, s.decode_nice)
        except ModelLoadError as e:
            self.problem = str(e)
            log.error("serving no model: %s", e)
        except Exception as e:  # e.g. out of device memory in warm-up: still say why we are not ready
            self.problem = f"{type(e).__name__}: {e}"
            log.exception("serving no model: loading failed")

    def _lanes(self, threads: int) -> int:
        """DECODE_LANES, or one lane per engine thread where every model runs on the CPU engine."""
        if self.settings.decode_lanes:
            return self.settings.decode_lanes
        on_engine = all(loaded.model.engine is not None for loaded in self.models.values())
        return threads if on_engine else 1

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
                "engine": "c" if m.model.engine is not None else "torch",
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
        fmt = req.format if isinstance(req, TranslateRequest) else "text"
        if prefix and fmt == "html":  # a document is many sentences; a prefix starts one
            raise InputError(("decoding", "prefix"), "a prefix starts one plain text; it cannot be used with format html",
                             "value_error")
        terms = self._terms(req, source) if isinstance(req, TranslateRequest) else []
        source_ids: list[list[int]] = []
        model_texts: list[str] = []  # what each entry of source_ids encodes
        layouts = [self._encode_text(loaded, text, req.target, _text_loc(texts, i), (source_ids, model_texts), split,
                                     fmt, terms) for i, text in enumerate(texts)]
        cfg = loaded.config
        needs_links = out.alignment or any(layout and any(u.needs_alignment for u in layout.plan.units)
                                           for layout in layouts)
        align_layer = align.BEST.layer % cfg.decoder_layers if needs_links else None
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
            cross_attention_layers=tuple(sorted(set(layers) | ({align_layer} - {None}))),
            self_attention_layers=tuple(sorted(decoder_layers)),
            prefix=prefix,
        )
        if not self.admission.has_room(len(texts)):
            raise self._queue_full()
        record = {"model": loaded.name, "direction": f"{source}-{req.target}", "items": len(texts),
                  "tokens_in": sum(map(len, source_ids))}
        notes = [language_notes(markup.text_of(text) if fmt == "html" else text, req.source, source) for text in texts]
        return Job(loaded, source_ids, options, out, layers, d.max_new_tokens is None, record, layouts, notes,
                   encoder_layers, decoder_layers, align_layer, model_texts)

    def _terms(self, req: TranslateRequest, source: str) -> list[glossary.Term]:
        """The request's glossary: the named one's terms, then its own (which win on the same source term)."""
        terms: dict[str, glossary.Term] = {}
        if req.glossary_name is not None:
            named = self.glossaries.get((req.glossary_name, source, req.target))
            if named is None:
                names = sorted({f"{n} ({s}-{t})" for n, s, t in self.glossaries}) or ["none"]
                raise InputError(("glossary_name",), f"no glossary {req.glossary_name!r} for {source}-{req.target}; "
                                 f"loaded: {', '.join(names)} (GET /glossaries)", "value_error")
            terms.update((t.source.lower(), t) for t in named.terms)
        terms.update((t.source.lower(), glossary.Term(t.source, t.target)) for t in req.glossary or [])
        return list(terms.values())

    def glossary_infos(self) -> list[dict]:
        return [{"name": g.name, "source": g.source, "target": g.target, "terms": len(g.terms)}
                for g in self.glossaries.values()]

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

    def _encode_text(self, loaded: LoadedModel, text: str, target: str, loc: tuple,
                     sources: tuple[list[list[int]], list[str]], split: bool, fmt: str,
                     terms: list[glossary.Term]) -> Layout | None:
        """Append the text's encoded sources to `sources`: the whole text, or one per sentence or line.

        The model learned from sentences and short paragraphs; a page of text decoded as one sequence
        drifts and loops, so a text with several sentences is decoded piece by piece, in one batch.
        Markup and protected spans are taken out first (model/compose.py), and put back after.
        """
        _at_most(len(text), self.settings.max_chars, "MAX_CHARS", loc, "length in characters")
        try:
            plan = compose.plan(text, fmt, terms, _rare_word(loaded), split)
        except MarkupError as e:
            raise InputError(loc, f"malformed HTML: {e}", "value_error") from None
        ids, model_texts = sources
        unit = plan.units[0]
        # A stream or prefix must decode something; otherwise a text with nothing to translate is not decoded.
        if (not split and unit.empty) or (not plan.split and not unit.needs_alignment and unit.source == text):
            ids.append(self._encode(loaded, text, target, loc))  # nothing to take out: decoded as given
            model_texts.append(text)
            return None
        indices: list[int | None] = []
        for unit in plan.units:
            if not unit.empty:
                ids.append(self._encode(loaded, unit.source, target, loc))
                model_texts.append(unit.source)
            indices.append(None if unit.empty else len(ids) - 1)
        return Layout(plan, indices)

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
        return {"model": job.loaded.name, "translations": self._answers(job, results, encoder)}

    def _answers(self, job: Job, results: list[list[Hypothesis]], encoder: list) -> list[dict]:
        """One entry per input text, from the hypotheses of each decoded source."""
        pieces = [translation(job, ids, hyps, maps) for ids, hyps, maps in zip(job.source_ids, results, encoder)]
        links = [self._aligned(job, text, hyps[0]) if job.align_layer is not None else None
                 for text, hyps in zip(job.source_texts, results)]
        answers, next_piece = [], 0
        for layout in job.layouts:
            if layout is None:
                answer = pieces[next_piece]
                if job.output.alignment:
                    answer["alignment"] = alignment_answer(links[next_piece])
                answers.append(answer)
                next_piece += 1
            else:
                answers.append(self._composed(job, layout, pieces, links))
                next_piece += sum(i is not None for i in layout.sources)
        return [_with_notes(a, n) for a, n in zip(answers, job.language_notes)]

    def _aligned(self, job: Job, source_text: str, best: Hypothesis) -> compose.Aligned:
        """The model's input and output words for one source, and the links between them."""
        tok = job.loaded.tokenizer
        text, target_words = align.target_words(tok, best.ids)
        source_words = align.source_words(tok, source_text)
        rows = {job.align_layer: [step.cross_attention[job.align_layer] for step in best.steps]}
        links = align.align(rows, job.loaded.config.decoder_layers, source_words, target_words)
        return compose.Aligned(text, source_words, target_words, links)

    def _composed(self, job: Job, layout: Layout, pieces: list[dict], links: list) -> dict:
        """A planned text's entry: each unit finished (markup, terms, protected spans back), then rebuilt."""
        empty = compose.Aligned("", [], [], [])
        outputs, dropped = [], []
        for unit, index in zip(layout.plan.units, layout.sources):
            decoded = empty if index is None else links[index] or compose.Aligned(pieces[index]["text"], [], [], [])
            outputs.append(compose.finish(unit, decoded))
            dropped.extend(unit.dropped)
            if index is not None:
                pieces[index]["text"] = outputs[-1]
                if job.output.alignment:
                    pieces[index]["alignment"] = alignment_answer(links[index])
        text = layout.plan.rebuild(outputs)
        decoded = [i for i in layout.sources if i is not None]
        if layout.plan.split or not decoded:
            entry = joined_translation(job, [pieces[i] for i in decoded], text)
        else:
            entry = pieces[decoded[0]] | {"text": text}
        if dropped:
            names = ", ".join(sorted({f"U+{ord(c):04X}" for c in "".join(dropped)}))
            entry["warnings"] = [f"control or invisible formatting characters were left out: {names}"]
        return entry

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
        encoder = await self._encoder_attention(job)
        yield "done", {"model": job.loaded.name, "translations": self._answers(job, [hyps], encoder)}

    async def _greedy_steps(self, job: Job) -> AsyncIterator[Step]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_s
        options = _sized(job.options, job.auto_length, job.source_ids)
        search = await self.thread.run(GreedyStream, job.loaded, job.source_ids[0], options)
        while not search.finished:
            if loop.time() > deadline:
                raise self._timed_out()
            yield await self.thread.run(search.step)


def load_glossaries(folder) -> dict:
    """The named glossaries of GLOSSARIES_DIR; a bad file is logged, and then none is served (the log says which)."""
    if not folder.is_dir():
        return {}
    try:
        return glossary.load_folder(folder)
    except glossary.GlossaryError as e:
        log.error("no named glossaries are served: %s", e)
        return {}


def _with_notes(answer: dict, notes: dict) -> dict:
    """The answer with its language notes; warnings from both are kept."""
    merged = answer | notes
    if "warnings" in answer and "warnings" in notes:
        merged["warnings"] = notes["warnings"] + answer["warnings"]
    return merged


def _rare_word(loaded: LoadedModel):
    """A word the tokenizer cuts into pieces: one the model saw too rarely to know (protect.py, names)."""
    encode = loaded.tokenizer.tok.encode
    return lambda word: len(encode(word, add_special_tokens=False).ids) > 1


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
        logp = logits[0, -1].float() if out.normalized else torch.log_softmax(logits[0, -1].float(), dim=-1)
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
