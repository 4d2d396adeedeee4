"""From what a user sent to the sentences the model translates, and back.

`plan` turns a text (`format` "text" or "html") into `Unit`s, one per sentence the model sees,
and a way to rebuild the whole answer from their finished translations. A unit's model input is
its sentence without markup and without the protected spans that are cut (model/text/protect.py); after
decoding, `finish` writes its translation back with, in this order:
1. glossary terms (and numbers, dates and times in the target's conventions: model/text/localize.py)
   and repaired copies (numbers, rare names) put on the target words aligned to them;
2. each cut span and void element after the target word aligned to the source word before it
   (or before the one aligned to the word after it);
3. each inline element around the target words aligned to the source words it covered.
Alignment is the model's own (model/text/align.py). Nothing here knows about HTTP or tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from model.text import align, glossary, localize, markup, protect, segment
from model.text.glossary import Term
from model.text.markup import Atom, Element, Inline, Placement


@dataclass
class Unit:
    piece: str  # the sentence as given, markup taken out
    source: str  # what the model translates: `piece` without the cut and dropped spans
    inline: Inline  # elements and atoms over `piece` (cut spans became text atoms)
    to_model: list[int]  # offset in `piece` -> offset in `source` (len(piece) + 1 entries)
    copies: list[protect.Span] = field(default_factory=list)
    terms: list[glossary.Match] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # control characters left out
    escape: bool = False  # HTML: text is written escaped

    @property
    def needs_alignment(self) -> bool:
        return self.inline.has_markup or bool(self.copies or self.terms)

    def term_spans(self) -> list[tuple[int, int, str]]:
        """Each glossary term as (start, end, target), by character offsets in the model's input `source`."""
        return [(self.to_model[m.start], self.to_model[m.end], m.term.target) for m in self.terms]

    @property
    def empty(self) -> bool:
        """Nothing for the model (only markup, symbols or spaces): the answer is the atoms alone."""
        return not self.source.strip()


@dataclass
class Plan:
    units: list[Unit]
    rebuild: Callable[[list[str]], str]  # finished unit outputs -> the answer's text
    split: bool  # more than one unit, or a structure around them (the answer lists segments)


Rare = Callable[[str], bool]
Conventions = tuple[str, str] | None  # (source, target) languages, when quantities are localised
_CLOSING = ".,;:!?)]}»”’"
_SIGNS = "€$£%"
# In HTML a line break or tab is a space; left in, the tokenizer makes it a byte token (<0x0A>).
_HTML_SPACES = str.maketrans("\n\r\t\f", "    ")


def plan(text: str, fmt: str, terms: list[Term] = (), is_rare: Rare = lambda word: False, split: bool = True,
         conventions: Conventions = None) -> Plan:
    """Units for `text`; raises markup.MarkupError for malformed HTML. With `conventions` (source,
    target), numbers, dates and times become terms written in the target's conventions (localize.py)."""
    if fmt == "html":
        return _html_plan(text, list(terms), is_rare, conventions)
    inline = markup.parse_text(text)
    if not split:
        unit = make_unit(inline, list(terms), is_rare, escape=False, conventions=conventions)
        return Plan([unit], lambda outputs: outputs[0], split=False)
    lead, units, afters = _sentences(inline, list(terms), is_rare, escape=False, conventions=conventions)
    return Plan(units, lambda outputs: lead + "".join(o + a for o, a in zip(outputs, afters)), split=len(units) > 1)


# --- sentences of an inline run --------------------------------------------------------------


def _sentences(inline: Inline, terms: list[Term], is_rare: Rare, escape: bool,
               conventions: Conventions) -> tuple[str, list[Unit], list[str]]:
    """(lead, units, separators): the run cut into sentences, never inside an element."""
    view = inline.plain.translate(_HTML_SPACES) if escape else inline.plain  # HTML line breaks are spaces
    lead, pieces = segment.split(view)
    bounds = _merged(pieces, len(lead), list(inline.root.elements()))
    units, afters = [], []
    for start, text_end, end in bounds:
        units.append(make_unit(_slice(inline, start, text_end, end), terms, is_rare, escape, conventions))
        afters.append(view[text_end:end])
    return lead, units, afters


