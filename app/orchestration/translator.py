"""The translation service the routes call: its lifecycle, its catalogue, and translating.

A request goes through two stages so that every refusal is a proper HTTP status: `prepare` (checks
and encoding, app/orchestration/prepare.py; raises InputError or Unavailable) and then `translate`
or `stream`. Decoding itself is the `Decoder`'s (app/orchestration/decoding.py), and the answers
take the shapes of docs/api.md (app/orchestration/answers.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import torch

from app.api.schemas import StreamRequest, TranslateRequest
from app.errors import Unavailable
from app.metrics import Metrics
from app.orchestration import streaming
from app.orchestration.answers import answers
from app.orchestration.decoding import Decoder
from app.orchestration.job import Job
from app.orchestration.prepare import Glossaries, prepare, source_token_limit
from app.registry import load_all
from app.settings import Settings
from model.checkpoint import LoadedModel, ModelLoadError
from model.text import glossary
from model.tokenizer import LANGUAGES

log = logging.getLogger("app.orchestration.translator")

RETRY_LOADING_S = 10  # seconds a client should wait while the models load: longer than a busy queue's


class Translator:
    """The models and glossaries served, and translation through the `Decoder`."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.models: dict[str, LoadedModel] = {}
        self.glossaries: Glossaries = {}
        self.problem: str | None = None  # why no model is served, once loading failed
        self.decoder = Decoder(settings, metrics)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and warm up every model (on the decode thread), then accept translations."""
        self.decoder.start()
        s, thread = self.settings, self.decoder.thread
        if s.torch_threads:  # set on the decode thread itself: once a thread exists, its count is its own
            await thread.run(torch.set_num_threads, s.torch_threads)
        self.glossaries = load_glossaries(s.glossaries_dir)
        try:
            models = await thread.run(load_all, s.weights_dir, s.device, s.dtype, s.quantize, s.engine)
            self.decoder.use_lanes(models, await thread.run(torch.get_num_threads))
            self.models = models  # ready only now: a text taken between the two would miss the lanes
        except ModelLoadError as e:
            self.problem = str(e)
            log.error("serving no model: %s", e)
        except Exception as e:  # e.g. out of device memory in warm-up: still say why we are not ready
            self.problem = f"{type(e).__name__}: {e}"
            log.exception("serving no model: loading failed")

    async def stop(self) -> None:
        await self.decoder.stop()

    @property
    def ready(self) -> bool:
        return bool(self.models)

    def check_ready(self) -> None:
        if self.problem:
            raise Unavailable(503, "no model could be loaded; the server log says why", RETRY_LOADING_S)
        if not self.ready:
            raise Unavailable(503, "the models are still loading", RETRY_LOADING_S)

    # --- catalogue -------------------------------------------------------------------------

    def languages(self) -> list[dict]:
        self.check_ready()
        targets: dict[str, set[str]] = {}
        for loaded in self.models.values():
            for source, target in loaded.directions:
                targets.setdefault(source, set()).add(target)
        return [{"code": c, "name": LANGUAGES[c], "targets": sorted(t)} for c, t in sorted(targets.items())]

    def model_infos(self) -> list[dict]:
        self.check_ready()
        return [
            {
                "name": m.name,
                "directions": [{"source": s, "target": t} for s, t in m.directions],
                "parameters": m.parameters,
                "device": str(m.device),
                "dtype": str(m.dtype).removeprefix("torch."),
                "quantization": m.quantization,
                "engine": m.backend.name,
                "weights_sha256": m.weights_sha256,
                "max_source_tokens": source_token_limit(self.settings, m)[0],
                "config": m.config.to_dict(),
                "metrics": m.card.get("metrics", {}),
            }
            for m in self.models.values()
        ]

    def glossary_infos(self) -> list[dict]:
        return [{"name": g.name, "source": g.source, "target": g.target, "terms": len(g.terms)}
                for g in self.glossaries.values()]

    # --- translating -----------------------------------------------------------------------

    def prepare(self, req: TranslateRequest | StreamRequest) -> Job:
        """Check `req` against the limits, the loaded models and the queue's room, and encode its texts."""
        self.check_ready()
        job = prepare(req, settings=self.settings, models=self.models, glossaries=self.glossaries)
        self.decoder.check_room(job.texts)
        return job

    async def translate(self, job: Job) -> dict:
        """The answer of POST /translate: every text decoded, then assembled."""
        with self.decoder.admitted(len(job.source_ids)):
            results = await self.decoder.decode(job)
        self.decoder.count(job, [hyps[0] for hyps in results])
        encoder = await self.decoder.encoder_attention(job)
        return {"model": job.loaded.name, "translations": answers(job, results, encoder)}

    def stream(self, job: Job) -> AsyncIterator[tuple[str, dict]]:
        """The events of POST /translate/stream, as (name, data) (app/orchestration/streaming.py)."""
        return streaming.events(job, self.decoder)


def load_glossaries(folder: Path) -> Glossaries:
    """The named glossaries of GLOSSARIES_DIR; a bad file is logged, and then none is served (the log says which)."""
    if not folder.is_dir():
        return {}
    try:
        return glossary.load_folder(folder)
    except glossary.GlossaryError as e:
        log.error("no named glossaries are served: %s", e)
        return {}
