"""Error answers: FastAPI's {"detail": ...} shape, worded for people, never a stack trace.

Validation errors keep FastAPI's list of {loc, msg, type} (the attention viewer and generated
clients read it), minus the echoed input, which for an oversized text would repeat the
whole text back. LibreTranslate's clients read `error` instead of `detail`, so answers on its
compatible routes carry both, with LibreTranslate's status codes.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from model.text.documents import DocumentError, supported

log = logging.getLogger("app.errors")

LIBRETRANSLATE_PREFIX = "/compat/libretranslate"


class InputError(Exception):
    """Input the schema accepts but a limit or a loaded model does not: answered like a schema error (422)."""

    def __init__(self, loc: tuple[str | int, ...], msg: str, kind: str = "limit"):
        super().__init__(msg)
        self.loc, self.msg, self.kind = loc, msg, kind


class Unavailable(Exception):
    """The service cannot take the request now (loading, full queue, timeout); the client may retry."""

    def __init__(self, status_code: int, detail: str, retry_after_s: int):
        super().__init__(detail)
        self.status_code, self.detail, self.retry_after_s = status_code, detail, retry_after_s


# LibreTranslate answers every bad request with 400 and a refused key with 403, and its clients
# branch on those codes (one library raises its BadRequestError on 400 only).
LIBRETRANSLATE_STATUS = {401: 403, 415: 400, 422: 400}


# A document that cannot be translated, by why: a format we do not read (or a file that is not what its
# name says) is 415, a package past the size or member limits 413, anything else about its content 422.
DOCUMENT_STATUS = {"unsupported": 415, "mismatched": 415, "too_large": 413}


def error_response(request: Request, status_code: int, detail, headers: dict | None = None) -> JSONResponse:
    body = {"detail": detail}
    if request.url.path.startswith(LIBRETRANSLATE_PREFIX):
        body["error"] = detail if isinstance(detail, str) else "; ".join(_flat(d) for d in detail)
        status_code = LIBRETRANSLATE_STATUS.get(status_code, status_code)
    return JSONResponse(body, status_code=status_code, headers=headers)


def _flat(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"] if p != "body")
    return f"{where}: {error['msg']}" if where else error["msg"]


def readable(error: dict) -> dict:
    """One pydantic/FastAPI error as {loc, msg, type}, with the few cryptic messages reworded."""
    loc, kind, msg = list(error["loc"]), error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "json_invalid":
        loc = ["body"]
        msg = f"the body is not valid JSON: {error.get('ctx', {}).get('error', msg)} (at byte {error['loc'][-1]})"
    elif loc == ["body"] and kind in ("model_attributes_type", "dict_type", "model_type"):
        msg = "the body must be a JSON object, sent with Content-Type: application/json"
    elif kind == "missing":
        msg = "this field is required"
    elif kind == "extra_forbidden":
        msg = "unknown field; see /docs for the fields this route takes"
    return {"loc": loc, "msg": msg, "type": kind}


async def _validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(request, 422, [readable(e) for e in exc.errors()])


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return error_response(request, 422, [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": exc.kind}])


async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return error_response(request, exc.status_code, exc.detail, {"Retry-After": str(exc.retry_after_s)})


async def _document_error(request: Request, exc: DocumentError) -> JSONResponse:
    status = DOCUMENT_STATUS.get(exc.kind, 422)
    return error_response(request, status, f"{exc}; supported formats: {supported()}" if status == 415 else str(exc))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(request, exc.status_code, exc.detail, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    request_id = request.scope.get("state", {}).get("request_id", "")
    # Starlette sends this answer from outside every middleware, so RequestLog cannot add the id header.
    headers = {"X-Request-ID": request_id} if request_id else None
    return error_response(request, 500, f"internal error (request {request_id}); it has been logged", headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(DocumentError, _document_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
