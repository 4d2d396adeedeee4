"""Request and response bodies of every route (docs/api.md), with the descriptions /docs shows.

The schemas check shape and the rules that never change (types, known languages, blank text);
limits that come from settings (MAX_CHARS, MAX_BEAM_SIZE, ...) are checked by the translator,
so changing an environment variable needs no code change.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.tokenizer import LANGUAGES

KNOWN = ", ".join(f"{code} ({name})" for code, name in sorted(LANGUAGES.items()))
EXAMPLE_SENTENCE = "El gato come pescado."


def check_language(code: str) -> str:
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {code!r}; the languages are {KNOWN}")
    return code


def check_source(code: str) -> str:
    return code if code == "auto" else check_language(code)


def two_languages(request):
    if request.source == request.target:
        raise ValueError(f"source and target are both {request.source!r}; pick two different languages")
    return request


def json_type(value) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_texts(value, allow_list: bool):
    """Reject a missing, blank or wrongly typed text with one message that names the culprit."""
    if isinstance(value, str):
        _check_text(value, "the text")
        return value
    if not allow_list or not isinstance(value, list):
        raise ValueError("must be a string" + (" or a list of strings" if allow_list else ""))
    if not value:
        raise ValueError("the list of texts is empty; send at least one text")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"item {i} is not a string (it is {json_type(item)})")
        _check_text(item, f"item {i}")
    return value


def _check_text(text: str, name: str) -> None:
    if not text.strip():
        raise ValueError(f"{name} is empty or only whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON allows "\ud800"; no text can hold it
        raise ValueError(f"{name} holds an unpaired surrogate escape (\\u{ord(text[e.start]):04x}) at "
                         f"character {e.start}") from None


class Decoding(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: Literal["greedy", "beam"] = Field(
        "beam", description="`greedy` takes the most probable token at each step; `beam` keeps `beam_size` hypotheses.",
        examples=["beam"],
    )
    beam_size: int = Field(4, ge=1, description="Hypotheses kept by beam search (at most MAX_BEAM_SIZE).", examples=[4])
    max_new_tokens: int | None = Field(
        None, ge=1, description="Generated tokens, `</s>` included, before the output is cut "
        "(`finish_reason: length`); at most MAX_NEW_TOKENS. Default: twice the source length plus 10, "
        "as in the model's evaluation (in beam search over texts batched together, of the longest).",
        examples=[128],
    )
    length_penalty: float = Field(
        1.0, ge=0.0, le=2.0, description="Hypotheses are ranked by sum(log p) / length ** length_penalty.",
        examples=[1.0],
    )
    alternatives: int = Field(
        0, ge=0, description="Extra n-best translations to return (beam search, fewer than `beam_size`).", examples=[0]
    )
    prefix: str | None = Field(
        None, min_length=1, description="A target-language text the translation must start with (interactive "
        "translation: a translator fixes the start, the model completes it). Decoding is forced through its "
        "tokens, whose steps carry the model's own probability and `forced: true`, then goes on freely. A text "
        "with a prefix is decoded whole, not sentence by sentence.", examples=[None],
    )

    @model_validator(mode="after")
    def _alternatives_come_from_the_beam(self) -> Decoding:
        if self.alternatives and self.strategy != "beam":
            raise ValueError("alternatives need strategy 'beam'")
        if self.strategy == "beam" and self.alternatives >= self.beam_size:
            raise ValueError(
                f"alternatives ({self.alternatives}) must be below beam_size ({self.beam_size}): "
                "they are the runners-up of the beam"
            )
        return self


class Output(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: bool = Field(True, description="List every generated token with its probability and top-k.", examples=[True])
    top_k: int = Field(3, ge=0, description="Most probable tokens listed per step (at most MAX_TOP_K).", examples=[3])
    attention: Literal["none", "mean", "heads"] = Field(
        "mean", description="Cross-attention to return: `mean` over heads, every head (`heads`), or `none`.",
        examples=["mean"],
    )
    attention_layers: list[int] | None = Field(
        None, min_length=1, description="Decoder layers whose cross-attention is returned; negative indices count "
        "from the last (-1 is the last layer). Default: the last layer.", examples=[[-1]],
    )
    attention_kinds: list[Literal["cross", "encoder", "decoder"]] = Field(
        default_factory=lambda: ["cross"], min_length=1,
        description="Which of the Transformer's three attentions to return, each reduced as `attention` says: "
        "`cross` (decoder to source, in `attention`), `encoder` (the encoder's self-attention over the source, "
        "in `encoder_attention`), `decoder` (the decoder's masked self-attention over its own inputs, in "
        "`decoder_attention`).", examples=[["cross", "encoder", "decoder"]],
    )
    encoder_attention_layers: list[int] | None = Field(
        None, min_length=1, description="Encoder layers for `encoder` attention, like attention_layers. "
        "Default: the last.", examples=[[-1]],
    )
    decoder_attention_layers: list[int] | None = Field(
        None, min_length=1, description="Decoder layers for `decoder` attention, like attention_layers. "
        "Default: the last.", examples=[[-1]],
    )

    alignment: bool = Field(
        False, description="Add `alignment`: links from the words of the model's output to the words of its "
        "input, read from the model's own cross-attention (`rule` says which layer, heads and step).",
        examples=[False],
    )

    @field_validator("attention_kinds")
    @classmethod
    def _kinds_once(cls, kinds: list[str]) -> list[str]:
        if len(set(kinds)) < len(kinds):
            raise ValueError("each attention kind may be listed once")
        return kinds


class GlossaryTerm(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    source: str = Field(min_length=1, max_length=200, description="A term of the source text (whole words, "
                        "any case).", examples=["Save as"])
    target: str = Field(min_length=1, max_length=200, description="How the translation must say it.",
                        examples=["Guardar como"])

    @field_validator("source", "target")
    @classmethod
    def _words(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a glossary term needs at least one non-space character")
        return value.strip()


class _TranslateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    source: str = Field(description=f"Language of the text: {KNOWN}, or `auto` to detect it (the answer then "
                        "reports `detected_language`).", examples=["es"])
    target: str = Field(description="Language to translate into.", examples=["en"])
    model: str | None = Field(
        None, description="Name of the model to use (see /models); default: the first that serves the direction.",
        examples=[None],
    )
    decoding: Decoding = Field(
        default_factory=Decoding, description="How to search for the translation.",
        examples=[{"strategy": "beam", "beam_size": 4}],
    )
    output: Output = Field(
        default_factory=Output, description="What to report besides the text.",
        examples=[{"steps": True, "top_k": 3, "attention": "mean"}],
    )

    glossary: list[GlossaryTerm] | None = Field(
        None, max_length=500, description="Terms the translation must use: each source term found in the text "
        "(whole words, any case) comes out as its target term, spelt exactly as given (a lower-case term "
        "opening a sentence may take a capital), forced while decoding where the model reaches the source term.",
        examples=[[{"source": "archivo", "target": "file"}]],
    )
    glossary_name: str | None = Field(
        None, description="A named glossary loaded at startup (GET /glossaries lists them) for this direction; "
        "combined with `glossary`, whose terms win.", examples=[None],
    )
    localize: bool = Field(
        True, description="Numbers, percentages, currencies, dates and times come out in the target "
        "language's conventions (CLDR): `3,5` ↔ `3.5`, `1.000.000` ↔ `1,000,000`, `5 de enero de 2024` ↔ "
        "`January 5, 2024`, `17:30` ↔ `5:30 PM`; those inside URLs, paths, placeholders, code and version "
        "strings never change. `false` copies them as written.", examples=[True],
    )
    glossary_match_accents: bool = Field(
        True, description="Whether a source term must carry the text's accents to match (`menú` matches `menu` "
        "only when false); case never matters for matching.", examples=[True],
    )

    _source = field_validator("source")(check_source)
    _target = field_validator("target")(check_language)
    _two_languages = model_validator(mode="after")(two_languages)


class TranslateRequest(_TranslateOptions):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": EXAMPLE_SENTENCE, "source": "es", "target": "en",
                    "decoding": {"strategy": "beam", "beam_size": 4, "max_new_tokens": 128, "length_penalty": 1.0,
                                 "alternatives": 1},
                    "output": {"steps": True, "top_k": 3, "attention": "mean", "attention_layers": None},
                }
            ]
        }
    )

    text: str | list[str] = Field(
        description="A text, or a list of 1 to MAX_ITEMS texts (answered in the same order); each at most "
        "MAX_CHARS characters.", examples=[EXAMPLE_SENTENCE],
    )
    format: Literal["text", "html"] = Field(
        "text", description="`text`: plain text, whose inline tags (`<b>…</b>`), placeholders (`%s`, `{name}`) "
        "and other protected spans come through in place; `html`: an HTML document or fragment, translated "
        "block by block with its elements, attributes and comments kept (script, style, code, pre, kbd and "
        "`translate=\"no\"`/`notranslate` content untouched; title, alt and placeholder translated). "
        "Malformed HTML is a 422 saying where.", examples=["text"],
    )
    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value):
        return check_texts(value, allow_list=True)


class StreamRequest(_TranslateOptions):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"text": EXAMPLE_SENTENCE, "source": "es", "target": "en",
                                         "decoding": {"strategy": "greedy"}}]}
    )

    text: str = Field(description="One text (at most MAX_CHARS characters).", examples=[EXAMPLE_SENTENCE])

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value):
        return check_texts(value, allow_list=False)


class TopToken(BaseModel):
    token: str = Field(description="Tokenizer piece; `▁` marks a preceding space.", examples=["▁The"])
    id: int = Field(description="Vocabulary id.", examples=[412])
    probability: float = Field(description="Model probability at this step.", examples=[0.93])


class StepOut(TopToken):
    top: list[TopToken] = Field(
        description="The `top_k` most probable tokens at this step, most probable first.",
        examples=[[{"token": "▁The", "id": 412, "probability": 0.93},
                   {"token": "▁A", "id": 97, "probability": 0.02}]],
    )
    forced: bool | None = Field(None, description="Present and true when the token came from decoding.prefix, "
                                "or from a glossary term (or localised number) forced while decoding.",
                                examples=[None])


class Attention(BaseModel):
    kind: Literal["cross", "encoder", "decoder"] = Field(
        "cross", description="`cross`: generated tokens (rows) over source tokens; `encoder`: source over source; "
        "`decoder`: each step's decoder input (`<s>`, then the tokens before it) over the decoder inputs so far, "
        "later positions exactly 0 (the causal mask).", examples=["cross"])
    layers: list[int] = Field(description="Layers returned, as non-negative indices.", examples=[[2]])
    reduction: Literal["mean", "heads"] = Field(description="How heads were combined.", examples=["mean"])
    weights: list = Field(
        description="`mean`: [layer][query][key]; `heads`: [layer][head][query][key]. Each row sums to 1.",
        examples=[[[[0.71, 0.08, 0.21]]]],
    )


class Alternative(BaseModel):
    text: str = Field(description="A runner-up translation.", examples=["The cat is eating fish."])
    score: float = Field(description="Its length-normalised log probability.", examples=[-0.9])


class _Decoded(BaseModel):
    """What a translation and each of its segments share."""


    text: str = Field(description="The translation.", examples=["The cat eats fish."])
    source_tokens: list[str] = Field(
        description="The encoder's input: target-language tag, the text's tokens, `</s>`.",
        examples=[["<2en>", "▁El", "▁gato", "▁come", "▁pescado", ".", "</s>"]],
    )
    tokens: list[str] = Field(
        description="Generated tokens; the last is `</s>` unless max_new_tokens cut the output.",
        examples=[["▁The", "▁cat", "▁eats", "▁fish", ".", "</s>"]],
    )
    score: float = Field(description="Length-normalised log probability of `tokens`.", examples=[-0.21])
    finish_reason: Literal["stop", "length"] = Field(
        description="`stop`: the model ended with `</s>`; `length`: max_new_tokens cut it.", examples=["stop"]
    )
    steps: list[StepOut] | None = Field(
        None, description="One entry per token (absent when output.steps is false).",
        examples=[[{"token": "▁The", "id": 412, "probability": 0.93,
                    "top": [{"token": "▁The", "id": 412, "probability": 0.93}]}]],
    )
    attention: Attention | None = Field(
        None, description="Cross-attention; absent when output.attention is `none` or attention_kinds leaves it out.",
        examples=[{"kind": "cross", "layers": [2], "reduction": "mean", "weights": [[[0.71, 0.08, 0.21]]]}],
    )
    encoder_attention: Attention | None = Field(
        None, description="With `encoder` in output.attention_kinds: [layer][(head)][source token][source token].",
        examples=[None],
    )
    decoder_attention: Attention | None = Field(
        None, description="With `decoder` in output.attention_kinds: [layer][(head)][i][j], a row per generated "
        "token i (its query is the decoder input at that step) and a column per decoder input j; j > i is 0.",
        examples=[None],
    )
    alternatives: list[Alternative] = Field(
        default_factory=list, description="decoding.alternatives runners-up, best first.",
        examples=[[{"text": "The cat is eating fish.", "score": -0.9}]],
    )
    alignment: Alignment | None = Field(
        None, description="With output.alignment: word links from the output to the input. A split text has one "
        "per segment, and at the top level their concatenation (indices count across segments).", examples=[None],
    )


class AlignmentLink(BaseModel):
    target: int = Field(description="Index in `target_words`.", examples=[0])
    source: int = Field(description="Index in `source_words`.", examples=[1])


class Alignment(BaseModel):
    source_words: list[str] = Field(description="Words of the model's input (markup and cut spans taken out).",
                                    examples=[["El", "gato", "come", "pescado"]])
    target_words: list[str] = Field(description="Words of the model's output, before markup was put back.",
                                    examples=[["The", "cat", "eats", "fish"]])
    links: list[AlignmentLink] = Field(description="Each target word's source word.",
                                       examples=[[{"target": 0, "source": 0}, {"target": 1, "source": 1}]])
    rule: dict = Field(description="The decoder layer, heads and step the links were read from.",
                       examples=[{"layer": 1, "heads": "all", "shift": 1}])


class DetectedLanguage(BaseModel):
    language: str = Field(description="Detected language code.", examples=["es"])
    confidence: float = Field(description="0 to 100.", examples=[90.0])


class Segment(_Decoded):
    """One sentence or line of a text that was split."""


class Translation(_Decoded):
    detected_language: DetectedLanguage | None = Field(
        None, description="Present when `source` was `auto`: the language the text reads as, and how sure "
        "(0 when nothing tells Spanish from English, e.g. a name alone).",
        examples=[{"language": "es", "confidence": 96.7}],
    )
    warnings: list[str] | None = Field(
        None, description="Present when something about the input deserves a look, e.g. a text that is clearly "
        "not in the declared source language (translated anyway), or control characters left out.", examples=[None],
    )
    segments: list[Segment] | None = Field(
        None,
        description="Present when the text held several sentences or lines: each was translated on its own "
        "(in one batch) and `text` rejoins them with the input's spacing and line breaks. Each segment obeys "
        "every invariant of a translation; the top-level tokens, steps and source_tokens are the segments' in "
        "order, and the top-level attention is block-diagonal over them.",
        examples=[None],
    )


class TranslateResponse(BaseModel):
    model: str = Field(description="Name of the model that translated.", examples=["es-en-tatoeba-small"])
    translations: list[Translation] = Field(
        description="One per text, in the request's order.",
        examples=[[{"text": "The cat eats fish.", "source_tokens": ["<2en>", "▁El", "▁gato", "</s>"],
                    "tokens": ["▁The", "▁cat", "</s>"], "score": -0.21, "finish_reason": "stop"}]],
    )


class Language(BaseModel):
    code: str = Field(description="Language code.", examples=["es"])
    name: str = Field(description="English name of the language.", examples=["Spanish"])
    targets: list[str] = Field(description="Codes this language translates into.", examples=[["en"]])


class Direction(BaseModel):
    source: str = Field(examples=["es"], description="Language translated from.")
    target: str = Field(examples=["en"], description="Language translated into.")


class ModelInfo(BaseModel):
    name: str = Field(description="Model name (the `model` field of requests).", examples=["es-en-tatoeba-small"])
    directions: list[Direction] = Field(
        description="Directions this model serves.", examples=[[{"source": "es", "target": "en"}]]
    )
    parameters: int = Field(description="Number of parameters.", examples=[31_000_000])
    device: str = Field(description="Where it runs.", examples=["cuda:0"])
    dtype: str = Field(description="Compute precision.", examples=["bfloat16"])
    quantization: Literal["none", "int8"] = Field(
        description="`int8`: linear layers hold int8 weights (the QUANTIZE setting).", examples=["int8"]
    )
    engine: Literal["c", "torch"] = Field(
        description="`c`: encoder passes and decoder steps run on model/engine/engine.c; `torch`: on PyTorch alone "
        "(the ENGINE setting, or no engine for this CPU).", examples=["c"]
    )
    weights_sha256: str = Field(description="sha256 of model.safetensors, checked at load.", examples=["39cf9a51…"])
    max_source_tokens: int = Field(description="Longest source accepted, in tokens.", examples=[256])
    config: dict = Field(description="Architecture (layers, heads, sizes).", examples=[{"decoder_layers": 3}])
    metrics: dict = Field(description="Evaluation figures from the model card.", examples=[{"test": {"bleu": 40.1}}])


class GlossaryInfo(BaseModel):
    name: str = Field(description="What `glossary_name` says to use it.", examples=["ui"])
    source: str = Field(description="Language of its source terms.", examples=["en"])
    target: str = Field(description="Language of its target terms.", examples=["es"])
    terms: int = Field(description="Number of terms.", examples=[12])


class Status(BaseModel):
    status: str = Field(description="`ok` (alive) or `ready` (models loaded and warmed up).", examples=["ready"])
    models: list[str] = Field(default_factory=list, description="Models being served.", examples=[["tiny"]])


class LibreTranslateRequest(BaseModel):
    """What LibreTranslate's clients send, as JSON or as a form."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"q": EXAMPLE_SENTENCE, "source": "es", "target": "en", "format": "text"}]},
    )

    q: str | list[str] = Field(description="A text or a list of texts.", examples=[EXAMPLE_SENTENCE])
    source: str = Field("auto", description=f"{KNOWN}, or `auto` to detect it.", examples=["es"])
    target: str = Field(description="Language to translate into.", examples=["en"])
    format: Literal["text", "html"] = Field("text", description="`text`, or `html` (markup kept, as for "
                                            "POST /translate with format html).", examples=["text"])
    alternatives: int = Field(0, ge=0, description="Extra translations to return per text.", examples=[0])
    api_key: str | None = Field(None, description="Checked like X-API-Key when API_KEYS is set; otherwise ignored.",
                                examples=[""])

    @field_validator("q", mode="before")
    @classmethod
    def _q(cls, value):
        return check_texts(value, allow_list=True)

    _source = field_validator("source")(check_source)
    _target = field_validator("target")(check_language)
    _two_languages = model_validator(mode="after")(two_languages)


