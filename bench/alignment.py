"""How well word links read from the model's cross-attention match silver links from Apertium.

    python -m bench.alignment [--weights weights/es-en-multidomain] [--per-domain 300] [--batch 32]

Silver links: for test-split pairs of 3-40 words a side (the first --per-domain of each domain, in
file order), the English side goes through the first stages of Apertium's eng-spa pipeline
(morphology, tagger, pretransfer, bilingual dictionary), which gives each English word its Spanish
lemma candidates; the Spanish side goes through spa-eng morphology, which gives every lemma of each
Spanish word. English word i and Spanish word j are linked when a candidate of i is a lemma of j,
and the link is kept only when it is one-to-one in the sentence (i matches only j, j only i).
Only content words count (nouns, proper nouns, verbs, adjectives, adverbs): links between articles,
prepositions and pronouns repeat within a sentence and are mostly dropped as ambiguous anyway.

Model links: the reference is teacher-forced in both directions (es->en and en->es) and each rule of
model.text.align (decoder layer, heads, shift) links each target word to its best source word. A rule is
scored by precision (correct links / predicted links whose target or source word takes part in a
silver link, since other words have no silver answer) and recall (silver links predicted / silver
links). Rules: every layer and shift with all heads; every single head; the best 2 and 3 heads of
each layer; thresholds on the kept rule. All choices, the kept one included, are made on the even
pairs (the selection half) and the figures shown are those of the odd pairs (the report half).

Writes bench/results/alignment.json. Needs Apertium (`make peers`) and the shipped model.
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.common import cpu_info, write_result
from model.checkpoint import load
from model.text.align import WORD, Rule, Word, links, scores, source_words, target_words
from model.training.data import read_split

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "splits" / "test.tsv"
APERTIUM = Path("/usr/share/apertium/apertium-eng-spa")
ENG_TAGGED = (f"lt-proc {APERTIUM}/eng-spa.automorf.bin | apertium-tagger -g -p {APERTIUM}/eng-spa.prob")
ENG_BILINGUAL = f"apertium-pretransfer | lt-proc -b {APERTIUM}/eng-spa.autobil.bin"
SPA_MORPH = f"lt-proc {APERTIUM}/spa-eng.automorf.bin"
CONTENT_TAGS = {"n", "np", "adj", "adv", "vblex", "vbser", "vbhaver", "vbmod"}
# Characters Apertium's stream format reserves; none is part of a word, so a space keeps offsets.
RESERVED = re.compile(r"[\\^$/<>\[\]{}@#]")
UNIT = re.compile(r"\^((?:\\.|[^\\$])*)\$")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
DIRECTIONS = (("es", "en"), ("en", "es"))  # (source, target)


# --- silver links from Apertium -------------------------------------------------------------------


def split_unescaped(text: str, sep: str) -> list[str]:
    """`text` cut at each `sep` that no backslash escapes."""
    return re.split(rf"(?<!\\){re.escape(sep)}", text)


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_units(line: str) -> list[list[str]]:
    """The lexical units `^a/b/c$` of one line of an Apertium stream, each as its '/'-separated fields."""
    return [split_unescaped(body, "/") for body in UNIT.findall(line)]


def lemma_and_tag(analysis: str) -> tuple[str, str]:
    """('pez', 'n') from 'pez<n><m><sg>'; an unknown '*Foo' gives ('foo', '*')."""
    if analysis.startswith("*"):
        return unescape(analysis[1:]).lower(), "*"
    lemma, _, tags = analysis.partition("<")
    return unescape(lemma).lower(), tags.split(">", 1)[0]


def content_lemmas(analyses: Iterable[str], allow_unknown: bool) -> set[str]:
    """Lemmas of content words among `analyses`; joined analyses ('dar<vblex>+lo<prn>') count each part."""
    found = set()
    for analysis in analyses:
        for part in split_unescaped(analysis, "+"):
            lemma, tag = lemma_and_tag(part)
            if lemma and (tag in CONTENT_TAGS or (allow_unknown and tag == "*")):
                found.add(lemma)
    return found


def bilingual_candidates(line: str) -> set[str]:
    """Spanish content lemmas of one English unit's bilingual-dictionary output ('@' marks a miss)."""
    analyses = [a for fields in parse_units(line) for a in fields[1:] if a and not a.startswith("@")]
    return content_lemmas(analyses, allow_unknown=False)


