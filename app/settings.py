"""Every setting of the service, read once from environment variables (names as below, upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    host: str = Field("0.0.0.0", description="Address `python -m app` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app` listens on.")
    weights_dir: Path = Field(Path("weights"), description="Folder whose every sub-folder is a model to serve.")
    glossaries_dir: Path = Field(Path("glossaries"), description="Folder of named glossaries, "
                                 "`<name>.<source>-<target>.tsv` (GET /glossaries lists them).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when present, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Precision of the weights and of the computation. auto: float32."
    )
    quantize: Literal["auto", "none", "int8"] = Field(
        "auto", description="int8: int8 weights in every linear layer, each input row quantised on its own so a "
        "translation never depends on what shares its batch (CPU and float32 only); none: the weights as stored. "
        "auto: int8 on CPU, none on CUDA."
    )
    engine: Literal["auto", "torch"] = Field(
        "auto", description="auto: on an x86-64 CPU with AVX2 and a C compiler, float32 models run on the C engine "
        "(model/engine/engine.c: one C call per encoder pass and per decoder step); torch: PyTorch only. "
        "GET /models says which each model uses."
    )
    torch_threads: int = Field(
        0, ge=0, description="CPU threads torch may use; 0 keeps its default (every core it sees, which in a "
        "container can be far more than the container's CPU quota)."
    )

    max_chars: int = Field(2000, ge=1, description="Characters per text.")
    max_source_tokens: int = Field(256, ge=2, description="Source tokens per text (tag and </s> included).")
    max_items: int = Field(32, ge=1, description="Texts per request.")
    max_beam_size: int = Field(8, ge=1, description="Largest decoding.beam_size.")
    max_top_k: int = Field(10, ge=0, description="Largest output.top_k.")
    max_new_tokens: int = Field(256, ge=1, description="Largest decoding.max_new_tokens.")
    max_queue: int = Field(256, ge=1, description="Texts admitted and not yet answered; beyond it, 429.")
    request_timeout_s: float = Field(30.0, gt=0, description="Queueing plus decoding time before a 503.")
    max_body_bytes: int = Field(512 * 1024, ge=1024, description="Request body size, checked before parsing; 413.")

    document_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Size of an uploaded document (the document routes' body limit, "
        "instead of MAX_BODY_BYTES); 413 beyond it."
    )
    document_max_uncompressed_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Total uncompressed size of a zip package (docx, pptx, odt, odp, "
        "epub), read from its directory before anything is expanded; 413 beyond it (zip bombs)."
    )
    document_max_members: int = Field(2000, ge=1, description="Members of a zip package; 413 beyond it.")
    document_sync_max_segments: int = Field(
        200, ge=1, description="Segments (paragraphs, cells, cues, entries) a document may have on the synchronous "
        "routes (POST /documents/translate, LibreTranslate's /translate_file); larger ones go through the job API."
    )
    document_slice: int = Field(
        8, ge=1, description="Segments of a document decoded together; between two slices other requests are "
        "admitted, so a long document never starves short texts."
    )
    documents_dir: Path = Field(
        Path("document-jobs"), description="Folder of document jobs (upload, state, result), written atomically; "
        "replicas that share it serve each other's jobs."
    )
    document_expiry_s: float = Field(
        24 * 3600.0, gt=0, description="Seconds a document job (and its result) is kept after its last change."
    )

    batching: bool = Field(True, description="Decode concurrent requests together, on every decode lane; false: each "
                           "request decoded on its own, one after another on one thread (a baseline).")
    continuous_batching: bool = Field(
        True, description="Greedy texts join a running decode between two steps and leave it with their last "
        "token, instead of waiting for a batch of their own (needs BATCHING)."
    )
    decode_lanes: int = Field(
        0, ge=0, le=64, description="Decode lanes: threads that each run a running greedy batch and, when free, "
        "beam batches, side by side, each with its share of the torch threads (on the C engine). 0: auto, one "
        "per torch thread when every model runs on the engine, else 1."
    )
    decode_nice: int = Field(
        3, ge=0, le=19, description="Niceness the decoding threads add to the HTTP event loop's (Linux), so the "
        "loop, which admits the texts they decode, comes first; 0 keeps them at the loop's priority."
    )
    batch_window_ms: float = Field(
        0.0, ge=0, description="How long the first text of a batch waits for company (beam search; greedy too "
        "without continuous batching). 0: a text that finds a lane free starts at once, and a batch holds the "
        "texts that arrived while the lanes were busy."
    )
    batch_quiet_ms: float = Field(
        2.0, ge=0, description="A batch leaves before its window closes once no text has arrived for this long."
    )
    batch_max_items: int = Field(32, ge=1, description="Texts per decoded batch, and rows of the running greedy batch.")
    batch_max_tokens: int = Field(8192, ge=1, description="Padded source tokens per batch (texts x longest).")

    shutdown_grace_s: float = Field(
        35.0, ge=0, description="On SIGTERM new connections are refused at once and requests in flight get this "
        "many seconds to finish (longer than REQUEST_TIMEOUT_S, so each gets its answer) before the process exits."
    )
    exit_on_load_error: bool = Field(
        True, description="Exit with status 1 when no model can be loaded, after one log line saying which file "
        "and why; false keeps the process up with /ready answering 503."
    )

    api_keys: SecretStr = Field(
        SecretStr(""), description="Comma-separated API keys; empty: no keys needed. When set, every route needs "
        "one (header X-API-Key, or Authorization: Bearer KEY; LibreTranslate routes also take its api_key field) "
        "except /health, /ready, /metrics, the docs and the viewer page."
    )
    rate_limit_per_minute: int = Field(
        0, ge=0, description="Requests per minute for each API key (for each client address when API_KEYS is "
        "empty); 0: no limit. A token bucket holding one minute's worth; beyond it, 429 with Retry-After."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins whose web pages may call the API (`*`: any); empty: no CORS."
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Logging level; `info` logs one JSON line per request."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value):
        return value.lower() if isinstance(value, str) else value

    @property
    def api_key_list(self) -> list[str]:
        return _comma_list(self.api_keys.get_secret_value())

    @property
    def cors_origin_list(self) -> list[str]:
        return _comma_list(self.cors_origins)


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
