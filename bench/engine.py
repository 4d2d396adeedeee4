"""Our PyTorch decoder against CTranslate2 running the same weights: agreement, then speed.

    python -m bench.engine [--weights weights/es-en-multidomain] [--check-sentences 500]
                           [--timing-sentences 128] [--threads 2] [--repeats 3]

Exports the model to a CTranslate2 folder (runs/ct2/<name>-<sha256 prefix>, reused while the
weights do not change), checks that both engines' greedy outputs agree token for token on Tatoeba
test sentences in both directions, then times batch 1 and batch 32, greedy and beam 4: ours
against CTranslate2 float32, and for reference both engines with int8 weights (ours through
the engine's int8 weights), on the same pre-tokenized sentences in the same batches, with
the same max length and thread count. Runs alternate between the engines and
the best of --repeats counts, so a noisy shared machine slows both alike.

Our models run on the C engine (model.engine) where it can run, as the service does, with the
kernel family --kernels names (auto: the best this CPU has) and --threads engine threads; the
search's own PyTorch operators then run on one thread, as on the service's decode lanes (torch's
thread pool woke for operators on one sentence's numbers cost more than they do). --engine torch
times PyTorch alone, on --threads threads. Writes bench/results/engine.json with `identical_greedy_share`,
`ratio_batch32_greedy` (our seconds / CTranslate2 float32 seconds, greedy at batch 32), the int8
ratios `ratio_batch1_greedy_int8`, `ratio_batch32_greedy_int8`, `ratio_batch32_beam4_int8`, and
`cpu`, `engine_kernels`, and `ratios`: all eight ratios (float32 and int8, batch 1 and 32, greedy
and beam 4). Needs `make peers` (ctranslate2).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import cpu_info, write_result
from model.checkpoint import load
from model.engine import binding
from model.engine.backend import backend_for
from model.search import decode
from model.search.backend import Backend, right_padded
from model.search.options import DecodeOptions, SpecialIds, default_max_new_tokens, special_ids
from model.tokenizer import TranslationTokenizer
from model.training.data import read_split
from model.training.export import ctranslate2_options, export_ctranslate2, vocabulary_of

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "splits" / "test.tsv"
EXPORTS = ROOT / "runs" / "ct2"
TARGET_RATIO, TARGET_IDENTICAL = 1.2, 0.95  # our seconds / CTranslate2's, every ratio below; greedy agreement
RATIOS = ("ratio_batch32_greedy", "ratio_batch1_greedy_int8", "ratio_batch32_greedy_int8", "ratio_batch32_beam4_int8")
SETTINGS = [(1, "greedy"), (1, "beam4"), (32, "greedy"), (32, "beam4")]
BEAM = {"greedy": 1, "beam4": 4}


# --- running both engines on the same batches ------------------------------------------------


def batches_of(sources: list[list[int]], size: int) -> list[list[int]]:
    """Indices in batches of `size`, of similar lengths so little padding is decoded."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def max_new_tokens(batch: list[list[int]], max_len: int) -> int:
    return min(default_max_new_tokens(max(map(len, batch))), max_len - 1)


