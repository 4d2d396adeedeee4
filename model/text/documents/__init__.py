"""Documents: each file format taken apart into the segments the model translates, and written back.

Every format's reader (one module per format family) returns an `Extracted`: the segments, each an
inline-markup string (HTML syntax: text escaped, the format's runs, links and fields as `<span>`,
its tabs, images and other non-text parts as `<img>`), and a writer that takes their translations,
in the same order and shape, and gives the file back with everything else as it was. The segments
are translated with `format: "html"`, so the model's alignment carries each run onto its target
words (model/text/compose.py). Nothing here knows about HTTP or tensors.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from model.text.documents import epub, gettext, html_doc, odf, ooxml, plain, subtitles, xliff
from model.text.documents.base import DocumentError, Extracted, Limits

__all__ = ["FORMATS", "DocumentError", "Extracted", "Limits", "read", "suffix_of", "supported"]

# Suffix -> (reader, media type). A reader takes the file's bytes and the limits, and returns an Extracted.
FORMATS = {
    ".txt": (plain.read_text, "text/plain; charset=utf-8"),
    ".md": (plain.read_markdown, "text/markdown; charset=utf-8"),
    ".html": (html_doc.read, "text/html; charset=utf-8"),
    ".htm": (html_doc.read, "text/html; charset=utf-8"),
    ".xhtml": (html_doc.read, "application/xhtml+xml"),
    ".docx": (ooxml.read_docx, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ".pptx": (ooxml.read_pptx, "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    ".odt": (odf.read, "application/vnd.oasis.opendocument.text"),
    ".odp": (odf.read, "application/vnd.oasis.opendocument.presentation"),
    ".epub": (epub.read, "application/epub+zip"),
    ".srt": (subtitles.read_srt, "application/x-subrip"),
    ".vtt": (subtitles.read_vtt, "text/vtt"),
    ".po": (gettext.read, "text/x-gettext-translation"),
    ".pot": (gettext.read, "text/x-gettext-translation"),
    ".xlf": (xliff.read, "application/xliff+xml"),
    ".xliff": (xliff.read, "application/xliff+xml"),
}


def supported() -> str:
    """The supported formats, for a refusal's message."""
    return ", ".join(FORMATS)


def suffix_of(filename: str) -> str:
    """The file's format suffix, lower case ("" when it has none)."""
    return PurePosixPath(filename).suffix.lower()


def read(filename: str, data: bytes, limits: Limits | None = None) -> Extracted:
    """The segments of a file named `filename`; DocumentError (with its kind) when it cannot be read."""
    suffix = suffix_of(filename)
    if suffix not in FORMATS:
        raise DocumentError("unsupported", f"{filename!r} is not of a supported format")
    reader, _ = FORMATS[suffix]
    return reader(data, limits or Limits())
