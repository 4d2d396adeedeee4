"""ASGI middleware: a request id, metrics and one JSON log line per request; the body size guard.

Both are plain ASGI (not BaseHTTPMiddleware) so Server-Sent Events stream through untouched and
the latency of a stream counts until its last event.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response
from app.metrics import Metrics

access_log = logging.getLogger("app.access")

JSON_TYPES = ("application/json",)


class RequestLog:
    """Tags each request with an id (X-Request-ID, echoed back), then counts, times and logs it.

    Routes add fields (direction, tokens in/out) to `request.state.log`.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # what the client sees if the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, request_id, status, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")  # the template, so ids in paths add no series
        method = scope["method"]
        self.metrics.requests.labels(route, method, str(status)).inc()
        self.metrics.latency.labels(route, method, str(status)).observe(seconds)
        line = {"event": "request", "id": request_id, "method": method, "path": scope["path"], "status": status,
                "latency_ms": round(seconds * 1000, 1), **scope["state"].get("log", {})}
        access_log.info(json.dumps(line, ensure_ascii=False))


class BodyLimit:
    """Reads the whole body before the app does, answering 413 past MAX_BODY_BYTES and 400 for JSON
    that is not UTF-8, so neither reaches the JSON parser (which would say only "error parsing the body")."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        declared = request.headers.get("content-length", "")
        too_large = f"the body is over the limit of {self.max_bytes} bytes (MAX_BODY_BYTES)"
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(scope, receive, send, 413, too_large)
            return
        body = await self._read(receive)
        if body is None:  # the client left before sending it all
            return
        if len(body) > self.max_bytes:
            await _refuse(scope, receive, send, 413, too_large)
            return
        if request.headers.get("content-type", "").split(";")[0].strip() in JSON_TYPES:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                detail = f"the body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})"
                await _refuse(scope, receive, send, 400, detail)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, or its first MAX_BODY_BYTES + 1 bytes once it is too large; None if the client left."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > self.max_bytes:
                return bytes(body[: self.max_bytes + 1])


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await error_response(Request(scope), status, detail)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the buffered body once, then waits on the client (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
