"""A tiny real model for the app tests, and a client on the real app with its lifespan running.

The model is a BPE and a 2+2-layer Transformer trained for a few seconds on the sentence pairs
below (both directions), so it ends its outputs with </s>, mostly translates them right, and is
exported and loaded exactly as a shipped model is.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import torch

from app.main import create_app
from app.settings import Settings
from model.checkpoint import export, load
from model.search.backend import right_padded
from model.tokenizer import TranslationTokenizer, train_bpe
from model.transformer import Transformer, TransformerConfig

MODEL_NAME = "app-tiny"
PAIRS = [
    ("El gato come pescado.", "The cat eats fish."),
    ("El perro come carne.", "The dog eats meat."),
    ("El gato duerme.", "The cat sleeps."),
    ("El perro duerme en casa.", "The dog sleeps at home."),
    ("La niña lee un libro.", "The girl reads a book."),
    ("El niño lee un libro.", "The boy reads a book."),
    ("Me gusta el café.", "I like coffee."),
    ("Me gusta el té.", "I like tea."),
    ("¿Dónde está el gato?", "Where is the cat?"),
    ("¿Dónde está el perro?", "Where is the dog?"),
    ("Hace frío hoy.", "It is cold today."),
    ("Hace calor hoy.", "It is hot today."),
    ("Tengo un gato negro.", "I have a black cat."),
    ("Tengo un perro blanco.", "I have a white dog."),
    ("Ella bebe agua.", "She drinks water."),
    ("Él bebe leche.", "He drinks milk."),
    ("Nosotros comemos pan.", "We eat bread."),
    ("Ellos comen fruta.", "They eat fruit."),
    ("La casa es grande.", "The house is big."),
    ("La casa es pequeña.", "The house is small."),
    ("El libro es nuevo.", "The book is new."),
    ("El café está caliente.", "The coffee is hot."),
    ("Buenos días.", "Good morning."),
    ("Buenas noches.", "Good night."),
    ("Gracias por todo.", "Thanks for everything."),
    ("¿Cómo estás?", "How are you?"),
    ("Estoy bien.", "I am fine."),
    ("El pescado es fresco.", "The fish is fresh."),
    ("La niña come fruta.", "The girl eats fruit."),
    ("El niño bebe agua.", "The boy drinks water."),
]


def build_tiny_model(weights_dir: Path, steps: int = 100) -> Path:
    """Train on PAIRS both ways and export to `weights_dir/MODEL_NAME`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread
    try:
        return _train_and_export(weights_dir, steps)
    finally:
        torch.set_num_threads(threads)


def _train_and_export(weights_dir: Path, steps: int) -> Path:
    torch.manual_seed(0)
    tok = TranslationTokenizer(train_bpe([s for pair in PAIRS for s in pair] * 4, vocab_size=420))
    cfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=48, n_heads=4, d_ff=96, encoder_layers=2,
                            decoder_layers=2, dropout=0.0, max_len=128)
    model = Transformer(cfg)
    examples = [(tok.encode_source(es, "en"), tok.encode_target(en)) for es, en in PAIRS]
    examples += [(tok.encode_source(en, "es"), tok.encode_target(es)) for es, en in PAIRS]
    src = right_padded([s for s, _ in examples], tok.pad_id)
    tgt = right_padded([[tok.bos_id, *t] for _, t in examples], tok.pad_id)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits = model(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1), ignore_index=tok.pad_id
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    card = {"metrics": {"test": {"bleu": 99.0, "note": "memorised training pairs"}}}
    return export(model.eval(), tok, weights_dir / MODEL_NAME, MODEL_NAME, card=card)


def build_endless_model(tiny_folder: Path, weights_dir: Path) -> Path:
    """The tiny model made, by its weights, unable to end an output: no step ever makes </s> its likeliest token.

    The final decoder norm's gain is zeroed and its bias set to -</s>'s embedding, so each step's
    hidden state is that constant vector and the tied projection gives </s> the logit -|e|², far below
    the others whatever the input; tests of the length limits rely on this, not on what training did.
    """
    loaded = load(tiny_folder)
    model = loaded.model
    eos = loaded.tokenizer.eos_id
    with torch.no_grad():
        model.decoder.norm.weight.zero_()
        model.decoder.norm.bias.copy_(-4 * model.embedding.weight[eos])
        logits = model.projection(model.decoder.norm.bias)
    allowed = [i for i in range(logits.numel()) if i not in (loaded.tokenizer.pad_id, loaded.tokenizer.bos_id, eos)]
    assert logits[eos] < logits[allowed].max() - 1, "</s> must never be the likeliest token"
    return export(model.eval(), loaded.tokenizer, weights_dir / MODEL_NAME, MODEL_NAME, card=loaded.card)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A WEIGHTS_DIR holding the tiny model."""
    weights_dir = tmp_path_factory.mktemp("weights")
    build_tiny_model(weights_dir)
    return weights_dir


@pytest.fixture(scope="session")
def endless_weights(tiny_weights, tmp_path_factory) -> Path:
    """A WEIGHTS_DIR whose model never says </s> (see build_endless_model)."""
    weights_dir = tmp_path_factory.mktemp("endless")
    build_endless_model(tiny_weights / MODEL_NAME, weights_dir)
    return weights_dir


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so a module can share one served app across its tests."""
    return "asyncio"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's matrices are too small to gain from threads, and on a machine busy with
    other work (training, other tests) extra threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@asynccontextmanager
