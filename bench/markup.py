"""Markup transfer on real manual paragraphs: our `format: "html"` against Apertium's HTML mode.

    python -m bench.markup [--data data] [--limit 200] [--per-request 16] [--weights weights]

Paragraphs: the <p>, <li>, <td> and <dt> blocks of the GIMP manual and the Debian Reference (the
two editions of each page, as unpacked by `python -m model.training.data` under DATA/unpacked/), paired the
way model/training/corpus/documents.py pairs them, kept when both sides hold an inline element with text in
it, hold nothing but inline content, are under 1,500 characters, and their tag-stripped texts are a
pair of the test split (so the model never trained on them; the dev split tops them up, and says
so, when the test split gives fewer than 200). Each is translated both ways three times: by the
app in-process with format html, by the app with its tags stripped (format text), and by Apertium
(`apertium -u -f html`), one batched call per direction.

Figures per direction and system: (a) well formed: the output parses (model.text.markup.parse_html) and
its start/end tag names come in exactly the source's sequence (also: the same elements on the same
paths, in any order); (b) chrF of the tag-stripped output against the reference paragraph's text;
(c) chrF of the text inside each inline element against the text inside the reference's element of
the same tag name and rank; (d) seconds. Writes bench/results/markup.json. Needs Apertium
(`make peers`) and the shipped model.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
from sacrebleu.metrics import CHRF

from bench.common import ROOT, app_in_process, cpu_info, write_result
from model.text.markup import INLINE_TAGS, VOID_TAGS, MarkupError, Node, parse_html
from model.training.corpus import documents
from model.training.data import read_split

KEPT_KINDS = {"p", "li", "td", "dt"}
MAX_CHARS = 1500
MIN_PAIRS = 200
# Apertium sees every paragraph of a direction in one document; this rule between them is kept
# as written by its HTML deformatter and is unlike anything in a manual paragraph.
SPLIT = '<hr class="bench-split">'
DIRECTIONS = (("es", "en"), ("en", "es"))  # (source, target)
CONTENT_TAGS = INLINE_TAGS - VOID_TAGS  # inline elements that can hold text


# --- reading an HTML fragment ------------------------------------------------------------------


def node_text(node: Node) -> str:
    """The text a reader sees: entities decoded, a line break a space; comments are none."""
    if node.kind == "text":
        return node.raw
    if node.kind == "entity":
        return html.unescape(node.raw)
    if node.kind != "element":
        return ""
    return (" " if node.tag == "br" else "") + "".join(node_text(child) for child in node.children)


def element_texts(fragment: str) -> list[tuple[str, str, bool]]:
    """(tag, collapsed text, whether it is code or inside code) of each element of a fragment, in
    document order (raises MarkupError)."""
    out = []

    def walk(node: Node, untranslated: bool) -> None:
        for child in node.children:
            if child.kind == "element":
                inside = untranslated or child.untranslated
                out.append((child.tag, documents._collapse(node_text(child)), inside))
                walk(child, inside)

    walk(parse_html(fragment), False)
    return out


def tag_sequence(node: Node) -> list[str]:
    """Start and end tag names in document order: "<b", "<i", "</i", "</b"; void elements have no end."""
    out = []
    for child in node.children:
        if child.kind == "element":
            out.append("<" + child.tag)
            out.extend(tag_sequence(child))
            if child.tag not in VOID_TAGS:
                out.append("</" + child.tag)
    return out


def element_paths(node: Node, above: tuple[str, ...] = ()) -> Counter:
    """Each element as the path of tag names down to it: the elements and their nesting, in any order."""
    paths: Counter = Counter()
    for child in node.children:
        if child.kind == "element":
            path = above + (child.tag,)
            paths[path] += 1
            paths += element_paths(child, path)
    return paths


def stripped(fragment: str) -> str:
    """The fragment's text without tags, whitespace collapsed; a fragment that does not parse loses
    whatever looks like a tag."""
    try:
        return documents._collapse(node_text(parse_html(fragment)))
    except MarkupError:
        return documents._collapse(html.unescape(re.sub(r"<[^>]*>", " ", fragment)))


# --- paragraphs from the manuals ---------------------------------------------------------------


@dataclass(frozen=True)
class HtmlBlock:
    kind: str
    text: str  # as documents.py writes it: innermost block only, whitespace collapsed
    inner: str  # the block's content as written
    inline_only: bool


@dataclass(frozen=True)
class Paragraph:
    manual: str
    page: str
    kind: str
    split: str  # the split its text pair is in: "test" or "dev"
    es_html: str
    en_html: str
    es_text: str
    en_text: str

    def html(self, lang: str) -> str:
        return self.es_html if lang == "es" else self.en_html

    def text(self, lang: str) -> str:
        return self.es_text if lang == "es" else self.en_text


def page_blocks(document: str) -> list[HtmlBlock]:
    """Every block element of a page with its inner HTML, in document order (raises MarkupError)."""
    blocks: list[HtmlBlock] = []
    _walk(parse_html(document), runs=None, skipped=False, out=blocks)
    return blocks


def _walk(node: Node, runs: list[str] | None, skipped: bool, out: list[HtmlBlock]) -> None:
    """Text goes to the innermost open block (`runs`), as in documents._BlockParser: a nested block
    starts its own list, so the outer one's text skips it."""
    if node.kind == "text" or node.kind == "entity":
        if runs is not None and not skipped:
            runs.append(node.raw if node.kind == "text" else html.unescape(node.raw))
        return
    if node.kind != "element":
        return  # comments and declarations are no text
    if node.tag == "br" and runs is not None:
        runs.append(" ")
    classes = set((dict(node.attrs).get("class") or "").split())
    skipped = skipped or node.tag in documents.SKIPPED_TAGS or bool(classes & documents.SKIPPED_CLASSES)
    if node.tag in documents.BLOCK_TAGS:
        own: list[str] = []
        for child in node.children:
            _walk(child, own, skipped, out)
        inner = "".join(child.source() for child in node.children)
        out.append(HtmlBlock(node.tag, documents._collapse("".join(own)), inner,
                             all(child.inline for child in node.children)))
        return
    for child in node.children:
        _walk(child, runs, skipped, out)


