"""Markup, protected spans and glossaries around a translation, with the alignment set by hand.

Each test gives `compose.finish` a translation and its word links (what the model and
model/text/align.py would give), so what is checked is the placement rule itself, not what a model
happened to learn.
"""

from __future__ import annotations

import random

import pytest

from model.text import align, compose, markup, protect
from model.text.glossary import Term


def aligned(unit: compose.Unit, target: str, links: list[tuple[int, int]] | None = None,
            multi_token: set[int] = frozenset()) -> compose.Aligned:
    """`target` as the model's output for `unit`, each target word linked as `links` say (default: in order).
    Words in `multi_token` are made of two tokens, as an invented word would be."""
    source_words = align.words_of(unit.source, [])
    target_words = [align.Word(w.text, w.start, w.end, (i, i + 1) if i in multi_token else (i,))
                    for i, w in enumerate(align.words_of(target, []))]
    if links is None:
        links = [(i, i) for i in range(min(len(source_words), len(target_words)))]
    return compose.Aligned(target, source_words, target_words, links)


def word_for_word(text: str, fmt: str = "text", terms=(), rare=lambda w: False, upper: bool = True) -> str:
    """Every unit 'translated' into itself (upper-cased, to see what went through the model), word for word."""
    plan = compose.plan(text, fmt, list(terms), rare)
    outputs = [compose.finish(u, aligned(u, u.source.upper() if upper else u.source)) for u in plan.units]
    return plan.rebuild(outputs)


def tags(html: str) -> list[str]:
    """The start and end tags of a fragment, in order: what 'the same elements, nested the same' compares."""
    found: list[str] = []

    def walk(node: markup.Node) -> None:
        for child in node.children:
            if child.kind == "element":
                found.append(child.tag)
                walk(child)
                found.append("/" + child.tag)

    walk(markup.parse_html(html))
    return found


# --- inline tags ------------------------------------------------------------------------------


def test_nested_inline_tags_follow_their_words():
    assert word_for_word("<b><i>uno</i> dos</b> tres") == "<b><i>UNO</i> DOS</b> TRES"


def test_tags_follow_reordered_words_and_stay_nested():
    unit = compose.plan("el <b>gato <i>negro</i></b> come", "text").units[0]
    # "el gato negro come" -> "the black cat eats": negro (2) -> black (1), gato (1) -> cat (2)
    out = compose.finish(unit, aligned(unit, "the black cat eats", [(0, 0), (1, 2), (2, 1), (3, 3)]))
    assert out == "the <b><i>black</i> cat</b> eats"


def test_crossing_alignment_still_gives_the_source_elements():
    unit = compose.plan("<b>uno</b> <i>dos</i> tres", "text").units[0]
    out = compose.finish(unit, aligned(unit, "dos uno tres", [(0, 1), (1, 0), (2, 2)]))
    # The answer has the source's tags in the source's order, each once: the element the translation
    # moved before its earlier sibling comes right after it (empty, as its words stand before).
    assert out == "dos <b>uno</b><i></i> tres"
    assert tags(out) == tags("<b>uno</b> <i>dos</i> tres")


def test_tags_at_sentence_edges_and_a_tag_spanning_two_sentences():
    assert word_for_word("<b>Hola.</b> Adiós.") == "<b>HOLA.</b> ADIÓS."
    plan = compose.plan("Uno <i>dos. Tres</i> cuatro. Cinco.", "text")
    assert [u.source for u in plan.units] == ["Uno dos. Tres cuatro.", "Cinco."]  # never cut inside <i>
    assert word_for_word("Uno <i>dos. Tres</i> cuatro. Cinco.") == "UNO <i>DOS. TRES</i> CUATRO. CINCO."


def test_an_element_whose_words_the_model_dropped_keeps_its_source_text():
    unit = compose.plan("Pulse <b>Guardar</b> ahora", "text").units[0]
    out = compose.finish(unit, aligned(unit, "Click now", [(0, 0), (1, 2)]))
    assert out == "Click <b>Guardar</b> now"


