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


PRESERVED = [
    ("es", "en", "El archivo %s no existe.", ["%s"]),
    ("es", "en", "No se pudo abrir {filename}.", ["{filename}"]),
    ("en", "es", "Deleted %d items.", ["%d"]),
    ("en", "es", "Could not open {filename}.", ["{filename}"]),
    ("es", "en", "Visita https://www.debian.org para más información.", ["https://www.debian.org"]),
    ("en", "es", "Visit https://www.debian.org for more information.", ["https://www.debian.org"]),
    ("es", "en", "Tom y Mary llegaron a las 10:30.", ["Tom", "Mary", "10:30"]),
    ("en", "es", "John Smith lives in London since 2015.", ["John Smith", "2015"]),
    ("en", "es", "Error code 404: page not found.", ["404"]),
]


@pytest.mark.parametrize("source, target, text, kept", PRESERVED)
async def test_names_numbers_urls_and_placeholders_survive(client, source, target, text, kept):
    response = await client.post("/translate", json={"text": text, "source": source, "target": target})
    assert response.status_code == 200, response.text
    translated = response.json()["translations"][0]["text"]
    for span in kept:
        assert span in translated, f"{span!r} lost in {translated!r}"


async def test_a_paragraph_is_split_and_rejoined(client):
    text = "Abre el archivo. Guarda los cambios.\nCierra la ventana."
    response = await client.post("/translate",
                                 json={"text": text, "source": "es", "target": "en", "output": {"steps": True}})
    entry = response.json()["translations"][0]
    assert len(entry["segments"]) == 3 and entry["text"].count("\n") == 1
    assert "file" in entry["text"].lower() and "window" in entry["text"].lower()