def _merged(pieces: list[segment.Piece], start: int, elements: list[Element]) -> list[tuple[int, int, int]]:
    """(start, text end, end) per sentence, joining neighbours that an element spans."""
    bounds: list[tuple[int, int, int]] = []
    for piece in pieces:
        text_end = start + len(piece.text)
        end = text_end + len(piece.after)
        if bounds and any(e.start < start < e.end for e in elements):
            bounds[-1] = (bounds[-1][0], text_end, end)
        else:
            bounds.append((start, text_end, end))
        start = end
    return bounds


def _slice(inline: Inline, start: int, text_end: int, end: int) -> Inline:
    """The part of `inline` from `start` to `end`, its text cut at `text_end` (the separator after
    it is not translated). The first part also takes what precedes it, the last what ends the text."""
    first_part, last_part = start == 0 or not inline.plain[:start].strip(), end >= len(inline.plain)

    def clamp(offset: int) -> int:
        return min(max(offset, start), text_end) - start

    def belongs(item: Element | Atom) -> bool:
        at = item.position if isinstance(item, Atom) else item.start
        return (start <= at < end) or (first_part and at < start) or (last_part and at >= end)

    def copy(element: Element, top: bool) -> Element:
        children = []
        for child in element.children:
            if top and not belongs(child):
                continue
            if isinstance(child, Atom):
                children.append(Atom(child.raw, clamp(child.position), child.space_before, child.space_after,
                                     child.text))
            else:
                children.append(copy(child, False))
        return Element(element.tag, element.open, element.close, clamp(element.start), clamp(element.end), children)

    return Inline(inline.plain[start:text_end], copy(inline.root, True))


# --- one sentence ------------------------------------------------------------------------------


def make_unit(inline: Inline, terms: list[Term], is_rare: Rare, escape: bool, conventions: Conventions = None) -> Unit:
    piece = inline.plain
    spans = [s for s in protect.find(piece, is_rare) if not _crosses(s, inline.root)]
    removed = [s for s in spans if s.treatment in (protect.CUT, protect.DROP)]
    for span in removed:
        if span.treatment == protect.CUT:
            # Separate from its neighbours unless glued to a word ("50%s", "x@y"): the model may move
            # what stood beside it.
            atom = Atom(piece[span.start:span.end], span.start, not _word_char(piece, span.start - 1),
                        not _word_char(piece, span.end), text=True)
            _innermost(inline.root, span.start, span.end).children.append(atom)
    source, to_model = _without(piece.translate(_HTML_SPACES) if escape else piece, removed)
    copies = [s for s in spans if s.treatment == protect.COPY]
    matches = [m for m in glossary.find(piece, terms) if not any(s.start < m.end and m.start < s.end for s in removed)]
    matches = sorted(matches + _quantities(piece, conventions, removed, matches), key=lambda m: m.start)
    dropped = [piece[s.start:s.end] for s in removed if s.treatment == protect.DROP]
    return Unit(piece, source, inline, to_model, copies, matches, dropped, escape)


def _quantities(piece: str, conventions: Conventions, removed: list[protect.Span],
                matches: list[glossary.Match]) -> list[glossary.Match]:
    """Numbers, dates and times of `piece` as terms in the target's conventions, outside the protected
    spans taken out (URLs, paths, placeholders, symbols) and outside the glossary's terms (which win)."""
    if conventions is None:
        return []
    kept = [(s.start, s.end) for s in removed] + [(m.start, m.end) for m in matches]
    return [glossary.Match(q.start, q.end, Term(piece[q.start:q.end], q.target))
            for q in localize.find(piece, *conventions) if not any(a < q.end and q.start < b for a, b in kept)]


def _word_char(text: str, i: int) -> bool:
    return 0 <= i < len(text) and text[i].isalnum()


