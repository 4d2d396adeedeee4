"""Glossary terms through the real app: how often they come out as asked, and what they cost in BLEU.

    python -m bench.glossary [--data data] [--weights-dir weights] [--per-domain 150]
    python -m bench.glossary --labels [--data data] [--weights-dir weights]

Two benchmarks. `--labels`: the interface labels of the GIMP manual, which its pages mark up in both
languages (bench/labels.py says how they are paired), as the glossary of each held-out paragraph
that has them; see `run_labels`. Without it, the older benchmark on term pairs that Apertium's
dictionaries find in our own test split:

Sentences: test-split pairs of 3-40 words a side, the first --per-domain of each domain in file order.
Terms come from the reference, found with Apertium's dictionaries (as in bench/alignment.py): the
English side goes through eng-spa morphology, tagger, pretransfer and bilingual dictionary, which gives
each English word its Spanish lemma candidates; the Spanish side goes through spa-eng morphology. A
term pair is an English noun, verb or adjective (<n>, <vblex>, <adj>) whose candidates match exactly
one Spanish word, that Spanish word matched by no other English word, each occurring once in its
sentence, neither the sentence's first word (whose capital says nothing about the term), and the two
not spelt the same. The term is the two surface forms as written.

Each direction (es->en, en->es) translates every pair with a term twice through the app in-process
(greedy): without a glossary, then with glossary=[{source term: target term}]. Where a pair has
several term pairs, the first whose target term the plain translation lacks is asked for (those are
the cases a glossary is for), else the first. Figures are given for all pairs and for the subset the
plain translation missed: term success (target term in the output as whole words, any case), term
forced twice (more than once in the output; the reference has it once), left out, corpus BLEU and chrF.

Writes bench/results/glossary.json. Needs Apertium (`make peers`) and the shipped model.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sacrebleu

from bench import labels
from bench.alignment import (
    ENG_BILINGUAL,
    ENG_TAGGED,
    bilingual_candidates,
    for_apertium,
    held_out_rows,
    lemma_and_tag,
    parse_units,
    run_pipeline,
    spanish_lemmas,
    split_unescaped,
    unescape,
    words_of_units,
)
from bench.common import ROOT, cpu_info, write_result
from model.text.align import WORD
from model.text.glossary import Term, contains, find
from model.text.glossary import occurrences as spelt_as_given
from model.training.data import SplitRow

TERM_TAGS = {"n", "vblex", "adj"}
DIRECTIONS = (("es", "en"), ("en", "es"))  # (source, target)
TEXTS_PER_REQUEST = 16
IN_FLIGHT = 4  # concurrent requests, so that the server batches them
EXAMPLES = 10


@dataclass(frozen=True)
class TermPair:
    en: str
    es: str


@dataclass
class Case:
    """One pair in one direction and what came back."""
    row: SplitRow
    pairs: list[TermPair]  # every term pair found, in English word order
    plain: str = ""
    asked: TermPair | None = None
    with_glossary: str = ""

    def source(self, lang: str) -> str:
        return getattr(self.row, lang)


# --- term pairs from Apertium ------------------------------------------------------------------


def english_words(texts: list[str]) -> list[list[tuple[set[str], set[str]]]]:
    """Per sentence, each English word's (tags, Spanish lemma candidates)."""
    tagged = [parse_units(line) for line in run_pipeline(ENG_TAGGED, [for_apertium(t) for t in texts])]
    # One tagged unit per line for the bilingual stage, as in bench/alignment.py: line k is unit k's.
    flat = [fields[1] if len(fields) > 1 and not fields[1].startswith("*") else ""
            for units in tagged for fields in units]
    bilingual = iter(run_pipeline(ENG_BILINGUAL, [f"^{a}$" if a else "" for a in flat]))
    result = []
    for text, units in zip(texts, tagged):
        candidates = [bilingual_candidates(next(bilingual)) for _ in units]
        tags = [{lemma_and_tag(split_unescaped(u[1], "+")[0])[1]} if len(u) > 1 else set() for u in units]
        surfaces = [unescape(u[0]) for u in units]
        word_tags, _ = words_of_units(for_apertium(text), surfaces, tags)
        word_candidates, _ = words_of_units(for_apertium(text), surfaces, candidates)
        result.append(list(zip(word_tags, word_candidates)))
    return result


