r"""Build the cleaned, deduplicated, leak-free train/dev/test splits (docs/training.md).

    python -m model.training.data [--sources tatoeba|all|tatoeba,bible,...] [--out data/]

Every source reader (`model.training.corpus.<module>.load(workdir)`) hands over raw pairs; here they are
cleaned the same way and deduplicated across sources (the first source listed wins).

Dev and test are the same files on every machine: they are the pairs listed, by a hash of their
two sides, in `model/training/heldout/{dev,test}.keys`, so neither what a machine has installed nor a newer
package version that adds or rewords other strings can move a pair into or out of them. Training
gets every other pair that shares no English and no Spanish sentence with a held-out one. The lists
were drawn once by the component rule (`--freeze-held-out`): pairs that share a sentence form a
connected component, and whole components of sources whose content is pinned (never the catalogs
installed on the build machine) go to dev, then test, in the order of a seeded hash of their text.
`model/training/heldout/splits.json` records the sha256 each held-out file must have, and the tools say
so, and why, when a rebuilt file differs.

Sources added after dev and test were drawn get held-out lists of their own, so that dev and test stay
what every published score was measured on: `{dev,test}_extra.keys`, drawn by the same rule from
those sources' pairs only (`--freeze-extra-held-out`), written to `splits/{dev,test}_extra.tsv`, kept
out of train like dev and test, and checked against splits.json the same way. They were drawn with

    python -m model.training.data --freeze-extra-held-out narrative:cataclysm-dda,doc:gnome-help \
        --dev-size narrative:cataclysm-dda=500,doc:gnome-help=300 \
        --test-size narrative:cataclysm-dda=500,doc:gnome-help=300
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

from model.training.corpus import Pair, SourceResult

log = logging.getLogger("model.training.data")

# Name on the command line -> module under model.training.corpus that exposes load(workdir).
SOURCE_MODULES = {
    "tatoeba": "tatoeba",
    "bible": "bible",
    "gettext": "gettext_catalogs",
    "documents": "documents",
    "narrative": "narrative",
    # Added after dev/test were drawn: listed last so that a pair they share with an older source
    # keeps the older source's name and domain, and dev/test stay byte for byte the same.
    "cataclysm": "cataclysm",
    "gnome-help": "gnome_help",
}
DEFAULT_SOURCES = "all"
DEFAULT_SEED = 1234
DEFAULT_OUT = Path("data")
SPLITS = ("train", "dev", "test")
HELD_OUT_SPLITS = ("dev", "test")
# Held out from sources added later (see the module docstring); written only where their lists exist.
EXTRA_HELD_OUT_SPLITS = ("dev_extra", "test_extra")
HELD_OUT_DIR = Path(__file__).with_name("heldout")  # {dev,test}[_extra].keys and splits.json

# Sources whose pairs depend on the machine that builds the corpus: they may train, never be held out.
UNPINNED_SOURCES = frozenset({"gettext:installed"})
HELD_OUT_MATCH = "dev and test match the sha256 recorded in splits.json"

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

    Unpinned sources come last whatever their place in `results`: a pair that a catalog installed on
    this machine shares with a manual must keep the manual's name and domain, or what a machine has
    installed would relabel a held-out pair. Returns the kept rows and one statistics record per source.
    """
    seen: set[tuple[str, str]] = set()
    rows: list[SplitRow] = []
    stats: list[dict] = []
    for result in sorted(results, key=lambda r: r.name in UNPINNED_SOURCES):  # stable: the rest keep their order
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


def choose_split(component: list[SplitRow], room: dict[str, dict[str, int]], eligible: bool = True) -> str:
    """Dev first, then test, while the component fits in what its domain has left; else train."""
    domains = {row.domain for row in component}
    # A component spanning domains would count against two domains' quotas at once; train takes it.
    if not eligible or len(domains) > 1 or len(component) > MAX_HELD_OUT_COMPONENT:
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
    eligible=lambda component: True,
) -> dict[str, list[SplitRow]]:
    """Assign whole components to train/dev/test; every split comes out in a canonical order.

    `eligible(component)` False keeps a component in train whatever room is left.
    """
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
        splits[choose_split(component, room, eligible(component))].extend(sorted(component))
    for split, left in room.items():
        for domain, missing in left.items():
            if missing:
                log.warning("%s/%s: only %d of %d pairs available", split, domain,
                            wanted[split][domain] - missing, wanted[split][domain])
    return splits


