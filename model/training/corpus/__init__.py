"""Readers for the package-shipped parallel corpora (docs/training.md).

Every reader returns a `SourceResult`: raw English/Spanish pairs plus the provenance that the
model card records (package, version, sha256 of what was read). Cleaning, deduplication across
sources and splitting happen in `model.training.data`, so each reader only has to get text out of its
package faithfully.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pair:
    en: str
    es: str


@dataclass
class SourceResult:
    name: str  # e.g. "tatoeba", "bible", "gettext:gimp", "doc:debian-reference"
    domain: str  # "conversation" | "software" | "prose" | "bible"
    pairs: list[Pair]
    provenance: dict = field(default_factory=dict)  # package, version, sha256, license, ...
