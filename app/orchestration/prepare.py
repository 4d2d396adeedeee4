"""Checking a request against the limits and the loaded models, and encoding its texts: a `Job`.

Every refusal is an InputError naming the field and the limit (a 422; a 400 on LibreTranslate's
routes), raised before anything is queued. Limits come from the settings (MAX_CHARS, MAX_ITEMS, ...)
and from the model (its max_len), whichever is tighter, so that the message blames the right one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from app.api.schemas import Output, StreamRequest, TranslateRequest
from app.errors import InputError
from app.orchestration.job import Job, Layout
from app.settings import Settings
from model.checkpoint import LoadedModel
from model.search import constraints
from model.search.options import Constraint, DecodeOptions
from model.text import align, compose, glossary, langid, markup
from model.text.markup import MarkupError
from model.tokenizer import LANGUAGES

AUTO = "auto"  # the `source` that asks for the language to be detected

Glossaries = dict[tuple[str, str, str], glossary.Named]  # (name, source, target) -> terms

# Per attention kind: the Output field that lists its layers, and the stack those layers are in.
ATTENTION_KINDS = {
    "cross": ("attention_layers", "decoder"),
    "encoder": ("encoder_attention_layers", "encoder"),
    "decoder": ("decoder_attention_layers", "decoder"),
}


def prepare(req: TranslateRequest | StreamRequest, *, settings: Settings, models: dict[str, LoadedModel],
            glossaries: Glossaries) -> Job:
    """Check `req` against the limits and the loaded models, and encode its texts."""
    source = resolve_source(req.source, req.target)
    loaded = choose_model(models, name=req.model, source=source, target=req.target)
    texts = req.text if isinstance(req.text, list) else [req.text]
    s, d, out = settings, req.decoding, req.output
    _at_most(len(texts), s.max_items, "MAX_ITEMS", ("text",), "number of texts")
    _at_most(d.beam_size, s.max_beam_size, "MAX_BEAM_SIZE", ("decoding", "beam_size"), "beam_size")
    _at_most(out.top_k, s.max_top_k, "MAX_TOP_K", ("output", "top_k"), "top_k")
    max_new_tokens = _max_new_tokens(settings, loaded, d.max_new_tokens)
    prefix = _prefix(settings, loaded, d.prefix, max_new_tokens)
    fmt = req.format if isinstance(req, TranslateRequest) else "text"
    if prefix and fmt == "html":  # a document is many sentences; a prefix starts one
        raise InputError(("decoding", "prefix"),
                         "a prefix starts one plain text; it cannot be used with format html", "value_error")
    sources = _Sources(
        loaded=loaded, target=req.target, fmt=fmt, max_chars=s.max_chars,
        token_limit=source_token_limit(settings, loaded),
        # A stream answers one token sequence, and a prefix starts one, so only they are not split into sentences.
        split=isinstance(req, TranslateRequest) and not prefix,
        terms=glossary_terms(req, source, glossaries),
        conventions=(source, req.target) if req.localize else None,
    )
    layouts = [sources.add(text, ("text",) if len(texts) == 1 else ("text", i)) for i, text in enumerate(texts)]
    layers = _Layers.asked(out, loaded, layouts)
    options = DecodeOptions(
        strategy=d.strategy,
        beam_size=d.beam_size if d.strategy == "beam" else 1,  # so greedy requests all batch together
        max_new_tokens=max_new_tokens,
        length_penalty=d.length_penalty,
        alternatives=d.alternatives,
        top_k=out.top_k if out.steps else 0,
        cross_attention_layers=layers.cross_recorded,
        self_attention_layers=tuple(sorted(layers.decoder)),
        prefix=prefix,
        align_layer=layers.align or 0,
    )
    readable = [markup.text_of(text) if fmt == "html" else text for text in texts]
    return Job(
        loaded=loaded, source_ids=sources.ids, source_texts=sources.texts, options=options,
        constraints=sources.constraints,
        auto_length=d.max_new_tokens is None, output=out, layouts=layouts,
        language_notes=[language_notes(text, declared=req.source, source=source) for text in readable],
        cross_layers=layers.cross, encoder_layers=layers.encoder, decoder_layers=layers.decoder,
        align_layer=layers.align,
        record={"model": loaded.name, "direction": f"{source}-{req.target}", "items": len(texts),
                "tokens_in": sum(map(len, sources.ids))},
    )


def resolve_source(declared: str, target: str) -> str:
    """The language translated from: with two languages, `auto` can only mean the one that is not the target."""
    return next(code for code in sorted(LANGUAGES) if code != target) if declared == AUTO else declared


def choose_model(models: dict[str, LoadedModel], *, name: str | None, source: str, target: str) -> LoadedModel:
    """The model named, checked to translate the direction; or the first loaded one that does."""
    direction = (source, target)
    if name is not None:
        loaded = models.get(name)
        if loaded is None:
            raise InputError(("model",), f"no model named {name!r}; GET /models lists them", "value_error")
        if direction not in loaded.directions:
            raise InputError(("model",), f"model {name!r} does not translate {source} to {target}", "value_error")
        return loaded
    for loaded in models.values():
        if direction in loaded.directions:
            return loaded
    raise InputError(("target",), f"no loaded model translates {source} to {target}", "value_error")


def glossary_terms(req: TranslateRequest | StreamRequest, source: str, glossaries: Glossaries) -> list[glossary.Term]:
    """The request's glossary: the named one's terms, then its own (which win on the same source term)."""
    terms: dict[str, glossary.Term] = {}
    if req.glossary_name is not None:
        named = glossaries.get((req.glossary_name, source, req.target))
        if named is None:
            names = sorted({f"{n} ({s}-{t})" for n, s, t in glossaries}) or ["none"]
            raise InputError(("glossary_name",), f"no glossary {req.glossary_name!r} for {source}-{req.target}; "
                             f"loaded: {', '.join(names)} (GET /glossaries)", "value_error")
        terms.update((t.source.lower(), t) for t in named.terms)
    terms.update((t.source.lower(), glossary.Term(t.source, t.target)) for t in req.glossary or [])
    return [replace(t, accents=req.glossary_match_accents) for t in terms.values()]


def language_notes(text: str, *, declared: str, source: str) -> dict:
    """`detected_language` when the source was `auto`, and a warning when the text is clearly not in `source`."""
    notes: dict = {}
    if declared == AUTO:
        language, confidence = langid.detect(text)
        notes["detected_language"] = {"language": language or source, "confidence": confidence}
    if other := langid.clearly_not(text, source):
        language, confidence = other
        notes["warnings"] = [f"the text looks {LANGUAGES[language]} ({confidence:.0f}% sure), not "
                             f"{LANGUAGES[source]}; it was translated as {LANGUAGES[source]} anyway"]
    return notes


def source_token_limit(settings: Settings, loaded: LoadedModel) -> tuple[int, str]:
    """The most source tokens a text may have, and the setting (or model bound) that says so."""
    return _tighter(settings.max_source_tokens, "MAX_SOURCE_TOKENS", loaded.config.max_len)


@dataclass(kw_only=True)
class _Sources:
    """Encodes a request's texts one by one, collecting every source to decode and the text it encodes."""

    loaded: LoadedModel
    target: str
    fmt: str  # "text" or "html"
    split: bool  # whether a text with several sentences is decoded sentence by sentence
    terms: list[glossary.Term]
    conventions: tuple[str, str] | None  # (source, target): numbers, dates and times localised
    max_chars: int
    token_limit: tuple[int, str]
    ids: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    constraints: list[tuple[Constraint, ...]] = field(default_factory=list)  # per source: its glossary terms

    def add(self, text: str, loc: tuple) -> Layout | None:
        """Encode the text as one source, or as one per sentence or line; its layout, None when whole.

        The model learned from sentences and short paragraphs; a page of text decoded as one sequence
        drifts and loops, so a text with several sentences is decoded piece by piece, in one batch.
        Markup and protected spans are taken out first (model/text/compose.py), and put back after.
        """
        _at_most(len(text), self.max_chars, "MAX_CHARS", loc, "length in characters")
        try:
            plan = compose.plan(text, self.fmt, self.terms, _rare_word(self.loaded), self.split, self.conventions)
        except MarkupError as e:
            raise InputError(loc, f"malformed HTML: {e}", "value_error") from None
        if not plan.units:  # HTML with no letters in its text: nothing to decode, it comes back as written
            return Layout(plan, [])
        unit = plan.units[0]
        # A stream or prefix must decode something; otherwise a text with nothing to translate is not decoded.
        if (not self.split and unit.empty) or (not plan.split and not unit.needs_alignment and unit.source == text):
            self._encode(text, loc)  # nothing to take out: decoded as given
            return None
        return Layout(plan, [None if unit.empty else self._encode(unit.source, loc, unit.term_spans())
                             for unit in plan.units])

    def _encode(self, text: str, loc: tuple, terms: list[tuple[int, int, str]] = ()) -> int:
        """Encode one source to decode, with its glossary terms (by character offsets); its index in `ids`."""
        ids = self.loaded.tokenizer.encode_source(text, self.target)
        _at_most(len(ids), *self.token_limit, loc, "length in tokens")
        self.ids.append(ids)
        self.texts.append(text)
        self.constraints.append(constraints.for_terms(self.loaded.tokenizer, text, list(terms)))
        return len(self.ids) - 1