# --- the held-out lists -----------------------------------------------------------------------


def pair_key(row: SplitRow) -> str:
    """A pair's name in the held-out lists: 80 bits of the sha256 of its cleaned sides."""
    return hashlib.sha256(f"{row.en}\t{row.es}".encode()).hexdigest()[:20]


HeldOutKeys = dict[str, frozenset[str]]  # "dev" / "test" (/ "dev_extra" / "test_extra") -> pair keys


def read_held_out(folder: Path = HELD_OUT_DIR) -> HeldOutKeys:
    """Dev and test's lists, and the extra lists where `folder` has them."""
    extra = tuple(split for split in EXTRA_HELD_OUT_SPLITS if (folder / f"{split}.keys").is_file())
    return {split: frozenset((folder / f"{split}.keys").read_text().split()) for split in HELD_OUT_SPLITS + extra}


def write_held_out(folder: Path, keys: HeldOutKeys, splits: tuple[str, ...] = HELD_OUT_SPLITS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (folder / f"{split}.keys").write_text("".join(f"{key}\n" for key in sorted(keys[split])))


def held_out_splits(keys: HeldOutKeys) -> tuple[str, ...]:
    """The held-out splits that `keys` lists, in the order their files are written."""
    return tuple(split for split in HELD_OUT_SPLITS + EXTRA_HELD_OUT_SPLITS if split in keys)


def split_by_held_out(rows: Iterable[SplitRow], keys: HeldOutKeys) -> tuple[dict[str, list[SplitRow]], int]:
    """Each held-out split is its listed pairs; train is every other pair sharing no sentence with any of them.

    Returns the splits, each in canonical (sorted) order, and how many pairs train lost that way.
    """
    rows = list(rows)
    held_out = {split: sorted(row for row in rows if pair_key(row) in keys[split]) for split in held_out_splits(keys)}
    held = {node for split in held_out.values() for row in split for node in row_nodes(row)}
    listed = frozenset().union(*keys.values())
    rest = [row for row in rows if pair_key(row) not in listed]
    train = sorted(row for row in rest if not held.intersection(row_nodes(row)))
    return {"train": train, **held_out}, len(rest) - len(train)


def freeze_held_out(
    rows: list[SplitRow],
    domains: set[str],
    current: HeldOutKeys,
    seed: int = DEFAULT_SEED,
    dev_sizes: SizeSpec | None = None,
    test_sizes: SizeSpec | None = None,
    margin: float = 0.0,
) -> HeldOutKeys:
    """New held-out lists whose pairs of `domains` are drawn again by the component rule.

    Pairs of other domains keep their place, and a component touching one of them is not drawn; a
    drawn component holding a pair of an unpinned source goes back to train. `margin` returns the
    last fraction of each domain's test components to train: when the lists replace splits that a
    shipped model was trained beside, the edge of the old test range is where a rebuilt corpus may
    have put what that model trained on.
    """
    domain_of = {pair_key(row): row.domain for row in rows}
    kept = {split: frozenset(k for k in current[split] if domain_of.get(k) not in domains) for split in HELD_OUT_SPLITS}
    taken = frozenset().union(*kept.values(), *(current[split] for split in EXTRA_HELD_OUT_SPLITS if split in current))

    def eligible(component: list[SplitRow]) -> bool:
        return all(pair_key(row) not in taken and row.domain in domains for row in component)

    others = {row.domain: 0 for row in rows if row.domain not in domains}  # no room, so no warning about it
    splits = split_rows(rows, seed, others | (dev_sizes or {}), others | (test_sizes or {}), eligible)
    # Components holding an unpinned pair are drawn like any other and only then given back to train,
    # so the lists never reach further down the component order than the rule over every pair would.
    pinned = {split: [row for component in connected_components(splits[split]) if not _unpinned(component)
                      for row in component] for split in HELD_OUT_SPLITS}
    test = _trim_test(pinned["test"], seed, margin)
    return {**current, "dev": kept["dev"] | {pair_key(r) for r in pinned["dev"]},
            "test": kept["test"] | {pair_key(r) for r in test}}


def freeze_extra_held_out(
    rows: list[SplitRow],
    sources: set[str],
    current: HeldOutKeys,
    seed: int = DEFAULT_SEED,
    dev_sizes: SizeSpec | None = None,
    test_sizes: SizeSpec | None = None,
) -> HeldOutKeys:
    """New extra lists (dev_extra, test_extra) whose pairs of `sources` are drawn again by the component rule.

    It is freeze_held_out's rule with each source in place of a domain, so that each source gets its
    own size (`dev_sizes`/`test_sizes` map source names to pairs). A component is drawn only when all
    its pairs come from `sources` and none is held out already: dev and test stay as they are, and so
    does every pair of an older source, since a drawn component shares no sentence with one.
    """
    if sources & UNPINNED_SOURCES:
        unpinned = ", ".join(sorted(sources & UNPINNED_SOURCES))
        raise ValueError(f"{unpinned} cannot be held out: its pairs depend on the machine that builds the corpus")
    source_of = {pair_key(row): row.source for row in rows}
    kept = {split: frozenset(k for k in current.get(split, ()) if source_of.get(k) not in sources)
            for split in EXTRA_HELD_OUT_SPLITS}
    taken = frozenset().union(*(current[split] for split in HELD_OUT_SPLITS), *kept.values())

    def eligible(component: list[SplitRow]) -> bool:
        return all(pair_key(row) not in taken and row.domain in sources for row in component)

    by_source = [row._replace(domain=row.source) for row in rows]  # the rule's quotas are per domain
    others = {row.domain: 0 for row in by_source if row.domain not in sources}
    splits = split_rows(by_source, seed, others | (dev_sizes or {}), others | (test_sizes or {}), eligible)
    drawn = {"dev_extra": splits["dev"], "test_extra": splits["test"]}
    return {**current, **{split: kept[split] | {pair_key(row) for row in drawn[split]} for split in drawn}}


def _unpinned(component: list[SplitRow]) -> bool:
    return any(row.source in UNPINNED_SOURCES for row in component)


def _trim_test(test: list[SplitRow], seed: int, margin: float) -> list[SplitRow]:
    """Drop the last `margin` of each domain's test components, in the order the rule filled them."""
    if not margin:
        return test
    kept = []
    for domain in sorted({row.domain for row in test}):
        components = sorted(connected_components(r for r in test if r.domain == domain),
                            key=lambda c: component_order_key(c, seed))
        keep = components[: len(components) - int(margin * len(components))]
        kept += [row for component in keep for row in component]
    return sorted(kept)


def check_held_out(records: dict[str, dict], expected_file: Path, sources: list[dict]) -> list[str]:
    """Problems that make the written held-out files differ from the ones `expected_file` records.

    Dev and test are always checked; an extra split is checked where it was written or is recorded.
    """
    if not expected_file.is_file():
        return [f"{expected_file} is missing: nothing to check the held-out splits against"]
    expected = json.loads(expected_file.read_text())
    extra = tuple(split for split in EXTRA_HELD_OUT_SPLITS if split in records or split in expected)
    problems = []
    for split in HELD_OUT_SPLITS + extra:
        got, want = records.get(split), expected.get(split)
        if want is None:
            problems.append(f"{split}.tsv was written, but {expected_file.name} records no sha256 for it")
        elif got is None:
            problems.append(f"{expected_file.name} records {split}.tsv, but its list {split}.keys is missing")
        elif got["sha256"] != want["sha256"]:
            problems.append(f"{split}.tsv has sha256 {got['sha256'][:12]}… ({got['pairs']} pairs, "
                            f"{got['missing_keys']} listed pairs not found), "
                            f"expected {want['sha256'][:12]}… ({want['pairs']} pairs)")
    if problems:
        versions = {s["name"]: _versions(s) for s in sources}
        drawn_from = expected.get("sources", {}) | expected.get("extra_sources", {})
        moved = [f"{name}: {versions.get(name) or 'not loaded'} (lists drawn with {want})"
                 for name, want in drawn_from.items() if versions.get(name) != want]
        problems.append("sources that differ from the ones the lists were drawn from: " + ("; ".join(moved) or "none"))
    return problems


def _versions(source_stats: dict) -> str:
    provenance = source_stats["provenance"]
    packages = provenance.get("packages")
    if packages:
        return ", ".join(f"{p['name']} {p['version']}" for p in packages)
    return (f"{provenance.get('package', source_stats['name'])} {provenance.get('version', '')} "
            f"{provenance.get('sha256', '')[:12]}").strip()


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
    held_out: HeldOutKeys,
    skipped_sources: dict[str, str] | None = None,
    expected: Path | None = HELD_OUT_DIR / "splits.json",
) -> dict:
    """Clean and deduplicate `results`, split them by the `held_out` lists, write the splits and manifest.json.

    `skipped_sources` (name -> reason) is recorded so a partial corpus is never mistaken for a full
    one; the manifest's `held_out_check` lists why dev/test differ from `expected`, if they do.
    """
    rows, source_stats = clean_sources(results)
    if not rows:
        raise SystemExit("model.training.data: no pairs left after cleaning; nothing to split")
    splits, train_dropped = split_by_held_out(rows, held_out)
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
        if split in held_out:
            split_records[split]["missing_keys"] = len(held_out[split]) - len(members)
        log.info("%s: %d pairs %s -> %s", split, len(members), dict(per_domain), out / relative)
    problems = check_held_out(split_records, expected, source_stats) if expected else []
    for problem in problems:
        log.warning("held-out splits differ from the recorded ones: %s", problem)
    manifest = {
        "corpus_sha256": corpus_sha256(rows),
        "sources": source_stats,
        "skipped_sources": skipped_sources or {},
        "cleaning": {
            "unicode": "NFC",
            "max_length_ratio": MAX_LENGTH_RATIO,
            "min_chars_for_ratio": MIN_CHARS_FOR_RATIO,
            "max_held_out_component": MAX_HELD_OUT_COMPONENT,
        },
        "held_out": {
            "lists": f"model/training/heldout/{{{','.join(held_out)}}}.keys",
            "unpinned_sources": sorted(UNPINNED_SOURCES),
            "train_pairs_dropped_for_sharing_a_held_out_sentence": train_dropped,
            "check": problems or HELD_OUT_MATCH,
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
    module = importlib.import_module(f"model.training.corpus.{SOURCE_MODULES[name]}")
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
                raise SystemExit(f"model.training.data: source {name} unavailable: {reason} "
                                 "(--skip-missing continues without it)") from None
            log.error("skipping source %s: %s", name, reason)
            failures[name] = reason
    if not results:
        raise SystemExit("model.training.data: no source could be loaded")
    return results, failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.training.data",
        description="Fetch the package-shipped corpora, clean and deduplicate them, and write "
        "leak-free train/dev/test splits plus a manifest.",
    )
    parser.add_argument("--sources", type=parse_sources, default=parse_sources(DEFAULT_SOURCES),
                        help=f"comma list of {', '.join(SOURCE_MODULES)}, or 'all' (default: {DEFAULT_SOURCES})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder for splits/, manifest.json and downloads/ (default: data/)")
    parser.add_argument("--held-out", type=Path, default=HELD_OUT_DIR,
                        help="folder with the held-out lists {dev,test}[_extra].keys and splits.json "
                        "(default: model/training/heldout)")
    freeze = parser.add_argument_group(
        "drawing the held-out lists again (maintainers: this changes dev and test for everyone)")
    freeze.add_argument("--freeze-held-out", type=lambda v: {d.strip() for d in v.split(",") if d.strip()},
                        default=None, metavar="DOMAINS",
                        help="redraw the lists for these domains (comma list) by the component rule, "
                        "keeping the other domains' pairs, and record the new files' sha256 in splits.json")
    freeze.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the component order (default: {DEFAULT_SEED})")
    # argparse %-formats help text, hence the doubled percent sign.
    size_help = ("pairs per domain in {}: N for every domain or domain=N,...; default {} for conversation, "
                 "min({}, {:.0f}%% of the domain) for others")
    freeze.add_argument("--dev-size", type=parse_size_spec, default=None,
                        help=size_help.format("dev", CONVERSATION_HELD_OUT, OTHER_HELD_OUT_CAP,
                                              100 * OTHER_HELD_OUT_FRACTION))
    freeze.add_argument("--test-size", type=parse_size_spec, default=None,
                        help=size_help.format("test", CONVERSATION_HELD_OUT, OTHER_HELD_OUT_CAP,
                                              100 * OTHER_HELD_OUT_FRACTION))
    freeze.add_argument("--held-out-margin", type=float, default=0.0,
                        help="return this fraction of each domain's last test components to train "
                        "(see freeze_held_out)")
    freeze.add_argument("--freeze-extra-held-out", type=lambda v: {s.strip() for s in v.split(",") if s.strip()},
                        default=None, metavar="SOURCES", help="redraw the extra lists {dev,test}_extra.keys for these "
                        "sources (comma list of names such as narrative:cataclysm-dda; --dev-size/--test-size then "
                        "count pairs per source), leaving dev and test as they are, and record them in splits.json")
    parser.add_argument("--skip-missing", action="store_true",
                        help="continue without a source that cannot be fetched or read, instead of failing")
    parser.add_argument("--verbose", action="store_true", help="debug logging, with tracebacks of failed sources")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.freeze_held_out and args.freeze_extra_held_out:
        parser.error("--freeze-held-out and --freeze-extra-held-out draw with different sizes: run them one at a time")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results, failures = load_sources(args.sources, args.out, args.skip_missing)
    keys = (read_held_out(args.held_out) if (args.held_out / "dev.keys").exists()
            else {s: frozenset() for s in HELD_OUT_SPLITS})
    if args.freeze_held_out:
        rows, _ = clean_sources(results)
        keys = freeze_held_out(rows, args.freeze_held_out, keys, args.seed, args.dev_size, args.test_size,
                               args.held_out_margin)
        write_held_out(args.held_out, keys)
    if args.freeze_extra_held_out:
        rows, _ = clean_sources(results)
        keys = freeze_extra_held_out(rows, args.freeze_extra_held_out, keys, args.seed, args.dev_size, args.test_size)
        write_held_out(args.held_out, keys, EXTRA_HELD_OUT_SPLITS)
        # The new lists' sha256 is known once their files are written; recorded first, they are then
        # checked with dev and test by the build below like in any other build.
        draft = build_dataset(results, args.out, keys, failures, expected=None)
        record_extra_held_out(args.held_out / "splits.json", draft, args.freeze_extra_held_out)
    expected = None if args.freeze_held_out else args.held_out / "splits.json"
    manifest = build_dataset(results, args.out, keys, failures, expected)
    if args.freeze_held_out:
        record_held_out(args.held_out / "splits.json", manifest)
    log.info("wrote %s (corpus sha256 %s)", args.out / "manifest.json", manifest["corpus_sha256"])
    return 0 if manifest["held_out"]["check"] == HELD_OUT_MATCH else 3


def record_held_out(path: Path, manifest: dict) -> None:
    """What a rebuilt dev/test must match: the files' sha256, and the sources they were drawn from.

    What `path` records of the extra lists stays.
    """
    record = _recorded(path)
    record.update({split: _split_record(manifest, split) for split in HELD_OUT_SPLITS})
    record["sources"] = {s["name"]: _versions(s) for s in manifest["sources"] if s["name"] not in UNPINNED_SOURCES}
    _write_record(path, record)


def record_extra_held_out(path: Path, manifest: dict, sources: set[str]) -> None:
    """What rebuilt extra splits must match, and the `sources` they were drawn from; the rest of `path` stays."""
    record = _recorded(path)
    record.update({split: _split_record(manifest, split) for split in EXTRA_HELD_OUT_SPLITS})
    record["extra_sources"] = {s["name"]: _versions(s) for s in manifest["sources"] if s["name"] in sources}
    _write_record(path, record)


def _recorded(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _split_record(manifest: dict, split: str) -> dict:
    return {k: manifest["splits"][split][k] for k in ("sha256", "pairs", "domains")}


def _write_record(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