def for_apertium(text: str) -> str:
    """The text with reserved characters blanked and ’ as ', same length so offsets still hold."""
    return RESERVED.sub(" ", text).replace("’", "'")


def run_pipeline(command: str, lines: list[str]) -> list[str]:
    """One subprocess for all `lines`; Apertium keeps line breaks, so output line i is input line i."""
    done = subprocess.run(command, shell=True, input="\n".join(lines) + "\n", capture_output=True, text=True,
                          encoding="utf-8", timeout=600)
    if done.returncode:
        raise RuntimeError(f"{command} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    out = done.stdout.split("\n")
    if out and out[-1] == "":
        out.pop()
    if len(out) != len(lines):
        raise RuntimeError(f"{command}: {len(lines)} lines in, {len(out)} out")
    return out


def words_of_units(text: str, surfaces: list[str], values: list[set[str]]) -> tuple[list[set[str]], bool]:
    """Each of our words' share of the units' `values`, by finding each unit's surface in `text` in order.

    A unit that spans several of our words (a multiword like "a lot of") gives them nothing; a word
    made of several units ("Mary" + "'s") gets all of theirs. Mapping stops at the first surface not
    found where expected; the second value says whether every unit was placed.
    """
    spans = [m.span() for m in WORD.finditer(text)]
    result: list[set[str]] = [set() for _ in spans]
    cursor = 0
    for surface, value in zip(surfaces, values):
        start = text.find(surface, cursor)
        # Units follow each other with blanks between them only: a jump over a word means we lost track.
        if start < 0 or WORD.search(text, cursor, start):
            return result, False
        end = start + len(surface)
        cursor = end
        covered = [w for w, (a, b) in enumerate(spans) if a < end and b > start]
        if len(covered) == 1:
            result[covered[0]] |= value
    return result, True


def one_to_one(english: list[set[str]], spanish: list[set[str]]) -> set[tuple[int, int]]:
    """(English word, Spanish word) pairs sharing a lemma, kept where neither word matches another."""
    matches = [(i, j) for i, cands in enumerate(english) if cands for j, lemmas in enumerate(spanish) if cands & lemmas]
    by_en: dict[int, int] = {}
    by_es: dict[int, int] = {}
    for i, j in matches:
        by_en[i] = by_en.get(i, 0) + 1
        by_es[j] = by_es.get(j, 0) + 1
    return {(i, j) for i, j in matches if by_en[i] == 1 and by_es[j] == 1}


def english_candidates(texts: list[str]) -> tuple[list[list[set[str]]], int]:
    """Per sentence, each English word's Spanish lemma candidates; and how many sentences mapped only in part."""
    tagged = [parse_units(line) for line in run_pipeline(ENG_TAGGED, [for_apertium(t) for t in texts])]
    # The bilingual stage loses surface forms and pretransfer splits joined units, so each tagged
    # unit goes on its own line: output line k then holds unit k's translations, however split.
    flat = [fields[1] if len(fields) > 1 and not fields[1].startswith("*") else ""
            for units in tagged for fields in units]
    bilingual = iter(run_pipeline(ENG_BILINGUAL, [f"^{a}$" if a else "" for a in flat]))
    result, partial = [], 0
    for text, units in zip(texts, tagged):
        values = [bilingual_candidates(next(bilingual)) for _ in units]
        words, whole = words_of_units(for_apertium(text), [unescape(u[0]) for u in units], values)
        result.append(words)
        partial += not whole
    return result, partial


def spanish_lemmas(texts: list[str]) -> tuple[list[list[set[str]]], int]:
    """Per sentence, each Spanish word's content lemmas (an unknown word is its own lemma)."""
    result, partial = [], 0
    for text, line in zip(texts, run_pipeline(SPA_MORPH, [for_apertium(t) for t in texts])):
        units = parse_units(line)
        values = [content_lemmas(u[1:], allow_unknown=True) for u in units]
        words, whole = words_of_units(for_apertium(text), [unescape(u[0]) for u in units], values)
        result.append(words)
        partial += not whole
    return result, partial


# --- attention tables from the model -----------------------------------------------------------


@dataclass
class Sentence:
    """One pair in one direction: silver links as (target word, source word), and per-head score tables."""
    silver: set[tuple[int, int]]
    tables: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (layer, shift) -> (H, target, source)


def word_matrices(src: list[Word], tgt: list[Word], n_src: int, n_steps: int,
                  shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Source (tokens, words) sums and target (words, steps) means: tgt @ A_head @ src is model.text.align.scores."""
    src_m = np.zeros((n_src, len(src)))
    for w, word in enumerate(src):
        src_m[list(word.tokens), w] = 1.0
    tgt_m = np.zeros((len(tgt), n_steps))
    for w, word in enumerate(tgt):
        rows = [t + shift for t in word.tokens if t + shift < n_steps]
        if rows:
            tgt_m[w, rows] = 1.0 / len(rows)
    return src_m, tgt_m


def head_tables(attention: dict[int, np.ndarray], src: list[Word],
                tgt: list[Word]) -> dict[tuple[int, int], np.ndarray]:
    """(layer, shift) -> per-head (H, target word, source word) scores; a head set's table is their mean."""
    tables = {}
    for layer, a in attention.items():  # a: (H, T, S)
        for shift in (0, 1):
            src_m, tgt_m = word_matrices(src, tgt, a.shape[2], a.shape[1], shift)
            tables[layer, shift] = tgt_m @ a @ src_m  # broadcast over heads
    return tables


def same_words(decoded: str, reference: str) -> bool:
    return [m.group() for m in WORD.finditer(decoded)] == [m.group() for m in WORD.finditer(reference)]


def attention_batches(loaded, pairs: list[tuple[str, str]], target_lang: str, batch: int):
    """Yield (pair index, {layer: (H, T, S) float64}, target ids) with the reference teacher-forced."""
    tok, model = loaded.tokenizer, loaded.model
    n_layers = loaded.config.decoder_layers
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))  # similar lengths pad less
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        src = [tok.encode_source(pairs[i][0], target_lang) for i in chunk]
        tgt = [tok.encode_target(pairs[i][1]) for i in chunk]
        src_t = torch.full((len(chunk), max(map(len, src))), tok.pad_id, dtype=torch.long)
        tgt_in = torch.full((len(chunk), max(map(len, tgt))), tok.pad_id, dtype=torch.long)
        for b, (s, t) in enumerate(zip(src, tgt)):
            src_t[b, :len(s)] = torch.tensor(s)
            tgt_in[b, :len(t)] = torch.tensor([tok.bos_id, *t[:-1]])
        with torch.inference_mode():
            memory, src_mask, _ = model.encode(src_t)
            _, out = model.decode(tgt_in, memory, src_mask, cross_layers=frozenset(range(n_layers)))
        for b, i in enumerate(chunk):
            rows = {layer: out.cross_attention[layer][b, :, :len(tgt[b]), :len(src[b])].double().numpy()
                    for layer in range(n_layers)}
            yield i, rows, tgt[b]


