"""The FastAPI application: settings, services, middleware, error handlers and routes put together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app import errors, libretranslate, routes
from app.metrics import Metrics
from app.middleware import BodyLimit, RequestLog
from app.settings import Settings
from app.translator import Translator

DESCRIPTION = """
Spanish ⇄ English translation with a Transformer built from scratch.

Every answer can carry, for each generated token, its probability, the most probable rivals, and
the decoder's cross-attention over the source tokens. `GET /` shows them in the attention viewer.
Limits (characters, items, beam size, ...) come from environment variables; an input over a limit
gets a 422 naming the limit, and an overloaded server answers 429 or 503 with `Retry-After`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    translator = Translator(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background, so /health answers and /ready says 503 while models load.
        loading = asyncio.create_task(translator.start(), name="load-models")
        yield
        loading.cancel()
        await translator.stop()

    app = FastAPI(
        title="transformer-translate",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics, app.state.translator = settings, metrics, translator
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLog, metrics=metrics)  # added last, so it is outermost and sees every answer
    app.include_router(routes.router)
    app.include_router(libretranslate.router)
    if routes.STATIC_DIR.is_dir():  # the viewer's assets ship with the package
        app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    return app
