"""The GPU session script (bench/gpu_run.sh) in its tiny CPU mode, end to end.

It trains a 2+2-layer model a few steps on a small split written here, tests it, times it with
bench.gpu, serves it through the real app, and must bring back what the GPU run would: a
results.json naming every phase, logs, and weights in chunks that reassemble to the recorded
sha256 and load with model.checkpoint.load, in at most 8 files of at most 15 MiB.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from model.checkpoint import load

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20

SUBJECTS = [("El gato", "The cat"), ("El perro", "The dog"), ("La niña", "The girl"), ("El niño", "The boy"),
            ("Mi madre", "My mother"), ("Tu amigo", "Your friend")]
VERBS = [("come", "eats"), ("ve", "sees"), ("quiere", "wants"), ("tiene", "has"), ("busca", "looks for")]
OBJECTS = [("pescado", "fish"), ("una manzana", "an apple"), ("un libro", "a book"), ("agua", "water"),
           ("la casa", "the house"), ("pan", "bread")]
ACTIONS = [("Abrir", "Open"), ("Guardar", "Save"), ("Cerrar", "Close"), ("Borrar", "Delete")]
THINGS = [("el archivo", "the file"), ("la ventana", "the window"), ("el documento", "the document"),
          ("la imagen", "the image")]


def write_splits(folder: Path) -> Path:
    """180 Tatoeba-like sentence pairs and 16 software strings; 10 + 4 each for dev and test."""
    conversation = [f"conversation\ttatoeba\t{se} {ve} {oe}.\t{ss} {vs} {os_}.\n"
                    for ss, se in SUBJECTS for vs, ve in VERBS for os_, oe in OBJECTS]
    software = [f"software\tgettext:demo\t{ae} {te}\t{as_} {ts}\n" for as_, ae in ACTIONS for ts, te in THINGS]
    splits = folder / "splits"
    splits.mkdir(parents=True)
    (splits / "dev.tsv").write_text("".join(conversation[:10] + software[:4]), encoding="utf-8")
    (splits / "test.tsv").write_text("".join(conversation[10:20] + software[4:8]), encoding="utf-8")
    (splits / "train.tsv").write_text("".join(conversation[20:] + software[8:]), encoding="utf-8")
    return splits


def test_tiny_mode_brings_back_every_phase_and_weights_that_reassemble(tmp_path):
    splits = write_splits(tmp_path / "data")
    out = tmp_path / "out"
    gpu_json = ROOT / "bench" / "results" / "gpu.json"
    gpu_json_before = gpu_json.read_bytes() if gpu_json.exists() else None
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "TINY", "DATA", "WEIGHTS", "PHASES", "DEVICE")}
    env.update(PYTHON=sys.executable, CHUNK_BYTES="50000")  # several parts even for a tiny model
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work"), "--data", str(splits)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    phases = results["phases"]
    assert {name: p["status"] for name, p in phases.items()} == {
        "setup": "ok", "train": "ok", "weights": "ok", "test": "ok", "bench": "ok", "serve": "ok"}
    assert results["finished"] and results["problems"] == []
    assert phases["train"]["steps"] == 30 and phases["train"]["parameters"] < 30_000_000

    files = sorted(out.iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 15 * MiB for f in files)
    assert [f.name for f in files[:3]] == ["logs.tgz", "model.safetensors.part00", "model.safetensors.part01"]
    parts = sorted(out.glob("model.safetensors.part*"))
    assert len(parts) >= 2 and [p["file"] for p in results["weights"]["parts"]] == [p.name for p in parts]

    # Reassemble as the script's header says, then load as the app does.
    weights = tmp_path / "weights"
    weights.mkdir()
    with tarfile.open(out / "model.tgz") as tar:
        tar.extractall(weights, filter="data")
    folder = weights / "tiny"
    (folder / "model.safetensors").write_bytes(b"".join(p.read_bytes() for p in parts))
    recorded = (folder / "model.safetensors.sha256").read_text().split()[0]
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == recorded == results["weights"]["sha256"] == phases["weights"]["sha256"]
    loaded = load(folder)
    assert loaded.name == "tiny" and loaded.config.d_model == 32 and loaded.weights_sha256 == digest

    test = phases["test"]
    assert set(test["runs"]) == {"beam4_conversation", "greedy"}
    assert set(test["es-en"]) == {"beam4", "greedy"} and set(test["by_domain"]) == {"conversation", "software"}

    bench = phases["bench"]
    assert bench["float32"]["greedy_batch8"] > 0 and bench["bfloat16"]["greedy_batch8"] > 0
    assert "bf16_speedup_greedy_batch8" in bench
    assert bench["bf16_step_profile"]["dtype"] == "bfloat16" and bench["bf16_step_profile"]["top_cpu"]
    assert (gpu_json.read_bytes() if gpu_json.exists() else None) == gpu_json_before  # never overwritten

    serve = phases["serve"]
    assert [m["name"] for m in serve["models"]] == ["tiny"] and serve["models"][0]["device"] == "cpu"
    assert serve["translate"]["model"] == "tiny" and len(serve["translate"]["translations"]) == 1

    with tarfile.open(out / "logs.tgz") as tar:
        names = set(tar.getnames())
    assert {"logs/train.log", "logs/test.log", "logs/bench.log", "logs/serve.log", "logs/gpu.json"} <= names
