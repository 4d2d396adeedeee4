"""Numbers, percentages, currencies, dates and times in the target language's conventions, from CLDR (Babel).

"3,5 kg" in Spanish is "3.5 kg" in English, "1.000.000" is "1,000,000", "25 %" is "25%", "3,50 €"
is "€3.50", "5 de enero de 2024" is "January 5, 2024" and "17:30" is "5:30 PM"; and back. `find`
gives each such quantity of a source sentence with its form in the target language; the caller
(model/text/compose.py) treats it like a glossary term, so decoding writes it as given.

Only what is unambiguous in the source's conventions changes: a number is read with the source
locale's separators, strictly (its groups of three), so "1.2.3" (a version) or "3.5" in Spanish are
not numbers there and stay as written, a number without separators ("2024", "15") needs no
change, and a numbering ("Figure 17.152", "Sección 2.3", "version 2.100") is not a quantity. The
caller leaves out quantities inside protected spans (URLs, paths, placeholders, code).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time, get_month_names
from babel.numbers import NumberFormatError, format_currency, format_decimal, format_percent, parse_decimal

_CURRENCIES = {"€": "EUR", "$": "USD", "£": "GBP"}
_NUMBER = r"\d{1,3}(?:[.,]\d{3})*(?:[.,]\d+)?|\d+(?:[.,]\d+)?"
# CLDR writes no-break spaces ("25\xa0%", "5:30\u202fPM"); a plain space is what the model reads and writes.
_SPACES = str.maketrans({"\u202f": " ", "\xa0": " "})


@dataclass(frozen=True)
class Quantity:
    start: int
    end: int
    target: str  # the quantity as the target language writes it


def find(text: str, source: str, target: str) -> list[Quantity]:
    """The quantities of `text` (in language `source`) whose form differs in `target`, in text order."""
    found: list[Quantity] = []
    taken = [False] * len(text)
    for pattern, convert in _rules(source):
        for match in pattern.finditer(text):
            if any(taken[match.start():match.end()]):
                continue
            written = None if _numbering(text, match) else convert(match, source, target)
            if written is not None and written != match.group():
                found.append(Quantity(match.start(), match.end(), written.translate(_SPACES)))
            taken[match.start():match.end()] = [True] * (match.end() - match.start())
    return sorted(found, key=lambda q: q.start)


# --- numbers -----------------------------------------------------------------------------------

# "Figure 17.152", "Sección 2.3", "version 2.100": a numbering, not a quantity.
_REFERENCE = re.compile(r"(?:\b(?:figures?|figuras?|tables?|tablas?|sections?|secci[oó]n(?:es)?|chapters?|"
                        r"cap[ií]tulos?|procedures?|procedimientos?|examples?|ejemplos?|steps?|pasos?|"
                        r"versions?|versi[oó]n(?:es)?|releases?|v)|§)\s*$", re.IGNORECASE)


def _numbering(text: str, match: re.Match) -> bool:
    """A section, figure or version number: after such a word, after a name ("GIMP 2.10", "Python
    3.11": a capitalised word inside the sentence), or opening the text ("2.11. List of")."""
    before = text[:match.start()]
    if _REFERENCE.search(before[-20:]):
        return True
    name = re.search(r"(\S+)\s+$", before)
    if name and name[1][:1].isupper() and before[:name.start()].strip()[-1:] not in ("", ".", "!", "?", ":"):
        return True
    return not before.strip() and text[match.end():match.end() + 1] == "."


def number(written: str, source: str, target: str) -> str | None:
    """A number with separators in the target's conventions, its digits as given; None if it is not
    a number in the source's (or has no separator, so reads the same)."""
    if not re.search(r"[.,]", written):
        return None
    value = _parsed(written, source)
    if value is None:
        return None
    decimals = max(-value.as_tuple().exponent, 0)
    grouped = Locale.parse(source).number_symbols["latn"]["group"] in written
    pattern = ("#,##0" if grouped else "0") + ("." + "0" * decimals if decimals else "")
    return format_decimal(value, format=pattern, locale=target)


def _parsed(written: str, locale: str) -> Decimal | None:
    try:
        return parse_decimal(written, locale=locale, strict=True)
    except NumberFormatError:
        return None


def _percent(match: re.Match, source: str, target: str) -> str | None:
    value = number(match["n"], source, target) or match["n"]
    return format_percent(Decimal(1), locale=target).replace("100", value, 1)


def _currency(match: re.Match, source: str, target: str) -> str | None:
    value = _parsed(match["n"], source)
    if value is None:
        return None
    return format_currency(value, _CURRENCIES[match["c"]], locale=target)


def _plain(match: re.Match, source: str, target: str) -> str | None:
    return number(match.group(), source, target)


# --- dates and times -----------------------------------------------------------------------------


@cache
def _months(locale: str) -> dict[str, int]:
    return {name.lower(): n for n, name in get_month_names("wide", locale=locale).items()}


def _month_pattern(locale: str) -> str:
    return "|".join(sorted(map(re.escape, _months(locale)), key=len, reverse=True))


def _date(match: re.Match, source: str, target: str) -> str | None:
    month = _months(source).get(match["m"].lower())
    try:
        day = datetime.date(int(match["y"] or 2000), month, int(match["d"]))
    except (TypeError, ValueError):
        return None
    if match["y"]:
        return format_date(day, format="long", locale=target)
    return format_skeleton("MMMMd", day, locale=target)


def _time(match: re.Match, source: str, target: str) -> str | None:
    hour, minute = int(match["h"]), int(match["min"] or 0)
    period = (match["p"] or "").lower().replace(".", "").replace(" ", "")
    if period:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if period == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return format_time(datetime.time(hour, minute), format="short", locale=target)


@cache
def _rules(source: str) -> list[tuple[re.Pattern, object]]:
    """(pattern, converter) in order of precedence: a date before the numbers in it, and so on."""
    months = _month_pattern(source)
    number = rf"(?<![\w.,])(?P<n>{_NUMBER})(?![\w]|[.,]\w)"
    if source == "es":
        dates = [rf"(?<!\w)(?P<d>\d{{1,2}}) de (?P<m>{months})(?: de (?P<y>\d{{4}}))?(?!\w)"]
        # "17:30" (a 24-hour clock); "17:30 h" too
        time = r"(?<![\w.:,])(?P<h>\d{1,2}):(?P<min>\d{2})(?P<p>)(?![\w:,.]\d)(?: ?h\b)?"
    else:
        dates = [rf"(?<!\w)(?P<m>{months}) (?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:,? (?P<y>\d{{4}}))?(?!\w)",
                 rf"(?<!\w)(?P<d>\d{{1,2}}) (?P<m>{months})(?: (?P<y>\d{{4}}))?(?!\w)"]
        # "5:30 PM", "5 p.m.": a 12-hour clock ("17:30" is already how Spanish writes it)
        time = r"(?<![\w.:,])(?P<h>\d{1,2})(?::(?P<min>\d{2}))?\s?(?P<p>[AaPp]\.?\s?[Mm]\.?)(?!\w)"
    rules: list[tuple[re.Pattern, object]] = [(re.compile(d, re.IGNORECASE), _date) for d in dates]
    return rules + [
        (re.compile(time), _time),
        (re.compile(rf"(?P<c>[€$£])\s?{number}"), _currency),
        (re.compile(rf"{number}\s?(?P<c>[€$£])"), _currency),
        (re.compile(rf"{number}\s?%"), _percent),
        (re.compile(number), _plain),
    ]
