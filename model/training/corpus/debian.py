"""Fetching and unpacking Debian packages for the corpus readers.

Packages are downloaded with `apt-get download` (nothing is installed) and unpacked with
`dpkg-deb -x`, both cached under the reader's workdir so that a second run works offline.
Each package is recorded with the version and sha256 of the exact .deb that was read, which is
what the model card cites.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class AptError(RuntimeError):
    """A package could not be fetched or unpacked; the message says what to try."""


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    sha256: str
    deb: Path
    root: Path  # where the package's file tree was unpacked
    license: str

    def provenance(self) -> dict:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "license": self.license}


def fetch(package: str, workdir: Path) -> DebPackage:
    """Download (or reuse) `package`'s .deb under workdir/debs and unpack it under workdir/unpacked."""
    deb = download(package, workdir / "debs")
    root = unpack(deb, workdir / "unpacked")
    return DebPackage(
        name=package,
        version=deb_field(deb, "Version"),
        sha256=sha256_file(deb),
        deb=deb,
        root=root,
        license=_license(package, root, workdir),
    )


def _license(package: str, root: Path, workdir: Path) -> str:
    # Debian lets a package point its doc folder at a dependency's (gimp-help-es ->
    # gimp-help-common); that package's copyright file then covers it.
    doc = root / "usr/share/doc" / package
    if doc.is_symlink():
        return fetch(doc.readlink().name, workdir).license
    return package_license(root, package)


def download(package: str, debs_dir: Path) -> Path:
    """Path of `package`'s .deb in debs_dir, running `apt-get download` only when none is cached."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    cached = _cached_debs(package, debs_dir)
    if not cached:
        _run(["apt-get", "download", package], cwd=debs_dir,
             hint=f"could not download {package}: is it in Debian 12 and can apt reach its "
                  "archive? (try `apt-get update`)")
        cached = _cached_debs(package, debs_dir)
        if not cached:
            raise AptError(f"apt-get download {package} succeeded but left no {package}_*.deb in {debs_dir}")
    # After an archive update the folder can hold two versions; the newest download is the one apt chose.
    return max(cached, key=lambda path: path.stat().st_mtime)


def unpack(deb: Path, unpacked_dir: Path) -> Path:
    """Unpack `deb` once into unpacked_dir/<deb stem>; a marker file tells a finished unpack from a cut one."""
    dest = unpacked_dir / deb.stem
    marker = dest / ".unpacked"
    if marker.exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)], hint=f"could not unpack {deb.name}")
    marker.touch()
    return dest


def deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), field], hint=f"could not read {field} of {deb.name}").strip()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_license(root: Path, package: str) -> str:
    """The License of the `Files: *` stanza of a machine-readable debian/copyright.

    Older free-form copyright files have no such field, so the file itself is cited instead.
    """
    copyright_file = root / "usr/share/doc" / package / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.is_file() else ""
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, flags=re.MULTILINE):
            found = re.search(r"^License:\s*(.+)$", stanza, flags=re.MULTILINE)
            if found:
                return found.group(1).strip()
    return f"see /usr/share/doc/{package}/copyright"


def _cached_debs(package: str, debs_dir: Path) -> list[Path]:
    # Debian package names cannot contain "_", so "<name>_" never matches another package.
    return sorted(debs_dir.glob(f"{package}_*.deb"))


def _run(command: list[str], hint: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise AptError(f"{hint}: {command[0]} is not installed (this reader needs a Debian system)") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise AptError(f"{hint}: {' '.join(command)} failed: {detail[-1] if detail else done.returncode}")
    return done.stdout
