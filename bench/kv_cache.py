"""Cached against uncached greedy decoding of 64 tokens, side by side in one run.

    python -m bench.kv_cache [--repeats 3] [--d-model 384 ...]

The model is random (the cache's effect does not depend on what the weights say), of the shipped
size by default, and forced to produce exactly 64 tokens so both paths do the same work.
Writes bench/results/kv_cache.json with `speedup_batch1` and `speedup_batch16`.
"""

from __future__ import annotations

import argparse

import torch

from bench.common import best_of, write_result
from model.search import decode
from model.search.backend import TorchBackend, log_probabilities
from model.search.options import DecodeOptions, SpecialIds
from model.transformer import Transformer, TransformerConfig

NEW_TOKENS = 64


@torch.inference_mode()
def uncached_greedy(model: Transformer, src: torch.Tensor, new_tokens: int, special: SpecialIds) -> torch.Tensor:
    """The baseline the KV cache is measured against: every step runs the decoder over the whole prefix."""
    memory, mask, _ = model.encode(src)
    tgt = torch.full((src.size(0), 1), special.bos, dtype=torch.long, device=src.device)
    for _ in range(new_tokens):
        logits, _ = model.decode(tgt, memory, mask)
        logp = log_probabilities(logits)
        logp[:, special.forbidden] = float("-inf")
        tgt = torch.cat([tgt, logp.argmax(dim=-1, keepdim=True)], dim=1)
    return tgt[:, 1:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.kv_cache", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-ff", type=int, default=1536)
    p.add_argument("--encoder-layers", type=int, default=6)
    p.add_argument("--decoder-layers", type=int, default=3)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--source-tokens", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=args.vocab_size, d_model=args.d_model, n_heads=args.heads, d_ff=args.d_ff,
                            encoder_layers=args.encoder_layers, decoder_layers=args.decoder_layers, dropout=0.0)
    model = Transformer(cfg).eval()
    # </s> is never emitted, so every run generates exactly NEW_TOKENS tokens.
    special = SpecialIds(pad=0, bos=1, eos=2, never=(2,))
    result = {"new_tokens": NEW_TOKENS, "config": cfg.to_dict(), "parameters": model.num_parameters()}
    for batch in (1, 16):
        src = torch.randint(4, cfg.vocab_size, (batch, args.source_tokens))
        timings = {}
        runs = {True: lambda src=src: decode(TorchBackend(model), src, DecodeOptions(max_new_tokens=NEW_TOKENS),
                                             special),
                False: lambda src=src: uncached_greedy(model, src, NEW_TOKENS, special)}
        for cached, run in runs.items():
            run()  # warm-up
            timings[cached] = best_of(run, args.repeats)
        result[f"batch{batch}"] = {"cached_s": round(timings[True], 4), "uncached_s": round(timings[False], 4),
                                   "cached_tokens_per_s": round(batch * NEW_TOKENS / timings[True], 1)}
        result[f"speedup_batch{batch}"] = round(timings[False] / timings[True], 2)
        print(f"batch {batch:>2}: cached {timings[True]:.3f}s  uncached {timings[False]:.3f}s  "
              f"speedup {result[f'speedup_batch{batch}']}x")
    path = write_result("kv_cache", {**result, "command": "python -m bench.kv_cache " + " ".join(argv or [])})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