def test_an_element_holding_only_punctuation_keeps_it():
    assert word_for_word("Pulse <b>:</b> ahora") == "PULSE <b>:</b> AHORA"
    assert word_for_word("<p>Pulse <b>(</b>x<b>)</b> ahora</p>", "html") == "<p>PULSE <b>(</b>X<b>)</b> AHORA</p>"


FRAGMENTS = [
    "<p>El <b>gato <i>negro <u>y</u></i> blanco</b> come.</p>",  # nested inline elements
    "<p><b>Hola</b> mundo <i>adiós.</i></p><p><em>Uno.</em> Dos <b>tres</b></p>",  # at sentence edges
    "<p>Pulse <b>:</b> y <b>3</b> veces <i>(</i>o <i>2,5</i><i>)</i>.</p>",  # only punctuation or a number
    "<p>Uno<br>dos <b>tres<br>cuatro</b> cinco.</p>",  # <br> inside a sentence
    "<li>Elija <span>Archivo</span> → <span>Abrir</span>. Luego <em>Guardar <b>como</b></em>.</li>",
    '<p>Vea <a href="x">el <code>ls</code> manual</a><img src="a.png" alt="Un gato"> ahora.</p>',
]


@pytest.mark.parametrize("fragment", FRAGMENTS)
@pytest.mark.parametrize("seed", range(6))
def test_every_element_is_kept_whatever_the_translation_and_its_alignment(fragment, seed):
    """Any output, linked to its input at random (words dropped, swapped, doubled, none linked): the
    answer has exactly the source's elements, nested and ordered as in the source."""
    rng = random.Random(seed)
    plan = compose.plan(fragment, "html")
    outputs = []
    for unit in plan.units:
        n = len(align.words_of(unit.source, []))
        target = " ".join(rng.choice(["uno", "dos", ":", "3", "(", ")", "tres."]) for _ in range(rng.randint(0, n + 2)))
        links = [(t, rng.randrange(n)) for t in range(len(align.words_of(target, []))) if n and rng.random() < 0.8]
        outputs.append(compose.finish(unit, aligned(unit, target, links)))
    assert tags(plan.rebuild(outputs)) == tags(fragment)


def test_unpaired_angle_brackets_in_plain_text_stay_text():
    plan = compose.plan("si a <b y c > d", "text")
    assert plan.units[0].source == "si a <b y c > d" and not plan.units[0].inline.has_markup


# --- HTML documents -----------------------------------------------------------------------------


def test_html_keeps_containers_comments_and_untranslated_elements():
    html = ('<!DOCTYPE html><html><head><style>p {color: red}</style></head><body>\n'
            '<!-- nota --><p>El gato <b>come</b> pescado.</p><pre>no se traduce</pre>'
            '<p class="notranslate">tampoco</p><p translate="no">ni esto</p>'
            '<ul><li>uno <code>dos</code> tres</li></ul></body></html>')
    out = word_for_word(html, "html")
    assert out == ('<!DOCTYPE html><html><head><style>p {color: red}</style></head><body>\n'
                   '<!-- nota --><p>EL GATO <b>COME</b> PESCADO.</p><pre>no se traduce</pre>'
                   '<p class="notranslate">tampoco</p><p translate="no">ni esto</p>'
                   '<ul><li>UNO <code>dos</code> TRES</li></ul></body></html>')


def test_html_translates_title_alt_and_placeholder_and_keeps_other_attributes():
    html = ('<p title="Ayuda">Mira <img src="gato.png" alt="Un gato"> y <a href="/x?a=1&amp;b=2" '
            'class="y">aquí</a>.</p><input placeholder="Su nombre">')
    out = word_for_word(html, "html")
    assert 'title="AYUDA"' in out and 'alt="UN GATO"' in out and 'placeholder="SU NOMBRE"' in out
    assert 'href="/x?a=1&amp;b=2" class="y"' in out and "src=\"gato.png\"" in out
    assert tags(out) == tags(html)


