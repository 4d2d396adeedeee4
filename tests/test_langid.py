"""model.text.langid: Spanish or English, with py3langid's shipped model restricted to the two languages."""

import pytest

from model.text.langid import clearly_not, detect, rank_languages


@pytest.mark.parametrize("text, language", [
    ("El gato come pescado.", "es"), ("¿Dónde está la estación?", "es"), ("Buenas noches", "es"),
    ("The cat eats fish.", "en"), ("Where is the station?", "en"), ("Good night", "en"),
    ("Guardar como", "es"), ("Save as", "en"),
])
def test_short_and_long_texts_of_either_language(text, language):
    found, confidence = detect(text)
    assert found == language and confidence > 60


def test_a_text_with_nothing_to_tell_them_apart_has_no_evidence():
    assert detect("OK") == (None, 0.0)
    assert rank_languages("OK") == [("en", 0.0), ("es", 0.0)]
    ranked = rank_languages("El perro duerme en casa.")
    assert [language for language, _ in ranked] == ["es", "en"]
    assert sum(confidence for _, confidence in ranked) == pytest.approx(100, abs=0.2)


def test_only_a_clearly_different_language_is_flagged():
    assert clearly_not("The dog sleeps at home every afternoon.", "es")[0] == "en"
    assert clearly_not("El perro duerme en casa todas las tardes.", "es") is None
    assert clearly_not("Hotel", "es") is None  # reads the same in both: not worth a warning
