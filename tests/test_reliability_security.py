"""Refusing what is unsafe: optional API keys, per-client rate limits, CORS only for the configured
origins, the body cap before any parsing, and error bodies that never show a stack trace or a path
on the server."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from app.middleware import TokenBuckets
from model.search.greedy import GreedySearch
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    PAIRS,
    anyio_backend,
    one_torch_thread,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

SENTENCE, TRANSLATION = PAIRS[0]
GOOD = {"text": SENTENCE, "source": "es", "target": "en", "decoding": {"strategy": "greedy"}}
KEYS = "first-key-0123, second-key-4567"
OPEN_ROUTES = ["/health", "/ready", "/metrics", "/openapi.json", "/docs", "/"]


# --- API keys --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def keyed(tiny_weights):
    async with serving(tiny_weights, api_keys=KEYS) as client:
        yield client


async def test_without_a_valid_key_translation_routes_answer_401(keyed):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"},
                    {"X-API-Key": "first-key-012"}, {"X-API-Key": "first-key-0123, second-key-4567"}):
        for method, path, body in (("POST", "/translate", GOOD), ("POST", "/translate/stream", GOOD),
                                   ("GET", "/languages", None), ("GET", "/models", None),
                                   ("POST", "/compat/libretranslate/translate", {"q": SENTENCE, "target": "en"})):
            response = await keyed.request(method, path, json=body, headers=headers)
            # LibreTranslate refuses a key with 403, and its clients expect that code.
            expected = 403 if path.startswith("/compat/") else 401
            assert response.status_code == expected, (headers, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer" and "API key" in response.json()["detail"]


async def test_a_valid_key_in_either_header_is_let_through(keyed):
    for headers in ({"X-API-Key": "first-key-0123"}, {"Authorization": "Bearer second-key-4567"},
                    {"authorization": "bearer first-key-0123"}):
        response = await keyed.post("/translate", json=GOOD, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["translations"][0]["text"] == TRANSLATION


async def test_libretranslate_clients_may_send_the_key_in_the_body_or_the_query(keyed):
    path = "/compat/libretranslate/translate"
    as_json = await keyed.post(path, json={"q": SENTENCE, "source": "es", "target": "en", "api_key": "first-key-0123"})
    as_form = await keyed.post(path, data={"q": SENTENCE, "source": "es", "target": "en",
                                           "api_key": "second-key-4567"})
    assert as_json.status_code == as_form.status_code == 200, (as_json.text, as_form.text)
    assert as_json.json()["translatedText"] == as_form.json()["translatedText"] == TRANSLATION
    languages = await keyed.get("/compat/libretranslate/languages", params={"api_key": "first-key-0123"})
    assert languages.status_code == 200
    wrong = await keyed.post(path, json={"q": SENTENCE, "target": "en", "api_key": "nope"})
    assert wrong.status_code == 403 and "error" in wrong.json()  # LibreTranslate's clients read `error`
    assert (await keyed.get("/translate", params={"api_key": "first-key-0123"})).status_code == 401


async def test_probes_metrics_docs_and_the_viewer_need_no_key(keyed):
    for path in OPEN_ROUTES:
        response = await keyed.get(path)
        assert response.status_code == 200, (path, response.text)
    schema = (await keyed.get("/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    assert "security" in schema["paths"]["/translate"]["post"] and "security" not in schema["paths"]["/ready"]["get"]
    assert "401" in schema["paths"]["/translate"]["post"]["responses"]


async def test_the_log_names_a_key_by_a_hash_never_by_itself(keyed, caplog):
    with caplog.at_level(logging.INFO, logger="app.access"):
        await keyed.post("/translate", json=GOOD, headers={"X-API-Key": "first-key-0123"})
        await keyed.post("/translate", json=GOOD, headers={"X-API-Key": "leaked-wrong-key"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "app.access"]
    assert lines[0]["client"].startswith("key:") and lines[1]["status"] == 401
    assert "first-key-0123" not in caplog.text and "leaked-wrong-key" not in caplog.text


async def test_without_api_keys_no_key_is_needed(tiny_weights):
    async with serving(tiny_weights) as client:
        assert (await client.post("/translate", json=GOOD)).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert "securitySchemes" not in schema.get("components", {})
        assert "401" not in schema["paths"]["/translate"]["post"]["responses"]


# --- rate limits -----------------------------------------------------------------------------


def test_a_token_bucket_holds_a_minute_and_refills_steadily():
    now = [0.0]
    buckets = TokenBuckets(per_minute=6, clock=lambda: now[0])  # a token every 10 s, 6 at most
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # each client has its own bucket
    now[0] = 25.0
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(5.0)
    now[0] = 10_000.0
    assert [buckets.take("a") for _ in range(6)] == [0.0] * 6 and buckets.take("a") > 0  # never above capacity


def test_full_buckets_are_forgotten_when_too_many_clients_are_tracked():
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, clock=lambda: now[0])
    buckets.MAX_CLIENTS = 100
    for i in range(100):
        buckets.take(f"client-{i}")
    now[0] = 120.0  # every bucket has refilled: the same as never seen
    buckets.take("newcomer")
    assert list(buckets.buckets) == ["newcomer"]
    for i in range(100):  # all busy: the longest idle half goes
        now[0] += 0.001
        buckets.take(f"busy-{i}")
    assert len(buckets.buckets) == 50 and "busy-99" in buckets.buckets and "newcomer" not in buckets.buckets


async def test_past_the_rate_limit_each_key_gets_429_with_retry_after(tiny_weights):
    async with serving(tiny_weights, api_keys=KEYS, rate_limit_per_minute=3) as client:
        first, second = {"X-API-Key": "first-key-0123"}, {"X-API-Key": "second-key-4567"}
        assert [(await client.get("/languages", headers=first)).status_code for _ in range(3)] == [200] * 3
        refused = await client.post("/translate", json=GOOD, headers=first)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 20
        assert "RATE_LIMIT_PER_MINUTE" in refused.json()["detail"]
        assert (await client.get("/languages", headers=second)).status_code == 200  # another key, its own budget
        for path in OPEN_ROUTES:
            assert (await client.get(path)).status_code == 200
        schema = (await client.get("/openapi.json")).json()
        assert schema["paths"]["/languages"]["get"]["responses"]["429"]["headers"]["Retry-After"]
        metrics = (await client.get("/metrics")).text
        assert 'translate_rejected_total{reason="rate_limit"} 1.0' in metrics


async def test_without_keys_the_rate_limit_is_per_client_address(tiny_weights):
    async with serving(tiny_weights, rate_limit_per_minute=2) as client:
        statuses = [(await client.get("/languages")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await client.get("/ready")).status_code == 200


# --- CORS ------------------------------------------------------------------------------------


async def test_cors_answers_only_the_configured_origins(tiny_weights):
    allowed, other = "https://translate.example.org", "https://evil.example.com"
    async with serving(tiny_weights, cors_origins=f"{allowed}, https://other.example.org") as client:
        preflight = await client.options("/translate", headers={
            "Origin": allowed, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == allowed
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        response = await client.post("/translate", json=GOOD, headers={"Origin": allowed})
        assert response.headers["access-control-allow-origin"] == allowed
        assert "retry-after" in response.headers["access-control-expose-headers"].lower()
        denied = await client.options("/translate", headers={"Origin": other, "Access-Control-Request-Method": "POST"})
        assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
        assert "access-control-allow-origin" not in (await client.get("/health", headers={"Origin": other})).headers
        too_big = await client.post("/translate", content=b"x" * 600_000, headers={"Origin": allowed})
        assert too_big.status_code == 413 and too_big.headers["access-control-allow-origin"] == allowed


async def test_without_cors_origins_no_cors_headers_are_sent(tiny_weights):
    async with serving(tiny_weights) as client:
        response = await client.get("/health", headers={"Origin": "https://translate.example.org"})
        assert not any(name.startswith("access-control-") for name in response.headers)


# --- the body cap --------------------------------------------------------------------------------


async def test_a_streamed_body_without_content_length_is_capped_while_it_is_read(tiny_weights):
    read = []

    async def chunks():
        for _ in range(100):
            read.append(1)
            yield b"a" * 65536  # 6.4 MB offered, 512 KiB allowed

    async with serving(tiny_weights) as client:
        response = await client.post("/translate", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["detail"]
    assert len(read) <= 10, f"read {len(read)} chunks of 64 KiB to refuse a body over 512 KiB"


# --- error bodies ----------------------------------------------------------------------------


def assert_plain(response) -> None:
    """An error body a stranger may read: JSON with `detail`, no stack trace, no server path."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert "detail" in response.json()
    for leak in ("Traceback", "/work/", "/tmp/", ".py", "File \""):
        assert leak not in response.text, (leak, response.text)