@dataclass(kw_only=True)
class _Layers:
    """The attention layers a request reports, non-negative and in the order asked, and the one
    the word alignment is read from (None when no text needs it)."""

    cross: list[int]
    encoder: list[int]
    decoder: list[int]
    align: int | None

    @classmethod
    def asked(cls, out: Output, loaded: LoadedModel, layouts: list[Layout | None]) -> _Layers:
        needs_links = out.alignment or any(layout and any(u.needs_alignment for u in layout.plan.units)
                                           for layout in layouts)
        return cls(
            cross=_attention_layers(out, "cross", loaded), encoder=_attention_layers(out, "encoder", loaded),
            decoder=_attention_layers(out, "decoder", loaded),
            align=align.BEST.layer % loaded.config.decoder_layers if needs_links else None,
        )

    @property
    def cross_recorded(self) -> tuple[int, ...]:
        """Cross-attention layers decoding records: those reported, and the alignment's."""
        return tuple(sorted(set(self.cross) | ({self.align} - {None})))


def _attention_layers(out: Output, kind: str, loaded: LoadedModel) -> list[int]:
    """Layers of one attention kind to report, non-negative and in the order asked; none if not asked for."""
    if out.attention == "none" or kind not in out.attention_kinds:
        return []
    field_name, stack = ATTENTION_KINDS[kind]
    n_layers = loaded.config.encoder_layers if stack == "encoder" else loaded.config.decoder_layers
    layers: list[int] = []
    for i in getattr(out, field_name) or [-1]:
        if not -n_layers <= i < n_layers:
            raise InputError(
                ("output", field_name),
                f"layer {i} does not exist: the model has {n_layers} {stack} layers "
                f"(0 to {n_layers - 1}, or -{n_layers} to -1)",
            )
        if i % n_layers not in layers:
            layers.append(i % n_layers)
    return layers


