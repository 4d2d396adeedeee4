"""Bad input gets a 4xx a person understands, naming the broken limit; odd but valid text translates;
an overloaded server refuses with 429/503 and Retry-After instead of queueing without bound."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.app_fixtures import (  # noqa: F401 (fixtures)
    PAIRS,
    anyio_backend,
    check_translation,
    one_torch_thread,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

SENTENCE = PAIRS[0][0]
GOOD = {"text": SENTENCE, "source": "es", "target": "en"}


def merged(**changes) -> dict:
    body = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = body
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return body


# (case, body: dict for JSON or (bytes, content type), status, words the message must contain)
BAD_INPUT = [
    ("empty text", merged(text=""), 422, "empty"),
    ("whitespace only", merged(text=" \n\t "), 422, "whitespace"),
    ("text over the limit", merged(text="a" * 2001), 422, "MAX_CHARS"),
    ("33 items", merged(text=[SENTENCE] * 33), 422, "MAX_ITEMS"),
    ("empty list", merged(text=[]), 422, "at least one"),
    ("blank item in a list", merged(text=[SENTENCE, "  "]), 422, "item 1"),
    ("unknown language", merged(source="fr"), 422, "unknown language 'fr'"),
    ("same source and target", merged(target="es"), 422, "both 'es'"),
    ("missing target", {"text": SENTENCE, "source": "es"}, 422, "required"),
    ("text is a number", merged(text=42), 422, "must be a string or a list"),
    ("list of numbers", merged(text=[1, 2]), 422, "not a string"),
    ("beam_size is a word", merged(decoding__beam_size="four"), 422, "valid integer"),
    ("decoding is a string", merged(decoding="beam"), 422, "dictionary"),
    ("unknown strategy", merged(decoding__strategy="sampling"), 422, "'greedy' or 'beam'"),
    ("misspelled option", merged(decoding__beam=4), 422, "unknown field"),
    ("beam_size 0", merged(decoding__beam_size=0), 422, "greater than or equal to 1"),
    ("beam_size 1000", merged(decoding__beam_size=1000), 422, "MAX_BEAM_SIZE"),
    ("top_k over the limit", merged(output__top_k=11), 422, "MAX_TOP_K"),
    ("max_new_tokens over the limit", merged(decoding__max_new_tokens=100_000), 422, "max_new_tokens"),
    ("alternatives with greedy", merged(decoding__strategy="greedy", decoding__alternatives=1), 422, "beam"),
    ("alternatives not below beam_size", merged(decoding__alternatives=4), 422, "below beam_size"),
    ("attention layer out of range", merged(output__attention_layers=[5]), 422, "does not exist"),
    ("unknown attention", merged(output__attention="all"), 422, "'none', 'mean' or 'heads'"),
    ("unknown model", merged(model="gpt"), 422, "no model named 'gpt'"),
    ("non-JSON body", (b"translate this please", "application/json"), 422, "not valid JSON"),
    ("JSON that is not an object", (b'["hola"]', "application/json"), 422, "JSON object"),
    ("form instead of JSON", (b"text=hola&source=es&target=en", "application/x-www-form-urlencoded"), 422,
     "JSON object"),
    ("invalid UTF-8 bytes", (b'{"text": "caf\xe9 \xff", "source": "es", "target": "en"}', "application/json"), 400,
     "UTF-8"),
    ("unpaired surrogate escape", (b'{"text": "a\\ud800b", "source": "es", "target": "en"}', "application/json"),
     422, "surrogate"),
    ("1 MB body", merged(text="a" * 1_000_000), 413, "MAX_BODY_BYTES"),
]


@pytest.fixture(scope="module")
async def client(tiny_weights):
    async with serving(tiny_weights) as client:
        yield client


def _flatten(detail) -> str:
    if isinstance(detail, str):
        return detail
    return " | ".join(".".join(map(str, d["loc"])) + ": " + d["msg"] for d in detail)


@pytest.mark.parametrize("case,body,status,words", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
async def test_bad_input_gets_a_clear_4xx(client, case, body, status, words):
    if isinstance(body, dict):
        response = await client.post("/translate", json=body)
    else:
        content, content_type = body
        response = await client.post("/translate", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    message = _flatten(response.json()["detail"])
    assert words.lower() in message.lower(), message
    assert "Traceback" not in response.text and ".py" not in response.text and "/work" not in response.text
    if status == 422 and isinstance(response.json()["detail"], list):
        assert all(set(d) == {"loc", "msg", "type"} for d in response.json()["detail"])  # no echoed input


async def test_messages_name_the_field_and_the_limit(client):
    response = await client.post("/translate", json=merged(decoding__beam_size=1000))
    assert response.json()["detail"] == [{
        "loc": ["body", "decoding", "beam_size"], "msg": "beam_size is 1000, over the limit of 8 (MAX_BEAM_SIZE)",
        "type": "limit",
    }]
    response = await client.post("/translate", json=merged(text=[SENTENCE, "b" * 2001]))
    assert response.json()["detail"][0]["loc"] == ["body", "text", 1]
    assert response.json()["detail"][0]["msg"] == "length in characters is 2001, over the limit of 2000 (MAX_CHARS)"


async def test_the_stream_route_refuses_bad_input_with_a_status_not_an_event(client):
    for body in (merged(text=""), merged(text=[SENTENCE, SENTENCE]), merged(decoding__beam_size=1000)):
        response = await client.post("/translate/stream", json=body)
        assert response.status_code == 422 and "detail" in response.json()


ODD_BUT_VALID = [
    "¡Hola! 😀🐱 El gato come pescado.",
    "¿Qué tal, señor Muñoz? Ñandú, pingüino, acción.",
    "El gato\x00come\x07 pescado\u200b.\r\n",
    "El gato Кошка 猫 ネコ قطة come pescado.",
    "e\u0301 combining accent, NFC or not",
    "\U0001f9d1\u200d\U0001f52c",
    "x",
]


async def test_emoji_accents_control_and_mixed_script_translate(client):
    for strategy in ("greedy", "beam"):
        response = await client.post("/translate", json=merged(text=ODD_BUT_VALID, decoding__strategy=strategy))
        assert response.status_code == 200, response.text
        for t in response.json()["translations"]:
            check_translation(t, greedy=strategy == "greedy")
    source_tokens = response.json()["translations"][0]["source_tokens"]
    assert "<unk>" not in source_tokens and any(t.startswith("<0x") for t in source_tokens)  # byte fallback


async def test_a_source_over_the_token_limit_is_refused(tiny_weights):
    async with serving(tiny_weights, max_source_tokens=6) as client:
        response = await client.post("/translate", json=merged(text="El perro duerme en casa hoy."))
    assert response.status_code == 422 and "MAX_SOURCE_TOKENS" in response.text


async def test_a_full_queue_answers_429_with_retry_after(tiny_weights):
    async with serving(tiny_weights, max_queue=2, batch_window_ms=300, batch_quiet_ms=300) as client:
        waiting = asyncio.create_task(client.post("/translate", json=merged(text=[SENTENCE, SENTENCE])))
        await asyncio.sleep(0.1)  # the first request now holds both places, waiting for its batch
        refused = await client.post("/translate", json=GOOD)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "MAX_QUEUE" in refused.json()["detail"]
        assert (await waiting).status_code == 200
        assert (await client.post("/translate", json=GOOD)).status_code == 200  # places were given back


async def test_a_long_document_is_translated_on_an_idle_server_and_refused_only_when_busy(tiny_weights):
    page = "Hola. " * 333  # 1,998 characters, 333 sentences: more than the whole queue holds
    async with serving(tiny_weights, max_queue=256) as client:
        response = await client.post("/translate", json=merged(text=page, output={"steps": False, "attention": "none"}))
        assert response.status_code == 200, response.text
        (t,) = response.json()["translations"]
        assert len(t["segments"]) == 333 and client.app.state.translator.decoder.admission.used == 0
    async with serving(tiny_weights, max_queue=4, batch_window_ms=300, batch_quiet_ms=300) as client:
        waiting = asyncio.create_task(client.post("/translate", json=merged(text=SENTENCE)))
        await asyncio.sleep(0.1)  # one place taken: the document no longer fits, and must be retried
        refused = await client.post("/translate", json=merged(text="Hola. " * 10))
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert (await waiting).status_code == 200


async def test_a_timeout_answers_503_and_frees_its_place(tiny_weights):
    async with serving(tiny_weights, request_timeout_s=0.05, batch_window_ms=2000, batch_quiet_ms=2000) as client:
        response = await client.post("/translate", json=GOOD)
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert "REQUEST_TIMEOUT_S" in response.json()["detail"]
        translator = client.app.state.translator
        assert translator.decoder.batcher.waiting == [] and translator.decoder.admission.used == 0
        metrics = (await client.get("/metrics")).text
        assert 'translate_rejected_total{reason="timeout"} 1.0' in metrics


async def test_unknown_routes_and_methods_are_plain_4xx(client):
    assert (await client.get("/nope")).status_code == 404
    assert (await client.get("/translate")).status_code == 405