def _crosses(span: protect.Span, root: Element) -> bool:
    """Does an element start or end strictly inside the span? Then it is not taken out."""
    return any(span.start < edge < span.end for e in root.elements() for edge in (e.start, e.end))


def _innermost(element: Element, start: int, end: int) -> Element:
    for child in element.children:
        if isinstance(child, Element) and child.start <= start and end <= child.end and child.start < child.end:
            return _innermost(child, start, end)
    return element


def _without(piece: str, removed: list[protect.Span]) -> tuple[str, list[int]]:
    """`piece` with the spans taken out (a space where they separated two words), single-spaced,
    and the offset in the result of each offset of `piece`."""
    gone = [False] * len(piece)
    for span in removed:
        gone[span.start:span.end] = [True] * span.length
    out: list[str] = []
    to_model = []
    for i, char in enumerate(piece):
        to_model.append(len(out))
        if gone[i]:
            if i + 1 < len(piece) and not gone[i + 1] and out and not out[-1].isspace() and not piece[i + 1].isspace():
                out.append(" ")  # "Hola\x00mundo" -> "Hola mundo"
            continue
        char = " " if char == "\xa0" else char
        if char.isspace() and (not out or out[-1].isspace()):
            continue  # the space before a removed span already separates
        if i > 0 and gone[i - 1] and char in _CLOSING and out and out[-1] == " ":
            out.pop()  # "en la carpeta {folder}." -> "en la carpeta."
            for j in range(len(to_model) - 1, -1, -1):  # what stood at the popped space now stands here
                if to_model[j] <= len(out):
                    break
                to_model[j] = len(out)
        out.append(char)
    to_model.append(len(out))
    while out and out[-1].isspace():
        out.pop()
    return "".join(out), [min(i, len(out)) for i in to_model]


# --- writing a translation back ---------------------------------------------------------------


@dataclass
class Aligned:
    """A decoded sentence and its word alignment to the unit's model input."""

    text: str
    source_words: list[align.Word]
    target_words: list[align.Word]
    links: list[tuple[int, int]]


def finish(unit: Unit, out: Aligned) -> str:
    """The unit's translation with its glossary terms, protected spans and markup restored."""
    if unit.empty:  # nothing was decoded: the sentence as it was
        return _as_written(unit)
    if not unit.needs_alignment:
        return markup.escape_text(out.text) if unit.escape else out.text
    targets = _targets(out)
    orphans = _orphans(unit, unit.inline.root, out, targets)
    text, moved, inserted = _edited(unit, out, targets, orphans)
    places: dict[int, Placement] = {}
    pads: dict[int, tuple[str, str]] = {}
    for element in unit.inline.root.elements():
        if id(element) in inserted:
            places[id(element)] = inserted[id(element)]
        else:
            places[id(element)] = _element_place(unit, element, out, targets, moved, text)
    for atom in unit.inline.root.atoms():
        at = moved(_point(unit, atom.position, out, targets))
        places[id(atom)] = Placement(at, at)
        before = " " if atom.space_before and at > 0 and not text[at - 1].isspace() else ""
        after = " " if atom.space_after and at < len(text) and text[at].isalnum() else ""
        pads[id(atom)] = (before, after)
    return markup.render(unit.inline.root, text, places, unit.escape, pads)


def _as_written(unit: Unit) -> str:
    places = {id(e): Placement(e.start, e.end) for e in unit.inline.root.elements()}
    places |= {id(a): Placement(a.position, a.position) for a in unit.inline.root.atoms()}
    # A cut span is written instead of its own characters, so the text around it is the piece without them.
    cuts = sorted(((a.position, len(a.raw)) for a in unit.inline.root.atoms() if a.text), reverse=True)
    text = unit.piece
    for position, length in cuts:
        text = text[:position] + text[position + length:]
        for item in list(unit.inline.root.elements()) + list(unit.inline.root.atoms()):
            place = places[id(item)]
            places[id(item)] = Placement(_shifted(place.start, position, length), _shifted(place.end, position, length))
    dropped = set(unit.dropped)  # control characters: left out here too, as the warning says
    return "".join(c for c in markup.render(unit.inline.root, text, places, unit.escape) if c not in dropped)


