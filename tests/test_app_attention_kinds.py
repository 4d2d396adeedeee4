"""All three attentions of the article (encoder self-attention, masked decoder self-attention,
cross-attention) in the answers, and interactive translation through a forced prefix."""

from __future__ import annotations

import math

import pytest
import torch

from model.checkpoint import load
from model.engine.backend import backend_for
from model.search import encoder_attention
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    MODEL_NAME,
    PAIRS,
    anyio_backend,
    check_translation,
    one_torch_thread,
    parse_sse,
    serving,
    tiny_weights,
)

pytestmark = pytest.mark.anyio

SENTENCE, TRANSLATION = PAIRS[0]
ALL_KINDS = {"attention_kinds": ["cross", "encoder", "decoder"]}


@pytest.fixture(scope="module")
async def client(tiny_weights):
    async with serving(tiny_weights) as client:
        yield client


async def translate(client, **body):
    response = await client.post("/translate", json={"source": "es", "target": "en", **body})
    assert response.status_code == 200, response.text
    return response.json()["translations"]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("reduction", ["mean", "heads"])
async def test_every_kind_keeps_its_invariants(client, strategy, reduction):
    output = {**ALL_KINDS, "attention": reduction,
              "encoder_attention_layers": [0, -1], "decoder_attention_layers": [-1, 0]}
    (t,) = await translate(client, text=SENTENCE, decoding={"strategy": strategy}, output=output)
    check_translation(t, greedy=strategy == "greedy")
    assert t["encoder_attention"]["layers"] == [0, 1] and t["decoder_attention"]["layers"] == [1, 0]
    assert t["attention"]["kind"] == "cross" and t["text"] == TRANSLATION
    first_row = t["decoder_attention"]["weights"][0][0]
    assert (first_row[0] if reduction == "mean" else first_row[0][0]) == pytest.approx(1.0)  # <s> sees only itself


async def test_the_encoder_map_is_the_models_own(client, tiny_weights):
    (t,) = await translate(client, text=SENTENCE,
                           output={**ALL_KINDS, "attention": "heads", "encoder_attention_layers": [0]})
    loaded = load(tiny_weights / MODEL_NAME)
    ids = loaded.tokenizer.encode_source(SENTENCE, "en")
    served = backend_for(loaded.model, int8=True)  # what the server decodes with on a CPU (QUANTIZE=auto)
    want = encoder_attention(served, [ids], (0,))[0][0]
    torch.testing.assert_close(torch.tensor(t["encoder_attention"]["weights"][0]), torch.tensor(want),
                               atol=1e-5, rtol=0)
    # Heads really differ: the map is not one head copied.
    assert not torch.allclose(torch.tensor(want[0]), torch.tensor(want[1]))


async def test_only_the_kinds_asked_for_come_back(client):
    (t,) = await translate(client, text=SENTENCE, output={"attention_kinds": ["decoder"]})
    assert "decoder_attention" in t and "attention" not in t and "encoder_attention" not in t
    (t,) = await translate(client, text=SENTENCE, output={**ALL_KINDS, "attention": "none"})
    assert not {"attention", "encoder_attention", "decoder_attention"} & set(t)
    (t,) = await translate(client, text=SENTENCE)
    assert "attention" in t and "encoder_attention" not in t and "decoder_attention" not in t


async def test_bad_kinds_and_layers_are_named(client):
    for output, words in (({"attention_kinds": ["self"]}, "cross"), ({"attention_kinds": ["cross", "cross"]}, "once"),
                          ({"attention_kinds": []}, "at least 1"),
                          ({**ALL_KINDS, "encoder_attention_layers": [2]}, "2 encoder layers")):
        response = await client.post("/translate",
                                     json={"text": SENTENCE, "source": "es", "target": "en", "output": output})
        assert response.status_code == 422 and words in response.text, response.text


async def test_a_split_text_carries_every_kind_per_segment_and_block_diagonal_on_top(client):
    text = f"{SENTENCE} {PAIRS[2][0]}"
    (t,) = await translate(client, text=text, output=ALL_KINDS)
    assert len(t["segments"]) == 2
    check_translation(t, greedy=False)
    first = len(t["segments"][0]["tokens"])
    top = t["decoder_attention"]["weights"][0]
    assert top[first][first] > 0 and all(w == 0 for w in top[first][:first])  # segment 2 never looks at segment 1
    assert t["segments"][1]["decoder_attention"]["weights"][0][0] == top[first][first:]


async def test_streaming_sends_each_steps_decoder_row_with_its_token(client):
    body = {"text": SENTENCE, "source": "es", "target": "en", "decoding": {"strategy": "greedy"},
            "output": {**ALL_KINDS, "attention": "mean"}}
    response = await client.post("/translate/stream", json=body)
    events = parse_sse(response.text)
    assert events[0][1]["decoder_attention"]["kind"] == "decoder"
    tokens = [data for name, data in events if name == "token"]
    (done,) = [data for name, data in events if name == "done"]
    final = done["translations"][0]
    check_translation(final, greedy=True)
    for i, event in enumerate(tokens):
        (row,) = event["decoder_attention"]
        assert len(row) == i + 1 and math.fsum(row) == pytest.approx(1.0, abs=1e-4)
        assert row == pytest.approx(final["decoder_attention"]["weights"][0][i][: i + 1], abs=1e-6)
    assert "encoder_attention" in final


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_a_prefix_the_model_would_have_chosen_changes_nothing_but_the_forced_flags(client, strategy):
    decoding = {"strategy": strategy}
    (free,) = await translate(client, text=SENTENCE, decoding=decoding)
    prefix = "The cat"
    (forced,) = await translate(client, text=SENTENCE, decoding={**decoding, "prefix": prefix})
    assert forced["tokens"] == free["tokens"] and forced["text"] == free["text"]
    check_translation(forced, greedy=strategy == "greedy")
    n = len([s for s in forced["steps"] if s.get("forced")])
    assert n >= 2 and all(s.get("forced") for s in forced["steps"][:n])
    for f, s in zip(forced["steps"], free["steps"]):
        assert f["probability"] == pytest.approx(s["probability"], rel=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_a_different_prefix_is_kept_and_the_rest_follows_from_it(client, strategy):
    (t,) = await translate(client, text=SENTENCE, decoding={"strategy": strategy, "prefix": "A dog"},
                           output={"top_k": 3})
    assert t["text"].startswith("A dog")
    forced = [s for s in t["steps"] if s.get("forced")]
    assert forced and all(0 < s["probability"] < 1 for s in forced)
    # The model's own first choice is still reported beside the forced token.
    assert t["steps"][0]["top"][0]["token"] == "▁The" != t["steps"][0]["token"]
    assert not any(s.get("forced") for s in t["steps"][len(forced):])


async def test_a_prefix_that_cannot_fit_is_refused(client):
    response = await client.post("/translate", json={"text": SENTENCE, "source": "es", "target": "en",
                                                     "decoding": {"prefix": "The cat eats fish", "max_new_tokens": 2}})
    assert response.status_code == 422 and "prefix" in response.text
