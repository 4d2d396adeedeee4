"""Dependencies the routes receive, and the one piece of HTTP plumbing they share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from app.metrics import Metrics
from app.orchestration.document_jobs import DocumentJobs
from app.orchestration.translator import Translator

T = TypeVar("T")

# nginx's code for "client closed the request": nobody reads it, but the log and metrics do.
CLIENT_CLOSED = 499


# async: FastAPI runs a plain `def` dependency on its thread pool, a thread hop per request.
async def get_translator(request: Request) -> Translator:
    return request.app.state.translator


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_document_jobs(request: Request) -> DocumentJobs:
    return request.app.state.document_jobs


TranslatorDep = Annotated[Translator, Depends(get_translator)]
DocumentJobsDep = Annotated[DocumentJobs, Depends(get_document_jobs)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it if the client hangs up first, so its texts leave the queue
    instead of being decoded for nobody."""
    task = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled (shutdown)
        task.cancel()
        raise
    finally:
        hangup.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # let it give back its queue places
    raise HTTPException(CLIENT_CLOSED, "the client closed the request")


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
