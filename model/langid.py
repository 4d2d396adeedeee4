"""Telling Spanish from English cheaply, for LibreTranslate's `source: "auto"`.

With two languages, common function words and Spanish-only letters settle nearly every sentence
without a model; words both languages use ("no", "me", "a") count for neither.
"""

from __future__ import annotations

import re

_SPANISH_WORDS = set(
    "el la los las un una unos unas de del que y en es por para con se su sus al lo como más pero ya este "
    "esta esto eso muy sin sobre también hasta hay donde quien desde todo nos yo tú él ella ellos nosotros "
    "mi mis te tu tus le les qué cómo dónde cuándo porque está estoy estás soy eres fue tiene tengo "
    "hace gracias hola sí bien".split()
)
_ENGLISH_WORDS = set(
    "the of and to is you that it he she was for on are with his her they at be this have from or had by "
    "but not what all were we when your can there which do how their if will would my our us an am "
    "i it's don't does did has been thank thanks hello yes where who why".split()
)
_SPANISH_LETTERS = set("ñáéíóúü¿¡")
_WORD = re.compile(r"[\w']+")


def detect(text: str) -> tuple[str | None, float]:
    """("es" | "en" | None, confidence 0..100); None when the text gives no evidence either way."""
    lowered = text.lower()
    words = _WORD.findall(lowered)
    spanish = sum(w in _SPANISH_WORDS for w in words) + sum(c in _SPANISH_LETTERS for c in lowered)
    english = sum(w in _ENGLISH_WORDS for w in words)
    if spanish == english:
        return None, 0.0
    winner, votes = ("es", spanish) if spanish > english else ("en", english)
    return winner, round(100.0 * votes / (spanish + english), 1)
