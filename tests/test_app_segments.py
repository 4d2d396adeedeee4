"""Texts with several sentences or lines: split, decoded in one batch, rejoined with their layout."""

from __future__ import annotations

import pytest

from tests.app_fixtures import (  # noqa: F401 (fixtures)
    anyio_backend,
    check_translation,
    one_torch_thread,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

TEXT = "El gato come pescado. El Sr. García duerme.\n\n¿Dónde está la niña?  ¡Aquí!"


@pytest.fixture(scope="module")
async def client(tiny_weights):
    async with serving(tiny_weights) as client:
        yield client


async def translate(client, text, **output):
    response = await client.post("/translate", json={"text": text, "source": "es", "target": "en", "output": output})
    assert response.status_code == 200, response.text
    return response.json()["translations"]


@pytest.mark.parametrize("reduction", ["mean", "heads"])
async def test_a_split_text_carries_segments_that_each_keep_the_contract(client, reduction):
    [entry] = await translate(client, TEXT, steps=True, top_k=3, attention=reduction, attention_layers=[0, 1])
    segments = entry["segments"]
    assert len(segments) == 4  # "Sr." did not end a sentence; the blank line is kept, not translated
    for seg in segments:
        check_translation(seg, greedy=False)
        assert seg["source_tokens"][0] == "<2en>"
    assert entry["tokens"] == [t for s in segments for t in s["tokens"]]
    assert [s["token"] for s in entry["steps"]] == entry["tokens"]
    assert entry["source_tokens"] == [t for s in segments for t in s["source_tokens"]]


async def test_top_level_attention_is_block_diagonal_and_rows_sum_to_one(client):
    [entry] = await translate(client, TEXT, attention="mean")
    weights = entry["attention"]["weights"][0]
    assert len(weights) == len(entry["tokens"]) and all(len(r) == len(entry["source_tokens"]) for r in weights)
    row, col = 0, 0
    for seg in entry["segments"]:
        n_rows, n_cols = len(seg["tokens"]), len(seg["source_tokens"])
        for r in range(row, row + n_rows):
            assert sum(weights[r]) == pytest.approx(1.0, abs=1e-4)
            assert sum(weights[r][col : col + n_cols]) == pytest.approx(1.0, abs=1e-4)  # all inside its block
            assert weights[r][col : col + n_cols] == seg["attention"]["weights"][0][r - row]
        row, col = row + n_rows, col + n_cols


async def test_the_joined_text_keeps_spacing_and_line_breaks(client):
    [entry] = await translate(client, TEXT)
    parts = [s["text"] for s in entry["segments"]]
    assert entry["text"] == f"{parts[0]} {parts[1]}\n\n{parts[2]}  {parts[3]}"


async def test_one_sentence_is_not_split_and_order_is_kept(client):
    entries = await translate(client, ["El gato come pescado.", TEXT, "Hola."])
    assert "segments" not in entries[0] or entries[0]["segments"] is None
    assert len(entries[1]["segments"]) == 4
    assert entries[2].get("segments") is None


async def test_the_token_limit_applies_per_sentence_not_per_text(tiny_weights):
    long_text = " ".join(["El gato come pescado."] * 40)  # ~280 tokens whole, 7 per sentence
    async with serving(tiny_weights, max_source_tokens=32) as client:
        [entry] = await translate(client, long_text)
        assert len(entry["segments"]) == 40
        response = await client.post("/translate", json={"text": "gato " * 40, "source": "es", "target": "en"})
        assert response.status_code == 422 and "MAX_SOURCE_TOKENS" in response.text