def test_html_entities_are_decoded_for_the_model_and_escaped_again():
    plan = compose.plan("<p>Tom &amp; Jerry &lt;3 &copy; 2024</p>", "html")
    assert plan.units[0].source == "Tom & Jerry <3 2024"  # © is a symbol: cut, put back
    assert word_for_word("<p>Tom &amp; Jerry &lt;3 &copy; 2024</p>", "html", upper=False) == \
        "<p>Tom &amp; Jerry &lt;3 © 2024</p>"


@pytest.mark.parametrize("html,where", [
    ("<p>uno <b>dos</p>", "line 1, column 14: </p> ends while <b> opened at line 1, column 8 is still open"),
    ("<p>uno</p>\n</div>", "line 2, column 1: the end tag </div> closes no open element"),
    ("<div><b>uno</b>", "line 1, column 1: <div> is never closed"),
])
def test_malformed_html_says_where(html, where):
    with pytest.raises(markup.MarkupError, match=where):
        compose.plan(html, "html")


def test_optional_end_tags_may_be_left_out():
    assert tags(word_for_word("<ul><li>uno<li>dos</ul>", "html")) == ["ul", "li", "li", "/li", "/li", "/ul"]


# --- protected spans --------------------------------------------------------------------------


@pytest.mark.parametrize("text,source", [
    ("Guardar el archivo %s en la carpeta {folder}.", "Guardar el archivo en la carpeta."),
    ("Hay %1$s archivos de ${user} &amp; otros", "Hay archivos de otros"),
    ("Ver https://ej.es/a?b=1 o /usr/bin/x hoy.", "Ver o hoy."),
])
def test_placeholders_urls_and_paths_are_cut_and_put_back_in_place(text, source):
    assert [u.source for u in compose.plan(text, "text").units] == [source]
    kept = [s for s in protect.find(text) if s.treatment == protect.CUT]
    out = word_for_word(text)
    assert [text[s.start:s.end] for s in kept] == [out[s.start:s.end] for s in kept]  # same places, word for word


def test_emoji_are_cut_and_control_characters_dropped_with_a_note():
    plan = compose.plan("Me encanta 👩‍👩‍👧‍👦 y ☕️\x07 al revés\u200b", "text")
    [unit] = plan.units
    assert unit.source == "Me encanta y al revés"
    assert unit.dropped == ["\x07", "\u200b"]
    assert word_for_word("Me encanta 👩‍👩‍👧‍👦 y ☕️ al revés") == "ME ENCANTA 👩‍👩‍👧‍👦 Y ☕️ AL REVÉS"
    assert compose.plan("Hola\x00mundo", "text").units[0].source == "Hola mundo"


def test_a_rare_name_the_model_mangled_is_copied_back():
    rare = {"García"}.__contains__
    unit = compose.plan("El Sr. García llegó a las 3.30 p.m.", "text", is_rare=rare).units[0]
    assert [s.kind for s in unit.copies] == ["name", "number"]
    # The model wrote "Gariah" in pieces (an attempt to copy) and "3,30" for the time.
    out = compose.finish(unit, aligned(unit, "Mr. Gariah arrived at 3,30 p.m.",
                                       [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (5, 7), (6, 8), (7, 9)], {1}))
    assert out == "Mr. García arrived at 3.30 p.m."


def test_a_rare_name_translated_into_a_known_word_stays_translated():
    unit = compose.plan("Vivo en Londres ahora.", "text", is_rare={"Londres"}.__contains__).units[0]
    assert compose.finish(unit, aligned(unit, "I live in London now.", [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)])) \
        == "I live in London now."


