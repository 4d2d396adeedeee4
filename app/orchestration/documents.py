"""Translating a document: its segments (model/text/documents/) decoded through the same path as the
texts of POST /translate with `format: "html"`, in slices of DOCUMENT_SLICE segments.

Each slice is an ordinary request: it is admitted by the same queue, decoded in the same running
batch, and between two slices other requests get their turn, so a long document never starves
short texts. A full queue (429) makes a document wait and retry instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException

from app.api.schemas import Decoding, DocumentOptions, Output, TranslateRequest
from app.errors import InputError, Unavailable
from app.orchestration.translator import Translator
from app.settings import Settings
from model.text import documents, langid
from model.text.documents import Extracted
from model.text.documents.base import has_words
from model.text.markup import text_of

RETRY_BUSY_S = 0.5  # a slice refused by a full queue tries again after this long

Progress = Callable[[int, int], None]  # (segments done, segments total)


class Cancelled(Exception):
    """The document's job was cancelled between two slices."""


@dataclass
class Outcome:
    data: bytes
    untranslated: int  # segments left as they were (over a limit)


def limits(settings: Settings) -> documents.Limits:
    return documents.Limits(max_uncompressed_bytes=settings.document_max_uncompressed_bytes,
                            max_members=settings.document_max_members)


def extract(filename: str, data: bytes, settings: Settings) -> Extracted:
    """The document's segments; model.text.documents.DocumentError when it is of no known format or unreadable."""
    return documents.read(filename, data, limits(settings))


async def translate_small(translator: Translator, filename: str, data: bytes, options: DocumentOptions) -> bytes:
    """A document translated while its client waits (the synchronous routes), refusing a large one (413)."""
    extracted = extract(filename, data, translator.settings)
    limit = translator.settings.document_sync_max_segments
    if len(extracted.segments) > limit:
        raise HTTPException(413, f"the document has {len(extracted.segments)} segments, over the limit of {limit} "
                            "for a synchronous translation (DOCUMENT_SYNC_MAX_SEGMENTS); submit it to "
                            "POST /documents/jobs")
    check_options(translator, options)
    return (await translate(translator, extracted, options)).data


async def translate(translator: Translator, extracted: Extracted, options: DocumentOptions, *,
                    progress: Progress = lambda done, total: None,
                    cancelled: Callable[[], bool] = lambda: False) -> Outcome:
    """The translated file; `progress` hears after each slice, `cancelled` is asked before each."""
    translator.check_ready()
    segments = extracted.segments
    todo = [i for i, s in enumerate(segments) if has_words(s)]
    source = _source(options, [segments[i] for i in todo])
    translations, untranslated = list(segments), 0
    size = min(translator.settings.document_slice, translator.settings.max_items)
    progress(len(segments) - len(todo), len(segments))
    for start in range(0, len(todo), size):
        if cancelled():
            raise Cancelled
        indices = todo[start:start + size]
        done = await _slice(translator, [segments[i] for i in indices], source, options)
        for i, text in zip(indices, done):
            if text is None:
                untranslated += 1
            else:
                translations[i] = text
        progress(len(segments) - len(todo) + start + len(indices), len(segments))
    return Outcome(extracted.write(translations), untranslated)


def check_options(translator: Translator, options: DocumentOptions) -> None:
    """Refuse now (422, 503), not halfway through a document, options the translator would refuse."""
    translator.prepare(_request(["a"], _source(options, []), options))


def _source(options: DocumentOptions, segments: list[str]) -> str:
    """The document's language: as given, or detected from its first segments (one language per document)."""
    if options.source != "auto":
        return options.source
    language, _ = langid.detect(" ".join(text_of(s) for s in segments[:50]))
    return language if language and language != options.target else next(
        code for code in ("en", "es") if code != options.target)


async def _slice(translator: Translator, segments: list[str], source: str,
                 options: DocumentOptions) -> list[str | None]:
    """Translations of a slice; a segment over a limit (MAX_CHARS, tokens) comes back None (kept as it was)."""
    try:
        return await _decoded(translator, segments, source, options)
    except InputError as e:
        if e.loc and e.loc[0] in ("decoding", "glossary_name"):
            raise
        if len(segments) == 1:
            return [None]
    return [(await _slice(translator, [segment], source, options))[0] for segment in segments]


def _request(segments: list[str], source: str, options: DocumentOptions) -> TranslateRequest:
    return TranslateRequest(
        text=segments, source=source, target=options.target, format="html", glossary_name=options.glossary_name,
        decoding=Decoding(strategy=options.strategy, beam_size=options.beam_size if options.strategy == "beam" else 1),
        output=Output(steps=False, top_k=0, attention="none"),
    )


async def _decoded(translator: Translator, segments: list[str], source: str, options: DocumentOptions) -> list[str]:
    request = _request(segments, source, options)
    while True:
        try:
            job = translator.prepare(request)
            answer = await translator.translate(job)
            return [t["text"] for t in answer["translations"]]
        except Unavailable as e:
            if e.status_code != 429:
                raise
            await asyncio.sleep(RETRY_BUSY_S)