def with_html(page: str) -> tuple[list[documents.Block], dict[int, HtmlBlock]]:
    """documents.extract_blocks' blocks, and for those of a kept kind the HtmlBlock with the same
    kind and text at or after the last one matched (by id of the Block: align_blocks returns them)."""
    blocks = documents.extract_blocks(page)
    try:
        ours = [b for b in page_blocks(page) if b.kind in KEPT_KINDS]
    except MarkupError:
        return blocks, {}
    found, at = {}, 0
    for block in blocks:
        if block.kind not in KEPT_KINDS:
            continue
        match = next((i for i in range(at, len(ours)) if (ours[i].kind, ours[i].text) == (block.kind, block.text)),
                     None)
        if match is not None:
            found[id(block)], at = ours[match], match + 1
    return blocks, found


def has_content_element(inner: str) -> bool:
    """An inline element with text in it (an empty <a name> anchor has nothing to place)."""
    return any(tag in CONTENT_TAGS and text for tag, text, _ in element_texts(inner))


def manual_pairs(data: Path, wanted: dict[tuple[str, str], str]) -> tuple[list[Paragraph], Counter]:
    """Paragraph pairs whose (en, es) text is a key of `wanted` (value: the split), in manual, page
    and block order, and counts of what was dropped on the way."""
    counts: Counter = Counter()
    out, seen = [], set()
    for manual in documents.MANUALS:
        es_dir = _package_dir(data, manual.es_package) / manual.es_dir
        en_dir = _package_dir(data, manual.en_package) / manual.en_dir
        for es_file in sorted(es_dir.glob(f"*{manual.es_suffix}")):
            en_file = en_dir / (es_file.name.removesuffix(manual.es_suffix) + manual.en_suffix)
            if not en_file.is_file():
                continue
            counts["pages"] += 1
            en_blocks, en_html = with_html(documents._read(en_file))
            es_blocks, es_html = with_html(documents._read(es_file))
            if not en_html or not es_html:
                counts["pages_without_kept_blocks"] += 1
            for en, es in documents.align_blocks(en_blocks, es_blocks):
                paragraph = _paragraph(manual.name, es_file.name, en, es, en_html, es_html, wanted, counts)
                if paragraph and (paragraph.en_html, paragraph.es_html) not in seen:
                    seen.add((paragraph.en_html, paragraph.es_html))
                    out.append(paragraph)
    return out, counts


