"""Word alignment from attention (model.text.align) and the Apertium stream parsing of bench.alignment.

Needs neither Apertium nor the shipped model's weights: only its tokenizer file.
"""

from pathlib import Path

import pytest

from bench.alignment import bilingual_candidates, content_lemmas, one_to_one, parse_units, words_of_units
from model.text.align import Word, links, scores, source_words, target_words, token_spans
from model.tokenizer import TranslationTokenizer

TOKENIZER = Path(__file__).resolve().parents[1] / "weights" / "es-en-multidomain" / "tokenizer.json"


@pytest.fixture(scope="module")
def tok() -> TranslationTokenizer:
    return TranslationTokenizer.load(TOKENIZER)


@pytest.mark.parametrize("text", ["¿Dónde está el niño? 🐟🎉 ok", "Zürich — naïve café", "  doble  espacio ",
                                  "日本語 テキスト", "ñ", "It's fine."])
def test_token_spans_text_is_decode(tok, text):
    ids = tok.encode_target(text)  # ends with </s>
    decoded, spans = token_spans(tok, ids)
    assert decoded == tok.decode(ids)
    assert len(spans) == len(ids) and spans[-1][0] == spans[-1][1]  # </s> is empty


def test_token_spans_odd_byte_runs(tok):
    """Runs that are not UTF-8 give one U+FFFD per byte, and a special token does not cut a character."""
    byte = {b: tok.tok.token_to_id(f"<0x{b:02X}>") for b in (0xC3, 0xB1, 0xF0, 0x9F, 0xFF)}
    el = tok.tok.token_to_id("▁el")
    for ids in ([byte[0xF0], byte[0x9F], el, byte[0xC3], tok.eos_id], [byte[0xC3], tok.eos_id, byte[0xB1]],
                [el, byte[0xFF], byte[0xC3], byte[0xB1]], [tok.eos_id, el]):
        assert token_spans(tok, ids)[0] == tok.decode(ids)


def test_words_take_their_tokens(tok):
    ids = tok.encode_target("El niño 🐟 come.")
    text, words = target_words(tok, ids)
    assert [w.text for w in words] == ["El", "niño", "come"]
    assert tok.decode([ids[i] for i in words[1].tokens]) == "niño"
    assert len(ids) - 1 not in {i for w in words for i in w.tokens}  # </s> belongs to no word
    # Source indices count the language tag at 0.
    src = source_words(tok, "El niño come.")
    assert src[0].tokens[0] == 1 and src[0].text == "El"


def test_links_on_a_hand_built_table():
    """Two heads over 4 steps and 4 source tokens; target word 0 attends source word 1 most."""
    src = [Word("a", 0, 1, (1,)), Word("b", 2, 3, (2, 3))]
    tgt = [Word("x", 0, 1, (0,)), Word("y", 2, 3, (1, 2))]
    attention = [  # [step][head][source token]
        [[0.1, 0.1, 0.4, 0.4], [0.1, 0.3, 0.3, 0.3]],  # step 0: word x; head 0 on b (0.8), head 1 on b (0.6)
        [[0.0, 0.9, 0.1, 0.0], [0.0, 0.7, 0.2, 0.1]],  # steps 1-2: word y, on a
        [[0.0, 0.5, 0.5, 0.0], [0.0, 0.9, 0.1, 0.0]],
        [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]],  # step 3: read only with shift 1
    ]
    table = scores(attention, src, tgt, shift=0, heads=None)
    assert table[0] == pytest.approx([0.2, 0.7])
    assert table[1] == pytest.approx([(0.8 + 0.7) / 2, (0.2 + 0.3) / 2])
    assert links(table) == [(0, 1), (1, 0)]
    assert links(table, threshold=0.72) == [(1, 0)]  # x's best (0.7) is under the threshold
    # Head 1 alone at shift 1: x reads step 1 (a: 0.7), y reads steps 2 and 3 (b: 0.1 and 1.0).
    assert links(scores(attention, src, tgt, shift=1, heads=(1,))) == [(0, 0), (1, 1)]


