"""The service's own routes (docs/api.md); the work happens in `app.orchestration`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException

from app.api.schemas import (
    ErrorMessage,
    GlossaryInfo,
    Language,
    ModelInfo,
    Status,
    StreamRequest,
    TranslateRequest,
    TranslateResponse,
)
from app.deps import MetricsDep, TranslatorDep, unless_disconnected
from app.orchestration.job import Job

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter()


def _errors(*codes: int) -> dict:
    """OpenAPI entries for the error answers a route can give."""
    meaning = {
        400: "The body is not valid UTF-8.",
        413: "The body is over MAX_BODY_BYTES.",
        422: "The input breaks the schema or a limit; `detail` lists each problem with its location.",
        429: "Too many texts queued (MAX_QUEUE); retry after `Retry-After` seconds.",
        503: "Models still loading, or the request timed out (REQUEST_TIMEOUT_S); see `Retry-After`.",
    }
    return {code: {"description": meaning[code], "model": ErrorMessage} for code in codes}


@router.post(
    "/translate",
    response_model=TranslateResponse,
    response_model_exclude_none=True,
    summary="Translate one text or a list of texts",
    responses=_errors(400, 413, 422, 429, 503),
    tags=["translation"],
)
async def translate(body: TranslateRequest, request: Request, translator: TranslatorDep) -> dict:
    """Translate with greedy or beam search; each translation carries its tokens and, as asked, the
    probability of every token with its top-k rivals and the decoder's cross-attention over the source.
    Concurrent requests with the same decoding options are decoded together in one batch."""
    job = translator.prepare(body)
    request.state.log = job.record
    return await unless_disconnected(request, translator.translate(job))


async def _stream_job(body: StreamRequest, request: Request, translator: TranslatorDep) -> Job:
    """Checked before the stream starts, so a bad request still gets a 4xx status, not an event."""
    job = translator.prepare(body)
    request.state.log = job.record
    return job


@router.post(
    "/translate/stream",
    response_class=EventSourceResponse,
    summary="Translate one text, token by token, as Server-Sent Events",
    responses=_errors(400, 413, 422, 429, 503),
    tags=["translation"],
)
async def translate_stream(
    job: Annotated[Job, Depends(_stream_job)], translator: TranslatorDep
) -> AsyncIterator[ServerSentEvent]:
    """Events, each `data` a JSON object:

    - `start`: `model`, `source_tokens`, `attention` (`kind`, `layers`, `reduction`, or null);
    - `token`, one per generated token: `index`, `token`, `id`, `probability`, `top`, and `attention`:
      this token's row over `source_tokens` for each layer (`[layer][src]`, or `[layer][head][src]`
      with `heads`);
    - `done`: the whole answer, exactly as `POST /translate` gives it;
    - `error`: `detail`, if the translation could not finish (timeout).

    Greedy search sends each token as soon as it is chosen. Beam search only knows its best
    hypothesis at the end, so its tokens arrive together, just before `done`.
    """
    async for name, data in translator.stream(job):
        yield ServerSentEvent(event=name, raw_data=json.dumps(data, ensure_ascii=False))


@router.get("/languages", response_model=list[Language], summary="Languages and their targets", tags=["catalogue"],
            responses=_errors(503))
async def languages(translator: TranslatorDep) -> list[dict]:
    return translator.languages()


@router.get("/models", response_model=list[ModelInfo], summary="Loaded models", tags=["catalogue"],
            responses=_errors(503))
async def models(translator: TranslatorDep) -> list[dict]:
    return translator.model_infos()


@router.get("/glossaries", response_model=list[GlossaryInfo], summary="Named glossaries", tags=["catalogue"])
async def glossaries(translator: TranslatorDep) -> list[dict]:
    """The glossaries loaded from GLOSSARIES_DIR at startup; use one with `glossary_name` on POST /translate."""
    return translator.glossary_infos()


@router.get("/health", response_model=Status, summary="Liveness: the process answers", tags=["operations"])
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", response_model=Status, summary="Readiness: models loaded and warmed up", tags=["operations"],
            responses=_errors(503))
async def ready(translator: TranslatorDep) -> dict:
    translator.check_ready()
    return {"status": "ready", "models": list(translator.models)}


@router.get("/metrics", summary="Prometheus metrics", tags=["operations"],
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
async def metrics(registry: MetricsDep) -> Response:
    return Response(registry.render(), media_type=registry.content_type)


@router.get("/", include_in_schema=False)
async def viewer() -> FileResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        raise HTTPException(404, "the attention viewer is not installed")
    return FileResponse(page)