class LibreTranslateDetectRequest(BaseModel):
    """What LibreTranslate's clients send to /detect."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"q": EXAMPLE_SENTENCE}]})

    q: str = Field(description="The text whose language to detect.", examples=[EXAMPLE_SENTENCE])
    api_key: str | None = Field(None, description="As for /translate.", examples=[""])

    @field_validator("q", mode="before")
    @classmethod
    def _q(cls, value):
        return check_texts(value, allow_list=False)


class LanguageRef(BaseModel):
    code: str = Field(description="Language code, or `auto`.", examples=["auto"])
    name: str = Field(description="Its English name.", examples=["Auto Detect"])


class FrontendDefaults(BaseModel):
    source: LanguageRef = Field(description="Preselected source language.",
                                examples=[{"code": "auto", "name": "Auto Detect"}])
    target: LanguageRef = Field(description="Preselected target language.",
                                examples=[{"code": "en", "name": "English"}])


class FrontendSettings(BaseModel):
    """LibreTranslate's /frontend/settings, with this server's limits."""

    charLimit: int = Field(description="Characters per text (MAX_CHARS).", examples=[2000])
    frontendTimeout: int = Field(description="Milliseconds a request may take (REQUEST_TIMEOUT_S).", examples=[30000])
    apiKeys: bool = Field(description="Whether API keys are in use (API_KEYS).", examples=[False])
    keyRequired: bool = Field(description="Whether a key is required.", examples=[False])
    suggestions: bool = Field(description="Always false: suggestions are not collected.", examples=[False])
    filesTranslation: bool = Field(description="Always true: /translate_file translates documents.", examples=[True])
    supportedFilesFormat: list[str] = Field(description="The file formats /translate_file takes.",
                                            examples=[[".docx", ".odt", ".txt"]])
    language: FrontendDefaults = Field(description="The page's preselected languages.", examples=[
        {"source": {"code": "auto", "name": "Auto Detect"}, "target": {"code": "en", "name": "English"}}])


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str] = Field(
        description="Translation(s), shaped like `q`.", examples=["The cat eats fish."]
    )
    alternatives: list[str] | list[list[str]] | None = Field(
        None, description="Present when alternatives were asked for.", examples=[["The cat is eating fish."]]
    )
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = Field(
        None, description="Present when source was `auto`.", examples=[{"language": "es", "confidence": 90.0}]
    )


class ErrorMessage(BaseModel):
    detail: str | list[dict] = Field(
        description="What went wrong: a sentence, or for 422 a list of {loc, msg, type}.",
        examples=["the body is over the limit of 524288 bytes (MAX_BODY_BYTES)"],
    )


# --- documents -------------------------------------------------------------------------------


class DocumentOptions(BaseModel):
    """How a document is translated: the form fields the document routes take besides `file`."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description=f"Language of the document: {KNOWN}, or `auto` to detect it.", examples=["es"])
    target: str = Field(description="Language to translate into.", examples=["en"])
    strategy: Literal["greedy", "beam"] = Field("greedy", description="As `decoding.strategy` of /translate.",
                                                examples=["greedy"])
    beam_size: int = Field(4, ge=1, description="As `decoding.beam_size` (beam search only; MAX_BEAM_SIZE).",
                           examples=[4])
    glossary_name: str | None = Field(None, description="A named glossary (GET /glossaries), as on /translate.",
                                      examples=[None])

    _source = field_validator("source")(check_source)
    _target = field_validator("target")(check_language)
    _two_languages = model_validator(mode="after")(two_languages)


