"""The service on the shipped model under weights/: a real translation with every invariant.

Skips until a model folder lands in weights/; run it with `pytest -m shipped`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app_fixtures import anyio_backend, check_translation, parse_sse, serving  # noqa: F401 (fixture)

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = sorted(p.parent.name for p in WEIGHTS.glob("*/config.json"))

pytestmark = [
    pytest.mark.shipped,
    pytest.mark.anyio,
    pytest.mark.skipif(not SHIPPED, reason="no shipped model under weights/ yet"),
]


@pytest.fixture(scope="module")
async def client():
    async with serving(WEIGHTS, wait=True) as client:
        yield client


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_el_gato_come_pescado(client, strategy):
    decoding = {"strategy": strategy, **({"alternatives": 1} if strategy == "beam" else {})}
    body = {"text": "El gato come pescado.", "source": "es", "target": "en", "decoding": decoding,
            "output": {"steps": True, "top_k": 3, "attention": "heads", "attention_layers": [0, -1]}}
    response = await client.post("/translate", json=body)
    assert response.status_code == 200, response.text
    t = response.json()["translations"][0]
    check_translation(t, greedy=strategy == "greedy")
    assert "cat" in t["text"].lower() and "fish" in t["text"].lower(), t["text"]
    assert t["finish_reason"] == "stop"
    assert t["source_tokens"][0] == "<2en>" and t["source_tokens"][-1] == "</s>"


async def test_both_directions_and_the_stream_keep_the_invariants(client):
    texts = ["¿Dónde está la estación de tren?", "Me gustaría un café con leche, por favor."]
    response = await client.post("/translate", json={"text": texts, "source": "es", "target": "en"})
    for t in response.json()["translations"]:
        check_translation(t, greedy=False)
    response = await client.post("/translate", json={"text": "The cat eats fish.", "source": "en", "target": "es"})
    check_translation(response.json()["translations"][0], greedy=False)
    response = await client.post("/translate/stream", json={"text": "El gato come pescado.", "source": "es",
                                                             "target": "en", "decoding": {"strategy": "greedy"}})
    events = parse_sse(response.text)
    assert events[-1][0] == "done"
    check_translation(events[-1][1]["translations"][0], greedy=True)
    models = (await client.get("/models")).json()
    assert len(models) == len(SHIPPED)
