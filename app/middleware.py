"""ASGI middleware: a request id, metrics and one JSON log line per request; the body size guard;
API keys and per-client rate limits.

All are plain ASGI (not BaseHTTPMiddleware) so Server-Sent Events stream through untouched and
the latency of a stream counts until its last event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import LIBRETRANSLATE_PREFIX, error_response
from app.metrics import Metrics

access_log = logging.getLogger("app.access")

JSON_TYPES = ("application/json",)

# Routes open without an API key and outside rate limits: probes and scrapers, which carry no key,
# and the pages that describe the API (the docs, the viewer's page and assets), which hold no data.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/", "/docs", "/openapi.json"})
# A translated document's LibreTranslate URL is fetched "as given" (no key); its unguessable job id is the key.
OPEN_PREFIXES = ("/static/", f"{LIBRETRANSLATE_PREFIX}/download_file/")
# Routes that take a document upload: their body limit is DOCUMENT_MAX_BYTES instead of MAX_BODY_BYTES.
UPLOAD_PATHS = ("/documents/translate", "/documents/jobs", f"{LIBRETRANSLATE_PREFIX}/translate_file")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


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
        if "client" in scope["state"]:
            line["client"] = scope["state"]["client"]
        access_log.info(json.dumps(line, ensure_ascii=False))


class BodyLimit:
    """Reads the whole body before the app does, answering 413 past MAX_BODY_BYTES (DOCUMENT_MAX_BYTES on
    the document uploads) and 400 for JSON that is not UTF-8, so neither reaches the JSON parser (which
    would say only "error parsing the body")."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_upload_bytes: int | None = None):
        self.app, self.max_bytes, self.max_upload_bytes = app, max_bytes, max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        declared = request.headers.get("content-length", "")
        limit, setting = ((self.max_upload_bytes, "DOCUMENT_MAX_BYTES") if scope["path"] in UPLOAD_PATHS
                          else (self.max_bytes, "MAX_BODY_BYTES"))
        too_large = f"the body is over the limit of {limit} bytes ({setting})"
        if declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, 413, too_large)
            return
        body = await self._read(receive, limit)
        if body is None:  # the client left before sending it all
            return
        if len(body) > limit:
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

    async def _read(self, receive: Receive, limit: int) -> bytes | None:
        """The body, or its first `limit` + 1 bytes once it is too large; None if the client left."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > limit:
                return bytes(body[: limit + 1])


class ApiKeys:
    """With API_KEYS set, answers 401 to a request without one of the keys, except on the open routes.

    The key comes in X-API-Key or `Authorization: Bearer KEY`; LibreTranslate's clients send it as
    `api_key` in the body or the query, so its routes read it there too. The request's log line and
    rate limit name the key by a short hash, never by itself.
    """

    def __init__(self, app: ASGIApp, keys: list[str]):
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = _header_key(Request(scope))
        if key is None and scope["path"].startswith(LIBRETRANSLATE_PREFIX):
            key, receive = await _libretranslate_key(scope, receive)
        if key is None:
            await _refuse(scope, receive, send, 401, "this route needs an API key: send it in the X-API-Key "
                          "header or as Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
            return
        if not self._known(key.encode()):
            await _refuse(scope, receive, send, 401, "the API key is not valid", {"WWW-Authenticate": "Bearer"})
            return
        scope.setdefault("state", {})["client"] = "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
        await self.app(scope, receive, send)

    def _known(self, key: bytes) -> bool:
        # Compare with every key, each in constant time, so timing tells nothing about any of them.
        return sum(hmac.compare_digest(key, known) for known in self.keys) > 0


def _header_key(request: Request) -> str | None:
    if key := request.headers.get("x-api-key", "").strip():
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


async def _libretranslate_key(scope: Scope, receive: Receive) -> tuple[str | None, Receive]:
    """LibreTranslate's `api_key` from the query, a JSON body or a form; the body is replayed to the app."""
    request = Request(scope)
    if key := request.query_params.get("api_key", "").strip():
        return key, receive
    if scope["method"] != "POST":
        return None, receive
    body = await _read_all(receive)
    if body is None:
        return None, receive
    replayed = _replay(body, receive)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    key = None
    try:
        if content_type in JSON_TYPES:
            data = json.loads(body)
            key = data.get("api_key") if isinstance(data, dict) else None
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            async with Request(scope, _replay(body, receive)).form() as form:
                key = form.get("api_key")
    except Exception:  # an unreadable body has no key; the route itself will say what is wrong with it
        key = None
    return (key.strip() or None) if isinstance(key, str) else None, replayed


class TokenBuckets:
    """One token bucket per client: holds up to `per_minute` tokens, refilled at per_minute / 60 a second."""

    # Beyond this many buckets, the full ones (the same as absent) are dropped, then if need be the
    # longest idle, down to half: forgetting a client only gives it a full bucket again.
    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.capacity, self.rate, self.clock = float(per_minute), per_minute / 60, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)

    def take(self, client: str) -> float:
        """0 when the client may go ahead (a token is taken), else the seconds until it may."""
        now = self.clock()
        tokens = self._tokens(client, now)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            if len(self.buckets) > self.MAX_CLIENTS:
                self._forget(now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _tokens(self, client: str, now: float) -> float:
        tokens, counted = self.buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - counted) * self.rate)

    def _forget(self, now: float) -> None:
        for client in [c for c in self.buckets if self._tokens(c, now) >= self.capacity]:
            del self.buckets[client]
        if len(self.buckets) > self.MAX_CLIENTS:
            by_idle = sorted(self.buckets, key=lambda c: self.buckets[c][1])
            for client in by_idle[: len(by_idle) - self.MAX_CLIENTS // 2]:
                del self.buckets[client]


class RateLimit:
    """RATE_LIMIT_PER_MINUTE per API key (per client address without keys); past it, 429 and Retry-After.

    Behind a proxy, the client address is the proxy's unless uvicorn trusts its X-Forwarded-For
    (FORWARDED_ALLOW_IPS)."""

    def __init__(self, app: ASGIApp, per_minute: int, metrics: Metrics):
        self.app, self.metrics = app, metrics
        self.buckets = TokenBuckets(per_minute) if per_minute else None
        self.per_minute = per_minute

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.buckets is None or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        client = state.get("client") or "address:" + (scope.get("client") or ("unknown",))[0]
        wait = self.buckets.take(client)
        if wait:
            self.metrics.rejected.labels("rate_limit").inc()
            whose = "API key" if client.startswith("key:") else "client address"
            await _refuse(scope, receive, send, 429, f"over the rate limit of {self.per_minute} requests a minute "
                          f"for this {whose} (RATE_LIMIT_PER_MINUTE)", {"Retry-After": str(math.ceil(wait))})
            return
        await self.app(scope, receive, send)


async def _read_all(receive: Receive) -> bytes | None:
    """The whole body (BodyLimit, further out, has already capped its size); None if the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                  headers: dict | None = None) -> None:
    await error_response(Request(scope), status, detail, headers)(scope, receive, send)


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
