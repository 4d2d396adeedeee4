"""Document routes (docs/api.md#documents): a synchronous translation for small documents, and the
job API for large ones. The work is `app.orchestration.documents` and `.document_jobs`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from app.api.schemas import DocumentJob, DocumentOptions, ErrorMessage
from app.deps import DocumentJobsDep, TranslatorDep, unless_disconnected
from app.orchestration import documents
from app.orchestration.document_jobs import FINISHED, DocumentJobs, UnknownJob
from model.text.documents import FORMATS, suffix_of

router = APIRouter(prefix="/documents", tags=["documents"])

POLL_S = 0.25  # how often a job's events check its state file (written by whichever replica runs it)

ERRORS = {
    404: "No such job (never made, or expired after DOCUMENT_EXPIRY_S).",
    409: "The job has not finished: no result yet.",
    413: "The file is over DOCUMENT_MAX_BYTES, a package over its zip limits, or (synchronous route) the "
         "document has more than DOCUMENT_SYNC_MAX_SEGMENTS segments.",
    415: "Not a supported format, or not what its name says; `detail` lists the formats.",
    422: "Bad options, or a file that cannot be read: corrupt, password-protected, XML with entities or a DTD, "
         "a catalog with a syntax error (the line is named).",
    429: "Too many texts queued (MAX_QUEUE); retry after `Retry-After` seconds.",
    503: "Models still loading; see `Retry-After`.",
}


def _errors(*codes: int) -> dict:
    return {code: {"description": ERRORS[code], "model": ErrorMessage} for code in codes}


@dataclass
class Upload:
    """The multipart form of a document route: `file` and the translation options."""

    filename: str
    data: bytes
    options: DocumentOptions


async def upload(
    file: Annotated[UploadFile, File(description="The document; its name's suffix says its format "
                                     "(GET /documents/formats).", examples=["informe.docx"])],
    source: Annotated[str, Form(description="Language of the document, or `auto`.", examples=["es"])],
    target: Annotated[str, Form(description="Language to translate into.", examples=["en"])],
    strategy: Annotated[Literal["greedy", "beam"], Form(description="Decoding strategy.",
                                                        examples=["greedy"])] = "greedy",
    beam_size: Annotated[int, Form(description="Beam size (beam search).", examples=[4])] = 4,
    glossary_name: Annotated[str | None, Form(description="A named glossary (GET /glossaries).",
                                              examples=[None])] = None,
) -> Upload:
    try:
        options = DocumentOptions(source=source, target=target, strategy=strategy, beam_size=beam_size,
                                  glossary_name=glossary_name)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
    return Upload(file.filename or "", await file.read(), options)


UploadDep = Annotated[Upload, Depends(upload)]


def file_response(data: bytes, filename: str) -> Response:
    """The translated file, named as the upload was."""
    _, media_type = FORMATS[suffix_of(filename)]
    return Response(data, media_type=media_type, headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}"})


@router.get("/formats", summary="The document formats", response_model=list[str])
async def formats() -> list[str]:
    return list(FORMATS)


@router.post("/translate", summary="Translate a small document; the answer is the translated file",
             responses={200: {"content": {"application/octet-stream": {}}, "description": "The translated file."},
                        **_errors(413, 415, 422, 429, 503)})
async def translate(request: Request, form: UploadDep, translator: TranslatorDep) -> Response:
    """For documents of up to DOCUMENT_SYNC_MAX_SEGMENTS segments; larger ones go through POST /documents/jobs.
    A file with nothing to translate comes back unchanged."""
    data = await unless_disconnected(request, documents.translate_small(translator, form.filename, form.data,
                                                                        form.options))
    return file_response(data, form.filename)


@router.post("/jobs", status_code=202, response_model=DocumentJob, response_model_exclude_none=True,
             summary="Submit a document to translate in the background", responses=_errors(413, 415, 422, 429, 503))
async def submit(request: Request, form: UploadDep, translator: TranslatorDep, jobs: DocumentJobsDep) -> dict:
    """Answers at once with the job's id and state; follow it with GET /documents/jobs/{id} or its events."""
    documents.check_options(translator, form.options)
    return _with_url(request, jobs.submit(form.filename, form.data, form.options))


@router.get("/jobs/{job_id}", response_model=DocumentJob, response_model_exclude_none=True,
            summary="A document job's state and progress", responses=_errors(404))
async def status(request: Request, job_id: str, jobs: DocumentJobsDep) -> dict:
    return _with_url(request, _state(jobs, job_id))


async def _known_job(job_id: str, jobs: DocumentJobsDep) -> dict:
    """The job's state, checked before a stream starts, so an unknown id still gets a 404 status, not an event."""
    return _state(jobs, job_id)


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse, responses=_errors(404),
            summary="A document job's progress as Server-Sent Events")
async def events(request: Request, job_id: str, first: Annotated[dict, Depends(_known_job)],
                 jobs: DocumentJobsDep) -> AsyncIterator[ServerSentEvent]:
    """A `progress` event each time the state changes (`data`: the state, as GET /documents/jobs/{id}), then one
    event named after how it ended: `done`, `failed` or `cancelled`."""
    last, state = None, first
    while True:
        if state != last:
            last = state
            name = state["status"] if state["status"] in FINISHED else "progress"
            yield ServerSentEvent(event=name, raw_data=json.dumps(_with_url(request, state)))
            if name != "progress":
                return
        await asyncio.sleep(POLL_S)
        try:
            state = jobs.store.state(job_id)
        except UnknownJob:  # expired while followed: nothing more will happen to it
            return


@router.get("/jobs/{job_id}/result", summary="Download a finished job's file", responses={
    200: {"content": {"application/octet-stream": {}}, "description": "The translated file."}, **_errors(404, 409)})
async def result(job_id: str, jobs: DocumentJobsDep) -> FileResponse:
    return result_file(jobs, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=DocumentJob, response_model_exclude_none=True,
             summary="Cancel a document job", responses=_errors(404))
async def cancel(request: Request, job_id: str, jobs: DocumentJobsDep) -> dict:
    """A running job stops before its next slice; a finished one is left as it is."""
    try:
        return _with_url(request, jobs.cancel(job_id))
    except UnknownJob:
        raise _unknown(job_id) from None


def result_file(jobs: DocumentJobs, job_id: str) -> FileResponse:
    try:
        found = jobs.store.result(job_id)
    except UnknownJob:
        raise _unknown(job_id) from None
    if found is None:
        raise HTTPException(409, f"job {job_id} has not finished; GET /documents/jobs/{job_id} says how far it is")
    path, filename = found
    _, media_type = FORMATS[suffix_of(filename)]
    return FileResponse(path, media_type=media_type, filename=filename)


def _state(jobs: DocumentJobs, job_id: str) -> dict:
    try:
        return jobs.store.state(job_id)
    except UnknownJob:
        raise _unknown(job_id) from None


def _unknown(job_id: str) -> HTTPException:
    return HTTPException(404, f"no document job {job_id!r} (never made, or expired after DOCUMENT_EXPIRY_S)")


def _with_url(request: Request, state: dict) -> dict:
    if state["status"] == "done":
        return {**state, "result_url": str(request.url_for("result", job_id=state["id"]))}
    return state