# Literal Apertium output: eng-spa tagger with -p (surface/analysis), the bilingual stage for one
# unit per line, and spa-eng morphology.
ENG_TAGGED = ("^The/The<det><def><sp>$ ^fish/fish<n><sg>$ ^isn't/be<vbser><pri><p3><sg>+not<adv>$ "
              "^good/good<adv>$^,/,<cm>$ ^Zorblax/*Zorblax$^./.<sent>$")
ENG_BILINGUAL = ["^the<det><def><sp>/el<det><def><GD><ND>$", "^fish<n><sg>/pez<n><m><sg>/pescado<n><m><sg>$",
                 "^be<vbser><pri><p3><sg>/ser<vbser><pri><p3><sg>$ ^not<adv>/no<adv>$", "^good<adv>/bien<adv>$",
                 "^,<cm>/,<cm>$", "", "^.<sent>/.<sent>$"]
SPA_MORPH = ("^El/El<det><def><m><sg>$ ^pescado/pescado<n><m><sg>/pescar<vblex><pp><m><sg>$ ^no/no<adv>$ "
             "^es/ser<vbser><pri><p3><sg>$ ^Zorblax/*Zorblax$ ^bien/bien<adv>$^./.<sent>$")


def test_parse_apertium_units():
    units = parse_units(ENG_TAGGED)
    assert [u[0] for u in units] == ["The", "fish", "isn't", "good", ",", "Zorblax", "."]
    assert units[2][1] == "be<vbser><pri><p3><sg>+not<adv>"
    assert parse_units(r"^a\/b/c<n>$") == [[r"a\/b", "c<n>"]]  # an escaped slash is no separator
    assert bilingual_candidates(ENG_BILINGUAL[1]) == {"pez", "pescado"}
    assert bilingual_candidates(ENG_BILINGUAL[0]) == set()  # articles are not content words
    assert bilingual_candidates(ENG_BILINGUAL[2]) == {"ser", "no"}  # pretransfer split "isn't"
    assert bilingual_candidates("^take# away<vblex><past>/@take# away<vblex><past>$") == set()  # '@': no entry
    assert content_lemmas(["Dar<vblex><imp><p2><sg>+lo<prn><enc><p3><nt>"], allow_unknown=False) == {"dar"}
    assert content_lemmas(["*Zorblax"], allow_unknown=True) == {"zorblax"}


def test_silver_links_from_literal_streams():
    english_text = "The fish isn't good, Zorblax."
    spanish_text = "El pescado no es Zorblax bien."
    units = parse_units(ENG_TAGGED)
    english, whole = words_of_units(english_text, [u[0] for u in units],
                                    [bilingual_candidates(b) for b in ENG_BILINGUAL])
    assert whole and english == [set(), {"pez", "pescado"}, {"ser", "no"}, {"bien"}, set()]
    units = parse_units(SPA_MORPH)
    spanish, whole = words_of_units(spanish_text, [u[0] for u in units],
                                    [content_lemmas(u[1:], allow_unknown=True) for u in units])
    assert whole and spanish[1] == {"pescado", "pescar"}
    # "isn't" matches both "no" and "es", so only its one-to-one neighbours stay.
    assert one_to_one(english, spanish) == {(1, 1), (3, 5)}


def test_units_that_do_not_map_cleanly():
    # A multiword unit gives its words nothing; a unit not found where expected stops the mapping.
    words, whole = words_of_units("a lot of fish", ["a lot of", "fish"], [{"mucho"}, {"pez"}])
    assert whole and words == [set(), set(), set(), {"pez"}]
    words, whole = words_of_units("red fish swim", ["red", "cat", "swim"], [{"rojo"}, {"gato"}, {"nadar"}])
    assert not whole and words == [{"rojo"}, set(), set()]