def test_protected_spans_found():
    kinds = [(s.kind, s.treatment) for s in protect.find("Escribe a ana@ej.es o ve a www.ej.es ™ y C:\\Temp\\a.txt")]
    assert kinds == [("email", "cut"), ("url", "cut"), ("symbol", "cut"), ("path", "cut")]
    assert [s.kind for s in protect.find("y/o km/h 50%")] == ["number"]  # a slash between words is not a path


# --- glossary -----------------------------------------------------------------------------------


def test_a_glossary_term_replaces_the_words_aligned_to_it():
    unit = compose.plan("Click Save as to keep the file.", "text", [Term("Save as", "Guardar como"),
                                                                    Term("file", "fichero")]).units[0]
    out = compose.finish(unit, aligned(unit, "Pulse Guardar para conservar el archivo.",
                                       [(0, 0), (1, 1), (2, 4), (3, 3), (4, 5), (5, 6)]))
    assert out == "Pulse Guardar como para conservar el fichero."


def test_a_term_already_there_is_not_forced_in_twice():
    unit = compose.plan("Open the file.", "text", [Term("file", "archivo")]).units[0]
    out = compose.finish(unit, aligned(unit, "Abra el archivo.", [(0, 0), (1, 1), (2, 2)]))
    assert out == "Abra el archivo."


def test_a_term_that_starts_the_sentence_is_capitalised():
    unit = compose.plan("File saved.", "text", [Term("file", "fichero")]).units[0]
    assert compose.finish(unit, aligned(unit, "Archivo guardado.")) == "Fichero guardado."


def test_a_repaired_name_never_writes_over_a_term_the_translation_has():
    terms = [Term("coordinates", "coordenadas")]
    unit = compose.plan("it was at Spencer's coordinates", "text", terms, lambda w: w.startswith("Spencer")).units[0]
    # The model wrote "Spenzer" (a name in pieces) and the term; the name's links reach over the term.
    out = compose.finish(unit, aligned(unit, "estaba en Spenzer coordenadas", [(0, 1), (1, 2), (2, 3), (3, 3)],
                                       multi_token={2}))
    assert "coordenadas" in out


def test_two_glossary_terms_aligned_to_the_same_words_are_both_written():
    unit = compose.plan("Pulse Guardar y Cerrar", "text", [Term("Guardar", "Save"), Term("Cerrar", "Close")]).units[0]
    # "Guardar" is linked to "it" and "now", "Cerrar" to "all" between them: their edits overlap.
    out = compose.finish(unit, aligned(unit, "Press it all now", [(0, 0), (1, 1), (2, 3), (3, 1)]))
    assert out == "Press Save Close"


def test_a_glossary_term_wins_over_the_copy_of_a_rare_name():
    terms, rare = [Term("Producción", "Production")], {"Producción"}.__contains__
    unit = compose.plan("Superávit: Alimento, Producción, Comercio", "text", terms, rare).units[0]
    # The model already wrote the term: the name copy must not write the Spanish word back over it.
    out = compose.finish(unit, aligned(unit, "Surplus: Food, Production, Trade", multi_token={2}))
    assert out == "Surplus: Food, Production, Trade"


def test_a_glossary_edit_is_kept_where_a_repair_would_overlap_it():
    unit = compose.plan("Está muerto, Linarian.", "text", [Term("muerto", "dead")], {"Linarian"}.__contains__).units[0]
    # Both the term and the mangled name are linked to the same target word.
    out = compose.finish(unit, aligned(unit, "He is Linaria.", [(0, 0), (1, 0), (2, 1)], multi_token={2}))
    assert "dead" in out


def test_a_cut_span_next_to_moved_punctuation_stays_apart_from_words():
    unit = compose.plan('"/etc/shadow" contiene lo siguiente.', "text").units[0]
    assert unit.source == '" " contiene lo siguiente.'
    out = compose.finish(unit, aligned(unit, '«» contains the following.', [(0, 0), (1, 1), (2, 2)]))
    assert "/etc/shadow contains" in out
