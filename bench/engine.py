"""Our PyTorch decoder against CTranslate2 running the same weights: agreement, then speed.

    python -m bench.engine [--weights weights/es-en-multidomain] [--check-sentences 500]
                           [--timing-sentences 128] [--threads 2] [--repeats 3]

Exports the model to a CTranslate2 folder (runs/ct2/<name>-<sha256 prefix>, reused while the
weights do not change), checks that both engines' greedy outputs agree token for token on Tatoeba
test sentences in both directions, then times batch 1 and batch 32, greedy and beam 4: ours
against CTranslate2 float32, and for reference both engines with int8 weights (ours through
model.quantize.quantize_int8), on the same pre-tokenized sentences in the same batches, with
the same max length and thread count. Runs alternate between the engines and
the best of --repeats counts, so a noisy shared machine slows both alike.

Our models run on the C engine (model.engine) where it can run, as the service does; --engine torch
times PyTorch alone. Writes bench/results/engine.json with `identical_greedy_share`,
`ratio_batch32_greedy` (our seconds / CTranslate2 float32 seconds, greedy at batch 32), the int8
ratios `ratio_batch1_greedy_int8`, `ratio_batch32_greedy_int8`, `ratio_batch32_beam4_int8`, and
`cpu`. Needs `make peers` (ctranslate2).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import cpu_info, write_result
from model.checkpoint import load
from model.data import read_split
from model.decoding import (
    DecodeOptions,
    SpecialIds,
    decode,
    default_max_new_tokens,
    right_padded,
    special_ids,
)
from model.engine import attach
from model.quantize import quantize_int8
from model.tokenizer import TranslationTokenizer
from model.transformer import Transformer

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "all" / "splits" / "test.tsv"
EXPORTS = ROOT / "runs" / "ct2"
TARGET_RATIO, TARGET_IDENTICAL = 1.2, 0.95  # our seconds / CTranslate2's, every ratio below; greedy agreement
RATIOS = ("ratio_batch32_greedy", "ratio_batch1_greedy_int8", "ratio_batch32_greedy_int8", "ratio_batch32_beam4_int8")
SETTINGS = [(1, "greedy"), (1, "beam4"), (32, "greedy"), (32, "beam4")]
BEAM = {"greedy": 1, "beam4": 4}


# --- export ------------------------------------------------------------------------------------


def vocabulary_of(tokenizer: TranslationTokenizer) -> list[str]:
    """Token strings in id order: CTranslate2 takes and returns tokens, and numbers them this way."""
    return [tokenizer.tok.id_to_token(i) for i in range(tokenizer.vocab_size)]


def ctranslate2_spec(model: Transformer, vocabulary: list[str], special: SpecialIds = SpecialIds()):
    """A CTranslate2 TransformerSpec holding `model`'s weights and `vocabulary`.

    Our layout was chosen to match CTranslate2's, so every tensor goes over unchanged: the fused
    self-attention projection is [q; k; v], the cross-attention one [k; v]. The sinusoid table is
    passed explicitly because CTranslate2's own concatenates sines and cosines instead of
    interleaving them. ctranslate2 is an optional peer, imported only here.
    """
    from ctranslate2.specs import transformer_spec

    cfg = model.cfg
    if len(vocabulary) != cfg.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} tokens, the model {cfg.vocab_size}")
    weights = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in model.state_dict().items()}

    def linear(spec, name: str) -> None:
        spec.weight, spec.bias = weights[f"{name}.weight"], weights[f"{name}.bias"]

    def layer_norm(spec, name: str) -> None:
        spec.gamma, spec.beta = weights[f"{name}.weight"], weights[f"{name}.bias"]

    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.n_heads, pre_norm=cfg.norm_first
    )
    embedding = weights["embedding.weight"]  # shared by both sides and the projection
    spec.encoder.embeddings[0].weight = embedding
    spec.decoder.embeddings.weight = embedding
    spec.decoder.projection.weight = embedding
    for side in (spec.encoder, spec.decoder):
        side.scale_embeddings = True  # TokenEmbedding multiplies by sqrt(d_model)
        side.position_encodings.encodings = model.positional.table.cpu().float().numpy()
    for i, layer in enumerate(spec.encoder.layer):
        ours = f"encoder.layers.{i}"
        layer_norm(layer.self_attention.layer_norm, f"{ours}.add_norm1.norm")
        linear(layer.self_attention.linear[0], f"{ours}.self_attn.qkv_proj")
        linear(layer.self_attention.linear[1], f"{ours}.self_attn.out_proj")
        layer_norm(layer.ffn.layer_norm, f"{ours}.add_norm2.norm")
        linear(layer.ffn.linear_0, f"{ours}.feed_forward.linear1")
        linear(layer.ffn.linear_1, f"{ours}.feed_forward.linear2")
    for i, layer in enumerate(spec.decoder.layer):
        ours = f"decoder.layers.{i}"
        layer_norm(layer.self_attention.layer_norm, f"{ours}.add_norm1.norm")
        linear(layer.self_attention.linear[0], f"{ours}.self_attn.qkv_proj")
        linear(layer.self_attention.linear[1], f"{ours}.self_attn.out_proj")
        layer_norm(layer.attention.layer_norm, f"{ours}.add_norm2.norm")
        linear(layer.attention.linear[0], f"{ours}.cross_attn.q_proj")
        linear(layer.attention.linear[1], f"{ours}.cross_attn.kv_proj")
        linear(layer.attention.linear[2], f"{ours}.cross_attn.out_proj")
        layer_norm(layer.ffn.layer_norm, f"{ours}.add_norm3.norm")
        linear(layer.ffn.linear_0, f"{ours}.feed_forward.linear1")
        linear(layer.ffn.linear_1, f"{ours}.feed_forward.linear2")
    if cfg.norm_first:  # pre-norm ends each stack with a norm; post-norm has none
        layer_norm(spec.encoder.layer_norm, "encoder.norm")
        layer_norm(spec.decoder.layer_norm, "decoder.norm")
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.config.bos_token = spec.config.decoder_start_token = vocabulary[special.bos]
    spec.config.eos_token = vocabulary[special.eos]
    spec.config.layer_norm_epsilon = model.encoder.layers[0].add_norm1.norm.eps
    return spec


def export_ctranslate2(model: Transformer, vocabulary: list[str], folder: str | Path, special: SpecialIds = SpecialIds()) -> Path:
    """Write a CTranslate2 model folder (float32; CTranslate2 quantises at load time if asked)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = ctranslate2_spec(model, vocabulary, special)
    spec.validate()
    spec.optimize(quantization=None)
    spec.save(str(folder))
    return folder