def run_ours(backend: Backend, sources: list[list[int]], batch_size: int, strategy: str,
             special: SpecialIds) -> list[list[int]]:
    """Output ids (</s> included) of every source, decoded with model.search."""
    out: list[list[int]] = [[] for _ in sources]
    for idx in batches_of(sources, batch_size):
        batch = [sources[i] for i in idx]
        opts = DecodeOptions(strategy="beam" if BEAM[strategy] > 1 else "greedy", beam_size=BEAM[strategy],
                             max_new_tokens=max_new_tokens(batch, backend.config.max_len))
        for i, hyps in zip(idx, decode(backend, right_padded(batch, special.pad), opts, special)):
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
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain", help="model folder")
    p.add_argument("--split", type=Path, default=TEST_SPLIT, help="test split TSV (domain, source, en, es)")
    p.add_argument("--check-sentences", type=int, default=500,
                   help="Tatoeba sentences per direction for the agreement check")
    p.add_argument("--timing-sentences", type=int, default=128, help="Tatoeba sentences per direction for the timings")
    p.add_argument("--threads", type=int, default=2, help="torch threads = CTranslate2 intra_threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per engine and setting; the fastest counts")
    p.add_argument("--engine", choices=("c", "torch"), default="c",
                   help="c: our models run on model.engine where it can (as the service does); torch: PyTorch only")
    p.add_argument("--kernels", choices=("auto", *binding.KERNELS), default="auto",
                   help="the engine's kernel family (TRANSLATE_ENGINE_KERNELS); auto: the best this CPU has")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import ctranslate2
    except ImportError:
        raise SystemExit("ctranslate2 is not installed: run `make peers`") from None
    torch.set_num_threads(args.threads)
    os.environ["TRANSLATE_ENGINE_KERNELS"] = args.kernels
    loaded = load(args.weights)
    model, tokenizer = loaded.model, loaded.tokenizer
    ours = backend_for(model, engine=args.engine == "c")
    if ours.name == "c":
        binding.set_threads(args.threads)
        torch.set_num_threads(1)
    gc.collect()
    gc.freeze()  # as the service does once its models are loaded
    special, vocabulary = special_ids(tokenizer), vocabulary_of(tokenizer)
    folder = EXPORTS / f"{loaded.name}-{loaded.weights_sha256[:12]}"
    if not (folder / "model.bin").is_file():
        export_ctranslate2(model, vocabulary, folder, special)
    translators = {
        compute: ctranslate2.Translator(str(folder), device="cpu", compute_type=compute, intra_threads=args.threads,
                                        inter_threads=1)
        for compute in ("float32", "int8")
    }

    check_ids = tatoeba_sources(tokenizer, args.check_sentences, args.split)
    ours_tokens = [tokenizer.tokens(ids) for ids in run_ours(ours, check_ids, 32, "greedy", special)]
    theirs = run_ctranslate2(translators["float32"], [tokenizer.tokens(s) for s in check_ids], 32, "greedy",
                             vocabulary, special, model.cfg.max_len)
    same = [a == b for a, b in zip(ours_tokens, theirs)]
    half = len(same) // 2
    check = {
        "sentences": len(same), "identical": sum(same), "identical_share": round(sum(same) / len(same), 4),
        "identical_share_es_en": round(sum(same[:half]) / half, 4),
        "identical_share_en_es": round(sum(same[half:]) / half, 4),
        "first_differences": [{"source": tokenizer.tokens(check_ids[i]), "ours": ours_tokens[i],
                               "ctranslate2": theirs[i]}
                              for i, s in enumerate(same) if not s][:5],
    }
    print(f"greedy outputs identical: {check['identical']}/{check['sentences']} ({check['identical_share']:.1%})",
          flush=True)

    timing_ids = tatoeba_sources(tokenizer, args.timing_sentences, args.split)
    timing_tokens = [tokenizer.tokens(s) for s in timing_ids]
    n = len(timing_ids)
    ours_int8 = backend_for(model, int8=True, engine=args.engine == "c")
    timings = {}
    for batch_size, strategy in SETTINGS:
        runs = {
            "ours": lambda b=batch_size, s=strategy: run_ours(ours, timing_ids, b, s, special),
            "ours_int8": lambda b=batch_size, s=strategy: run_ours(ours_int8, timing_ids, b, s, special),
        }
        for compute, translator in translators.items():
            runs[f"ctranslate2_{compute}"] = lambda t=translator, b=batch_size, s=strategy: run_ctranslate2(
                t, timing_tokens, b, s, vocabulary, special, model.cfg.max_len)
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
        print(f"{key:>14}: sentences/s float32: ours {n / best['ours']:6.1f}, "
              f"CTranslate2 {n / best['ctranslate2_float32']:6.1f} "
              f"(ratio {timings[key]['ratio_ours_to_ctranslate2_float32']:.2f});  "
              f"int8: ours {n / best['ours_int8']:6.1f}, "
              f"CTranslate2 {n / best['ctranslate2_int8']:6.1f}", flush=True)

    result = {
        "model": loaded.name, "weights_sha256": loaded.weights_sha256, "ctranslate2": ctranslate2.__version__,
        "threads": args.threads, "repeats": args.repeats,
        "engine": ours.name, "engine_kernels": ours.engine.kernels if ours.name == "c" else None,
        "cpu": cpu_info(),
        "identical_greedy_share": check["identical_share"],
        "ratio_batch32_greedy": timings["batch32_greedy"]["ratio_ours_to_ctranslate2_float32"],
        # Our seconds / CTranslate2's at the same precision: the figures the decoding-speed targets are set on.
        "ratio_batch1_greedy": timings["batch1_greedy"]["ratio_ours_to_ctranslate2_float32"],
        "ratio_batch1_greedy_int8": timings["batch1_greedy"]["ratio_ours_int8_to_ctranslate2_int8"],
        "ratio_batch32_greedy_int8": timings["batch32_greedy"]["ratio_ours_int8_to_ctranslate2_int8"],
        "ratio_batch32_beam4_int8": timings["batch32_beam4"]["ratio_ours_int8_to_ctranslate2_int8"],
        "ratios": {f"{key}_{precision}": timings[key][f"ratio_{name}_to_ctranslate2_{precision}"]
                   for key in timings for name, precision in (("ours", "float32"), ("ours_int8", "int8"))},
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