def _shifted(x: int, position: int, length: int) -> int:
    """Offset x after `length` characters at `position` were taken out."""
    return x - length if x > position else x


def _targets(out: Aligned) -> dict[int, list[int]]:
    """Source word -> the target words linked to it."""
    targets: dict[int, list[int]] = {}
    for t, s in out.links:
        targets.setdefault(s, []).append(t)
    return targets


def _source_words_in(unit: Unit, start: int, end: int, out: Aligned) -> list[int]:
    lo, hi = unit.to_model[start], unit.to_model[end]
    return [i for i, w in enumerate(out.source_words) if w.start < hi and w.end > lo]


def _target_span(words: list[int], out: Aligned, targets: dict[int, list[int]]) -> tuple[int, int] | None:
    linked = sorted({t for s in words for t in targets.get(s, [])})
    if not linked:
        return None
    return out.target_words[linked[0]].start, out.target_words[linked[-1]].end


def _point(unit: Unit, position: int, out: Aligned, targets: dict[int, list[int]]) -> int:
    """Where something at `position` of the piece goes in the translation: after the target of the
    nearest source word before it, else before the target of the nearest one after it."""
    at = unit.to_model[position]
    if at >= len(unit.source.rstrip()) and out.text:
        return len(out.text)  # after the sentence's last word and its punctuation: after the translation's
    words = out.source_words
    for i in reversed(range(len(words))):
        if words[i].end <= at and targets.get(i):
            return max(out.target_words[t].end for t in targets[i])
    for i in range(len(words)):
        if words[i].start >= at and targets.get(i):
            return min(out.target_words[t].start for t in targets[i])
    return 0 if at == 0 or not out.text else len(out.text)


def _orphans(unit: Unit, element: Element, out: Aligned, targets) -> list[Element]:
    """Outermost elements with words, none of which the translation kept (the model dropped them):
    their source text is written back inside them, so that nothing the user marked up is lost."""
    found = []
    for child in element.children:
        if not isinstance(child, Element):
            continue
        words = _source_words_in(unit, child.start, child.end, out)
        if words and _target_span(words, out, targets) is None:
            found.append(child)
        else:
            found.extend(_orphans(unit, child, out, targets))
    return found


def _element_place(unit: Unit, element: Element, out: Aligned, targets, moved, text: str) -> Placement:
    span = _target_span(_source_words_in(unit, element.start, element.end, out), out, targets)
    if span is None:  # its words went nowhere, or it holds none: around its own symbols if the
        at = moved(_point(unit, element.start, out, targets))  # translation has them there, else empty
        return _symbols_place(unit.piece[element.start:element.end].strip(), text, at)
    start, end = moved(span[0]), moved(span[1], end=True)
    last = unit.piece[element.end - 1:element.end]
    if last and last in _CLOSING and text[end:end + 1] == last:
        end += 1  # "<b>Hola.</b>": the element's own final punctuation stays inside it
    return Placement(start, end)


def _symbols_place(symbols: str, text: str, at: int) -> Placement:
    """An element holding only punctuation or symbols ("<b>:</b>", "<b>(</b>"): around the same
    characters in the translation when they stand at most a space away from `at`, else empty at `at`."""
    if symbols:
        for start in (at, at + 1, at - len(symbols), at - len(symbols) - 1):
            if 0 <= start and text[start:start + len(symbols)] == symbols:
                return Placement(start, start + len(symbols))
    return Placement(at, at)