class DocumentJob(BaseModel):
    """A document job's state, as GET /documents/jobs/{id} and its events give it."""

    id: str = Field(description="The job's id.", examples=["3f2a9c0d4b5e6f708192a3b4c5d6e7f8"])
    filename: str = Field(description="The uploaded file's name.", examples=["report.docx"])
    status: Literal["queued", "running", "done", "failed", "cancelled"] = Field(
        description="`done`: the result can be downloaded.", examples=["running"])
    segments_done: int = Field(description="Segments translated so far.", examples=[120])
    segments_total: int = Field(description="Segments the document has.", examples=[340])
    eta_s: float | None = Field(description="Seconds left, from the pace so far (null until measured).",
                                examples=[42.5])
    error: str | None = Field(None, description="Why the job failed.", examples=[None])
    untranslated: int | None = Field(None, description="Once done: segments left as they were, over MAX_CHARS or "
                                     "the token limit.", examples=[0])
    result_url: str | None = Field(None, description="Where to download the result, once done.",
                                   examples=["/documents/jobs/3f2a9c0d4b5e6f708192a3b4c5d6e7f8/result"])


class TranslatedFile(BaseModel):
    """LibreTranslate's answer to /translate_file."""

    translatedFileUrl: str = Field(description="The URL to fetch the translated file from, as given.",
                                   examples=["http://localhost:8000/compat/libretranslate/download_file/3f2a.a.docx"])