def occurrences(text: str, phrase: str) -> int:
    """How many times `phrase` is in `text` as whole words, ignoring case (as model.text.glossary.contains)."""
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, phrase.split())) + r"(?!\w)"
    return len(re.findall(pattern, text, re.IGNORECASE))


def term_pairs(en_text: str, es_text: str, english: list[tuple[set[str], set[str]]],
               spanish: list[set[str]]) -> list[TermPair]:
    """The sentence's term pairs (see the module docstring), in English word order."""
    en_words = [m.group() for m in WORD.finditer(en_text)]
    es_words = [m.group() for m in WORD.finditer(es_text)]
    matches = {i: [j for j, lemmas in enumerate(spanish) if cands & lemmas]
               for i, (_, cands) in enumerate(english) if cands}
    claimed: dict[int, int] = {}
    for js in matches.values():
        for j in js:
            claimed[j] = claimed.get(j, 0) + 1
    pairs = []
    for i, js in matches.items():
        tags = english[i][0]
        if not tags & TERM_TAGS or len(js) != 1 or claimed[js[0]] != 1 or i == 0 or js[0] == 0:
            continue
        en, es = en_words[i], es_words[js[0]]
        if en.lower() != es.lower() and occurrences(en_text, en) == 1 and occurrences(es_text, es) == 1:
            pairs.append(TermPair(en, es))
    return pairs


# --- translating through the app ---------------------------------------------------------------


async def translate(client: httpx.AsyncClient, gate: asyncio.Semaphore, texts: list[str], source: str,
                    target: str, glossary: list[dict] | None = None) -> list[str]:
    body = {"text": texts, "source": source, "target": target, "decoding": {"strategy": "greedy"},
            "output": {"steps": False, "attention": "none"}}
    if glossary:
        body["glossary"] = glossary
    async with gate:
        r = await client.post("/translate", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"POST /translate answered {r.status_code}: {r.text[:500]}")
    return [t["text"] for t in r.json()["translations"]]


