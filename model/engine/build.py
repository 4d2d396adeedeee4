"""Building `engine.c` into a shared library, once per source and flags, in a cache folder.

The C file is compiled on first use with the system's C compiler into `TRANSLATE_ENGINE_CACHE`
(default ~/.cache/transformer-translate); `python -m model.engine` builds it ahead (the Makefile and
the Docker image do). Where there is no compiler, `EngineUnavailable` says so and PyTorch runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("engine.c")
# Fixed instruction set, no -march=native and no -ffast-math: every x86-64 CPU with AVX2 runs the
# same instructions in the same order, so results agree across AVX2-only and AVX-512 machines.
# -ffp-contract=off: a multiply and an add stay two roundings wherever the compiler inlines them
# (fused in one tile and not in another, a row's bits depended on its place in the batch).
FLAGS = ["-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared"]


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (no C compiler, or a CPU without AVX2 and FMA)."""


def cache_folder() -> Path:
    return Path(os.environ.get("TRANSLATE_ENGINE_CACHE") or Path.home() / ".cache" / "transformer-translate")


def library_path(folder: Path | None = None) -> Path:
    """Where the library built from this exact source and these flags lives."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return (folder or cache_folder()) / f"engine-{digest}.so"


def build(folder: Path | None = None) -> Path:
    """Compile engine.c unless this source is already built; returns the library's path."""
    if not SOURCE.is_file():
        raise EngineUnavailable(f"{SOURCE} is missing (an install without the package data)")
    target = library_path(folder)
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise EngineUnavailable("no C compiler (cc or gcc) to build model/engine/engine.c")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target under a unique name, then renamed: concurrent builds never load a half-written file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", partial, "-lm"], capture_output=True, text=True,
                              check=False)
    except OSError as exc:  # the compiler named by CC does not exist or cannot run
        os.unlink(partial)
        raise EngineUnavailable(f"cannot run the C compiler {compiler}: {exc}") from None
    if done.returncode:
        os.unlink(partial)
        raise EngineUnavailable(f"building model/engine/engine.c failed: {done.stderr.strip()[-2000:]}")
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.engine", description="Build the CPU engine library ahead of use.")
    p.add_argument("--folder", type=Path, default=None,
                   help="where to put it (default: TRANSLATE_ENGINE_CACHE or ~/.cache)")
    args = p.parse_args(argv)
    print(build(args.folder))
    return 0
