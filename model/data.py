"""Build the cleaned, deduplicated, leak-free train/dev/test splits (DESIGN.md §4).

    python -m model.data [--sources tatoeba|all|tatoeba,bible,...] [--seed 1234] [--out data/]

Every source reader (`model.corpus.<module>.load(workdir)`) hands over raw pairs; here they are
cleaned the same way, deduplicated across sources (the first source listed wins), and split so
that no English and no Spanish sentence occurs in more than one split: pairs that share a
sentence form a connected component, and whole components are assigned to a split in an order
given by a seeded hash of their content. The split therefore depends only on the cleaned corpus
and the seed, never on input order.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from model.corpus import Pair, SourceResult

log = logging.getLogger("model.data")

# Name on the command line -> module under model.corpus that exposes load(workdir).
SOURCE_MODULES = {
    "tatoeba": "tatoeba",
    "bible": "bible",
    "gettext": "gettext_catalogs",
    "documents": "documents",
}
DEFAULT_SOURCES = "tatoeba"
DEFAULT_SEED = 1234
DEFAULT_OUT = Path("data")
SPLITS = ("train", "dev", "test")

# A translation more than 3x longer than its source is usually a misalignment (a paragraph
# paired with a heading, a message with its help text); short pairs like "Go." / "Vete." vary
# too much in length for the ratio to mean anything, so it only applies above 20 characters.
MAX_LENGTH_RATIO = 3.0
MIN_CHARS_FOR_RATIO = 20

# Components this large are boilerplate hubs (one UI string with dozens of variants); holding
# one out would take a big bite of a dev/test set for a single sentence, so they go to train.
MAX_HELD_OUT_COMPONENT = 50

# Held-out sizes per domain, pairs in each of dev and test (see held_out_size).
CONVERSATION_HELD_OUT = 2000
OTHER_HELD_OUT_CAP = 2000
OTHER_HELD_OUT_FRACTION = 0.05
OTHER_HELD_OUT_FLOOR = 200
OTHER_HELD_OUT_FLOOR_MIN_PAIRS = 4000

# printf (%s, %d, %1$s, %(name)s, %-5.2f), Qt/KDE (%1) and Python brace ({0}, {name}, {x:>3})
# placeholders. Escapes (%%, {{, }}) are matched too so they are not misread, then discarded.
# No space flag for printf: "5% de alcohol" must not read as a "% d" conversion.
PLACEHOLDER_RE = re.compile(
    r"%%|\{\{|\}\}"
    r"|%\(\w+\)[-+#0]*\d*(?:\.\d+)?[sdiouxXeEfFgGcr]"
    r"|%(?:\d+\$)?[-+#0]*\d*(?:\.\d+)?(?:hh|h|ll|l|z|j|t|L|q)?[sdiouxXeEfFgGcpaA]"
    r"|%\d+"
    r"|\{\w*(?:\.\w+|\[\w+\])*(?:![rsa])?(?::[^{}]*)?\}"
)
PLACEHOLDER_ESCAPES = frozenset({"%%", "{{", "}}"})


class SplitRow(NamedTuple):
    domain: str
    source: str
    en: str
    es: str


SizeSpec = dict[str, int]  # domain -> pairs; the key "*" applies to every domain


# --- cleaning ---------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """NFC, with every run of whitespace (tabs and newlines included) turned into one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def placeholders(text: str) -> frozenset[str]:
    return frozenset(PLACEHOLDER_RE.findall(text)) - PLACEHOLDER_ESCAPES


def lengths_too_different(en: str, es: str) -> bool:
    shorter, longer = sorted((len(en), len(es)))
    return longer > MIN_CHARS_FOR_RATIO and longer > MAX_LENGTH_RATIO * shorter


