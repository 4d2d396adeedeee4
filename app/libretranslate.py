"""LibreTranslate-compatible routes, so its existing clients work with base URL `/compat/libretranslate`.

LibreTranslate's clients send JSON or forms (`q` repeated for a list); both are read here by hand,
then checked with the same schema, so both give the same 422s.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from app.deps import TranslatorDep, unless_disconnected
from app.errors import LIBRETRANSLATE_PREFIX, InputError
from app.langdetect import detect
from app.schemas import (
    Decoding,
    ErrorMessage,
    Language,
    LibreTranslateRequest,
    LibreTranslateResponse,
    Output,
    TranslateRequest,
)
from app.translator import Translator
from model.tokenizer import LANGUAGES

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
DEFAULT_BEAM = Decoding().beam_size

router = APIRouter(prefix=LIBRETRANSLATE_PREFIX, tags=["LibreTranslate compatible"])

# Each refusal answers {"detail": ..., "error": ...}: `error` is what LibreTranslate's clients read.
ERRORS = {
    415: "The body is neither JSON nor a form.",
    422: "The input breaks the schema or a limit; `detail` lists each problem, `error` says it in one line.",
    429: "Too many texts queued (MAX_QUEUE); retry after `Retry-After` seconds.",
    503: "Models still loading, or the request timed out (REQUEST_TIMEOUT_S); see `Retry-After`.",
}


def _errors(*codes: int) -> dict:
    return {code: {"description": ERRORS[code], "model": ErrorMessage} for code in codes}

_body_schema = LibreTranslateRequest.model_json_schema()


@router.post(
    "/translate",
    response_model=LibreTranslateResponse,
    response_model_exclude_none=True,
    summary="Translate like LibreTranslate's POST /translate",
    responses=_errors(415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _body_schema},
                        "application/x-www-form-urlencoded": {"schema": _body_schema}},
        }
    },
)
async def translate(request: Request, translator: TranslatorDep) -> dict:
    """`q` is a text or a list; `translatedText` has the same shape. With `source: "auto"` the language
    of each text is detected (Spanish or English) and reported in `detectedLanguage`; a text already
    in the target language comes back unchanged."""
    body = await _read(request)
    return await unless_disconnected(request, _translate(body, translator, request))


@router.get("/languages", response_model=list[Language], summary="Languages, like LibreTranslate's GET /languages",
            responses=_errors(503))
async def languages(translator: TranslatorDep) -> list[dict]:
    return translator.languages()


async def _read(request: Request) -> LibreTranslateRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type in FORM_TYPES:
        form = await request.form()
        data = {key: form.getlist(key) if key == "q" and len(form.getlist(key)) > 1 else form[key] for key in form}
    elif content_type == "application/json":
        try:
            data = await request.json()
        except json.JSONDecodeError as e:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "ctx": {"error": e.msg}}]
            ) from None
    else:
        raise HTTPException(415, "send the body as JSON (application/json) or as a form")
    try:
        # Form fields are all strings, so only JSON bodies are held to exact types.
        return LibreTranslateRequest.model_validate(data, strict=content_type == "application/json")
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


async def _translate(body: LibreTranslateRequest, translator: Translator, request: Request) -> dict:
    texts = [body.q] if isinstance(body.q, str) else body.q
    detected = [_detect(text, body.target) for text in texts] if body.source == "auto" else None
    sources = [language for language, _ in detected] if detected else [body.source] * len(texts)
    translated, alternatives = list(texts), [[] for _ in texts]
    for source in sorted(set(sources) - {body.target}):  # texts already in the target stay as they are
        indices = [i for i, s in enumerate(sources) if s == source]
        job = translator.prepare(_as_translate_request(body, [texts[i] for i in indices], source, translator))
        request.state.log = job.record
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


def _detect(text: str, target: str) -> tuple[str, float]:
    """The text's language; with no evidence, the other language than the target, since the caller
    asked for a translation (with two languages, that is the only guess that translates)."""
    language, confidence = detect(text)
    return language or next(code for code in sorted(LANGUAGES) if code != target), confidence


def _as_translate_request(body: LibreTranslateRequest, texts: list[str], source: str, translator: Translator):
    limit = translator.settings.max_beam_size - 1
    if body.alternatives > limit:
        raise InputError(("alternatives",), f"alternatives is {body.alternatives}, over the limit of {limit} "
                         "(MAX_BEAM_SIZE - 1)")
    # Runners-up come from the beam, which must hold at least one more hypothesis than it returns.
    beam_size = min(max(DEFAULT_BEAM, body.alternatives + 1), translator.settings.max_beam_size)
    decoding = Decoding(strategy="beam", beam_size=beam_size, alternatives=body.alternatives)
    return TranslateRequest(
        text=texts, source=source, target=body.target, decoding=decoding,
        output=Output(steps=False, top_k=0, attention="none"),
    )
