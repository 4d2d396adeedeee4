"""Tokenizer, checkpoint export/load, and the training CLI (single process, resume, DDP)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import ModelLoadError, export, load
from model.search import decode
from model.search.backend import TorchBackend
from model.search.options import DecodeOptions, special_ids
from model.tokenizer import TranslationTokenizer, train_bpe
from model.transformer import Transformer, TransformerConfig

PAIRS = [
    ("The cat eats fish.", "El gato come pescado."),
    ("Where is the girl?", "¿Dónde está la niña?"),
    ("Here it is!", "¡Aquí está!"),
    ("He said «hello».", "Él dijo «hola»."),
    ("I like coffee.", "Me gusta el café."),
    ("The boy runs fast.", "El niño corre rápido."),
    ("We are at home.", "Estamos en casa."),
    ("Open the window, please.", "Abre la ventana, por favor."),
]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer() -> TranslationTokenizer:
    texts = [t for pair in PAIRS for t in pair] * 20
    return TranslationTokenizer(train_bpe(texts, 400))


@pytest.mark.parametrize(
    "text",
    ["¿Dónde está la niña? ¡Aquí!", "«Hola», dijo él — ñandú, pingüino, acción.", "I ❤️ café 😀🚀",
     "Привет, 東京 and Ελλάδα", "tabs\tand \u00a0spaces"],
)
def test_tokenizer_round_trips_without_unknown_tokens(tokenizer, text):
    ids = tokenizer.encode_target(text)
    assert tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == text


def test_source_starts_with_the_target_language_tag(tokenizer):
    ids = tokenizer.encode_source("El gato come pescado.", "en")
    assert tokenizer.tokens(ids)[0] == "<2en>" and ids[-1] == tokenizer.eos_id


def tiny(tokenizer, seed=0) -> Transformer:
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4, d_ff=64, encoder_layers=2,
                            decoder_layers=2, dropout=0.0)
    return Transformer(cfg).eval()


def _translate(loaded_model, tokenizer, text):
    src = torch.tensor([tokenizer.encode_source(text, "en")])
    return decode(TorchBackend(loaded_model), src, DecodeOptions(max_new_tokens=8, top_k=2),
                  special_ids(tokenizer))[0][0]


def test_export_then_load_gives_identical_outputs(tokenizer, tmp_path):
    model = tiny(tokenizer)
    export(model, tokenizer, tmp_path / "m", "tiny", {"note": "test"}, storage_dtype=torch.float32)
    loaded = load(tmp_path / "m")
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded.model.state_dict()[name])
    a = _translate(model, tokenizer, "El gato come pescado.")
    b = _translate(loaded.model, tokenizer, "El gato come pescado.")
    assert a.ids == b.ids and [s.probability for s in a.steps] == [s.probability for s in b.steps]
    assert loaded.card["note"] == "test" and loaded.card["parameters"] == model.num_parameters()


def test_fp16_storage_loads_upcast_to_float32(tokenizer, tmp_path):
    model = tiny(tokenizer)
    export(model, tokenizer, tmp_path / "m", "tiny")
    loaded = load(tmp_path / "m")
    assert loaded.dtype == torch.float32
    for name, p in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], p, atol=2e-3, rtol=1e-3)


def test_weights_with_a_different_sha256_are_refused(tokenizer, tmp_path):
    folder = export(tiny(tokenizer), tokenizer, tmp_path / "m", "tiny")
    other = export(tiny(tokenizer, seed=1), tokenizer, tmp_path / "other", "tiny")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="sha256"):
        load(folder)


def test_truncated_weights_and_mismatched_tokenizer_are_refused(tokenizer, tmp_path):
    folder = export(tiny(tokenizer), tokenizer, tmp_path / "m", "tiny")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()[:1000]
    weights.write_bytes(data)
    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = __import__("hashlib").sha256(data).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="cannot read weights"):
        load(folder)
    config["model"]["vocab_size"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="tokenizer has"):
        load(folder)


def write_corpus(folder: Path) -> Path:
    splits = folder / "splits"
    splits.mkdir(parents=True)
    rows = [f"conversation\ttatoeba\t{en}\t{es}\n" for en, es in PAIRS]
    (splits / "train.tsv").write_text("".join(rows * 8))
    (splits / "dev.tsv").write_text("".join(rows[:3]))
    (splits / "test.tsv").write_text("".join(rows[3:6]))
    return splits


TINY_ARGS = ["--vocab-size", "400", "--d-model", "32", "--heads", "4", "--d-ff", "64", "--encoder-layers", "2",
             "--decoder-layers", "2", "--batch-tokens", "200", "--warmup", "5", "--threads", "1", "--dropout", "0"]


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_train_cli_exports_a_loadable_model_and_resumes(tmp_path):
    splits = write_corpus(tmp_path / "data")
    base = [sys.executable, "-m", "model.training.train", "--data", str(splits), "--run-dir", str(tmp_path / "run"),
            "--export", str(tmp_path / "weights" / "tiny"), *TINY_ARGS]
    first = run_cli([*base, "--epochs", "1"], tmp_path)
    assert first.returncode == 0, first.stderr
    loaded = load(tmp_path / "weights" / "tiny")
    assert loaded.card["training"]["steps"] > 0 and "dev_bleu_es_en" in loaded.card["training"]["best_dev"]
    steps_after_one = json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"]
    second = run_cli([*base, "--epochs", "2", "--resume"], tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stderr
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 2 * steps_after_one


def test_torchrun_ddp_keeps_both_ranks_identical(tmp_path):
    splits = write_corpus(tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "model.training.train", "--data", str(splits), "--run-dir", str(tmp_path / "run"), "--max-steps", "4",
           "--device", "cpu", *TINY_ARGS]
    result = run_cli(cmd, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = [(tmp_path / "run" / f"params-rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert "2 process(es)" in result.stderr
    initial = tiny_digest_before_training(tmp_path)
    assert digests[0].strip() != initial  # the ranks trained, they did not merely start equal


def tiny_digest_before_training(tmp_path: Path) -> str:
    from model.training.train import parameters_digest

    tok = TranslationTokenizer.load(tmp_path / "run" / "tokenizer.json")
    torch.manual_seed(1)  # the trainer's default --seed
    cfg = TransformerConfig(vocab_size=tok.vocab_size, d_model=32, n_heads=4, d_ff=64, encoder_layers=2,
                            decoder_layers=2, dropout=0.0, max_len=256)
    return parameters_digest(Transformer(cfg))


def test_training_can_continue_from_a_model_folder_and_scores_its_starting_point_first(tmp_path):
    splits = write_corpus(tmp_path / "data")
    start = [sys.executable, "-m", "model.training.train", "--data", str(splits), "--run-dir", str(tmp_path / "run0"),
             "--export", str(tmp_path / "weights" / "start"), *TINY_ARGS, "--epochs", "1"]
    assert run_cli(start, tmp_path).returncode == 0
    before = load(tmp_path / "weights" / "start")
    # Architecture flags that disagree with the folder's are overridden by it; the tokenizer is the folder's.
    more = [sys.executable, "-m", "model.training.train", "--data", str(splits), "--run-dir", str(tmp_path / "run1"),
            "--export", str(tmp_path / "weights" / "more"), "--init-from", str(tmp_path / "weights" / "start"),
            "--d-model", "64", "--dropout", "0", "--batch-tokens", "200", "--threads", "1", "--max-steps", "2",
            "--lr", "1e-4"]
    done = run_cli(more, tmp_path)
    assert done.returncode == 0, done.stderr
    history = json.loads((tmp_path / "run1" / "history.json").read_text())
    assert history[0]["step"] == 0  # the starting model's dev score, what the run has to beat
    assert history[0]["dev_bleu_es_en"] == before.card["training"]["best_dev"]["dev_bleu_es_en"]
    after = load(tmp_path / "weights" / "more")
    assert after.config == before.config
    assert not (tmp_path / "run1" / "tokenizer.json").exists()