def rejection_reason(pair: Pair) -> str | None:
    """Why a normalised pair is unusable for training, or None when it is fine."""
    if not pair.en or not pair.es:
        return "empty"
    if pair.en.casefold() == pair.es.casefold():
        return "identical"  # untranslated strings teach copying, not translation
    if lengths_too_different(pair.en, pair.es):
        return "length_ratio"
    if placeholders(pair.en) != placeholders(pair.es):
        return "placeholder_mismatch"
    return None


def clean_sources(results: Iterable[SourceResult]) -> tuple[list[SplitRow], list[dict]]:
    """Clean every source and drop exact duplicates, earlier sources winning over later ones.

    Returns the kept rows and one statistics record per source for the manifest.
    """
    seen: set[tuple[str, str]] = set()
    rows: list[SplitRow] = []
    stats: list[dict] = []
    for result in results:
        dropped: Counter[str] = Counter()
        kept = 0
        for raw in result.pairs:
            pair = Pair(normalize_text(raw.en), normalize_text(raw.es))
            reason = rejection_reason(pair) or ("duplicate" if (pair.en, pair.es) in seen else None)
            if reason:
                dropped[reason] += 1
                continue
            seen.add((pair.en, pair.es))
            rows.append(SplitRow(result.domain, result.name, pair.en, pair.es))
            kept += 1
        stats.append({
            "name": result.name,
            "domain": result.domain,
            "provenance": result.provenance,
            "raw_pairs": len(result.pairs),
            "kept_pairs": kept,
            "dropped": dict(sorted(dropped.items())),
        })
        log.info("%s: %d raw pairs, %d kept, dropped %s", result.name, len(result.pairs), kept, dict(dropped))
    return rows, stats


# --- splitting --------------------------------------------------------------------------------


def sentence_key(text: str) -> str:
    """The form under which two sentences count as the same one for leakage purposes."""
    return " ".join(text.casefold().split())


def row_nodes(row: SplitRow) -> tuple[str, str]:
    # Language-prefixed so that an English and a Spanish sentence that happen to be spelled
    # alike ("Tom.", "No.") are different nodes.
    return "en\t" + sentence_key(row.en), "es\t" + sentence_key(row.es)


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]  # path halving keeps trees shallow
            node = self.parent[node]
        return node

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def connected_components(rows: Iterable[SplitRow]) -> list[list[SplitRow]]:
    """Group rows that share an English or a Spanish sentence, directly or through a chain."""
    rows = list(rows)
    forest = UnionFind()
    for row in rows:
        forest.union(*row_nodes(row))
    groups: dict[str, list[SplitRow]] = defaultdict(list)
    for row in rows:
        groups[forest.find(row_nodes(row)[0])].append(row)
    return list(groups.values())


def component_order_key(component: list[SplitRow], seed: int) -> str:
    """A seeded, content-derived sort key: a component's place depends on nothing but its text."""
    smallest_node = min(node for row in component for node in row_nodes(row))
    return hashlib.sha256(f"{seed}\n{smallest_node}".encode()).hexdigest()


def held_out_size(domain: str, domain_pairs: int, spec: SizeSpec | None) -> int:
    """Pairs that dev (or test) gets for one domain; an explicit --dev-size/--test-size wins."""
    if spec is not None and (domain in spec or "*" in spec):
        return spec.get(domain, spec.get("*", 0))
    if domain == "conversation":
        return CONVERSATION_HELD_OUT
    size = min(OTHER_HELD_OUT_CAP, int(OTHER_HELD_OUT_FRACTION * domain_pairs))
    if domain_pairs >= OTHER_HELD_OUT_FLOOR_MIN_PAIRS:
        size = max(size, OTHER_HELD_OUT_FLOOR)
    return size


def choose_split(component: list[SplitRow], room: dict[str, dict[str, int]]) -> str:
    """Dev first, then test, while the component fits in what its domain has left; else train."""
    domains = {row.domain for row in component}
    # A component spanning domains would count against two domains' quotas at once; train takes it.
    if len(domains) > 1 or len(component) > MAX_HELD_OUT_COMPONENT:
        return "train"
    (domain,) = domains
    for split in ("dev", "test"):
        if room[split].get(domain, 0) >= len(component):
            room[split][domain] -= len(component)
            return split
    return "train"