def _max_new_tokens(settings: Settings, loaded: LoadedModel, asked: int | None) -> int:
    """The number asked for, checked, or when none was, the most the default may grow to."""
    # The decoder's positions are <s> plus the generated tokens, all within max_len.
    limit, setting = _tighter(settings.max_new_tokens, "MAX_NEW_TOKENS", loaded.config.max_len - 1)
    if asked is None:
        return limit
    _at_most(asked, limit, setting, ("decoding", "max_new_tokens"), "max_new_tokens")
    return asked


def _prefix(settings: Settings, loaded: LoadedModel, text: str | None, max_new_tokens: int) -> tuple[int, ...]:
    """The ids decoding is forced through: the prefix's tokens, without the </s> that would end it."""
    if text is None:
        return ()
    _at_most(len(text), settings.max_chars, "MAX_CHARS", ("decoding", "prefix"), "length in characters")
    ids = tuple(loaded.tokenizer.encode_target(text)[:-1])
    if not ids:
        raise InputError(("decoding", "prefix"), "the prefix has no tokens; leave it out or give it some text")
    # The forced tokens and at least one free one must fit in max_new_tokens.
    _at_most(len(ids) + 1, max_new_tokens, "max_new_tokens", ("decoding", "prefix"), "prefix length in tokens + 1")
    return ids


def _rare_word(loaded: LoadedModel) -> Callable[[str], bool]:
    """A word the tokenizer cuts into pieces: one the model saw too rarely to know (protect.py, names)."""
    encode = loaded.tokenizer.tok.encode
    return lambda word: len(encode(word, add_special_tokens=False).ids) > 1


def _at_most(value: int, limit: int, setting: str, loc: tuple, what: str) -> None:
    if value > limit:
        raise InputError(loc, f"{what} is {value}, over the limit of {limit} ({setting})")


def _tighter(setting_value: int, setting: str, model_value: int) -> tuple[int, str]:
    """The lower of a setting and the model's own bound, named so the message blames the right one."""
    return (setting_value, setting) if setting_value <= model_value else (model_value, "the model's max_len")
