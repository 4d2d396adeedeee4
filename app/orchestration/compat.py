"""LibreTranslate's requests served by the `Translator`: each text's language detected when asked,
texts grouped by source language, and the answers reshaped as LibreTranslate's clients read them."""

from __future__ import annotations

from collections.abc import Callable

from app.api.schemas import Decoding, LibreTranslateRequest, Output, TranslateRequest
from app.errors import InputError
from app.orchestration.job import Job
from app.orchestration.translator import Translator
from model.text.langid import rank_languages
from model.text.markup import text_of
from model.tokenizer import LANGUAGES

DEFAULT_BEAM = Decoding().beam_size


async def translate(body: LibreTranslateRequest, translator: Translator, *,
                    on_job: Callable[[Job], None] | None = None) -> dict:
    """LibreTranslate's answer to `body`; `on_job` sees each job before it is decoded (for the log line)."""
    texts = [body.q] if isinstance(body.q, str) else body.q
    readable = [text_of(text) for text in texts] if body.format == "html" else texts  # tags are not language
    detected = [_detect(text, body.target) for text in readable] if body.source == "auto" else None
    sources = [language for language, _ in detected] if detected else [body.source] * len(texts)
    translated, alternatives = list(texts), [[] for _ in texts]
    for source in sorted(set(sources) - {body.target}):  # texts already in the target stay as they are
        indices = [i for i, s in enumerate(sources) if s == source]
        job = translator.prepare(_as_translate_request(body, [texts[i] for i in indices], source, translator))
        if on_job:
            on_job(job)
        answer = await translator.translate(job)
        for i, t in zip(indices, answer["translations"]):
            translated[i], alternatives[i] = t["text"], [a["text"] for a in t["alternatives"]]
    single = isinstance(body.q, str)
    result: dict = {"translatedText": translated[0] if single else translated}
    if body.alternatives:
        result["alternatives"] = alternatives[0] if single else alternatives
    if detected:
        reports = [{"language": language, "confidence": confidence} for language, confidence in detected]
        result["detectedLanguage"] = reports[0] if single else reports
    return result


def detect(text: str) -> list[dict]:
    """LibreTranslate's answer to /detect: the languages `text` may be in, likeliest first."""
    return [{"language": language, "confidence": confidence} for language, confidence in rank_languages(text)]


def _detect(text: str, target: str) -> tuple[str, float]:
    """The text's likeliest language; with no evidence at all, the other language than the target,
    since the caller asked for a translation (with two languages, that is the only guess that translates)."""
    ranked = rank_languages(text)
    if not ranked or ranked[0][1] == 0:
        return next(code for code in sorted(LANGUAGES) if code != target), 0.0
    return ranked[0]


def _as_translate_request(body: LibreTranslateRequest, texts: list[str], source: str,
                          translator: Translator) -> TranslateRequest:
    limit = translator.settings.max_beam_size - 1
    if body.alternatives > limit:
        raise InputError(("alternatives",), f"alternatives is {body.alternatives}, over the limit of {limit} "
                         "(MAX_BEAM_SIZE - 1)")
    # Runners-up come from the beam, which must hold at least one more hypothesis than it returns.
    beam_size = min(max(DEFAULT_BEAM, body.alternatives + 1), translator.settings.max_beam_size)
    decoding = Decoding(strategy="beam", beam_size=beam_size, alternatives=body.alternatives)
    return TranslateRequest(
        text=texts, source=source, target=body.target, decoding=decoding, format=body.format,
        output=Output(steps=False, top_k=0, attention="none"),
    )