async def run_direction(client: httpx.AsyncClient, cases: list[Case], source: str, target: str) -> dict[str, float]:
    """Fill in each case's plain output, the term asked for and the glossary output; seconds per pass."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    started = time.perf_counter()
    chunks = [cases[i:i + TEXTS_PER_REQUEST] for i in range(0, len(cases), TEXTS_PER_REQUEST)]
    answers = await asyncio.gather(*(translate(client, gate, [c.source(source) for c in chunk], source, target)
                                     for chunk in chunks))
    for chunk, texts in zip(chunks, answers):
        for case, text in zip(chunk, texts):
            case.plain = text
    plain_s = time.perf_counter() - started
    for case in cases:
        missed = [p for p in case.pairs if not contains(case.plain, getattr(p, target))]
        case.asked = (missed or case.pairs)[0]
    started = time.perf_counter()
    # Each text has its own glossary, and a glossary is for a whole request: one text per request.
    answers = await asyncio.gather(*(translate(client, gate, [c.source(source)], source, target,
                                               [{"source": getattr(c.asked, source),
                                                 "target": getattr(c.asked, target)}])
                                     for c in cases))
    for case, texts in zip(cases, answers):
        case.with_glossary = texts[0]
    return {"plain_s": round(plain_s, 1), "glossary_s": round(time.perf_counter() - started, 1)}


async def translate_all(weights_dir: Path, by_direction: dict[tuple[str, str], list[Case]]) -> dict[str, dict]:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(torch_threads=2, weights_dir=weights_dir, request_timeout_s=300))
    times = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=300) as client:
            deadline = time.monotonic() + 300
            while (await client.get("/ready")).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the app was not ready within 300 s")
                await asyncio.sleep(0.5)
            for (source, target), cases in by_direction.items():
                times[f"{source}-{target}"] = await run_direction(client, cases, source, target)
    return times


# --- figures -----------------------------------------------------------------------------------


def figures(cases: list[Case], target: str) -> dict:
    if not cases:
        return {"sentences": 0}
    refs = [c.source(target) for c in cases]
    terms = [getattr(c.asked, target) for c in cases]
    result: dict = {"sentences": len(cases)}
    for name, outputs in (("plain", [c.plain for c in cases]), ("glossary", [c.with_glossary for c in cases])):
        counts = [occurrences(o, t) for o, t in zip(outputs, terms)]
        result[name] = {
            "term_success": round(sum(n > 0 for n in counts) / len(cases), 4),
            "forced_twice": round(sum(n > 1 for n in counts) / len(cases), 4),
            "left_out": round(sum(n == 0 for n in counts) / len(cases), 4),
            "bleu": round(sacrebleu.corpus_bleu(outputs, [refs]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(outputs, [refs]).score, 2),
        }
    return result


def examples(cases: list[Case], source: str, target: str) -> list[dict]:
    """Up to EXAMPLES cases the plain translation missed: failures first, then evenly spread."""
    missed = [c for c in cases if not contains(c.plain, getattr(c.asked, target))]
    failed = [c for c in missed if occurrences(c.with_glossary, getattr(c.asked, target)) != 1]
    rest = [c for c in missed if c not in failed]
    chosen = failed[:EXAMPLES // 2]
    step = max(1, len(rest) // max(1, EXAMPLES - len(chosen)))
    chosen += rest[::step][:EXAMPLES - len(chosen)]
    return [{"domain": c.row.domain, "source": c.source(source),
             "term": {"source": getattr(c.asked, source), "target": getattr(c.asked, target)},
             "reference": c.source(target), "plain": c.plain, "glossary": c.with_glossary,
             "term_count": occurrences(c.with_glossary, getattr(c.asked, target))} for c in chosen]


def print_table(report: dict) -> None:
    print(f"\n{'direction':<9} {'subset':<7} {'n':>4}  {'term % plain→gloss':>19}  {'twice %':>7}  {'left out %':>10}"
          f"  {'BLEU plain→gloss':>17}  {'chrF plain→gloss':>17}")
    for direction, d in report["directions"].items():
        for subset in ("all", "missed"):
            f = d[subset]
            if not f["sentences"]:
                continue
            p, g = f["plain"], f["glossary"]
            print(f"{direction:<9} {subset:<7} {f['sentences']:>4}  "
                  f"{p['term_success']*100:8.1f} → {g['term_success']*100:5.1f}"
                  f"    {g['forced_twice']*100:7.1f}  {g['left_out']*100:10.1f}  {p['bleu']:7.2f} → {g['bleu']:6.2f}"
                  f"  {p['chrf']:7.2f} → {g['chrf']:6.2f}")


# --- the GIMP manual's interface labels ---------------------------------------------------------

STRATEGIES = {"greedy": {"strategy": "greedy"}, "beam 4": {"strategy": "beam", "beam_size": 4}}


async def label_answers(client: httpx.AsyncClient, cases: list[labels.Case], source: str, target: str,
                        decoding: dict, with_glossary: bool) -> list[dict]:
    """Each case's translation entry (text and alignment), one text a request (a glossary is a request's)."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(case: labels.Case) -> dict:
        body = {"text": case.source, "source": source, "target": target, "decoding": decoding,
                "output": {"steps": False, "attention": "none", "alignment": True}}
        if with_glossary:
            body["glossary"] = [{"source": t.source, "target": t.target} for t in case.terms]
        async with gate:
            r = await client.post("/translate", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"POST /translate answered {r.status_code}: {r.text[:500]}")
        return r.json()["translations"][0]

    return await asyncio.gather(*(one(c) for c in cases))


def _runs(words: list[str], phrase: str, exact: bool) -> list[range]:
    """Where the words of `phrase` stand as consecutive `words` (exactly, or ignoring case)."""
    wanted = WORD.findall(phrase)
    n = len(wanted)
    same = (lambda a, b: a == b) if exact else (lambda a, b: a.lower() == b.lower())
    return [range(i, i + n) for i in range(len(words) - n + 1) if n and all(map(same, words[i:i + n], wanted))]


