"""The FastAPI application: settings, services, middleware, error handlers and routes put together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app import errors
from app.api import documents, libretranslate, openapi, routes
from app.metrics import Metrics
from app.middleware import ApiKeys, BodyLimit, RateLimit, RequestLog
from app.orchestration.document_jobs import DocumentJobs
from app.orchestration.translator import Translator
from app.settings import Settings

log = logging.getLogger("app.main")

DESCRIPTION = """
Spanish ⇄ English translation with a Transformer built from scratch.

Every answer can carry, for each generated token, its probability, the most probable rivals, and
the decoder's cross-attention over the source tokens. `GET /` shows them in the attention viewer.
Limits (characters, items, beam size, ...) come from environment variables; an input over a limit
gets a 422 naming the limit, and an overloaded server answers 429 or 503 with `Retry-After`.

When the server is started with `API_KEYS`, every route needs a key, sent as `X-API-Key: KEY` or
`Authorization: Bearer KEY`, except `/health`, `/ready`, `/metrics`, these docs and the viewer page.
With `RATE_LIMIT_PER_MINUTE`, each key (or, without keys, each client address) may make that many
requests a minute, in bursts up to a minute's worth; beyond it, 429 with `Retry-After`.
"""


def create_app(settings: Settings | None = None, on_load_failure: Callable[[], None] | None = None) -> FastAPI:
    """The app; `on_load_failure` is called when no model could be loaded and EXIT_ON_LOAD_ERROR is
    set (`python -m app` passes one that stops the server, which then exits with status 1)."""
    settings = settings or Settings()
    metrics = Metrics()
    translator = Translator(settings, metrics)
    document_jobs = DocumentJobs(translator)

    async def load_models() -> None:
        await translator.start()  # logs the one line that says which file failed and why
        if translator.problem and settings.exit_on_load_error and on_load_failure:
            log.info("stopping: no model to serve (EXIT_ON_LOAD_ERROR)")
            on_load_failure()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background, so /health answers and /ready says 503 while models load.
        loading = asyncio.create_task(load_models(), name="load-models")
        yield
        loading.cancel()
        await document_jobs.stop()
        await translator.stop()

    app = FastAPI(
        title="transformer-translate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc load their scripts from a CDN; ours ships with the app
        redoc_url=None,
    )
    app.state.settings, app.state.metrics, app.state.translator = settings, metrics, translator
    app.state.document_jobs = document_jobs
    errors.install(app)
    # Added innermost first: RequestLog sees every answer, CORS headers go on refusals too, the body
    # is capped before anything reads it, and a request without a valid key uses no rate budget.
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute, metrics=metrics)
    app.add_middleware(ApiKeys, keys=settings.api_key_list)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, max_upload_bytes=settings.document_max_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-API-Key", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
        )
    app.add_middleware(RequestLog, metrics=metrics)
    app.include_router(routes.router)
    app.include_router(libretranslate.router)
    app.include_router(documents.router)
    if routes.STATIC_DIR.is_dir():  # the viewer's assets ship with the package
        app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    app.openapi = lambda: openapi.document(app, settings)
    _add_docs(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from app/static/swagger-ui (a pinned copy of npm's swagger-ui-dist), so
    the docs render on a server with no internet access, as a self-hosted service often is."""
    assets = "static/swagger-ui"

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - API",
            swagger_js_url=f"{root}/{assets}/swagger-ui-bundle.js", swagger_css_url=f"{root}/{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}/{assets}/favicon-32x32.png",
        )
