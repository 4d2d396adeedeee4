"""HTML, inline tags, protected spans, glossaries and alignment through the real app and a tiny model.

What these check holds whatever the model writes: the answer's elements are the source's, the
protected spans and glossary terms are in it, control characters are not, links point at words.
"""

from __future__ import annotations

import pytest

from model.text import align
from model.text.markup import parse_html
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    anyio_backend,
    one_torch_thread,
    parse_sse,
    serving,
    tiny_weights,
)
from tests.test_compose import tags

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def client(tiny_weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("glossaries")
    (folder / "zoo.es-en.tsv").write_text("# animals\ngato\tfeline\nperro\tcanine\n", encoding="utf-8")
    async with serving(tiny_weights, glossaries_dir=folder) as client:
        yield client


async def translate(client, text, expect=200, **extra):
    body = {"text": text, "source": "es", "target": "en", "output": {"steps": False, "attention": "none"}} | extra
    response = await client.post("/translate", json=body)
    assert response.status_code == expect, response.text
    return response.json() if expect != 200 else response.json()["translations"]


HTML = ('<div class="doc"><h1 title="El gato">El gato</h1>\n<p>El <b>gato <i>negro</i></b> come '
        '<a href="/p?x=1&amp;y=2">pescado</a>. <code>rm -rf</code> El perro <em>duerme</em>.</p>'
        '<p translate="no">El gato come pescado.</p><img src="a.png" alt="Un perro"><!-- fin --></div>')


async def test_html_answers_are_well_formed_with_exactly_the_source_elements(client):
    [entry] = await translate(client, HTML, format="html")
    out = entry["text"]
    assert sorted(tags(out)) == sorted(tags(HTML))
    parse_html(out)  # well formed: raises otherwise
    for kept in ('<code>rm -rf</code>', '<p translate="no">El gato come pescado.</p>', '<!-- fin -->',
                 'href="/p?x=1&amp;y=2"', 'src="a.png"'):
        assert kept in out
    assert 'title="El gato"' not in out and 'alt="Un perro"' not in out  # translated attributes
    assert entry["segments"] and all(seg["tokens"][-1] == "</s>" for seg in entry["segments"])


async def test_malformed_html_is_a_422_that_says_where(client):
    body = await translate(client, "<p>El gato\n<b>come</p>", 422, format="html")
    assert "line 2, column 8: </p> ends while <b> opened at line 2, column 1 is still open" in body["detail"][0]["msg"]


async def test_inline_tags_and_placeholders_in_a_plain_text_come_through(client):
    text = "El <b>gato</b> come %s en {folder} con ${user} &amp; 👩‍👩‍👧‍👦 ☕️."
    [entry] = await translate(client, text)
    out = entry["text"]
    for kept in ("%s", "{folder}", "${user}", "&amp;", "👩‍👩‍👧‍👦", "☕️"):
        assert out.count(kept) == 1, (kept, out)
    assert out.count("<b>") == out.count("</b>") == 1 and out.index("<b>") < out.index("</b>")
    assert "{folder}" not in "".join(entry["tokens"])  # cut out of the model's input, put back after


async def test_control_characters_never_reach_the_model_and_are_reported(client):
    [entry] = await translate(client, "El gato\x00 come\x07 pescado\u200b.")
    assert not any(c in entry["text"] for c in "\x00\x07\u200b")
    assert entry["warnings"] == ["control or invisible formatting characters were left out: U+0000, U+0007, U+200B"]


async def test_a_333_sentence_text_is_answered_on_an_idle_server(client):
    text = "Hola. " * 333
    assert len(text) <= 2000
    [entry] = await translate(client, text)
    assert len(entry["segments"]) == 333


async def test_glossary_terms_come_out_as_asked(client):
    [entry] = await translate(client, "El gato come pescado.", glossary=[{"source": "pescado", "target": "salmon"}])
    assert entry["text"].lower().count("salmon") == 1
    [named] = await translate(client, "El perro come carne.", glossary_name="zoo")
    assert "canine" in named["text"].lower()


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_glossary_terms_keep_the_users_case_and_are_forced_while_decoding(client, strategy):
    """The term comes out spelt as given, once, from tokens the search forced; the running batch
    (greedy) and beam search alike."""
    glossary = [{"source": "PESCADO", "target": "SalMon"}, {"source": "el gato", "target": "the Tiger"}]
    [entry] = await translate(client, "El gato come pescado.", glossary=glossary,
                              decoding={"strategy": strategy, "beam_size": 3}, output={"steps": True})
    assert entry["text"].count("SalMon") == 1 and entry["text"].lower().count("salmon") == 1
    assert entry["text"].startswith("The Tiger") and entry["text"].lower().count("tiger") == 1
    forced = "".join(step["token"] for step in entry["steps"] if step.get("forced")).replace("▁", "")
    assert forced == "TheTigerSalMon"


async def test_a_streamed_translation_forces_its_glossary_terms_token_by_token(client):
    """/translate/stream takes the glossary too: the term's tokens arrive as forced `token` events,
    and `done` carries the same text /translate gives."""
    body = {"source": "es", "target": "en", "text": "El gato come pescado.", "decoding": {"strategy": "greedy"},
            "glossary": [{"source": "pescado", "target": "SalMon"}]}
    response = await client.post("/translate/stream", json=body)
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    tokens = [data for name, data in events if name == "token"]
    forced = "".join(t["token"] for t in tokens if t.get("forced")).replace("▁", "")
    assert forced == "SalMon"
    [done] = [data for name, data in events if name == "done"]
    [alone] = await translate(client, body["text"], glossary=body["glossary"], decoding=body["decoding"])
    assert done["translations"][0]["text"] == alone["text"] and alone["text"].count("SalMon") == 1


async def test_a_streamed_translation_localises_numbers_as_translate_does(client):
    body = {"source": "es", "target": "en", "text": "El gato come 3,5 kg de pescado.",
            "decoding": {"strategy": "greedy"}}
    response = await client.post("/translate/stream", json=body)
    [done] = [data for name, data in parse_sse(response.text) if name == "done"]
    [alone] = await translate(client, body["text"], decoding=body["decoding"])
    [copied] = await translate(client, body["text"], decoding=body["decoding"], localize=False)
    assert done["translations"][0]["text"] == alone["text"]
    assert "3.5" in alone["text"] and "3,5" not in alone["text"] and "3,5" in copied["text"]


async def test_a_glossary_term_inside_an_inline_element(client):
    [entry] = await translate(client, "<p>El <b>gato</b> come pescado.</p>", format="html",
                              glossary=[{"source": "gato", "target": "Kitty"}])
    assert entry["text"].count("Kitty") == 1
    assert tags(entry["text"]) == tags("<p>El <b>gato</b> come pescado.</p>")


async def test_numbers_and_dates_come_out_in_the_target_conventions_unless_asked_not_to(client):
    text = "El gato come 3,5 kg de pescado el 5 de enero de 2024."
    [entry] = await translate(client, text)
    assert "3.5" in entry["text"] and "January 5, 2024" in entry["text"] and "3,5" not in entry["text"]
    [copied] = await translate(client, text, localize=False)
    assert "3,5" in copied["text"] and "3.5" not in copied["text"]
    [english] = await translate(client, "The cat eats 1,250.5 kg at 5:30 PM.", source="en", target="es")
    assert "1.250,5" in english["text"] and "17:30" in english["text"]


async def test_accents_may_be_ignored_when_matching_a_source_term(client):
    glossary = [{"source": "dónde", "target": "Whereabouts"}]
    [exact] = await translate(client, "¿Donde está el gato?", glossary=glossary)
    [loose] = await translate(client, "¿Donde está el gato?", glossary=glossary, glossary_match_accents=False)
    assert "Whereabouts" not in exact["text"] and loose["text"].count("Whereabouts") == 1


async def test_named_glossaries_are_listed_and_an_unknown_one_is_a_422(client):
    response = await client.get("/glossaries")
    assert response.json() == [{"name": "zoo", "source": "es", "target": "en", "terms": 2}]
    body = await translate(client, "El gato.", 422, glossary_name="menu")
    assert "no glossary 'menu' for es-en; loaded: zoo (es-en)" in body["detail"][0]["msg"]
    body = await translate(client, "El gato.", 422, glossary=[{"source": " ", "target": "x"}])
    assert "at least one non-space character" in body["detail"][0]["msg"]


async def test_alignment_links_the_words_of_the_model_output_to_those_of_its_input(client):
    [entry] = await translate(client, "El gato come pescado. El perro duerme.", output={"alignment": True})
    alignment = entry["alignment"]
    assert alignment["rule"] == align.BEST.describe()
    assert alignment["source_words"] == ["El", "gato", "come", "pescado", "El", "perro", "duerme"]
    output_words = [w for seg in entry["segments"] for w in align.WORD.findall(seg["text"])]
    assert alignment["target_words"] == output_words
    # One link per target word, within each segment's own words.
    assert [link["target"] for link in alignment["links"]] == list(range(len(output_words)))
    first = len(align.WORD.findall(entry["segments"][0]["text"]))
    for link in alignment["links"]:
        assert (link["target"] < first) == (link["source"] < 4)


async def test_libretranslate_html_keeps_the_markup(client):
    response = await client.post("/compat/libretranslate/translate",
                                 json={"q": "<p>El <b>gato</b> come.</p>", "source": "es",
                                       "target": "en", "format": "html"})
    assert response.status_code == 200
    out = response.json()["translatedText"]
    assert tags(out) == ["p", "b", "/b", "/p"]


async def test_a_text_with_nothing_to_translate_comes_back_as_it_was(client):
    [entry] = await translate(client, " ☕️ 👍 ")
    assert entry["text"] == " ☕️ 👍 " and entry["tokens"] == [] and entry["segments"] == []


async def test_the_stream_puts_protected_spans_back_in_its_final_answer(client):

    response = await client.post("/translate/stream", json={"text": "El gato come %s.", "source": "es", "target": "en"})
    events = parse_sse(response.text)
    [done] = [data for event, data in events if event == "done"]
    assert done["translations"][0]["text"].count("%s") == 1
    assert "%s" not in "".join(data["token"] for event, data in events if event == "token")


# Tag and attribute names are English whatever the page's language; py3langid reads this markup as English (94.6).
SPANISH_PAGE = ('<div class="warning note"><a href="/help/the/user/manual" title="Open the user manual">'
                'Abre el manual</a></div>')


async def test_the_language_of_an_html_text_is_read_from_its_text_not_its_tags(client):
    [entry] = await translate(client, SPANISH_PAGE, format="html", source="auto")
    assert entry["detected_language"]["language"] == "es" and "warnings" not in entry
    response = await client.post("/compat/libretranslate/translate", json={"q": SPANISH_PAGE, "source": "auto",
                                                                           "target": "en", "format": "html"})
    assert response.json()["detectedLanguage"]["language"] == "es"


async def test_a_prefix_cannot_start_an_html_document(client):
    body = await translate(client, "<p>El gato.</p>", 422, format="html", decoding={"prefix": "The"})
    assert "cannot be used with format html" in body["detail"][0]["msg"]


async def test_html_with_no_letters_comes_back_as_written(client):
    # It has no sentence for the model at all (a bare symbol outside any element once was a 500).
    for text in ["\U0010745a", "<b>★</b> 2¼"]:
        (t,) = await translate(client, text, format="html")
        assert t["text"] == text