def _edited(unit: Unit, out: Aligned, targets, orphans: list[Element] = ()) -> tuple[str, Callable[..., int], dict]:
    """The translation with glossary terms, repaired copies and orphaned elements' text written in, a
    map of old offsets to new, and where each orphan's text went (by id)."""
    # In order of priority, where two would write over the same words: what the user asked for
    # (glossary terms), then what would otherwise be lost (orphaned elements' text), then repairs.
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in out.text
    for match in unit.terms:
        target = match.term.target
        found = glossary.occurrences(out.text, target)
        if found:  # already there: kept as it is (no repair writes over it), less a sign said twice beside it
            edits += [(*_with_symbols(out.text, start, end, target), out.text[start:end]) for start, end in found]
            continue
        start, end, replacement = _edit_for(unit, match.start, match.end, target, out, targets, rare=False)
        edit = (*_with_symbols(out.text, start, end, target), replacement)
        if clash := next((e for e in edits if _overlap(edit, e)), None):  # two terms on the same words:
            edit = (clash[1], clash[1], " " + target)  # both written, this one after the other
        edits.append(edit)
    orphan_edits = {}
    for element in orphans:
        source_text = unit.source[unit.to_model[element.start]:unit.to_model[element.end]].strip()
        edit = _edit_for(unit, element.start, element.end, source_text, out, targets, rare=False)
        orphan_edits[edit] = element
        edits.append(edit)
    for span in unit.copies:
        original = unit.piece[span.start:span.end]
        if original in out.text or any(m.start < span.end and span.start < m.end for m in unit.terms):
            continue  # there already, or a glossary term decides what the word becomes
        edit = _edit_for(unit, span.start, span.end, original, out, targets, rare=span.kind == "name")
        if edit is not None:
            edits.append(edit)
    edits = _non_overlapping(edits)
    text, cursor, parts = out.text, 0, []
    for start, end, replacement in edits:
        parts.append(text[cursor:start] + replacement)
        cursor = end
    new_text = "".join(parts) + text[cursor:]
    inserted, shift = {}, 0
    for start, end, replacement in edits:
        if (start, end, replacement) in orphan_edits:
            core = replacement.strip()
            at = start + shift + replacement.index(core)
            inserted[id(orphan_edits[(start, end, replacement)])] = Placement(at, at + len(core))
        shift += len(replacement) - (end - start)

    def moved(offset: int, end: bool = False) -> int:
        """An offset of the model's text in the edited one; inside a replaced span, its start (or end)."""
        shift = 0
        for start, stop, replacement in edits:
            if offset <= start:
                break
            if offset < stop:
                return start + shift + (len(replacement) if end else 0)
            shift += len(replacement) - (stop - start)
        return offset + shift

    return new_text, moved, inserted


def _with_symbols(text: str, start: int, end: int, term: str) -> tuple[int, int]:
    """[start, end) grown over a currency or percent sign beside it (a space apart at most) that the
    term writes itself: "3,5 €" as "€3.50" must not leave the "€" the model wrote after the number."""
    symbols = {c for c in term if c in _SIGNS}
    if symbols and start < end:
        after = re.match(r"\s?(\S)", text[end:])
        if after and after[1] in symbols:
            end += after.end()
        before = re.search(r"(\S)\s?$", text[:start])
        if before and before[1] in symbols:
            start = before.start()
    return start, end


def _edit_for(unit: Unit, start: int, end: int, replacement: str, out: Aligned, targets, rare: bool):
    words = _source_words_in(unit, start, end, out)
    linked = sorted({t for s in words for t in targets.get(s, [])})
    if rare and linked:
        # Replace only what the model invented by pieces (it was trying to copy): a rare name it
        # translated into a known word ("Londres" -> "London") stays translated.
        if not any(len(out.target_words[t].tokens) > 1 and out.target_words[t].text[:1].isupper() for t in linked):
            return None
    if linked:
        first, last = out.target_words[linked[0]], out.target_words[linked[-1]]
        if first.text[:1].isupper() and first.start == 0 and replacement[:1].islower():
            replacement = replacement[0].upper() + replacement[1:]  # it starts the sentence
        return first.start, last.end, replacement
    at = _point(unit, start, out, targets)
    before = " " if at > 0 and not out.text[at - 1].isspace() else ""
    after = " " if at < len(out.text) and out.text[at].isalnum() else ""
    return at, at, before + replacement + after