def _paragraph(manual, page, en, es, en_html, es_html, wanted, counts) -> Paragraph | None:
    if en.text == es.text or en.kind not in KEPT_KINDS:
        return None  # untranslated, or a heading
    counts["block_pairs"] += 1
    en_block, es_block = en_html.get(id(en)), es_html.get(id(es))
    if en_block is None or es_block is None:
        counts["no_html"] += 1
        return None
    if not (en_block.inline_only and es_block.inline_only):
        counts["nested_blocks"] += 1
        return None
    if not (has_content_element(en_block.inner) and has_content_element(es_block.inner)):
        return None
    counts["with_inline_elements"] += 1
    if max(len(en_block.inner), len(es_block.inner)) >= MAX_CHARS:
        counts["too_long"] += 1
        return None
    split = wanted.get((en.text, es.text))
    if split is None:
        counts["not_in_test_or_dev"] += 1
        return None
    return Paragraph(manual, page, en.kind, split, es_block.inner.strip(), en_block.inner.strip(), es.text, en.text)


def _package_dir(data: Path, package: str) -> Path:
    """The unpacked package's folder (named package_version_arch by model.training.data)."""
    found = sorted(data.glob(f"unpacked/{package}_*"))
    if not found:
        raise SystemExit(f"{data}/unpacked has no {package}_*: run `python -m model.training.data` first")
    return found[-1]


def select(data: Path, limit: int) -> tuple[list[Paragraph], dict]:
    """Test-split paragraphs (dev ones only when the test split has fewer than MIN_PAIRS), spread
    evenly over the whole ordered list when there are more than `limit`."""
    wanted = {}
    for split in ("dev", "test"):  # test last, so a pair in both counts as test
        for row in read_split(data / "splits" / f"{split}.tsv"):
            if row.source.startswith("doc:"):
                wanted[(row.en, row.es)] = split
    found, counts = manual_pairs(data, wanted)
    test = [p for p in found if p.split == "test"]
    pool = test if len(test) >= MIN_PAIRS else found
    if len(pool) > limit:
        pool = [pool[round(i * len(pool) / limit)] for i in range(limit)]
    info = {**counts, "test_pairs": len(test), "dev_pairs": len(found) - len(test),
            "dev_used": pool is not test and any(p.split == "dev" for p in pool), "chosen": len(pool)}
    return pool, info


# --- translating ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One system's answers for one direction: None where it failed."""

    outputs: list[str | None]
    seconds: float
    failures: list[dict]


async def translate_ours(paragraphs: list[Paragraph], weights: Path, per_request: int) -> dict:
    """{(source, target, format): Run} from the real app in-process, greedy, `per_request` texts a request."""
    runs = {}
    # A request of 16 long paragraphs on two shared cores can outlast the 30 s serving default.
    async with app_in_process(weights, timeout=300, request_timeout_s=3600) as client:
        for source, target in DIRECTIONS:
            for fmt in ("html", "text"):
                texts = [p.html(source) if fmt == "html" else p.text(source) for p in paragraphs]
                runs[source, target, fmt] = await _translate(client, texts, source, target, fmt, per_request)
                run = runs[source, target, fmt]
                print(f"  ours {source}->{target} {fmt}: {run.seconds:.0f} s, {len(run.failures)} failed", flush=True)
    return runs


async def _translate(client: httpx.AsyncClient, texts: list[str], source: str, target: str, fmt: str,
                     per_request: int) -> Run:
    started = time.perf_counter()
    outputs: list[str | None] = []
    failures: list[dict] = []
    for start in range(0, len(texts), per_request):
        batch = texts[start:start + per_request]
        answer = await _post(client, batch, source, target, fmt)
        if answer.status_code == 200:
            outputs.extend(t["text"] for t in answer.json()["translations"])
            continue
        # One bad paragraph refuses the whole request: ask again one by one to know which.
        for offset, text in enumerate(batch):
            single = await _post(client, [text], source, target, fmt)
            if single.status_code == 200:
                outputs.append(single.json()["translations"][0]["text"])
            else:
                outputs.append(None)
                failures.append({"index": start + offset, "status": single.status_code,
                                 "detail": single.text[:500], "source": text})
    return Run(outputs, time.perf_counter() - started, failures)


async def _post(client: httpx.AsyncClient, texts: list[str], source: str, target: str, fmt: str) -> httpx.Response:
    return await client.post("/translate", json={
        "text": texts, "source": source, "target": target, "format": fmt,
        "decoding": {"strategy": "greedy"}, "output": {"steps": False, "attention": "none"}})


