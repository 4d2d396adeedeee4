"""Does a translation depend on what shares its batch? The shipped model, alone against batched.

    python -m bench.batch_invariance [--weights weights/es-en-multidomain] [--data data/splits]
                                     [--sentences 1000] [--threads 2]

Decodes the same test sentences (half es->en, half en->es, every domain) greedily four ways: each
alone, in static batches of 8 and of 32 (right-padded, as the service's batcher builds them, sorted
by length as `model.training.evaluate` does, so batch-mates differ from the alone run in padding and
company), and through the running batch of `model.search.greedy` (8 sources join before every step
while fewer than 32 run). For int8 weights (the CPU default, `model.quantize`) and float32 it
prints, per way, the share of sentences whose every token id and every probability equal the
alone run's, the share with the same tokens, and the largest probability difference, and names the
CPU. Both run on the C engine (model.engine) where it can run, as the service does; --engine torch
measures PyTorch alone. Writes bench/results/batch_invariance.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.common import cpu_info, write_result
from model.checkpoint import load
from model.engine.backend import backend_for
from model.search import decode
from model.search.backend import Backend, right_padded
from model.search.greedy import GreedySearch, Request
from model.search.options import DecodeOptions, special_ids
from model.search.records import Hypothesis
from model.training.data import read_split

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 160  # one limit for every way, so that no way stops a row earlier than another
JOIN_PER_STEP, RUNNING_ROWS = 8, 32


def test_sources(loaded, data: Path, count: int) -> list[list[int]]:
    """`count` encoded sources: pairs spread over the split's domains, alternating direction."""
    rows = read_split(data / "test.tsv")
    stride = max(1, len(rows) // count)
    tok = loaded.tokenizer
    sources = []
    for i, row in enumerate(rows[::stride][:count]):
        text, target = (row.es, "en") if i % 2 == 0 else (row.en, "es")
        sources.append(tok.encode_source(text, target)[: loaded.config.max_len - 1])
    return sources


def static(backend: Backend, sources: list[list[int]], batch: int, options: DecodeOptions,
           special) -> list[Hypothesis]:
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[Hypothesis | None] = [None] * len(sources)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        src = right_padded([sources[i] for i in idx], special.pad, backend.device)
        for i, hyps in zip(idx, decode(backend, src, options, special)):
            out[i] = hyps[0]
    return out


def running(backend: Backend, sources: list[list[int]], options: DecodeOptions, special) -> list[Hypothesis]:
    batch = GreedySearch(backend, special)
    waiting = [Request(ids, options, tag=i) for i, ids in enumerate(sources)]
    out: list[Hypothesis | None] = [None] * len(sources)
    while waiting or len(batch):
        room = min(JOIN_PER_STEP, RUNNING_ROWS - len(batch))
        batch.add(waiting[:room])
        waiting = waiting[room:]
        for request, hypothesis in batch.step():
            out[request.tag] = hypothesis
    return out


def compare(alone: list[Hypothesis], other: list[Hypothesis]) -> dict:
    identical = same_tokens = 0
    largest = 0.0
    for a, b in zip(alone, other, strict=True):
        if a.ids == b.ids:
            same_tokens += 1
            diffs = [abs(x.probability - y.probability) for x, y in zip(a.steps, b.steps)]
            largest = max(largest, *diffs)
            identical += all(d == 0.0 for d in diffs)
    n = len(alone)
    return {"identical_share": identical / n, "same_tokens_share": same_tokens / n,
            "max_probability_difference": largest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_invariance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "splits")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=("c", "torch"), default="c",
                        help="c: both precisions run on model.engine where it can (as the service does); "
                             "torch: PyTorch only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load(args.weights)
    special = special_ids(loaded.tokenizer)
    sources = test_sources(loaded, args.data, args.sentences)
    options = DecodeOptions(strategy="greedy", max_new_tokens=MAX_NEW_TOKENS)
    cpu = cpu_info()
    print(f"{len(sources)} test sentences, greedy, on {cpu['model_name']} (AVX-512: {cpu['avx512']})")
    results = {}
    use_engine = args.engine == "c"
    int8 = backend_for(loaded.model, int8=True, engine=use_engine)
    float32 = backend_for(loaded.model, engine=use_engine)
    engine = float32.name
    print(f"engine: {engine}")
    for precision, model in (("int8", int8), ("float32", float32)):
        with torch.inference_mode():
            alone = static(model, sources, 1, options, special)
            ways = {"static_batch_8": static(model, sources, 8, options, special),
                    "static_batch_32": static(model, sources, 32, options, special),
                    "running_batch": running(model, sources, options, special)}
        results[precision] = {way: compare(alone, hyps) for way, hyps in ways.items()}
        for way, figures in results[precision].items():
            print(f"{precision:8s} {way:16s} identical {figures['identical_share']:7.1%}  same tokens "
                  f"{figures['same_tokens_share']:7.1%}  largest probability difference "
                  f"{figures['max_probability_difference']:.2e}")
    path = write_result("batch_invariance", {
        "command": "python -m bench.batch_invariance " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sentences": len(sources), "strategy": "greedy", "cpu_info": cpu, "engine": engine, "results": results,
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