def as_lists(a: np.ndarray) -> list[list[list[float]]]:
    """(H, T, S) -> the [step][head][source token] lists model.text.align.scores reads."""
    return a.transpose(1, 0, 2).tolist()


def check_vectorised(attention: dict[int, np.ndarray], src: list[Word], tgt: list[Word], n_heads: int) -> None:
    """The einsum tables give the same scores and links as model.text.align.scores, for every rule."""
    tables = head_tables(attention, src, tgt)
    for (layer, shift), table in tables.items():
        rows = as_lists(attention[layer])
        for heads in [None, *[(h,) for h in range(n_heads)], (0, 2)]:
            reference = scores(rows, src, tgt, shift, heads)
            ours = table.mean(0) if heads is None else table[list(heads)].mean(0)
            assert np.allclose(ours, np.array(reference).reshape(ours.shape), atol=1e-9), (layer, shift, heads)
            assert links(ours.tolist()) == links(reference), (layer, shift, heads)


def direction_sentences(loaded, rows, silver, source: str, target: str, batch: int,
                        check: int) -> tuple[list[Sentence | None], int]:
    """Per pair, the Sentence of one direction, or None where the decoded reference's words differ."""
    tok = loaded.tokenizer
    pairs = [(getattr(r, source), getattr(r, target)) for r in rows]
    result: list[Sentence | None] = [None] * len(pairs)
    checked = 0
    for i, attention, tgt_ids in attention_batches(loaded, pairs, target, batch):
        src_text, ref = pairs[i]
        decoded, tgt_words = target_words(tok, tgt_ids)
        if not same_words(decoded, ref):
            continue
        src_words = source_words(tok, src_text)
        if checked < check:
            check_vectorised(attention, src_words, tgt_words, loaded.config.n_heads)
            checked += 1
        oriented = {(en, es) if target == "en" else (es, en) for en, es in silver[i]}  # (target, source)
        result[i] = Sentence(oriented, head_tables(attention, src_words, tgt_words))
    return result, checked


