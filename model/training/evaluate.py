"""Evaluate a model folder with sacrebleu: BLEU and chrF per direction, strategy and domain.

    python -m model.training.evaluate --weights weights/<name> --split test [--limit N] [--json PATH] [--update-card]

The top-level figures are on the Tatoeba rows of the split (the corpus the headline targets
refer to); `domains` holds the same figures for every domain of the split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import sacrebleu
import torch

from model.checkpoint import CARD, LoadedModel, load
from model.engine.backend import backend_for
from model.search import decode
from model.search.backend import Backend, right_padded
from model.search.options import DecodeOptions, default_max_new_tokens, special_ids
from model.search.records import Hypothesis
from model.tokenizer import TranslationTokenizer
from model.training.data import SplitRow, read_split

log = logging.getLogger("model.training.evaluate")

STRATEGIES = {
    "greedy": DecodeOptions(strategy="greedy"),
    "beam4": DecodeOptions(strategy="beam", beam_size=4),
}
HEADLINE_SOURCE = "tatoeba"


def decode_texts(
    backend: Backend,
    tokenizer: TranslationTokenizer,
    texts: list[str],
    target: str,
    opts: DecodeOptions,
    batch_size: int = 64,
    max_new_tokens: int | None = None,
) -> list[Hypothesis]:
    """Best hypothesis per text, batching sentences of similar length so little padding is decoded.

    `max_new_tokens` None follows each batch's longest source (`default_max_new_tokens`).
    """
    device, limit = backend.device, backend.config.max_len
    # Sources past the model's positions keep their head and their </s>.
    encoded = [ids if len(ids) <= limit else [*ids[: limit - 1], tokenizer.eos_id]
               for ids in (tokenizer.encode_source(t, target) for t in texts)]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out: list[Hypothesis | None] = [None] * len(texts)
    special = special_ids(tokenizer)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in idx)
        src = right_padded([encoded[i] for i in idx], tokenizer.pad_id, device)
        max_new = min(max_new_tokens or default_max_new_tokens(longest), limit - 1)
        batch_opts = DecodeOptions(**{**opts.__dict__, "max_new_tokens": max_new})
        for i, hyps in zip(idx, decode(backend, src, batch_opts, special)):
            out[i] = hyps[0]
    return out


def translate_texts(
    backend: Backend,
    tokenizer: TranslationTokenizer,
    texts: list[str],
    target: str,
    opts: DecodeOptions,
    batch_size: int = 64,
) -> list[str]:
    """Translate many texts (see `decode_texts`)."""
    return [tokenizer.decode(h.ids) for h in decode_texts(backend, tokenizer, texts, target, opts, batch_size)]


def score(hypotheses: list[str], references: list[str]) -> dict:
    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
        "sentences": len(references),
    }


def directions_of(row: SplitRow) -> dict[str, tuple[str, str, str]]:
    """direction -> (source text, reference, target language)."""
    return {"es-en": (row.es, row.en, "en"), "en-es": (row.en, row.es, "es")}


def evaluate_rows(
    backend: Backend, tokenizer: TranslationTokenizer, rows: list[SplitRow], strategies: list[str], batch_size: int = 64
) -> dict:
    """Scores for every direction x strategy, overall per domain and on the Tatoeba rows."""
    results: dict = {"domains": defaultdict(lambda: defaultdict(dict))}
    for direction in ("es-en", "en-es"):
        for name in strategies:
            sources = [directions_of(r)[direction][0] for r in rows]
            target = directions_of(rows[0])[direction][2]
            hyps = translate_texts(backend, tokenizer, sources, target, STRATEGIES[name], batch_size)
            refs = [directions_of(r)[direction][1] for r in rows]
            by_domain: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(rows):
                by_domain[r.domain].append(i)
            for domain, idx in by_domain.items():
                results["domains"][domain][direction][name] = score([hyps[i] for i in idx], [refs[i] for i in idx])
            headline = [i for i, r in enumerate(rows) if r.source == HEADLINE_SOURCE] or list(range(len(rows)))
            results.setdefault(direction, {})[name] = score([hyps[i] for i in headline], [refs[i] for i in headline])
            log.info("%s %s: %s", direction, name, results[direction][name])
    results["domains"] = json.loads(json.dumps(results["domains"]))
    return results


def limit_per_domain(rows: list[SplitRow], limit: int | None) -> list[SplitRow]:
    if not limit:
        return rows
    seen: dict[str, int] = defaultdict(int)
    kept = []
    for r in rows:
        if seen[r.domain] < limit:
            kept.append(r)
            seen[r.domain] += 1
    return kept


def split_check(split_file: Path, split: str, card: dict) -> dict:
    """Whether `split_file` is the split the model's card records (by sha256), and if not, why it matters."""
    digest = hashlib.sha256(split_file.read_bytes()).hexdigest()
    recorded = card.get("data", {}).get("splits", {}).get(split, {}).get("sha256")
    check = {"sha256": digest, "matches_card": digest == recorded}
    if recorded is None:
        check["note"] = f"the card records no {split} split sha256: these scores cannot be tied to its data"
    elif digest != recorded:
        check["note"] = (f"{split_file} has sha256 {digest[:12]}…, the card's {split} split {recorded[:12]}…: "
                         "not the split the card describes; rebuild it with the data command of docs/training.md "
                         "(model.training.data says why it differs)")
    return check