def ctranslate2_options(vocabulary: list[str], special: SpecialIds, beam_size: int, max_new_tokens: int) -> dict:
    """translate_batch arguments that make CTranslate2 search exactly as `model.decoding` does."""
    return {
        "beam_size": beam_size,
        "max_decoding_length": max_new_tokens,  # both count </s> among the generated tokens
        "min_decoding_length": 0,
        "suppress_sequences": [[vocabulary[i]] for i in sorted(set(special.forbidden))],  # <pad>, <s>, <unk>, tags
        "return_end_token": True,
        "length_penalty": 1.0,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "sampling_topk": 1,
        "max_input_length": 0,
    }


# --- running both engines on the same batches ------------------------------------------------


def batches_of(sources: list[list[int]], size: int) -> list[list[int]]:
    """Indices in batches of `size`, of similar lengths so little padding is decoded."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def max_new_tokens(batch: list[list[int]], max_len: int) -> int:
    return min(default_max_new_tokens(max(map(len, batch))), max_len - 1)


def run_ours(model: Transformer, sources: list[list[int]], batch_size: int, strategy: str, special: SpecialIds) -> list[list[int]]:
    """Output ids (</s> included) of every source, decoded with model.decoding."""
    out: list[list[int]] = [[] for _ in sources]
    for idx in batches_of(sources, batch_size):
        batch = [sources[i] for i in idx]
        opts = DecodeOptions(strategy="beam" if BEAM[strategy] > 1 else "greedy", beam_size=BEAM[strategy],
                             max_new_tokens=max_new_tokens(batch, model.cfg.max_len))
        for i, hyps in zip(idx, decode(model, right_padded(batch, special.pad), opts, special)):
            out[i] = hyps[0].ids
    return out


def run_ctranslate2(translator, sources: list[list[str]], batch_size: int, strategy: str, vocabulary: list[str],
                    special: SpecialIds, max_len: int) -> list[list[str]]:
    """Output tokens (</s> included) of every source, in the same batches as `run_ours`."""
    out: list[list[str]] = [[] for _ in sources]
    for idx in batches_of(sources, batch_size):
        batch = [sources[i] for i in idx]
        options = ctranslate2_options(vocabulary, special, BEAM[strategy], max_new_tokens(batch, max_len))
        for i, result in zip(idx, translator.translate_batch(batch, **options)):
            out[i] = result.hypotheses[0]
    return out


def tatoeba_sources(tokenizer: TranslationTokenizer, per_direction: int, split: Path = TEST_SPLIT) -> list[list[int]]:
    """Encoded Tatoeba test sources: `per_direction` es->en, then as many en->es."""
    rows = [r for r in read_split(split) if r.source == "tatoeba"][:per_direction]
    return [tokenizer.encode_source(r.es, "en") for r in rows] + [tokenizer.encode_source(r.en, "es") for r in rows]


def interleaved_best(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of `repeats` timings per engine, the engines taking turns within each repeat."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


# --- the benchmark ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain", help="model folder")
    p.add_argument("--split", type=Path, default=TEST_SPLIT, help="test split TSV (domain, source, en, es)")
    p.add_argument("--check-sentences", type=int, default=500, help="Tatoeba sentences per direction for the agreement check")
    p.add_argument("--timing-sentences", type=int, default=128, help="Tatoeba sentences per direction for the timings")
    p.add_argument("--threads", type=int, default=2, help="torch threads = CTranslate2 intra_threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine and setting; the fastest counts")
    p.add_argument("--engine", choices=("c", "torch"), default="c",
                   help="c: our models run on model.engine where it can (as the service does); torch: PyTorch only")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import ctranslate2
    except ImportError:
        raise SystemExit("ctranslate2 is not installed: run `make peers`") from None
    torch.set_num_threads(args.threads)
    loaded = load(args.weights)
    model, tokenizer = loaded.model, loaded.tokenizer
    engine = args.engine == "c" and attach(model, int8=False)
    special, vocabulary = special_ids(tokenizer), vocabulary_of(tokenizer)
    folder = EXPORTS / f"{loaded.name}-{loaded.weights_sha256[:12]}"
    if not (folder / "model.bin").is_file():
        export_ctranslate2(model, vocabulary, folder, special)
    translators = {
        compute: ctranslate2.Translator(str(folder), device="cpu", compute_type=compute, intra_threads=args.threads, inter_threads=1)
        for compute in ("float32", "int8")
    }

    check_ids = tatoeba_sources(tokenizer, args.check_sentences, args.split)
    ours = [tokenizer.tokens(ids) for ids in run_ours(model, check_ids, 32, "greedy", special)]
    theirs = run_ctranslate2(translators["float32"], [tokenizer.tokens(s) for s in check_ids], 32, "greedy", vocabulary, special, model.cfg.max_len)
    same = [a == b for a, b in zip(ours, theirs)]
    half = len(same) // 2
    check = {
        "sentences": len(same), "identical": sum(same), "identical_share": round(sum(same) / len(same), 4),
        "identical_share_es_en": round(sum(same[:half]) / half, 4), "identical_share_en_es": round(sum(same[half:]) / half, 4),
        "first_differences": [{"source": tokenizer.tokens(check_ids[i]), "ours": ours[i], "ctranslate2": theirs[i]}
                              for i, s in enumerate(same) if not s][:5],
    }
    print(f"greedy outputs identical: {check['identical']}/{check['sentences']} ({check['identical_share']:.1%})", flush=True)

    timing_ids = tatoeba_sources(tokenizer, args.timing_sentences, args.split)
    timing_tokens = [tokenizer.tokens(s) for s in timing_ids]
    n = len(timing_ids)
    ours_int8 = quantize_int8(model, engine=args.engine == "c")
    timings = {}
    for batch_size, strategy in SETTINGS:
        runs = {
            "ours": lambda: run_ours(model, timing_ids, batch_size, strategy, special),
            "ours_int8": lambda: run_ours(ours_int8, timing_ids, batch_size, strategy, special),
        }
        for compute, translator in translators.items():
            runs[f"ctranslate2_{compute}"] = lambda t=translator: run_ctranslate2(
                t, timing_tokens, batch_size, strategy, vocabulary, special, model.cfg.max_len)
        for fn in runs.values():
            fn()  # warm-up: first-call allocations and caches
        best = interleaved_best(runs, args.repeats)
        key = f"batch{batch_size}_{strategy}"
        timings[key] = {
            **{f"{name}_s": round(s, 3) for name, s in best.items()},
            **{f"{name}_sentences_per_s": round(n / s, 1) for name, s in best.items()},
            "ratio_ours_to_ctranslate2_float32": round(best["ours"] / best["ctranslate2_float32"], 3),
            "ratio_ours_int8_to_ctranslate2_int8": round(best["ours_int8"] / best["ctranslate2_int8"], 3),
        }
        print(f"{key:>14}: sentences/s float32: ours {n / best['ours']:6.1f}, CTranslate2 {n / best['ctranslate2_float32']:6.1f} "
              f"(ratio {timings[key]['ratio_ours_to_ctranslate2_float32']:.2f});  int8: ours {n / best['ours_int8']:6.1f}, "
              f"CTranslate2 {n / best['ctranslate2_int8']:6.1f}", flush=True)

    result = {
        "model": loaded.name, "weights_sha256": loaded.weights_sha256, "ctranslate2": ctranslate2.__version__,
        "threads": args.threads, "repeats": args.repeats,
        "engine": "c" if engine else "torch",
        "cpu": cpu_info(),
        "identical_greedy_share": check["identical_share"], "ratio_batch32_greedy": timings["batch32_greedy"]["ratio_ours_to_ctranslate2_float32"],
        # Our seconds / CTranslate2's at the same precision: the figures the decoding-speed targets are set on.
        "ratio_batch1_greedy": timings["batch1_greedy"]["ratio_ours_to_ctranslate2_float32"],
        "ratio_batch1_greedy_int8": timings["batch1_greedy"]["ratio_ours_int8_to_ctranslate2_int8"],
        "ratio_batch32_greedy_int8": timings["batch32_greedy"]["ratio_ours_int8_to_ctranslate2_int8"],
        "ratio_batch32_beam4_int8": timings["batch32_beam4"]["ratio_ours_int8_to_ctranslate2_int8"],
        "targets": {"identical_greedy_share": TARGET_IDENTICAL, **{name: TARGET_RATIO for name in RATIOS}},
        "check": check, "timing_sentences": n, "timings": timings,
        "command": " ".join(["python -m bench.engine", *(sys.argv[1:] if argv is None else argv)]),
    }
    path = write_result("engine", result, args.out or (ROOT / "bench" / "results"))
    ratios = ", ".join(f"{name} {result[name]}" for name in RATIOS)
    print(f"{ratios} (targets <= {TARGET_RATIO}); identical greedy {check['identical_share']:.1%} "
          f"(target >= {TARGET_IDENTICAL:.0%}); on {result['cpu']['model_name']}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