def split_rows(
    rows: Iterable[SplitRow],
    seed: int = DEFAULT_SEED,
    dev_sizes: SizeSpec | None = None,
    test_sizes: SizeSpec | None = None,
) -> dict[str, list[SplitRow]]:
    """Assign whole components to train/dev/test; every split comes out in a canonical order."""
    rows = list(rows)
    domain_pairs = Counter(row.domain for row in rows)
    room = {
        "dev": {d: held_out_size(d, n, dev_sizes) for d, n in domain_pairs.items()},
        "test": {d: held_out_size(d, n, test_sizes) for d, n in domain_pairs.items()},
    }
    wanted = {split: dict(sizes) for split, sizes in room.items()}
    components = sorted(connected_components(rows), key=lambda c: component_order_key(c, seed))
    splits: dict[str, list[SplitRow]] = {split: [] for split in SPLITS}
    for component in components:
        splits[choose_split(component, room)].extend(sorted(component))
    for split, left in room.items():
        for domain, missing in left.items():
            if missing:
                log.warning("%s/%s: only %d of %d pairs available", split, domain,
                            wanted[split][domain] - missing, wanted[split][domain])
    return splits


# --- files ------------------------------------------------------------------------------------


def tsv_field(text: str) -> str:
    return " ".join(text.split())  # a tab or newline inside a field would break the row


