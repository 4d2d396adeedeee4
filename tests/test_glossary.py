"""Glossaries: finding terms in a text, and reading named glossary files."""

import pytest

from model.text.glossary import GlossaryError, Term, contains, find, load_folder, read_tsv


def found(text: str, terms: list[Term]) -> list[tuple[str, str]]:
    """(matched text, target) per match, in text order."""
    return [(text[m.start:m.end], m.term.target) for m in find(text, terms)]


def test_whole_words_only():
    terms = [Term("cat", "gato")]
    assert found("The cat sat.", terms) == [("cat", "gato")]
    assert found("A category, a cats' toy, bobcat.", terms) == []


def test_any_case_and_every_occurrence():
    assert found("Save. SAVE! save?", [Term("save", "guardar")]) == [("Save", "guardar"), ("SAVE", "guardar"),
                                                                    ("save", "guardar")]


def test_longest_term_wins_and_matches_never_overlap():
    terms = [Term("Save", "Guardar"), Term("Save as", "Guardar como"), Term("as soon", "en cuanto")]
    assert found("Click Save as soon as you can, then Save.", terms) == [("Save as", "Guardar como"),
                                                                        ("Save", "Guardar")]


def test_a_phrase_matches_across_any_spacing():
    assert found("Open the  file\nmenu", [Term("file menu", "menú Archivo")]) == [("file\nmenu", "menú Archivo")]


def test_terms_with_punctuation_are_literal():
    assert found("Use C++ or C.", [Term("C++", "C++")]) == [("C++", "C++")]
    assert found("a.b and axb", [Term("a.b", "x")]) == [("a.b", "x")]


def test_blank_terms_match_nothing():
    assert find("anything", [Term("  ", "x")]) == []


@pytest.mark.parametrize("text, phrase, expected", [
    ("Guardar como PDF", "guardar como", True),  # a capital where it opens the text
    ("Haga clic en Guardar como", "guardar como", False),  # the user's case, elsewhere
    ("Haga clic en guardar como", "Guardar como", False),
    ("Archivos nuevos", "archivo", False),
    ("Guardar  como", "Guardar como", True),
    ("Guardarlo como", "guardar", False),
    ("el archivo.", "archivo", True),
    ("archivos", "archivo", False),
    ("anything", "", False),
])
def test_contains(text, phrase, expected):
    assert contains(text, phrase) is expected


def test_load_folder(tmp_path):
    (tmp_path / "ui.en-es.tsv").write_text("# menu items\nSave as\tGuardar como\n\nFile\tArchivo\n", encoding="utf-8")
    (tmp_path / "legal.es-en.tsv").write_text("demandado\tdefendant\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not a glossary\n", encoding="utf-8")
    glossaries = load_folder(tmp_path)
    assert set(glossaries) == {("ui", "en", "es"), ("legal", "es", "en")}
    ui = glossaries["ui", "en", "es"]
    assert (ui.name, ui.source, ui.target) == ("ui", "en", "es")
    assert ui.terms == (Term("Save as", "Guardar como"), Term("File", "Archivo"))


def test_read_tsv_strips_spaces(tmp_path):
    path = tmp_path / "ui.en-es.tsv"
    path.write_text(" Save \t Guardar \n", encoding="utf-8")
    assert read_tsv(path) == [Term("Save", "Guardar")]


@pytest.mark.parametrize("line", ["only one column", "a\tb\tc", "\tGuardar", "Save\t  "])
def test_a_bad_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "ui.en-es.tsv"
    path.write_text(f"# header\nFile\tArchivo\n{line}\n", encoding="utf-8")
    with pytest.raises(GlossaryError) as caught:
        load_folder(tmp_path)
    assert str(path) in str(caught.value) and "line 3" in str(caught.value)


@pytest.mark.parametrize("name", ["ui.tsv", "ui.english-spanish.tsv", "ui.en_es.tsv", "my ui.en-es.tsv"])
def test_a_wrongly_named_file_is_refused(tmp_path, name):
    (tmp_path / name).write_text("File\tArchivo\n", encoding="utf-8")
    with pytest.raises(GlossaryError, match="<name>.<source>-<target>.tsv"):
        load_folder(tmp_path)