def term_placed(entry: dict, term: Term) -> bool:
    """Is the target term, spelt as given, in the model's output at a word linked to the source term's words?"""
    alignment = entry["alignment"]
    sources = [set(r) for r in _runs(alignment["source_words"], term.source, exact=False)]
    targets = _runs(alignment["target_words"], term.target, exact=True)
    opening = term.target[:1].upper() + term.target[1:]
    targets += [r for r in _runs(alignment["target_words"], opening, exact=True) if r.start == 0]
    links = {(link["target"], link["source"]) for link in alignment["links"]}
    return any((t, s) in links for r in targets for t in r for run in sources for s in run)


def label_figures(cases: list[labels.Case], plain: list[dict], asked: list[dict], target: str) -> dict:
    terms = [(case, term) for case in cases for term in case.terms]

    def share(hits) -> float:
        return round(100 * sum(hits) / max(len(terms), 1), 1)

    by_case = dict(zip(map(id, cases), zip(plain, asked)))
    refs = [c.reference for c in cases]
    return {
        "paragraphs": len(cases), "terms": len(terms),
        "multi_word_terms": sum(len(t.source.split()) > 1 or len(t.target.split()) > 1 for _, t in terms),
        "plain_as_given_pct": share(bool(spelt_as_given(by_case[id(c)][0]["text"], t.target)) for c, t in terms),
        "as_given_pct": share(bool(spelt_as_given(by_case[id(c)][1]["text"], t.target)) for c, t in terms),
        "as_given_at_aligned_place_pct": share(
            bool(spelt_as_given(by_case[id(c)][1]["text"], t.target)) and term_placed(by_case[id(c)][1], t)
            for c, t in terms),
        # More often than the source says it: forced where the model had already written it.
        "more_than_in_source_pct": share(len(spelt_as_given(by_case[id(c)][1]["text"], t.target))
                                         > len(find(c.source, [t])) for c, t in terms),
        "chrf_plain": round(sacrebleu.corpus_chrf([e["text"] for e in plain], [refs]).score, 2),
        "chrf_glossary": round(sacrebleu.corpus_chrf([e["text"] for e in asked], [refs]).score, 2),
        "missed": [{"source": c.source, "term": {"source": t.source, "target": t.target},
                    "glossary": by_case[id(c)][1]["text"],
                    "as_given": bool(spelt_as_given(by_case[id(c)][1]["text"], t.target))}
                   for c, t in terms if not term_placed(by_case[id(c)][1], t)][:2 * EXAMPLES],
    }


async def label_runs(weights_dir: Path, by_direction: dict[tuple[str, str], list[labels.Case]]) -> dict:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(torch_threads=2, weights_dir=weights_dir, request_timeout_s=600))
    results: dict = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=600) as client:
            while (await client.get("/ready")).status_code != 200:
                await asyncio.sleep(0.5)
            for (source, target), cases in by_direction.items():
                for name, decoding in STRATEGIES.items():
                    started = time.perf_counter()
                    plain = await label_answers(client, cases, source, target, decoding, with_glossary=False)
                    asked = await label_answers(client, cases, source, target, decoding, with_glossary=True)
                    f = label_figures(cases, plain, asked, target)
                    f["seconds"] = round(time.perf_counter() - started, 1)
                    results.setdefault(f"{source}-{target}", {})[name] = f
                    print(f"  {source}-{target} {name}: {f['as_given_pct']}% as given, "
                          f"{f['as_given_at_aligned_place_pct']}% at the aligned place, chrF "
                          f"{f['chrf_plain']} -> {f['chrf_glossary']} ({f['seconds']} s)", flush=True)
    return results


