"""The OpenAPI document: FastAPI's, completed with what the routes' own declarations cannot say.

- The answers the middleware gives on any route: 400 and 413 for a body, 401 without a valid key
  (with API_KEYS), 429 past the rate limit (with RATE_LIMIT_PER_MINUTE).
- Errors are JSON on every route, the event stream's included, and 429/503 carry Retry-After.
- The limits of this server's settings (MAX_CHARS, MAX_ITEMS, MAX_BEAM_SIZE, ...) and the known
  languages, as JSON Schema bounds: the translator checks them, not the pydantic models, so that a
  setting changes them without a code change; here /docs and generated clients get to see them.
"""

from __future__ import annotations

import copy

from fastapi import FastAPI

from app.middleware import is_open
from app.settings import Settings
from model.tokenizer import LANGUAGES

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}


def document(app: FastAPI, settings: Settings) -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    # FastAPI's own document, copied: routes may declare schema dicts at module level (LibreTranslate's
    # body), and the bounds below must not leak into another app built in the same process.
    schema = copy.deepcopy(FastAPI.openapi(app))
    keys = bool(settings.api_key_list)
    added = {
        400: ("The body is not valid UTF-8.", lambda op: "requestBody" in op),
        413: ("The body is over MAX_BODY_BYTES.", lambda op: "requestBody" in op),
        401: ("No API key, or one that is not valid (API_KEYS).", lambda op: keys),
        429: ("Over the rate limit (RATE_LIMIT_PER_MINUTE); retry after `Retry-After` seconds.",
              lambda op: bool(settings.rate_limit_per_minute)),
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, (meaning, applies) in added.items():
                if not is_open(path) and applies(operation) and str(code) not in responses:
                    responses[str(code)] = {"description": meaning, "content": ERROR}
            for code, response in responses.items():
                content = response.get("content", {})
                if code >= "400" and content and "application/json" not in content:
                    # FastAPI files an error's model under the route's media type (text/event-stream
                    # for the stream), but app.errors answers every error in JSON.
                    response["content"] = {"application/json": next(iter(content.values()))}
                if code in ("429", "503"):
                    response["headers"] = RETRY_AFTER
            if keys and not is_open(path):
                operation["security"] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    if keys:
        schema.setdefault("components", {})["securitySchemes"] = {
            "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "HTTPBearer": {"type": "http", "scheme": "bearer"},
        }
    _document_limits(schema, settings)
    app.openapi_schema = schema
    return schema


def _document_limits(schema: dict, s: Settings) -> None:
    text = {"minLength": 1, "maxLength": s.max_chars}
    texts = {"string": text, "array": {"minItems": 1, "maxItems": s.max_items, "items": {"type": "string", **text}}}
    languages = sorted(LANGUAGES)
    bounds = {
        "Decoding": {"beam_size": {"integer": {"maximum": s.max_beam_size}},
                     "max_new_tokens": {"integer": {"maximum": s.max_new_tokens}},
                     "alternatives": {"integer": {"maximum": s.max_beam_size - 1}}},
        "Output": {"top_k": {"integer": {"maximum": s.max_top_k}}},
        "TranslateRequest": {"text": texts},
        "StreamRequest": {"text": {"string": text}},
    }
    for name in ("TranslateRequest", "StreamRequest"):
        bounds[name] |= {"source": {"string": {"enum": languages}}, "target": {"string": {"enum": languages}}}
    components = schema.get("components", {}).get("schemas", {})
    for name, fields in bounds.items():
        _bound(components.get(name, {}), fields)
    # LibreTranslate's body is declared inline, once per media type.
    libretranslate = {"q": texts, "source": {"string": {"enum": [*languages, "auto"]}},
                      "target": {"string": {"enum": languages}},
                      "alternatives": {"integer": {"maximum": s.max_beam_size - 1}}}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if media.get("schema", {}).get("title") == "LibreTranslateRequest":
                    _bound(media["schema"], libretranslate)


def _bound(model: dict, fields: dict[str, dict[str, dict]]) -> None:
    """Add `fields[name][json type]` to each branch of that type of the model's property `name`."""
    for name, by_type in fields.items():
        prop = model.get("properties", {}).get(name)
        for branch in (prop.get("anyOf", [prop]) if prop else []):
            branch.update(by_type.get(branch.get("type"), {}))
