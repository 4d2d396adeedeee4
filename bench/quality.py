"""Translation quality of our model against Apertium on the same test sentences, per domain.

    python -m bench.quality [--weights weights/es-en-multidomain] [--limit 500] [--strategies greedy,beam4] [--no-int8]

Translates the first --limit rows of every domain of the test split in both directions with our
model (model.training.evaluate.translate_texts, greedy and beam 4, each also with the int8 weights the
service uses on CPU, to check what quantisation costs) and with Apertium
(`apertium -u spa-eng` and `eng-spa`, the rule-based peer; -u drops the '*' it puts before unknown
words, as a user reading the output would), and scores them with sacrebleu BLEU and chrF against
the same references. Writes bench/results/quality.json (with `int8_bleu_change`: int8 BLEU minus
float32 BLEU per strategy and direction) and a markdown table, printed and saved as
bench/results/quality.md. Apertium needs `make peers`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.common import RESULTS, write_result
from model.checkpoint import load
from model.engine.backend import backend_for
from model.training.data import SplitRow, read_split
from model.training.evaluate import HEADLINE_SOURCE, STRATEGIES, directions_of, limit_per_domain, score, translate_texts

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "splits" / "test.tsv"
APERTIUM_PAIRS = {"es-en": "spa-eng", "en-es": "eng-spa"}
HEADLINE = "tatoeba"  # the rows whose source is Tatoeba, across domains


class ApertiumError(RuntimeError):
    """Apertium is missing, failed, or did not answer one line per input line."""


def apertium_translate(texts: list[str], pair: str, timeout_s: float = 600) -> list[str]:
    """One Apertium run for all `texts`, one sentence per line.

    Apertium's plain-text format keeps line breaks as they are, so output line i translates input
    line i; the count is checked, since a merged or split line would misalign every score after it.
    """
    if shutil.which("apertium") is None:
        raise ApertiumError("apertium is not installed: run `make peers`")
    if any("\n" in t or "\r" in t for t in texts):
        raise ApertiumError("texts must not contain line breaks")
    done = subprocess.run(["apertium", "-u", pair], input="\n".join(texts) + "\n", capture_output=True,
                          text=True, encoding="utf-8", timeout=timeout_s)
    if done.returncode:
        raise ApertiumError(f"apertium {pair} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    lines = done.stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(texts):
        raise ApertiumError(f"apertium {pair} answered {len(lines)} lines for {len(texts)}")
    return [line.strip() for line in lines]


def apertium_versions() -> dict[str, str]:
    """Debian package versions of the Apertium engine and of the language pair."""
    done = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "apertium", "apertium-eng-spa"],
                          capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def scores_by_group(rows: list[SplitRow], hyps: list[str], refs: list[str]) -> dict:
    """Scores on all rows, on each domain, and on the Tatoeba rows."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row.domain].append(i)
        groups["all"].append(i)
        if row.source == HEADLINE_SOURCE:
            groups[HEADLINE].append(i)
    return {name: score([hyps[i] for i in idx], [refs[i] for i in idx]) for name, idx in sorted(groups.items())}


def markdown_table(result: dict) -> str:
    """Rows: direction x group; columns: BLEU / chrF of every system."""
    systems = list(next(iter(result["directions"].values())))
    head = "| direction | subset | sentences | " + " | ".join(f"{s} BLEU / chrF" for s in systems) + " |"
    lines = [head, "|" + "---|" * (3 + len(systems))]
    for direction, by_system in result["directions"].items():
        for group, first in by_system[systems[0]]["scores"].items():
            cells = [f"{by_system[s]['scores'][group]['bleu']:.1f} / {by_system[s]['scores'][group]['chrf']:.1f}"
                     for s in systems]
            lines.append(f"| {direction} | {group} | {first['sentences']} | " + " | ".join(cells) + " |")
    speed = [f"{s}: " + ", ".join(f"{d} {result['directions'][d][s]['sentences_per_s']:g}"
                                  for d in result["directions"])
             for s in systems]
    return "\n".join(lines) + "\n\nsentences/s (whole set, one process): " + "; ".join(speed) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain", help="model folder")
    p.add_argument("--split", type=Path, default=TEST_SPLIT, help="test split TSV (domain, source, en, es)")
    p.add_argument("--limit", type=int, default=500, help="rows per domain (default 500; 0 = all)")
    p.add_argument("--strategies", default="greedy,beam4",
                   help="our decoding strategies, comma list of: " + ", ".join(STRATEGIES))
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="also translate with int8 weights, every strategy (default: on)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    if unknown := set(strategies) - set(STRATEGIES):
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {sorted(STRATEGIES)}")
    if not args.split.is_file():
        raise SystemExit(f"{args.split} not found: run `python -m model.training.data` first")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load(args.weights)
    ours = {f"ours_{name}": (backend_for(loaded.model), STRATEGIES[name]) for name in strategies}
    if args.int8:
        quantized = backend_for(loaded.model, int8=True)
        ours |= {f"ours_int8_{name}": (quantized, STRATEGIES[name]) for name in strategies}
    rows = limit_per_domain(read_split(args.split), args.limit)
    directions: dict = {}
    for direction, pair in APERTIUM_PAIRS.items():
        sources, refs, target = zip(*(directions_of(r)[direction] for r in rows))
        systems: dict[str, tuple[list[str], float]] = {}
        for name, (backend, opts) in ours.items():
            started = time.perf_counter()
            hyps = translate_texts(backend, loaded.tokenizer, list(sources), target[0], opts, args.batch_size)
            systems[name] = hyps, time.perf_counter() - started
        started = time.perf_counter()
        try:
            systems["apertium"] = apertium_translate(list(sources), pair), time.perf_counter() - started
        except (ApertiumError, subprocess.TimeoutExpired) as e:
            raise SystemExit(str(e)) from None
        directions[direction] = {
            name: {"seconds": round(seconds, 2), "sentences_per_s": round(len(rows) / seconds, 1),
                   "scores": scores_by_group(rows, hyps, list(refs))}
            for name, (hyps, seconds) in systems.items()
        }
        for name, entry in directions[direction].items():
            print(f"{direction} {name:>12}: BLEU {entry['scores']['all']['bleu']:5.1f}  "
                  f"chrF {entry['scores']['all']['chrf']:5.1f}  "
                  f"({entry['sentences_per_s']} sentences/s)", flush=True)
    result = {
        "model": loaded.name, "weights_sha256": loaded.weights_sha256,
        "split": str(args.split.relative_to(ROOT) if args.split.is_relative_to(ROOT) else args.split),
        "limit_per_domain": args.limit, "sentences_per_direction": len(rows), "threads": torch.get_num_threads(),
        "apertium": {"command": "apertium -u {spa-eng|eng-spa}", "packages": apertium_versions()},
        "directions": directions,
        **({"int8_bleu_change": {name: {d: round(r[f"ours_int8_{name}"]["scores"]["all"]["bleu"]
                                                 - r[f"ours_{name}"]["scores"]["all"]["bleu"], 2)
                                        for d, r in directions.items()} for name in strategies}} if args.int8 else {}),
        "command": " ".join(["python -m bench.quality", *(sys.argv[1:] if argv is None else argv)]),
    }
    out = args.out or RESULTS
    path = write_result("quality", result, out)
    table = markdown_table(result)
    (out / "quality.md").write_text(f"# Quality against Apertium ({loaded.name}, {len(rows)} test rows per direction)"
                                    f"\n\n{table}")
    print(table)
    print(f"wrote {path} and {out / 'quality.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