def run_labels(args: argparse.Namespace) -> int:
    """The GIMP manual's label glossary, both directions, greedy and beam 4: terms as given (case
    included), as given at the place aligned to the source term, said twice, and chrF without and with."""
    started = time.perf_counter()
    paragraphs, counts = labels.held_out(args.data)
    by_direction = {d: labels.cases(paragraphs, *d) for d in DIRECTIONS}
    print(f"{len(paragraphs)} held-out GIMP manual paragraphs {counts}; with paired labels: "
          + ", ".join(f"{s}-{t} {len(c)}" for (s, t), c in by_direction.items()), flush=True)
    results = asyncio.run(label_runs(args.weights_dir, by_direction))
    print(f"\n{'direction':<9} {'decoding':<8} {'terms':>5} {'multi':>5}  {'plain %':>7}  {'as given %':>10}"
          f"  {'aligned %':>9}  {'more %':>7}  {'chrF plain→gloss':>17}")
    for direction, by_strategy in results.items():
        for name, f in by_strategy.items():
            print(f"{direction:<9} {name:<8} {f['terms']:>5} {f['multi_word_terms']:>5}"
                  f"  {f['plain_as_given_pct']:7.1f}  {f['as_given_pct']:10.1f}"
                  f"  {f['as_given_at_aligned_place_pct']:9.1f}  {f['more_than_in_source_pct']:7.1f}"
                  f"  {f['chrf_plain']:7.2f} → {f['chrf_glossary']:6.2f}")
    path = write_result("glossary_labels", {
        "command": "python -m bench.glossary " + " ".join(sys.argv[1:]), "cpu": cpu_info(),
        "paragraphs": counts, "decoding": STRATEGIES, "results": results,
        "total_s": round(time.perf_counter() - started, 1)})
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


# --- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.glossary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"), help="dataset folder holding splits/test.tsv")
    p.add_argument("--weights-dir", type=Path, default=ROOT / "weights")
    p.add_argument("--per-domain", type=int, default=150)
    p.add_argument("--labels", action="store_true", help="the GIMP manual's interface labels as the glossary "
                   "(writes bench/results/glossary_labels.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.labels:
        return run_labels(args)
    split = args.data / "splits" / "test.tsv"
    if not split.exists():
        raise SystemExit(f"{split} not found: pass --data, or run `python -m model.training.data` first")
    started = time.perf_counter()
    rows, _ = held_out_rows(split, args.per_domain)
    english = english_words([r.en for r in rows])
    spanish, _ = spanish_lemmas([r.es for r in rows])
    found = [(r, term_pairs(r.en, r.es, e, s)) for r, e, s in zip(rows, english, spanish)]
    with_terms = [(r, pairs) for r, pairs in found if pairs]
    apertium_s = time.perf_counter() - started
    print(f"{len(rows)} pairs, {len(with_terms)} with a term pair (Apertium {apertium_s:.0f} s)")

    by_direction = {d: [Case(r, pairs) for r, pairs in with_terms] for d in DIRECTIONS}
    times = asyncio.run(translate_all(args.weights_dir, by_direction))

    report: dict = {"directions": {}}
    for (source, target), cases in by_direction.items():
        direction = f"{source}-{target}"
        missed = [c for c in cases if not contains(c.plain, getattr(c.asked, target))]
        report["directions"][direction] = {
            "all": figures(cases, target), "missed": figures(missed, target),
            "seconds": times[direction], "examples": examples(cases, source, target)}
    total_s = time.perf_counter() - started
    print_table(report)
    print(f"\n{total_s:.0f} s in all (Apertium {apertium_s:.0f} s; "
          + "; ".join(f"{d}: plain {t['plain_s']} s, glossary {t['glossary_s']} s" for d, t in times.items()) + ")")
    per_domain: dict[str, int] = {}
    for r, _ in with_terms:
        per_domain[r.domain] = per_domain.get(r.domain, 0) + 1
    path = write_result("glossary", {
        "command": "python -m bench.glossary " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_info(), "split": str(split), "per_domain": args.per_domain,
        "pairs": len(rows), "pairs_with_term": len(with_terms), "pairs_with_term_per_domain": per_domain,
        "term_tags": sorted(TERM_TAGS), "decoding": "greedy", "apertium_s": round(apertium_s, 1),
        "total_s": round(total_s, 1), **report})
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
