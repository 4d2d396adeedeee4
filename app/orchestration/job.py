"""A request once checked and encoded: what decoding reads, and what the answer is assembled from."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.api.schemas import Output
from model.checkpoint import LoadedModel
from model.search.options import Constraint, DecodeOptions
from model.text import compose


@dataclass
class Layout:
    """A text's plan; `sources[i]` indexes job.source_ids for plan.units[i], None for a unit with nothing to decode."""

    plan: compose.Plan
    sources: list[int | None]


@dataclass(kw_only=True)
class Job:
    """The checked, encoded texts of one request and the options they decode with."""

    loaded: LoadedModel
    source_ids: list[list[int]]  # what is decoded: one entry per text, or per sentence of a planned text
    source_texts: list[str]  # the text each entry of source_ids encodes
    options: DecodeOptions
    constraints: list[tuple[Constraint, ...]]  # per source: the glossary terms forced while decoding it
    auto_length: bool  # max_new_tokens was not given: options hold its upper bound (decoding.sized)
    output: Output
    # Per input text: its plan (sentences, markup, protected spans). None = decoded whole as given
    # (source_ids holds one entry for it).
    layouts: list[Layout | None]
    # Per input text: fields the answer adds about its language (detected_language, warnings).
    language_notes: list[dict]
    cross_layers: list[int] = field(default_factory=list)  # cross-attention layers to report, in the order asked
    encoder_layers: list[int] = field(default_factory=list)  # encoder self-attention layers to report
    decoder_layers: list[int] = field(default_factory=list)  # decoder self-attention layers to report
    align_layer: int | None = None  # cross-attention layer the word alignment is read from, when needed
    record: dict = field(default_factory=dict)  # fields for the request's log line

    @property
    def texts(self) -> int:
        """The number of input texts (each may decode as several sources)."""
        return len(self.layouts)