def update_card(loaded: LoadedModel, split: str, results: dict, meta: dict) -> None:
    card_path = loaded.path / CARD
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card.setdefault("metrics", {})[split] = {**results, **meta}
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, type=Path, help="model folder (config.json, tokenizer.json, ...)")
    p.add_argument("--split", default="test", choices=["train", "dev", "test", "dev_extra", "test_extra"],
                   help="dev_extra, test_extra: the held-out rows of the sources added last (docs/training.md)")
    p.add_argument("--data", default=Path("data/splits"), type=Path,
                   help="folder written by `python -m model.training.data`")
    p.add_argument("--limit", type=int, default=None, help="at most N sentences per domain")
    p.add_argument("--domains", default="", help="comma list of domains to evaluate (default: all in the split)")
    p.add_argument("--strategies", default="greedy,beam4", help="comma list of: " + ", ".join(STRATEGIES))
    p.add_argument("--json", type=Path, default=None, help="write the scores to this file")
    p.add_argument("--update-card", action="store_true", help="record the scores in the model's card.json")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    split_file = args.data / f"{args.split}.tsv"
    if not split_file.is_file():
        raise SystemExit(f"{split_file} not found: run `python -m model.training.data` first")
    device = ("cuda" if args.device == "auto" and torch.cuda.is_available()
              else ("cpu" if args.device == "auto" else args.device))
    loaded = load(args.weights, device=device)
    check = split_check(split_file, args.split, loaded.card)
    if not check["matches_card"]:
        log.warning("%s", check["note"])
    domains = set(filter(None, args.domains.split(",")))
    rows = limit_per_domain([r for r in read_split(split_file) if not domains or r.domain in domains], args.limit)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"unknown strategies {sorted(unknown)}; choose from {sorted(STRATEGIES)}")
    started = time.perf_counter()
    results = evaluate_rows(backend_for(loaded.model), loaded.tokenizer, rows, strategies, args.batch_size)
    meta = {
        "split": args.split,
        "limit_per_domain": args.limit,
        "domains": sorted({r.domain for r in rows}),
        "device": str(loaded.device),
        "seconds": round(time.perf_counter() - started, 1),
        "split_file": check,
        "command": "python -m model.training.evaluate "
                   + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**results, "meta": meta}, indent=2) + "\n")
    if args.update_card:
        update_card(loaded, args.split, results, meta)
    print(json.dumps({k: v for k, v in results.items() if k != "domains"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
