"""HTML documents (.html, .htm, .xhtml): each run of inline content is a segment, as written.

The document is parsed with model/text/markup.py, the parser of `format: "html"`; its containers
(blocks, untranslated elements, comments, the doctype) are copied byte for byte, and each run of
inline content between them, with its inline elements as written, is translated through the same
`format: "html"` path as a text would be.
"""

from __future__ import annotations

from model.text import markup
from model.text.documents.base import DocumentError, Extracted, Limits, decode_text, encode_text, has_words


def read(data: bytes, limits: Limits) -> Extracted:
    text = decode_text(data)
    try:
        root = markup.parse_html(text)
    except markup.MarkupError as e:
        raise DocumentError("corrupt", f"malformed HTML: {e}") from None
    parts: list[str | int] = []  # text as written, or the index of a segment
    segments: list[str] = []

    def run(nodes: list[markup.Node]) -> None:
        written = "".join(node.source() for node in nodes)
        if has_words(written):
            parts.append(len(segments))
            segments.append(written)
        else:
            parts.append(written)

    def children(nodes: list[markup.Node]) -> None:
        pending: list[markup.Node] = []
        for node in nodes:
            if node.inline:
                pending.append(node)
                continue
            if pending:
                run(pending)
                pending = []
            if node.kind != "element" or node.untranslated:
                parts.append(node.source())
            else:
                parts.append(node.raw)
                children(node.children)
                parts.append(node.close)
        if pending:
            run(pending)

    children(root.children)

    def write(translations: list[str]) -> bytes:
        return encode_text("".join(p if isinstance(p, str) else translations[p] for p in parts), data)

    return Extracted(data, segments, write)
