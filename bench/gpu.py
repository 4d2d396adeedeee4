"""Decoding on a GPU: test BLEU, and sentences/s by batch size, strategy, dtype and KV cache.

    python -m bench.gpu --weights weights/<name> [--data data/splits] [--sentences 512]

Every figure comes from the same process on the same card: greedy and beam-4 at batch 1, 32
and 128; float32 against bfloat16 weights; the KV cache on against off (greedy, batch 32).
Writes bench/results/gpu.json naming the GPU. Runs on CPU too (`--device cpu`), only to try it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import write_result
from model.checkpoint import load
from model.data import read_split
from model.decoding import DecodeOptions
from model.evaluate import evaluate_rows, translate_texts

BATCHES = (1, 32, 128)
STRATEGIES = {"greedy": DecodeOptions(strategy="greedy"), "beam4": DecodeOptions(strategy="beam", beam_size=4)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sentences_per_s(loaded, texts: list[str], opts: DecodeOptions, batch: int) -> float:
    translate_texts(loaded.model, loaded.tokenizer, texts[: min(len(texts), batch * 2)], "en", opts, batch)  # warm-up
    synchronize(loaded.device)
    start = time.perf_counter()
    translate_texts(loaded.model, loaded.tokenizer, texts, "en", opts, batch)
    synchronize(loaded.device)
    return round(len(texts) / (time.perf_counter() - start), 1)


def throughput(loaded, texts: list[str], batch1_sentences: int) -> dict:
    out = {}
    for name, opts in STRATEGIES.items():
        for batch in BATCHES:
            sample = texts[:batch1_sentences] if batch == 1 else texts
            out[f"{name}_batch{batch}"] = sentences_per_s(loaded, sample, opts, batch)
            print(f"  {loaded.dtype} {name} batch {batch}: {out[f'{name}_batch{batch}']} sentences/s", flush=True)
    no_cache = DecodeOptions(strategy="greedy", use_cache=False)
    out["greedy_batch32_no_cache"] = sentences_per_s(loaded, texts, no_cache, 32)
    out["cache_speedup_greedy_batch32"] = round(out["greedy_batch32"] / out["greedy_batch32_no_cache"], 2)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("data/splits"))
    p.add_argument("--sentences", type=int, default=512, help="test sentences timed at batch 32 and 128")
    p.add_argument("--batch1-sentences", type=int, default=64, help="sentences timed one at a time")
    p.add_argument("--bleu-limit", type=int, default=None, help="test sentences per domain for BLEU (default all)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--results", type=Path, default=Path("bench/results"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    rows = read_split(args.data / "test.tsv")
    tatoeba = [r for r in rows if r.source == "tatoeba"] or rows
    texts = [r.es for r in tatoeba[: args.sentences]]
    result: dict = {"weights": str(args.weights), "device": str(device), "sentences": len(texts),
                    "command": "python -m bench.gpu " + " ".join(argv or [])}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    fp32 = load(args.weights, device=device, dtype=torch.float32)
    result["model"] = fp32.name
    started = time.perf_counter()
    test_rows = tatoeba[: args.bleu_limit] if args.bleu_limit else tatoeba
    result["test_bleu_fp32"] = {k: v for k, v in evaluate_rows(fp32.model, fp32.tokenizer, test_rows, list(STRATEGIES), 128).items() if k != "domains"}
    result["bleu_seconds"] = round(time.perf_counter() - started, 1)
    print("test BLEU (fp32):", result["test_bleu_fp32"], flush=True)
    result["float32"] = throughput(fp32, texts, args.batch1_sentences)
    del fp32
    bf16 = load(args.weights, device=device, dtype=torch.bfloat16)
    result["bfloat16"] = throughput(bf16, texts, args.batch1_sentences)
    result["bf16_speedup_greedy_batch128"] = round(result["bfloat16"]["greedy_batch128"] / result["float32"]["greedy_batch128"], 2)
    path = write_result("gpu", result, args.results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