# --- scoring -----------------------------------------------------------------------------------


def counts(sentences: Iterable[Sentence], layer: int, heads: tuple[int, ...] | None, shift: int,
           threshold: float = 0.0) -> np.ndarray:
    """[correct, judged, silver] link counts of one rule over `sentences`."""
    total = np.zeros(3, dtype=np.int64)
    for s in sentences:
        table = s.tables[layer, shift]
        table = table.mean(0) if heads is None else table[list(heads)].mean(0)
        if table.shape[1] == 0:
            continue
        best = table.argmax(1)  # first maximum on ties, as model.text.align.links
        predicted = {(t, int(best[t])) for t in range(table.shape[0]) if table[t, best[t]] > threshold}
        sil_t = {t for t, _ in s.silver}
        sil_s = {w for _, w in s.silver}
        judged = {(t, w) for t, w in predicted if t in sil_t or w in sil_s}
        total += (len(judged & s.silver), len(judged), len(s.silver))
    return total


def figures(c: np.ndarray) -> dict:
    correct, judged, silver = (int(x) for x in c)
    p = correct / judged if judged else 0.0
    r = correct / silver if silver else 0.0
    return {"P": round(p, 4), "R": round(r, 4), "F1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "correct": correct, "judged": judged, "silver": silver}


def evaluate(halves: dict[str, dict[str, list[Sentence]]], rule: Rule, threshold: float = 0.0) -> dict:
    """Figures per half ('select', 'report') and per direction plus 'overall' (the counts pooled)."""
    result = {}
    for half, by_direction in halves.items():
        per = {d: counts(s, rule.layer, rule.heads, rule.shift, threshold) for d, s in by_direction.items()}
        result[half] = {**{d: figures(c) for d, c in per.items()}, "overall": figures(sum(per.values()))}
    return result


def name_of(rule: Rule, threshold: float = 0.0) -> str:
    heads = "all" if rule.heads is None else "h" + "+".join(map(str, rule.heads))
    return f"L{rule.layer} {heads} s{rule.shift}" + (f" t{threshold:g}" if threshold else "")


def compare(halves, n_layers: int, n_heads: int) -> list[dict]:
    """Every rule's figures; the 2- and 3-head sets are the best of each layer on the selection half."""
    entries = []

    def add(kind: str, rule: Rule, threshold: float = 0.0) -> dict:
        entry = {"rule": name_of(rule, threshold), "kind": kind, **rule.describe(), "threshold": threshold,
                 **evaluate(halves, rule, threshold)}
        entries.append(entry)
        return entry

    for layer, shift in itertools.product(range(n_layers), (0, 1)):
        add("all heads", Rule(layer, None, shift))
    for layer, head, shift in itertools.product(range(n_layers), range(n_heads), (0, 1)):
        add("one head", Rule(layer, (head,), shift))
    select = {"select": halves["select"]}
    for size, layer, shift in itertools.product((2, 3), range(n_layers), (0, 1)):
        best = max(itertools.combinations(range(n_heads), size),
                   key=lambda hs: evaluate(select, Rule(layer, hs, shift))["select"]["overall"]["F1"])
        add(f"best {size} heads", Rule(layer, best, shift))
    return entries


def kept_entry(entries: list[dict]) -> dict:
    """Highest overall F1 on the selection half; an all-heads rule within 1 point wins, being simpler."""
    def f1(e):
        return e["select"]["overall"]["F1"]
    best = max(entries, key=f1)
    best_all = max((e for e in entries if e["kind"] == "all heads"), key=f1)
    return best_all if f1(best) - f1(best_all) <= 0.01 else best


def print_table(entries: list[dict], title: str) -> None:
    print(f"\n{title} (report half; F1 on the selection half in the last column)")
    columns = "".join(f" {d:>17}" for d in ("es-en P/R/F1", "en-es P/R/F1", "overall P/R/F1"))
    head = f"{'rule':<18} {'kind':<13}" + columns + "   sel F1"
    print(head)
    for e in entries:
        cells = "".join(f"  {e['report'][d]['P']*100:5.1f}/{e['report'][d]['R']*100:4.1f}"
                        f"/{e['report'][d]['F1']*100:4.1f}"
                        for d in ("es-en", "en-es", "overall"))
        print(f"{e['rule']:<18} {e['kind']:<13}{cells}   {e['select']['overall']['F1']*100:5.1f}")


# --- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.alignment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(ROOT / "weights" / "es-en-multidomain"))
    p.add_argument("--split", default=str(TEST_SPLIT))
    p.add_argument("--per-domain", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--check", type=int, default=5,
                   help="sentences per direction checked against model.text.align.scores")
    return p


def held_out_rows(path, per_domain: int):
    """The first `per_domain` pairs of each domain in file order with 3-40 words a side, NFC as the
    tokenizer sees them."""
    kept, seen = [], {}
    for r in read_split(path):
        r = r._replace(en=unicodedata.normalize("NFC", r.en), es=unicodedata.normalize("NFC", r.es))
        if seen.get(r.domain, 0) >= per_domain or not all(3 <= len(WORD.findall(t)) <= 40 for t in (r.en, r.es)):
            continue
        seen[r.domain] = seen.get(r.domain, 0) + 1
        kept.append(r)
    return kept, seen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    rows, per_domain = held_out_rows(args.split, args.per_domain)
    english, en_partial = english_candidates([r.en for r in rows])
    spanish, es_partial = spanish_lemmas([r.es for r in rows])
    silver = [one_to_one(e, s) for e, s in zip(english, spanish)]
    apertium_s = time.perf_counter() - started
    print(f"{len(rows)} pairs {per_domain}; {sum(map(len, silver))} silver links "
          f"(Apertium {apertium_s:.0f} s; {en_partial} English and {es_partial} Spanish sentences mapped in part)")

    loaded = load(args.weights)
    loaded.model.eval()
    n_layers, n_heads = loaded.config.decoder_layers, loaded.config.n_heads
    halves: dict[str, dict[str, list[Sentence]]] = {"select": {}, "report": {}}
    stats = {}
    for source, target in DIRECTIONS:
        d = f"{source}-{target}"
        sentences, checked = direction_sentences(loaded, rows, silver, source, target, args.batch, args.check)
        kept = [(i, s) for i, s in enumerate(sentences) if s is not None]
        halves["select"][d] = [s for i, s in kept if i % 2 == 0]
        halves["report"][d] = [s for i, s in kept if i % 2 == 1]
        stats[d] = {"pairs": len(kept), "skipped_decoded_words_differ": len(rows) - len(kept),
                    "silver_links": sum(len(s.silver) for _, s in kept),
                    "pairs_with_silver_links": sum(bool(s.silver) for _, s in kept),
                    "checked_against_model_align_scores": checked}
        print(f"{d}: {stats[d]}")
    model_s = time.perf_counter() - started - apertium_s

    entries = compare(halves, n_layers, n_heads)
    kept = kept_entry(entries)
    rule = Rule(kept["layer"], None if kept["heads"] == "all" else tuple(kept["heads"]), kept["shift"])
    thresholds = [{"rule": name_of(rule, t), "kind": "threshold", **rule.describe(), "threshold": t,
                   **evaluate(halves, rule, t)} for t in THRESHOLDS]
    print_table(entries, "Rules")
    print_table([kept, *thresholds], f"Thresholds on the kept rule {kept['rule']}")
    report = kept["report"]["overall"]
    command = "python -m bench.alignment " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\nkept: {kept['rule']}  P {report['P']*100:.1f} R {report['R']*100:.1f} F1 {report['F1']*100:.1f} "
          f"(report half); {time.perf_counter() - started:.0f} s in all")
    path = write_result("alignment", {
        "command": command.strip(), "cpu": cpu_info(), "weights": args.weights,
        "pairs": len(rows), "pairs_per_domain": per_domain, "directions": stats,
        "silver": {"links": sum(map(len, silver)), "content_tags": sorted(CONTENT_TAGS),
                   "sentences_mapped_in_part": {"en": en_partial, "es": es_partial}},
        "halves": "choices made on even pairs ('select'), figures reported on odd pairs ('report')",
        "choices": entries, "thresholds": thresholds,
        "kept": {"rule": kept["rule"], **rule.describe(), "select": kept["select"], "report": kept["report"]},
        "seconds": {"apertium": round(apertium_s, 1), "model": round(model_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
