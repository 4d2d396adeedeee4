"""Where a decoding step's time goes: torch.profiler over our decoder, per setting.

    python -m bench.profile [--weights weights/es-en-multidomain] [--sentences 32] [--threads 2]

Decodes the first --sentences Tatoeba test sources of each direction at batch 1 and 32, greedy
and beam 4, float32 and int8 (model.quantize), as bench.engine does, under torch.profiler. For
each setting it reports the wall time, the share spent inside PyTorch operators (their self CPU
time) and so the share left to Python (the step recorder, beam bookkeeping, module calls), and
the operators that took most of it; the C engine's calls (model.engine) count as operators named
engine.<call>. Writes bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import cpu_info, write_result
from bench.engine import SETTINGS, TEST_SPLIT, run_ours, tatoeba_sources
from model.checkpoint import load
from model.engine.backend import backend_for
from model.search.options import special_ids

ROOT = Path(__file__).resolve().parents[1]


def profiled(fn) -> tuple[float, list[tuple[str, float, int]], float]:
    """(wall seconds, [(operator, self CPU seconds, calls)] largest first, all operators' self CPU seconds)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    ops.sort(key=lambda op: op[1], reverse=True)
    return wall, ops, sum(op[1] for op in ops)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain")
    p.add_argument("--split", type=Path, default=TEST_SPLIT)
    p.add_argument("--sentences", type=int, default=32, help="Tatoeba sentences per direction")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--engine", choices=("c", "torch"), default="c",
                   help="as bench.engine: model.engine where it can run, or PyTorch only")
    p.add_argument("--only", default=None, help="profile only the settings whose key contains this, e.g. int8_batch32")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load(args.weights)
    special = special_ids(loaded.tokenizer)
    sources = tatoeba_sources(loaded.tokenizer, args.sentences, args.split)
    use_engine = args.engine == "c"
    models = {"float32": backend_for(loaded.model, engine=use_engine),
              "int8": backend_for(loaded.model, int8=True, engine=use_engine)}
    results = {}
    for precision, model in models.items():
        for batch_size, strategy in SETTINGS:
            key = f"{precision}_batch{batch_size}_{strategy}"
            if args.only and args.only not in key:
                continue
            def run(model=model, batch_size=batch_size, strategy=strategy):
                return run_ours(model, sources, batch_size, strategy, special)

            run()  # warm-up
            wall, ops, in_ops = profiled(run)
            results[key] = {
                "wall_s": round(wall, 3), "in_operators_share": round(in_ops / wall, 3),
                "python_share": round(max(0.0, 1 - in_ops / wall), 3),
                "top": [{"op": name, "share": round(seconds / wall, 3), "calls": calls}
                        for name, seconds, calls in ops[:args.top]],
            }
            tops = ", ".join(f"{t['op']} {t['share']:.0%}" for t in results[key]["top"][:5])
            print(f"{key:>24}: {wall:6.2f} s, Python {results[key]['python_share']:.0%}; {tops}", flush=True)
    write_result("profile", {"command": " ".join(["python -m bench.profile",
                                                  *(sys.argv[1:] if argv is None else argv)]),
                             "cpu": cpu_info(), "engine": args.engine, "sentences": len(sources), "settings": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
