"""Numbers, dates and times in the target language's conventions (model/text/localize.py), each way,
and never inside protected spans."""

import pytest

from model.text import compose, localize
from model.text.glossary import Term
from tests.test_compose import aligned


def converted(text: str, source: str, target: str) -> list[tuple[str, str]]:
    return [(text[q.start:q.end], q.target) for q in localize.find(text, source, target)]


@pytest.mark.parametrize("spanish, english", [
    ("3,5", "3.5"),  # decimal separator
    ("1.000.000", "1,000,000"),  # thousands
    ("1.234,50", "1,234.50"),  # both, the digits as given
    ("25 %", "25%"),  # percentage
    ("2,5 %", "2.5%"),
    ("3,50 €", "€3.50"),  # currency
    ("5 de enero de 2024", "January 5, 2024"),  # date
    ("12 de octubre", "October 12"),
    ("17:30", "5:30 PM"),  # 24-hour clock <-> 12-hour clock
    ("9:05", "9:05 AM"),
])
def test_each_quantity_both_ways(spanish, english):
    assert converted(f"Son {spanish} hoy.", "es", "en") == [(spanish, english)]
    assert converted(f"It is {english} today.", "en", "es") == [(english, spanish)]


def test_english_dates_and_times_in_their_other_forms():
    assert converted("On 5 January 2024 at 5 p.m.", "en", "es") == [("5 January 2024", "5 de enero de 2024"),
                                                                     ("5 p.m.", "17:00")]


@pytest.mark.parametrize("text, source", [
    ("Versión 1.2.3 del núcleo 2.6.32.", "es"),  # version strings are not numbers in either convention
    ("Release 1.2.3 of kernel 2.6.32.", "en"),
    ("En 2024 hubo 15 casos.", "es"),  # no separator: read the same in both
    ("El 3.5 de la lista.", "es"),  # "." groups thousands in Spanish: 3.5 is not a Spanish number
    ("Use x86_64 or mp3 files.", "en"),  # identifiers
    ("See Figure 17.152 and Section 2.3 (version 2.100).", "en"),  # numberings
    ("Vea la Figura 16.189 y la sección 2.3.", "es"),
    ("2.11. List of the packages", "en"),  # a numbered heading
    ("It ships with GIMP 2.10 and Python 3.11.", "en"),  # a version after a name
    ("All the features from 2.10.x are there.", "en"),  # part of a version pattern
])
def test_what_is_not_a_quantity_in_the_source_conventions_stays(text, source):
    assert converted(text, source, "en" if source == "es" else "es") == []


def test_numbers_inside_protected_spans_never_change():
    text = "Abra https://x.org/a?v=1,5 o /usr/lib/3,5/ con %1$s y {n} y cuesta 3,5 €."
    unit = compose.plan(text, "text", conventions=("es", "en")).units[0]
    assert [(unit.piece[m.start:m.end], m.term.target) for m in unit.terms] == [("3,5 €", "€3.50")]
    # Written back word for word: the cut spans are as given, the price in English conventions.
    out = compose.finish(unit, aligned(unit, unit.source))
    assert "https://x.org/a?v=1,5" in out and "/usr/lib/3,5/" in out and "%1$s" in out and "{n}" in out
    assert out.endswith("€3.50.")


def test_code_in_html_keeps_its_numbers():
    plan = compose.plan("<p>Pulse <code>3,5</code> y pague 3,5 €.</p>", "html", conventions=("es", "en"))
    out = plan.rebuild([compose.finish(u, aligned(u, u.source)) for u in plan.units])
    assert out == "<p>Pulse <code>3,5</code> y pague €3.50.</p>"


def test_a_glossary_term_wins_over_a_quantity_and_no_conventions_change_nothing():
    terms = [Term("3,5 €", "tres euros y medio")]
    unit = compose.plan("Cuesta 3,5 €.", "text", terms, conventions=("es", "en")).units[0]
    assert [m.term.target for m in unit.terms] == ["tres euros y medio"]
    assert compose.plan("Cuesta 3,5 €.", "text").units[0].terms == []