def translate_apertium(fragments: list[str], pair: str) -> Run:
    """One `apertium -u -f html` call for all fragments, each in a <div> and split by SPLIT."""
    document = f"\n{SPLIT}\n".join(f"<div>{fragment}</div>" for fragment in fragments) + "\n"
    started = time.perf_counter()
    done = subprocess.run(["apertium", "-u", "-f", "html", pair], input=document, capture_output=True,
                          text=True, encoding="utf-8", timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"apertium {pair} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    parts = done.stdout.split(SPLIT)
    if len(parts) != len(fragments):
        raise SystemExit(f"apertium {pair} answered {len(parts)} paragraphs for {len(fragments)}")
    outputs, failures = [], []
    for index, part in enumerate(parts):
        part = part.strip()
        if part.startswith("<div>") and part.endswith("</div>"):
            outputs.append(part[len("<div>"):-len("</div>")].strip())
        else:  # the wrapper moved: Apertium's answer as is, which then fails the checks on its own
            outputs.append(part)
            failures.append({"index": index, "status": "wrapper moved", "detail": part[:500]})
    return Run(outputs, seconds, failures)


# --- scoring ------------------------------------------------------------------------------------


def well_formed(source: str, output: str | None) -> tuple[bool, bool]:
    """(same tag sequence, same elements on the same paths in any order) of output and source."""
    if output is None:
        return False, False
    try:
        produced = parse_html(output)
    except MarkupError:
        return False, False
    given = parse_html(source)
    return tag_sequence(produced) == tag_sequence(given), element_paths(produced) == element_paths(given)


def element_pairs(output: str | None, reference: str) -> list[tuple[str, str, bool]] | None:
    """(output text, reference text, code) for each element of the output that has a reference
    element of the same tag and rank among that tag's; None when the output does not parse."""
    if output is None:
        return None
    try:
        produced = element_texts(output)
    except MarkupError:
        return None
    ranked = {}
    for tag, text, code in element_texts(reference):
        ranked.setdefault(tag, []).append((text, code))
    pairs, seen = [], Counter()
    for tag, text, code in produced:
        rank, seen[tag] = seen[tag], seen[tag] + 1
        if tag not in CONTENT_TAGS or rank >= len(ranked.get(tag, ())):
            continue
        ref_text, ref_code = ranked[tag][rank]
        if text or ref_text:  # two empty anchors say nothing
            pairs.append((text, ref_text, code or ref_code))
    return pairs


def score(paragraphs: list[Paragraph], source: str, target: str, run: Run, markup: bool) -> dict:
    """Figures (a)-(d) for one system and direction; failed paragraphs count as wrong and empty."""
    chrf = CHRF()
    n = len(paragraphs)
    texts = ["" if o is None else stripped(o) if markup else documents._collapse(o) for o in run.outputs]
    result = {
        "failed": sum(o is None for o in run.outputs),
        "text_chrf": round(chrf.corpus_score(texts, [[p.text(target) for p in paragraphs]]).score, 2),
        "seconds": round(run.seconds, 1),
        "paragraphs_per_s": round(n / run.seconds, 2),
    }
    if not markup:
        return result
    checks = [well_formed(p.html(source), o) for p, o in zip(paragraphs, run.outputs)]
    pairs, unparsed = [], 0
    for p, o in zip(paragraphs, run.outputs):
        found = element_pairs(o, p.html(target))
        unparsed += found is None
        pairs.extend(found or [])
    prose = [pair for pair in pairs if not pair[2]]
    result.update({
        "well_formed_pct": round(100 * sum(same for same, _ in checks) / n, 1),
        "same_elements_any_order_pct": round(100 * sum(any_order for _, any_order in checks) / n, 1),
        "unparsed": unparsed,
        "element_chrf": _chrf(chrf, pairs),
        "elements_paired": len(pairs),
        "element_chrf_prose": _chrf(chrf, prose),  # code is copied, which flatters every system
        "elements_paired_prose": len(prose),
    })
    return result


def _chrf(chrf: CHRF, pairs: list[tuple[str, str, bool]]) -> float | None:
    if not pairs:
        return None
    return round(chrf.corpus_score([h for h, _, _ in pairs], [[r for _, r, _ in pairs]]).score, 2)


# --- report -------------------------------------------------------------------------------------


SYSTEMS = (("ours_html", "ours (html)"), ("ours_stripped", "ours (stripped, text)"),
           ("apertium_html", "Apertium (html)"))


def table(results: dict) -> str:
    """Markdown table: one row per direction and system."""
    head = ("| direction | system | well formed % | same elements, any order % | text chrF | inline chrF "
            "(paired) | inline chrF, prose (paired) | failed | seconds |")
    rows = [head, "|" + "---|" * 9]
    for direction, systems in results.items():
        for key, name in SYSTEMS:
            r = systems[key]
            rows.append(f"| {direction} | {name} | {_cell(r.get('well_formed_pct'))} | "
                        f"{_cell(r.get('same_elements_any_order_pct'))} | {r['text_chrf']:.1f} | "
                        f"{_cell(r.get('element_chrf'))} ({_cell(r.get('elements_paired'))}) | "
                        f"{_cell(r.get('element_chrf_prose'))} ({_cell(r.get('elements_paired_prose'))}) | "
                        f"{r['failed']} | {r['seconds']:.0f} |")
    return "\n".join(rows)


def _cell(value) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def examples(paragraphs: list[Paragraph], source: str, target: str, runs: dict[str, Run], count: int = 5) -> list[dict]:
    """`count` paragraphs spread over the list, with every system's answer."""
    picks = sorted({round(i * (len(paragraphs) - 1) / max(count - 1, 1)) for i in range(count)})
    return [{"page": paragraphs[i].page, "source": paragraphs[i].html(source), "reference": paragraphs[i].html(target),
             **{key: runs[key].outputs[i] for key, _ in SYSTEMS}} for i in picks]


def apertium_versions() -> dict[str, str]:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "apertium", "apertium-eng-spa"],
                          capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data",
                        help="what `python -m model.training.data` wrote: unpacked/ and splits/")
    parser.add_argument("--limit", type=int, default=200, help="paragraph pairs at most (spread evenly)")
    parser.add_argument("--per-request", type=int, default=16, help="paragraphs per POST /translate")
    parser.add_argument("--weights", type=Path, default=ROOT / "weights", help="WEIGHTS_DIR of the app")
    args = parser.parse_args()

    started = time.perf_counter()
    paragraphs, counts = select(args.data, args.limit)
    print(f"{len(paragraphs)} paragraph pairs ({counts})", flush=True)
    runs = asyncio.run(translate_ours(paragraphs, args.weights, args.per_request))
    results, failures, shown = {}, {}, {}
    for source, target in DIRECTIONS:
        direction = f"{source}->{target}"
        these = {"ours_html": runs[source, target, "html"], "ours_stripped": runs[source, target, "text"],
                 "apertium_html": translate_apertium([p.html(source) for p in paragraphs],
                                                     f"{_pair(source)}-{_pair(target)}")}
        results[direction] = {key: score(paragraphs, source, target, these[key], markup=key != "ours_stripped")
                              for key, _ in SYSTEMS}
        html_r, text_r = results[direction]["ours_html"], results[direction]["ours_stripped"]
        results[direction]["html_minus_stripped_text_chrf"] = round(html_r["text_chrf"] - text_r["text_chrf"], 2)
        failures[direction] = {key: run.failures for key, run in these.items() if run.failures}
        shown[direction] = examples(paragraphs, source, target, these)
    print(table({d: r for d, r in results.items()}))
    for direction, r in results.items():
        print(f"{direction}: html text chrF - stripped text chrF = {r['html_minus_stripped_text_chrf']:+.2f}")
    total = time.perf_counter() - started
    path = write_result("markup", {
        "command": "python -m " + " ".join(["bench.markup", *sys.argv[1:]]),
        "cpu": cpu_info(), "apertium": apertium_versions(),
        "settings": {"limit": args.limit, "per_request": args.per_request, "decoding": "greedy", "torch_threads": 2,
                     "apertium": "apertium -u -f html", "max_chars": MAX_CHARS},
        "counts": {**counts, "by_manual": dict(Counter(p.manual for p in paragraphs)),
                   "by_split": dict(Counter(p.split for p in paragraphs)),
                   "by_kind": dict(Counter(p.kind for p in paragraphs)),
                   "source_elements": {lang: sum(len(element_texts(p.html(lang))) for p in paragraphs)
                                       for lang in ("es", "en")}},
        "results": results, "failures": failures, "examples": shown, "seconds_total": round(total, 1),
    })
    print(f"wrote {path} in {total:.0f} s")


def _pair(lang: str) -> str:
    return {"es": "spa", "en": "eng"}[lang]


if __name__ == "__main__":
    main()