def _non_overlapping(edits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The edits, first ones first, without any that overlaps one kept before it; sorted by position."""
    kept: list[tuple[int, int, str]] = []
    for edit in edits:
        if not any(_overlap(edit, k) for k in kept):
            kept.append(edit)
    return sorted(kept, key=lambda e: (e[0], e[1]))


def _overlap(a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    """Do two edits touch the same characters? An insertion conflicts only with a span it falls inside."""
    if a[0] == a[1]:
        return b[0] < a[0] < b[1]
    if b[0] == b[1]:
        return a[0] < b[0] < a[1]
    return a[0] < b[1] and b[0] < a[1]


# --- HTML documents -----------------------------------------------------------------------------


def _html_plan(document: str, terms: list[Term], is_rare: Rare, conventions: Conventions) -> Plan:
    """Units for the text runs and translated attributes of a document, and its rebuilding.

    Start tags with translated attributes inside a run are written as markers by `render`; the
    rebuild swaps each marker for the tag with its translated values.
    """
    root = markup.parse_html(document)
    units: list[Unit] = []
    parts: list = []  # strings, or functions of the units' outputs
    markers: dict[str, Callable[[list[str]], str]] = {}

    def attribute_unit(text: str) -> Callable[[list[str]], str]:
        if not text.strip():
            return lambda outputs: text
        index = len(units)
        units.append(make_unit(markup.plain_inline(text), terms, is_rare, escape=False, conventions=conventions))
        return lambda outputs: outputs[index]

    def start_tag(node: markup.Node) -> Callable[[list[str]], str] | str:
        values = [attribute_unit(v) for v in markup.attribute_texts(node.raw)]
        if not values:
            return node.raw
        return lambda outputs: markup.with_attributes(node.raw, [value(outputs) for value in values])

    def marked(node: markup.Node) -> str:
        tag = start_tag(node)
        if isinstance(tag, str):
            return tag
        marker = f"\x00{len(markers)}\x00"  # NUL never survives HTML parsing as text, so it cannot collide
        markers[marker] = tag
        return marker

    def run(nodes: list[markup.Node]) -> None:
        inline = markup.inline_of(nodes, marked)
        if not any(c.isalpha() for c in inline.plain):
            parts.extend(_written(nodes, start_tag))
            return
        lead, sentence_units, afters = _sentences(inline, terms, is_rare, escape=True, conventions=conventions)
        first = len(units)
        units.extend(sentence_units)
        parts.append(lambda outputs: markup.escape_text(lead) + "".join(
            o + markup.escape_text(a) for o, a in zip(outputs[first:first + len(sentence_units)], afters)))

    def container(node: markup.Node) -> None:
        if node.kind != "element" or node.untranslated:
            parts.append(node.source())
            return
        parts.append(start_tag(node))
        children(node.children)
        parts.append(node.close)

    def children(nodes: list[markup.Node]) -> None:
        """Runs of inline nodes are translated together; anything else is a container of its own."""
        pending: list[markup.Node] = []
        for child in nodes:
            if child.inline:
                pending.append(child)
                continue
            if pending:
                run(pending)
                pending = []
            container(child)
        if pending:
            run(pending)

    children(root.children)  # the document node itself has no tags

    def rebuild(outputs: list[str]) -> str:
        text = "".join(p if isinstance(p, str) else p(outputs) for p in parts)
        for marker, tag in markers.items():
            text = text.replace(marker, tag(outputs))
        return text

    return Plan(units, rebuild, split=True)


def _written(nodes: list[markup.Node], start_tag) -> list:
    """Nodes copied as written, their translated attributes aside."""
    parts: list = []
    for node in nodes:
        if node.kind == "element" and not node.untranslated:
            parts.append(start_tag(node))
            parts.extend(_written(node.children, start_tag))
            parts.append(node.close)
        else:
            parts.append(node.source())
    return parts