async def test_error_bodies_show_no_stack_trace_and_no_path(tiny_weights):
    async with serving(tiny_weights, api_keys=KEYS, rate_limit_per_minute=1000) as client:
        key = {"X-API-Key": "first-key-0123"}
        translator = client.app.state.translator
        provoked = [
            await client.get("/no/such/route", headers=key),
            await client.delete("/translate", headers=key),
            await client.post("/translate", json=GOOD),
            await client.post("/translate", content=b"{not json", headers={**key, "content-type": "application/json"}),
            await client.post("/translate", content=b'{"text": "\xff"}', headers={**key,
                                                                                 "content-type": "application/json"}),
            await client.post("/translate", content=b"x" * 600_000, headers=key),
            await client.post("/translate", json={**GOOD, "decoding": {"beam_size": 99}}, headers=key),
            await client.post("/translate", json={**GOOD, "model": "../../etc/passwd"}, headers=key),
            await client.post("/compat/libretranslate/translate", content=b"q=1",
                              headers={**key, "content-type": "text/plain"}),
        ]
        # Bugs: an exception in a route, and one on the decode thread, both naming a path.
        translator.languages = lambda: (_ for _ in ()).throw(RuntimeError('File "/work/main/app/x.py", line 1'))
        with pytest.MonkeyPatch.context() as patch:
            broken = lambda *_: (_ for _ in ()).throw(OSError("/tmp/secret.py: disk on fire"))  # noqa: E731
            patch.setattr(translator.decoder.batcher, "run_batch", broken)  # beam batches
            patch.setattr(GreedySearch, "step", broken)  # the running greedy batch
            # As uvicorn does: the 500 goes to the client, and the exception on to the server's log.
            transport = httpx.ASGITransport(app=client.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as plain:
                crashed = [await plain.get("/languages", headers=key),
                           await plain.post("/translate", json={**GOOD, "decoding": {"strategy": "beam"}}, headers=key),
                           await plain.post("/translate", json=GOOD, headers=key)]
        assert (await client.post("/translate", json=GOOD, headers=key)).status_code == 200  # still serving
    statuses = [r.status_code for r in provoked + crashed]
    assert statuses == [404, 405, 401, 422, 400, 413, 422, 422, 400, 500, 500, 500]  # LibreTranslate says 400
    for response in provoked + crashed:
        assert_plain(response)
    for response in crashed:
        assert response.json()["detail"].startswith("internal error (request ")
        assert response.headers["x-request-id"] in response.json()["detail"]


async def test_a_timeout_while_streaming_is_an_error_event_without_internals(tiny_weights):
    async with serving(tiny_weights, request_timeout_s=0.001) as client:
        response = await client.post("/translate/stream", json={**GOOD, "decoding": {"strategy": "beam"}})
    assert response.status_code == 200
    assert "event: error" in response.text and "REQUEST_TIMEOUT_S" in response.text
    assert "Traceback" not in response.text and ".py" not in response.text


async def test_concurrent_keys_and_limits_do_not_interfere(tiny_weights):
    """Many clients at once with two keys: every request answered, none mixed up with another's."""
    async with serving(tiny_weights, api_keys=KEYS, rate_limit_per_minute=60, batch_window_ms=50) as client:
        keys = ["first-key-0123", "second-key-4567"]
        bodies = [{**GOOD, "text": PAIRS[i % 6][0]} for i in range(40)]
        answers = await asyncio.gather(*(client.post("/translate", json=body, headers={"X-API-Key": keys[i % 2]})
                                         for i, body in enumerate(bodies)))
    assert [a.status_code for a in answers] == [200] * 40
    assert [a.json()["translations"][0]["text"] for a in answers] == [PAIRS[i % 6][1] for i in range(40)]
