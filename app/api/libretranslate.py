"""LibreTranslate-compatible routes, so its existing clients work with base URL `/compat/libretranslate`.

LibreTranslate (its Flask server) reads a JSON body when one is sent as application/json, and
otherwise the query string and a form together: some clients POST with every parameter in the URL
and an empty body, others send a form with `q` repeated for a list. All are read here by hand, then
checked with one schema. Its clients read errors as `{"error": ...}` with LibreTranslate's
statuses (400 for bad input, 403 for a key), which `app.errors` gives on these routes.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from app.api.documents import UploadDep, result_file
from app.api.schemas import (
    DetectedLanguage,
    ErrorMessage,
    FrontendSettings,
    Language,
    LibreTranslateDetectRequest,
    LibreTranslateRequest,
    LibreTranslateResponse,
    TranslatedFile,
)
from app.deps import DocumentJobsDep, TranslatorDep, unless_disconnected
from app.errors import LIBRETRANSLATE_PREFIX
from app.orchestration import compat, documents
from app.orchestration.job import Job
from model.text.documents import FORMATS
from model.tokenizer import LANGUAGES

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

router = APIRouter(prefix=LIBRETRANSLATE_PREFIX, tags=["LibreTranslate compatible"])

# Each refusal answers {"detail": ..., "error": ...}: `error` is what LibreTranslate's clients read.
ERRORS = {
    400: "Bad input: a missing or malformed parameter, or a broken limit; `error` says which in one line.",
    413: "The file is over DOCUMENT_MAX_BYTES or a zip limit, or has more than DOCUMENT_SYNC_MAX_SEGMENTS segments.",
    403: "No valid API key (API_KEYS), or a feature this server does not offer.",
    429: "Too many texts queued (MAX_QUEUE); retry after `Retry-After` seconds.",
    503: "Models still loading, or the request timed out (REQUEST_TIMEOUT_S); see `Retry-After`.",
}


def _errors(*codes: int) -> dict:
    return {code: {"description": ERRORS[code], "model": ErrorMessage} for code in codes}


def _parameters_body(schema: type[BaseModel]) -> dict:
    body = schema.model_json_schema()
    return {"requestBody": {"required": False, "content": {
        "application/json": {"schema": body}, "application/x-www-form-urlencoded": {"schema": body}}},
        "description": "Parameters as JSON, as a form, or in the query string (as LibreTranslate reads them)."}


@router.post(
    "/translate",
    response_model=LibreTranslateResponse,
    response_model_exclude_none=True,
    summary="Translate like LibreTranslate's POST /translate",
    responses=_errors(400, 403, 429, 503),
    openapi_extra=_parameters_body(LibreTranslateRequest),
)
async def translate(request: Request, translator: TranslatorDep) -> dict:
    """`q` is a text or a list; `translatedText` has the same shape. With `source: "auto"` the language
    of each text is detected (Spanish or English) and reported in `detectedLanguage`; a text already
    in the target language comes back unchanged."""
    body = await _read(request, LibreTranslateRequest)

    def log(job: Job) -> None:
        request.state.log = job.record

    return await unless_disconnected(request, compat.translate(body, translator, on_job=log))


@router.post("/detect", response_model=list[DetectedLanguage], summary="Detect like LibreTranslate's POST /detect",
             responses=_errors(400, 403), openapi_extra=_parameters_body(LibreTranslateDetectRequest))
async def detect(request: Request) -> list[dict]:
    """The languages `q` may be in, likeliest first, each with a confidence from 0 to 100."""
    body = await _read(request, LibreTranslateDetectRequest)
    return compat.detect(body.q)


@router.get("/languages", response_model=list[Language], summary="Languages, like LibreTranslate's GET /languages",
            responses=_errors(403, 503))
async def languages(translator: TranslatorDep) -> list[dict]:
    return translator.languages()


@router.get("/frontend/settings", response_model=FrontendSettings, summary="LibreTranslate's GET /frontend/settings",
            responses=_errors(403))
async def frontend_settings(translator: TranslatorDep) -> dict:
    """What LibreTranslate's web page and clients read before translating: limits and defaults."""
    settings = translator.settings
    keys = bool(settings.api_key_list)
    return {
        "charLimit": settings.max_chars, "frontendTimeout": int(settings.request_timeout_s * 1000),
        "apiKeys": keys, "keyRequired": keys, "suggestions": False, "filesTranslation": True,
        "supportedFilesFormat": list(FORMATS),
        "language": {"source": {"code": "auto", "name": "Auto Detect"},
                     "target": {"code": "en", "name": LANGUAGES["en"]}},
    }


@router.get("/health", summary="LibreTranslate's GET /health")
async def health() -> dict:
    return {"status": "ok"}


@router.post("/suggest", summary="LibreTranslate's POST /suggest (turned off here)", responses=_errors(403))
async def suggest() -> None:
    raise HTTPException(403, "Suggestions are disabled on this server.")


@router.post("/translate_file", response_model=TranslatedFile, summary="LibreTranslate's POST /translate_file",
             responses=_errors(400, 403, 413, 429, 503))
async def translate_file(request: Request, form: UploadDep, translator: TranslatorDep, jobs: DocumentJobsDep) -> dict:
    """A multipart form with `file`, `source`, `target` (and `api_key`); the answer's `translatedFileUrl` is
    fetched as given (GET /download_file/{name}). Formats: `supportedFilesFormat` of /frontend/settings."""
    data = await unless_disconnected(request, documents.translate_small(translator, form.filename, form.data,
                                                                        form.options))
    job_id = jobs.keep(form.filename, form.data, data)
    return {"translatedFileUrl": str(request.url_for("download_file", name=f"{job_id}.{form.filename}"))}


@router.get("/download_file/{name}", summary="LibreTranslate's GET /download_file/{name}",
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The translated file."},
                       404: {"description": "No such file (or expired).", "model": ErrorMessage}})
async def download_file(name: str, jobs: DocumentJobsDep) -> FileResponse:
    """The file a /translate_file answer names; it needs no API key (its name holds an unguessable id)."""
    return result_file(jobs, name.partition(".")[0])


async def _read(request: Request, schema: type[BaseModel]):
    data, strict = await _parameters(request)
    try:
        # Query and form values are all strings, so only JSON bodies are held to exact types.
        return schema.model_validate(data, strict=strict)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


async def _parameters(request: Request) -> tuple[dict, bool]:
    """The request's parameters, and whether they came as JSON (typed) rather than as strings."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            data = await request.json()
        except json.JSONDecodeError as e:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "ctx": {"error": e.msg}}]
            ) from None
        if not isinstance(data, dict):
            raise HTTPException(400, "Invalid JSON format: the body must be a JSON object")
        return data, True
    items = list(request.query_params.multi_items())
    if content_type in FORM_TYPES:
        items += (await request.form()).multi_items()
    elif await request.body():
        raise HTTPException(400, f"a {content_type or 'body without a Content-Type'} cannot be read: send the "
                            "parameters as JSON (application/json), as a form, or in the query string")
    values: dict[str, list] = {}
    for key, value in items:
        values.setdefault(key, []).append(value)
    return {key: found if key == "q" and len(found) > 1 else found[0] for key, found in values.items()}, False