def write_split(path: Path, rows: Iterable[SplitRow]) -> str:
    """Write header-less `domain<TAB>source<TAB>en<TAB>es` lines; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write("\t".join(tsv_field(field) for field in row) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_split(path: str | Path) -> list[SplitRow]:
    """Rows of a split file written by this module, as (domain, source, en, es) tuples."""
    rows = []
    # newline="\n": only a real line feed ends a row, not the other characters splitlines() knows
    with Path(path).open(encoding="utf-8", newline="\n") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise ValueError(f"{path}:{number}: expected 4 tab-separated fields, got {len(fields)}")
            rows.append(SplitRow(*fields))
    return rows


def corpus_sha256(rows: Iterable[SplitRow]) -> str:
    """Hash of the cleaned corpus as a set of rows, so it does not depend on source order."""
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update(("\t".join(row) + "\n").encode())
    return digest.hexdigest()


def build_dataset(
    results: list[SourceResult],
    out: Path,
    seed: int = DEFAULT_SEED,
    dev_sizes: SizeSpec | None = None,
    test_sizes: SizeSpec | None = None,
    skipped_sources: dict[str, str] | None = None,
) -> dict:
    """Clean, deduplicate and split `results`; write the splits and manifest.json under `out`.

    `skipped_sources` (name -> reason) is recorded so a partial corpus is never mistaken for a full one.
    """
    rows, source_stats = clean_sources(results)
    if not rows:
        raise SystemExit("model.data: no pairs left after cleaning; nothing to split")
    splits = split_rows(rows, seed, dev_sizes, test_sizes)
    split_records = {}
    for split, members in splits.items():
        relative = Path("splits") / f"{split}.tsv"
        sha = write_split(out / relative, members)
        per_domain = Counter(row.domain for row in members)
        split_records[split] = {
            "file": relative.as_posix(),
            "sha256": sha,
            "pairs": len(members),
            "domains": dict(sorted(per_domain.items())),
        }
        log.info("%s: %d pairs %s -> %s", split, len(members), dict(per_domain), out / relative)
    manifest = {
        "seed": seed,
        "corpus_sha256": corpus_sha256(rows),
        "sources": source_stats,
        "skipped_sources": skipped_sources or {},
        "cleaning": {
            "unicode": "NFC",
            "max_length_ratio": MAX_LENGTH_RATIO,
            "min_chars_for_ratio": MIN_CHARS_FOR_RATIO,
            "max_held_out_component": MAX_HELD_OUT_COMPONENT,
        },
        "splits": split_records,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# --- sources and CLI --------------------------------------------------------------------------


def parse_sources(value: str) -> list[str]:
    names = list(SOURCE_MODULES) if value.strip() == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [name for name in names if name not in SOURCE_MODULES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown source(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SOURCE_MODULES)} or all"
        )
    return list(dict.fromkeys(names))  # a name given twice is loaded once


def parse_size_spec(value: str) -> SizeSpec:
    """`2000` (every domain) or `conversation=2000,software=300`."""
    spec: SizeSpec = {}
    try:
        for item in value.split(","):
            domain, _, count = item.rpartition("=")
            spec[domain.strip() or "*"] = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or domain=N[,domain=N...], got {value!r}") from None
    if any(count < 0 for count in spec.values()):
        raise argparse.ArgumentTypeError(f"sizes must be non-negative, got {value!r}")
    return spec


def load_source(name: str, workdir: Path) -> list[SourceResult]:
    module = importlib.import_module(f"model.corpus.{SOURCE_MODULES[name]}")
    return module.load(workdir)


def load_sources(names: list[str], workdir: Path, skip_missing: bool) -> tuple[list[SourceResult], dict[str, str]]:
    """Load each source; a failing one stops the run unless `skip_missing`, which records why."""
    results: list[SourceResult] = []
    failures: dict[str, str] = {}
    for name in names:
        log.info("loading source %s", name)
        try:
            results.extend(load_source(name, workdir))
        except (Exception, SystemExit) as exc:  # readers exit with a one-line reason on fetch errors
            reason = str(exc) or type(exc).__name__
            log.debug("source %s failed", name, exc_info=True)
            if not skip_missing:
                raise SystemExit(f"model.data: source {name} unavailable: {reason} (--skip-missing continues without it)")
            log.error("skipping source %s: %s", name, reason)
            failures[name] = reason
    if not results:
        raise SystemExit("model.data: no source could be loaded")
    return results, failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.data",
        description="Fetch the package-shipped corpora, clean and deduplicate them, and write "
        "leak-free train/dev/test splits plus a manifest.",
    )
    parser.add_argument("--sources", type=parse_sources, default=parse_sources(DEFAULT_SOURCES),
                        help=f"comma list of {', '.join(SOURCE_MODULES)}, or 'all' (default: {DEFAULT_SOURCES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"split seed (default: {DEFAULT_SEED})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder for splits/, manifest.json and downloads/ (default: data/)")
    # argparse %-formats help text, hence the doubled percent sign.
    size_help = ("pairs per domain in {}: N for every domain or domain=N,...; default {} for conversation, "
                 "min({}, {:.0f}%% of the domain) for others")
    parser.add_argument("--dev-size", type=parse_size_spec, default=None,
                        help=size_help.format("dev", CONVERSATION_HELD_OUT, OTHER_HELD_OUT_CAP, 100 * OTHER_HELD_OUT_FRACTION))
    parser.add_argument("--test-size", type=parse_size_spec, default=None,
                        help=size_help.format("test", CONVERSATION_HELD_OUT, OTHER_HELD_OUT_CAP, 100 * OTHER_HELD_OUT_FRACTION))
    parser.add_argument("--skip-missing", action="store_true",
                        help="continue without a source that cannot be fetched or read, instead of failing")
    parser.add_argument("--verbose", action="store_true", help="debug logging, with tracebacks of failed sources")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results, failures = load_sources(args.sources, args.out, args.skip_missing)
    manifest = build_dataset(results, args.out, args.seed, args.dev_size, args.test_size, failures)
    log.info("wrote %s (corpus sha256 %s, seed %d)", args.out / "manifest.json", manifest["corpus_sha256"], args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
