"""The REST service end to end on a tiny real model: answers, invariants, streaming, catalogue,
operations routes and docs. Requests go through httpx into the real app with its lifespan."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

from app.registry import resolve_device, resolve_dtype
from model.checkpoint import load, sha256_file
from model.quantize import quantize_int8
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    MODEL_NAME,
    PAIRS,
    anyio_backend,
    check_translation,
    endless_weights,
    one_torch_thread,
    parse_sse,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

SENTENCE, TRANSLATION = PAIRS[0]


@pytest.fixture(scope="module")
async def client(tiny_weights):
    async with serving(tiny_weights) as client:
        yield client


async def translate(client, **body):
    response = await client.post("/translate", json={"source": "es", "target": "en", **body})
    assert response.status_code == 200, response.text
    return response.json()


async def test_greedy_answers_keep_every_invariant(client):
    texts = [es for es, _ in PAIRS[:4]]
    answer = await translate(client, text=texts, decoding={"strategy": "greedy"}, output={"top_k": 3})
    assert answer["model"] == MODEL_NAME
    assert [t["text"] for t in answer["translations"]] == [en for _, en in PAIRS[:4]]
    for t in answer["translations"]:
        check_translation(t, greedy=True)
        assert t["attention"]["layers"] == [1] and t["attention"]["reduction"] == "mean"  # default: last layer
        assert len(t["steps"][0]["top"]) == 3 and t["alternatives"] == []
    first = answer["translations"][0]
    assert first["source_tokens"][0] == "<2en>" and first["finish_reason"] == "stop"


async def test_a_single_text_gets_one_translation(client):
    answer = await translate(client, text=SENTENCE)
    assert len(answer["translations"]) == 1 and answer["translations"][0]["text"] == TRANSLATION


async def test_beam_steps_are_the_model_probabilities_of_the_tokens(client):
    answer = await translate(
        client, text=SENTENCE, decoding={"strategy": "beam", "beam_size": 4, "alternatives": 2},
        output={"top_k": 2, "attention": "heads", "attention_layers": [0, -1]},
    )
    t = answer["translations"][0]
    check_translation(t, greedy=False)
    assert t["attention"]["layers"] == [0, 1] and t["attention"]["reduction"] == "heads"
    assert len(t["attention"]["weights"][0]) == 4  # heads
    assert len(t["alternatives"]) == 2 and all(a["score"] <= t["score"] for a in t["alternatives"])
    assert len({a["text"] for a in t["alternatives"]} | {t["text"]}) == 3

    # Teacher-force the served weights (int8 on CPU by default) on the answer: p(tokens[i] | source, tokens[:i]),
    # in one pass of PyTorch's int8 copy, which holds the integers the C engine packs.
    loaded = client.app.state.translator.models[MODEL_NAME]
    src = torch.tensor([loaded.tokenizer.encode_source(SENTENCE, "en")])
    ids = [s["id"] for s in t["steps"]]
    served = quantize_int8(loaded.model) if loaded.quantization == "int8" else loaded.model
    with torch.inference_mode():
        logits = served(src, torch.tensor([[loaded.tokenizer.bos_id, *ids[:-1]]]))[0].softmax(-1)
    forced = [float(logits[i, token]) for i, token in enumerate(ids)]
    assert [s["probability"] for s in t["steps"]] == pytest.approx(forced, abs=1e-5)


async def test_max_new_tokens_cuts_with_finish_reason_length(client):
    for strategy in ("greedy", "beam"):
        answer = await translate(client, text=SENTENCE, decoding={"strategy": strategy, "max_new_tokens": 2})
        t = answer["translations"][0]
        check_translation(t, greedy=strategy == "greedy", max_new_tokens=2)
        assert t["finish_reason"] == "length"


async def test_by_default_an_output_may_grow_to_twice_the_source_plus_ten(endless_weights):
    async with serving(endless_weights) as endless:  # a model that cannot say </s> runs until it is cut
        for strategy in ("greedy", "beam"):
            t = (await translate(endless, text=SENTENCE, decoding={"strategy": strategy}))["translations"][0]
            assert t["finish_reason"] == "length" and len(t["tokens"]) == 2 * len(t["source_tokens"]) + 10
        events = await _stream(endless, text=SENTENCE, decoding={"strategy": "greedy"})
        assert len(events) == 1 + 2 * len(events[0][1]["source_tokens"]) + 10 + 1  # start, tokens, done


async def test_steps_and_attention_can_be_left_out(client):
    answer = await translate(client, text=SENTENCE, output={"steps": False, "attention": "none"})
    t = answer["translations"][0]
    assert "steps" not in t and "attention" not in t
    assert t["tokens"][-1] == "</s>" and t["text"] == TRANSLATION


async def test_auto_source_reports_the_detected_language_and_warns_about_a_wrong_one(client):
    answer = await translate(client, text=[SENTENCE, TRANSLATION], source="auto", target="en")
    spanish, english = answer["translations"]
    assert spanish["text"] == TRANSLATION and "warnings" not in spanish
    assert spanish["detected_language"]["language"] == "es" and spanish["detected_language"]["confidence"] > 90
    # Already in the target language: with two languages, auto still means Spanish; the answer says so.
    assert english["detected_language"]["language"] == "en" and "looks English" in english["warnings"][0]
    declared = (await translate(client, text="The dog sleeps at home today.", source="es",
                                target="en"))["translations"][0]
    assert "detected_language" not in declared and "not Spanish" in declared["warnings"][0]
    plain = (await translate(client, text=SENTENCE))["translations"][0]
    assert "detected_language" not in plain and "warnings" not in plain


async def test_english_to_spanish(client):
    answer = await translate(client, text=TRANSLATION, source="en", target="es")
    t = answer["translations"][0]
    assert t["text"] == SENTENCE and t["source_tokens"][0] == "<2es>"


async def _stream(client, **body) -> list[tuple[str, dict]]:
    response = await client.post("/translate/stream", json={"source": "es", "target": "en", **body})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_stream_sends_each_token_then_the_same_answer_as_translate(client, strategy):
    body = {"text": SENTENCE, "decoding": {"strategy": strategy}, "output": {"top_k": 2, "attention": "mean"}}
    events = await _stream(client, **body)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    start, tokens, (_, done) = events[0][1], [data for _, data in events[1:-1]], events[-1]
    t = done["translations"][0]
    check_translation(t, greedy=strategy == "greedy")
    assert start["source_tokens"] == t["source_tokens"] and start["attention"]["layers"] == [1]
    assert [e["token"] for e in tokens] == t["tokens"] and [e["index"] for e in tokens] == list(range(len(tokens)))
    for event, step, row in zip(tokens, t["steps"], t["attention"]["weights"][0]):
        assert event["probability"] == step["probability"] and event["top"] == step["top"]
        assert event["attention"] == [row]

    reference = await translate(client, **body)
    assert done["model"] == reference["model"]
    expected = reference["translations"][0]
    assert t["tokens"] == expected["tokens"] and t["text"] == expected["text"]
    assert t["score"] == pytest.approx(expected["score"], abs=1e-5)
    expected_probabilities = [s["probability"] for s in expected["steps"]]
    assert [s["probability"] for s in t["steps"]] == pytest.approx(expected_probabilities, abs=1e-5)


async def test_stream_with_heads_gives_a_row_per_head(client):
    events = await _stream(client, text=SENTENCE, decoding={"strategy": "greedy"},
                           output={"attention": "heads", "attention_layers": [0]})
    token = events[1][1]
    assert len(token["attention"]) == 1 and len(token["attention"][0]) == 4
    assert all(len(row) == len(events[0][1]["source_tokens"]) for row in token["attention"][0])


async def test_models_languages_health_ready(client, tiny_weights):
    (info,) = (await client.get("/models")).json()
    folder = tiny_weights / MODEL_NAME
    settings = client.app.state.settings
    device = resolve_device(settings.device)
    assert info["name"] == MODEL_NAME and info["device"].split(":")[0] == device.type
    assert info["dtype"] == str(resolve_dtype(settings.dtype, device)).removeprefix("torch.")
    assert info["quantization"] == ("int8" if device.type == "cpu" else "none")  # QUANTIZE=auto
    assert info["parameters"] == load(folder).model.num_parameters()
    assert info["weights_sha256"] == sha256_file(folder / "model.safetensors")
    assert info["metrics"] == json.loads((folder / "card.json").read_text())["metrics"]
    assert {(d["source"], d["target"]) for d in info["directions"]} == {("es", "en"), ("en", "es")}
    assert info["parameters"] > 0 and info["config"]["decoder_layers"] == 2 and info["max_source_tokens"] == 128
    assert (await client.get("/languages")).json() == [
        {"code": "en", "name": "English", "targets": ["es"]},
        {"code": "es", "name": "Spanish", "targets": ["en"]},
    ]
    assert (await client.get("/health")).json() == {"status": "ok", "models": []}
    assert (await client.get("/ready")).json() == {"status": "ready", "models": [MODEL_NAME]}


async def test_metrics_count_requests_batches_and_tokens(client):
    await translate(client, text=SENTENCE)
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{method="POST",route="/translate",status="200"}' in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="POST",route="/translate",status="200"}' in text
    assert 'translate_tokens_generated_total{direction="es-en",model="app-tiny"}' in text
    for name in ("translate_queue_depth", "translate_in_flight", "translate_batch_size_count"):
        assert f"\n{name} " in text


async def test_every_answer_has_a_request_id_and_a_json_log_line(client, caplog):
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = await client.post("/translate", json={"text": SENTENCE, "source": "es", "target": "en"},
                                     headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"
    line = json.loads(caplog.records[-1].getMessage())
    assert line["id"] == "abc123" and line["status"] == 200 and line["direction"] == "es-en"
    assert line["tokens_in"] == len(response.json()["translations"][0]["source_tokens"])
    assert line["tokens_out"] == len(response.json()["translations"][0]["tokens"])
    assert line["latency_ms"] > 0
    assert (await client.get("/health")).headers["x-request-id"]  # generated when the client sends none


async def test_docs_render_and_every_field_is_described_with_an_example(client):
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # Everything the page loads comes from this server: the docs render without internet access.
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets + ["/openapi.json"]:
        assert (await client.get(asset)).status_code == 200, asset
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    ours = {name: s for name, s in schemas.items() if "ValidationError" not in name}
    assert {"TranslateRequest", "TranslateResponse", "LibreTranslateResponse", "ModelInfo"} <= set(ours)
    for name, schema in ours.items():
        for field, spec in schema.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
            assert "examples" in spec or "example" in spec, f"{name}.{field} has no example"


async def test_the_viewer_page_is_served(client):
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (await client.get("/static/viewer.js")).status_code == 200


async def test_not_ready_until_a_model_is_loaded(tmp_path):
    async with serving(tmp_path, wait=False) as client:  # an empty WEIGHTS_DIR: nothing to serve
        assert (await client.get("/health")).status_code == 200
        for response in (await client.get("/ready"), await client.post("/translate", json={
                "text": SENTENCE, "source": "es", "target": "en"})):
            assert response.status_code == 503 and response.headers["retry-after"]
            assert str(tmp_path) not in response.text  # no internal paths in answers


async def test_torch_threads_applies_to_the_decode_thread(tiny_weights):
    assert torch.get_num_threads() == 1  # one_torch_thread; a new thread would start with 1 too
    async with serving(tiny_weights, torch_threads=2) as client:
        assert await client.app.state.translator.decoder.thread.run(torch.get_num_threads) == 2


def test_the_serving_path_loads_no_evaluation_data_or_training_code(tiny_weights):
    """The server must not pull in sacrebleu, the corpus readers or the trainer (memory, start-up, attack surface)."""
    import subprocess
    import sys

    script = (
        "import sys, asyncio\n"
        "from app.main import create_app\nfrom app.settings import Settings\n"
        f"app = create_app(Settings(weights_dir={str(tiny_weights)!r}))\n"
        "async def main():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        await asyncio.sleep(0)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sacrebleu' or m.startswith("
        "('model.training.evaluate', 'model.training.data', 'model.training.train', 'model.training.corpus'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