async def serving(weights_dir: Path, wait: bool = True, **settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh app whose lifespan runs for the duration (once it reports ready, if `wait`)."""
    app = create_app(Settings(weights_dir=weights_dir, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            client.app = app  # for tests that look inside (queue, metrics)
            if wait:
                await wait_ready(client)
            yield client


async def wait_ready(client: httpx.AsyncClient, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.02)):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not ready after {seconds} s: {(await client.get('/ready')).text}")


def parse_sse(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a text/event-stream body; keep-alive comments are skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def check_translation(t: dict, *, greedy: bool, max_new_tokens: int | None = None) -> None:
    """Every invariant docs/api.md promises clients, on one entry of `translations`."""
    tokens, source = t["tokens"], t["source_tokens"]
    if t.get("segments") == []:  # nothing to translate (only symbols, markup, spaces): not decoded at all
        assert tokens == source == [] and not any(c.isalpha() for c in t["text"]) and t["finish_reason"] == "stop"
        return
    assert source[0] in ("<2en>", "<2es>") and source[-1] == "</s>"
    if t.get("segments"):  # a split text: each segment is a whole translation, the top level their sum
        for seg in t["segments"]:
            check_translation(seg, greedy=greedy, max_new_tokens=max_new_tokens)
        assert tokens == [tok for seg in t["segments"] for tok in seg["tokens"]]
        assert source == [tok for seg in t["segments"] for tok in seg["source_tokens"]]
        assert "steps" not in t or [s["token"] for s in t["steps"]] == tokens
        check_attention(t)
        return
    if t["finish_reason"] == "stop":
        assert tokens[-1] == "</s>" and "</s>" not in tokens[:-1]
    else:
        assert t["finish_reason"] == "length" and "</s>" not in tokens
        assert max_new_tokens is None or len(tokens) == max_new_tokens
    assert not {"<unk>", "<2en>", "<2es>", "<s>", "<pad>"} & set(tokens)
    if "steps" in t:
        assert [s["token"] for s in t["steps"]] == tokens
        for step in t["steps"]:
            assert 0 < step["probability"] <= 1
            probabilities = [top["probability"] for top in step["top"]]
            assert probabilities == sorted(probabilities, reverse=True)
            if greedy and step["top"] and not step.get("forced"):
                assert step["top"][0] == {k: step[k] for k in ("token", "id", "probability")}
    check_attention(t)


def check_attention(t: dict) -> None:
    """`weights[l]` has a row per generated token and a column per source token; rows sum to 1.

    The encoder's map is source by source; the decoder's is token by token and causal: row i (the
    query fed at step i) has exactly 0 in every column after i."""
    tokens, source = t["tokens"], t["source_tokens"]
    for field, kind, n_rows, n_columns in (("encoder_attention", "encoder", len(source), len(source)),
                                           ("decoder_attention", "decoder", len(tokens), len(tokens))):
        if field in t:
            assert t[field]["kind"] == kind and len(t[field]["weights"]) == len(t[field]["layers"])
            for layer in t[field]["weights"]:
                for rows in (layer if t[field]["reduction"] == "heads" else [layer]):
                    assert len(rows) == n_rows
                    for i, row in enumerate(rows):
                        assert len(row) == n_columns and min(row) >= 0
                        assert math.fsum(row) == pytest.approx(1.0, abs=1e-4)
                        if kind == "decoder":
                            assert all(w == 0.0 for w in row[i + 1 :])
    if "attention" in t:
        attention = t["attention"]
        assert attention["kind"] == "cross" and len(attention["weights"]) == len(attention["layers"])
        for layer in attention["weights"]:
            maps = layer if attention["reduction"] == "heads" else [layer]
            for rows in maps:
                assert len(rows) == len(tokens)
                for row in rows:
                    assert len(row) == len(source)
                    assert math.fsum(row) == pytest.approx(1.0, abs=1e-4)
                    assert min(row) >= 0
