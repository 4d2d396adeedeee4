"""Sentence segmentation: boundaries where a reader sees them, and nothing lost on rejoin."""

import pytest

from model.text.segment import join, split


def texts(text: str) -> list[str]:
    return [p.text for p in split(text)[1]]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("El gato come. El perro duerme.", ["El gato come.", "El perro duerme."]),
        ("El Sr. García llegó. Luego se fue.", ["El Sr. García llegó.", "Luego se fue."]),
        ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
        ("Compré pan, leche, etc. Después volví.", ["Compré pan, leche, etc. Después volví."]),
        ("It costs 3.50 euros. That is cheap.", ["It costs 3.50 euros.", "That is cheap."]),
        ("Pi is 3.14159 and e is 2.718.", ["Pi is 3.14159 and e is 2.718."]),
        ("Bueno... no sé. Quizás mañana.", ["Bueno... no sé.", "Quizás mañana."]),
        ("Wait... What happened?", ["Wait...", "What happened?"]),
        ("¿Cómo estás? ¡Muy bien! Gracias.", ["¿Cómo estás?", "¡Muy bien!", "Gracias."]),
        ("¿Vienes mañana, o no? no sé.", ["¿Vienes mañana, o no? no sé."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("Dijo: «Ya voy.» Y se fue.", ["Dijo: «Ya voy.»", "Y se fue."]),
        ("J. K. Rowling wrote it. It sold well.", ["J. K. Rowling wrote it.", "It sold well."]),
        ("Vivo en EE. UU. desde 2010.", ["Vivo en EE. UU. desde 2010."]),
        ("See e.g. the manual. It helps.", ["See e.g. the manual.", "It helps."]),
        ("Open the file", ["Open the file"]),
    ],
)
def test_sentence_boundaries(text, expected):
    assert texts(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Line one.\nLine two.\n\nAfter a blank line.",
        "  leading spaces. And  double  spaces.  \r\nWindows line.\rOld Mac line.",
        "Título\n\n- Punto uno.\n- Punto dos.\n",
        "",
        "   ",
        "\n\nHola.\n",
    ],
)
def test_rejoining_the_pieces_restores_the_input(text):
    lead, pieces = split(text)
    assert join(lead, [p.text for p in pieces], pieces) == text


def test_line_breaks_separate_pieces_and_blank_lines_are_kept():
    lead, pieces = split("Hola.\n\nAdiós.")
    assert [p.text for p in pieces] == ["Hola.", "", "Adiós."]
    assert join(lead, ["Hello.", "", "Goodbye."], pieces) == "Hello.\n\nGoodbye."
