"""Measure the decoding guards on the dev split before they become defaults.

    python -m bench.guards [--weights weights/<name>] [--limit 200]

For each setting of the n-gram repeat block (off, 3, 4) and each max_new_tokens policy (a fixed
cap against one that follows the source length), greedy-decode the dev sentences of every
domain and report BLEU, chrF, the share of outputs cut by the length limit, and the share with
a repeated 4-gram (the symptom of a looping decoder). Writes bench/results/guards.json.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from bench.common import write_result
from model.checkpoint import load
from model.engine.backend import backend_for
from model.search.options import DecodeOptions
from model.training.data import read_split
from model.training.evaluate import decode_texts, directions_of, limit_per_domain, score

SETTINGS = {"no_guard": 0, "no_repeat_3gram": 3, "no_repeat_4gram": 4}
POLICIES = ("source_length", "fixed_256")


def has_repeated_ngram(ids: list[int], n: int = 4) -> bool:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


def run(loaded, texts: list[str], target: str, no_repeat: int, policy: str, batch: int = 32):
    opts = DecodeOptions(no_repeat_ngram=no_repeat)
    fixed = 256 if policy == "fixed_256" else None
    hyps = decode_texts(backend_for(loaded.model), loaded.tokenizer, texts, target, opts, batch, max_new_tokens=fixed)
    outputs = [loaded.tokenizer.decode(h.ids) for h in hyps]
    return outputs, sum(not h.finished for h in hyps), sum(has_repeated_ngram(h.ids) for h in hyps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.guards", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=Path("weights/es-en-multidomain"))
    p.add_argument("--data", type=Path, default=Path("data/splits"))
    p.add_argument("--limit", type=int, default=200, help="dev sentences per domain")
    args = p.parse_args(argv)
    loaded = load(args.weights)
    rows = limit_per_domain(read_split(args.data / "dev.tsv"), args.limit)
    by_domain: dict[str, list] = defaultdict(list)
    for r in rows:
        by_domain[r.domain].append(r)
    results: dict = {}
    started = time.perf_counter()
    for name, n in SETTINGS.items():
        for policy in POLICIES:
            if policy == "fixed_256" and name != "no_guard":
                continue  # the length policy is measured once, without the repeat block
            key = f"{name}/{policy}"
            results[key] = {}
            for direction in ("es-en", "en-es"):
                for domain, drows in sorted(by_domain.items()):
                    src = [directions_of(r)[direction][0] for r in drows]
                    ref = [directions_of(r)[direction][1] for r in drows]
                    out, cut, looping = run(loaded, src, directions_of(drows[0])[direction][2], n, policy)
                    results[key][f"{direction}/{domain}"] = {**score(out, ref),
                                                             "cut_by_length_pct": round(100 * cut / len(src), 2),
                                                             "repeated_4gram_pct": round(100 * looping / len(src), 2)}
            print(key, {k: (v["bleu"], v["chrf"], v["repeated_4gram_pct"]) for k, v in results[key].items()},
                  flush=True)
    path = write_result("guards", {"results": results, "limit_per_domain": args.limit,
                                   "seconds": round(time.perf_counter() - started),
                                   "command": "python -m bench.guards " + " ".join(argv or [])})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
