"""One prepared GPU session: train a model, test it, time its decoding, serve it, and bring it all back.

Here, once, before asking for the GPU machine (it has no network; PyPI is needed here for the app's
packages; about 2 minutes on 2 cores):

    .venv/bin/python -m bench.gpu_run pack
      -> .gpu/data.tar.xz  data/splits/{train,dev,test}.tsv and data/manifest.json (~9 MB)
         .gpu/site.tar.xz  what the app imports beyond the GPU image's own packages (fastapi, pydantic,
                           uvicorn, py3langid...), built for its Python 3.12 (~3 MB)
         .gpu/pack.json    versions, sizes, sha256s, and the size of everything that will travel

On the GPU machine, as one command (device tool: carry [".gpu"], timeout_s 600):

    bash bench/gpu_run.sh                      # writes to $OUT

On this CPU, the same script end to end in about a minute (tests/test_gpu_run.py runs it):

    bash bench/gpu_run.sh --tiny --out /tmp/gpu-tiny [--data DIR_WITH_train.tsv]

Phases, in order, each bounded by a timeout, full mode (BUDGET_S=570 s for the whole command: the
GPU machine runs one command for at most 600 s, so training cannot have the 9-10 minutes the 15-minute
device budget would otherwise allow):
  setup   ~15 s   unpack .gpu, check imports (the app's too), torch and CUDA, nvidia-smi
  train   TRAIN_MIN + ~75 s of loading, dev evaluations and checkpoints. TRAIN_MIN is by default what the
                  budget leaves after the phases below, at most 9 minutes (about 6 minutes at BUDGET_S=570).
                  Continued training of weights/es-en-multidomain with a fresh optimiser (--init-from:
                  its 16k BPE vocabulary and 23.9 M-parameter architecture), bf16 autocast, 32k-token
                  batches, peak LR 5e-4 after 300 warmup steps, cosine decay over TRAIN_MIN; dev BLEU on
                  200 sentences per domain at the start (what the run has to beat) and every ~TRAIN_MIN/3
                  minutes, the best exported. FROM_SCRATCH=1 trains the same architecture anew instead.
  weights ~2 s    the best model's weights, in chunks, as soon as training ends (and every time an
                  improved model is exported during training, so a run cut short still brings one back)
  test    <=150 s test split: beam 4 on the Tatoeba-like domain (conversation), greedy on every domain
  bench   <=120 s python -m bench.gpu: sentences/s, greedy at batch 128, float32 and bfloat16; one
                  bfloat16 decoder step under torch.profiler if bfloat16 is slower
  serve   <=90 s  python -m app with DEVICE=cuda on 127.0.0.1: /ready, GET /models, one POST /translate
Why these choices (the dev split, as the shipped model's card.json records it under metrics.dev_keep_rule):
conversation 43.8/36.5 BLEU (es-en/en-es), software 30.6/31.6, prose 31.4/32.8, bible 22.4/20.3,
narrative 22.4/18.4. Its dev BLEU was still rising when its 3.5 GPU minutes ran out, so a few more GPU
minutes continue it rather than start over (from scratch, 6 GPU minutes would first have to redo the
3.5 GPU and 132 CPU minutes it holds); the vocabulary stays its own. Narrative is weakest and the
split now holds 8x the narrative pairs the model saw; bible is weak for its archaic register rather
than for want of pairs: DOMAIN_WEIGHTS conversation=1,software=0.6,bible=0.4,prose=1.5,narrative=1.5.
results.json says, on the dev sentences, whether the run kept the card's rule (conversation and
narrative up, nothing down by more than 0.5).

What comes back ($OUT, 7 files, each <= 15 MiB, results first):
  results.json                  every finished phase's figures, rewritten after each phase
  logs.tgz                      logs, training history, evaluation and bench JSON, nvidia-smi, pack.json
  model.tgz                     <name>/{config.json,tokenizer.json,card.json,model.safetensors.sha256}
  model.safetensors.part00..03  the weights (float16, as model.checkpoint.export stores them), 15 MiB each
Reassemble here (OUT = the folder they came back in, NAME = results.json's weights.name), beside the
shipped model rather than over it:
  mkdir -p runs/gpu && tar -xzf OUT/model.tgz -C runs/gpu
  cat OUT/model.safetensors.part* > runs/gpu/NAME/model.safetensors
  (cd runs/gpu/NAME && sha256sum -c model.safetensors.sha256)    # model.checkpoint.load checks it again

Settings (environment, or the flags of the same name): TINY=1 (--tiny), OUT (--out), WORK (--work),
DATA (--data: a folder with train/dev/test.tsv), WEIGHTS (--weights: skip training, use this model),
PHASES (train,test,bench,serve), DEVICE, BUDGET_S, TRAIN_MIN, FROM_SCRATCH=1, VOCAB (from scratch: train
a BPE of this size instead of reusing the shipped one), INIT_FROM, DOMAIN_WEIGHTS, BATCH_TOKENS, LR,
WARMUP, DROPOUT, MODEL_NAME, EVAL_LIMIT (test sentences per domain, 0: all), CHUNK_BYTES, TRAIN_ARGS
(more flags for model.training.train).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
MiB = 1 << 20
MAX_FILES = 8  # what the device tool brings back from $OUT
HEADLINE_DOMAIN = "conversation"  # the Tatoeba rows: the card's headline test figures
SHIPPED = ROOT / "weights" / "es-en-multidomain"
# What the app imports beyond the GPU image's own packages (torch, numpy, tokenizers, safetensors,
# sacrebleu, tqdm, anyio, h11, click, prometheus-client, uvloop... are there). Versions: this venv's.
SITE_PACKAGES = ("fastapi", "starlette", "pydantic", "pydantic-core", "pydantic-settings", "python-dotenv",
                 "annotated-types", "typing-inspection", "typing-extensions", "uvicorn", "python-multipart",
                 "opentelemetry-api", "py3langid")
APP_MODULES = ("fastapi", "uvicorn", "pydantic", "pydantic_settings", "multipart", "py3langid")
TRAVEL_LIMIT = 64 * MiB  # the working tree and the carried paths together


# --- settings ---------------------------------------------------------------------------------


def env(name: str, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", default=env("TINY", "0") not in ("0", "false", "no"))
    p.add_argument("--out", type=Path, default=env("OUT"))
    p.add_argument("--work", type=Path, default=env("WORK"))
    p.add_argument("--data", type=Path, default=env("DATA"))
    p.add_argument("--weights", type=Path, default=env("WEIGHTS"))
    p.add_argument("--phases", default=env("PHASES", "train,test,bench,serve"))
    p.add_argument("--device", default=env("DEVICE"))
    p.add_argument("--budget-s", type=float, default=env("BUDGET_S"))
    p.add_argument("--train-min", type=float, default=env("TRAIN_MIN"))
    p.add_argument("--from-scratch", action="store_true", default=env("FROM_SCRATCH", "0") not in ("0", "false"))
    a = p.parse_args(argv)
    tiny = a.tiny
    a.out = a.out or Path("/tmp/gpu-tiny" if tiny else "/tmp/gpu-out")
    a.device = a.device or ("cpu" if tiny else "cuda")
    a.budget_s = float(a.budget_s or (300 if tiny else 570))
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    a.vocab = env("VOCAB")
    a.init_from = Path(env("INIT_FROM", str(SHIPPED)))
    a.domain_weights = env("DOMAIN_WEIGHTS", "conversation=1,software=0.6,bible=0.4,prose=1.5,narrative=1.5")
    a.batch_tokens = int(env("BATCH_TOKENS", 400 if tiny else 32000))
    a.lr = float(env("LR", 3e-3 if tiny else (1e-3 if a.from_scratch else 5e-4)))
    a.warmup = int(env("WARMUP", 5 if tiny else (600 if a.from_scratch else 300)))
    a.dropout = float(env("DROPOUT", 0.0 if tiny else (0.15 if a.from_scratch else 0.1)))
    a.name = env("MODEL_NAME", "tiny" if tiny else "es-en-multidomain")
    a.eval_limit = int(env("EVAL_LIMIT", 5 if tiny else 0))
    a.chunk_bytes = int(env("CHUNK_BYTES", 15 * MiB))
    a.train_args = shlex.split(env("TRAIN_ARGS", ""))
    return a


# Seconds the phases after training are expected to take (what TRAIN_MIN leaves them), the least
# each is given before it is skipped, and the most it may take.
EXPECTED = {"test": 50, "bench": 40, "serve": 30, "final": 5}
LEAST = {"test": 40, "bench": 30, "serve": 25, "final": 5}
CAP = {"test": 150, "bench": 120, "serve": 90}
TRAIN_OVERHEAD_S = 75  # loading and encoding the split, dev evaluations, exports
TINY_TRAIN = ["--vocab-size", "500", "--d-model", "32", "--heads", "4", "--d-ff", "64", "--encoder-layers", "2",
              "--decoder-layers", "2", "--max-steps", "30", "--dev-limit", "10", "--eval-batch-size", "32",
              "--threads", "1"]
ARCHITECTURE = ["--d-model", "384", "--heads", "6", "--d-ff", "1536", "--encoder-layers", "6", "--decoder-layers", "3"]


# --- the run ----------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        self.out: Path = args.out
        self.work: Path = args.work or Path(tempfile.mkdtemp(prefix="gpu-run-"))
        self.res = self.work / "res"  # what logs.tgz holds
        self.lock = threading.RLock()
        self.published: str | None = None  # sha256 of the weights now in OUT
        self.results: dict = {"mode": "tiny" if args.tiny else "full", "budget_s": args.budget_s, "phases": {},
                              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.data: Path | None = None
        self.model: Path | None = None  # the model folder the later phases use

    # -- bookkeeping --

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, message: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {message}"
        print(line, flush=True)
        with open(self.res / "driver.log", "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def save(self) -> None:
        """results.json, then logs.tgz, each replaced whole (a run cut short leaves the last complete ones)."""
        with self.lock:
            self.results["elapsed_s"] = self.elapsed()
            write_atomic(self.out / "results.json", json.dumps(self.results, indent=2, ensure_ascii=False) + "\n")
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                tar.add(self.res, arcname="logs")
            write_atomic(self.out / "logs.tgz", buffer.getvalue())

    def phase(self, name: str, status: str, started: float, /, **data) -> dict:
        record = {"status": status, "seconds": round(time.monotonic() - started, 1), **data}
        with self.lock:
            self.results["phases"][name] = record
            self.save()
        self.say(f"{name}: {status} ({record['seconds']} s)")
        return record

    def timeout_for(self, name: str, later: list[str], started: float) -> float:
        """Seconds phase `name` (begun at `started`) may still take: the rest of its cap, at most the time
        left but what the phases after it need at least."""
        return min(CAP[name] - (time.monotonic() - started), self.left() - sum(LEAST[p] for p in later))

    def command(self, cmd: list[str], log: str, timeout: float, env: dict | None = None) -> dict:
        """Run `cmd` in the repository root, output to res/<log>, killed (its whole group) after `timeout` s."""
        started = time.monotonic()
        with open(self.res / log, "ab") as out:
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=max(timeout, 1))
            except subprocess.TimeoutExpired:
                stop(proc)
                code = None
        shown = shlex.join(["python" if c == sys.executable else c for c in cmd])
        return {"returncode": code, "timed_out": code is None, "seconds": round(time.monotonic() - started, 1),
                "timeout_s": round(timeout), "command": shown}

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    # -- phases --

    def setup(self) -> None:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.iterdir():  # a reused --out folder: only this script's own files
            if stale.name in ("results.json", "logs.tgz", "model.tgz") or stale.name.startswith("model.safetensors"):
                stale.unlink()
        marker = self.work / ".gpu_run"
        if self.work.is_dir() and any(self.work.iterdir()) and not marker.exists():
            raise SystemExit(f"--work {self.work} is neither empty nor an earlier run's work folder")
        self.work.mkdir(parents=True, exist_ok=True)
        marker.touch()
        for stale in ("res", "run", "weights", "site", *([] if self.args.data else ["data"])):  # left by a last run
            shutil.rmtree(self.work / stale, ignore_errors=True)
        self.res.mkdir(parents=True, exist_ok=True)
        self.save()  # results first
        info: dict = {"python": platform.python_version(), "cpus": os.cpu_count(), "work": str(self.work)}
        if (PACK / "pack.json").is_file():
            shutil.copy(PACK / "pack.json", self.res / "pack.json")
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            smi = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
            info["nvidia_smi"] = (smi.stdout or smi.stderr).strip()
        missing = self.missing_modules()
        if missing and (PACK / "site.tar.xz").is_file():
            self.say(f"unpacking .gpu/site.tar.xz for {', '.join(missing)}")
            extract(PACK / "site.tar.xz", self.work / "site")
            self.env["PYTHONPATH"] = f"{self.work / 'site'}{os.pathsep}{ROOT}"
            missing = self.missing_modules()
        info["missing_modules"] = missing
        self.data = self.find_data()
        info["data"] = str(self.data)
        probe = subprocess.run(self.python("-c", PROBE, self.args.device), cwd=ROOT, env=self.env, capture_output=True,
                               text=True, timeout=180, check=False)
        try:
            info.update(json.loads(probe.stdout.strip().splitlines()[-1]))
        except (IndexError, json.JSONDecodeError):
            info["probe_error"] = (probe.stderr or probe.stdout)[-2000:]
        ok = "probe_error" not in info and not (self.args.device == "cuda" and not info.get("cuda"))
        self.phase("setup", "ok" if ok else "failed", started, **info, **({} if ok else {"error": "no torch or CUDA"}))
        if not ok:
            raise SystemExit("setup failed: see results.json")

    def missing_modules(self) -> list[str]:
        code = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if not importlib.util.find_spec(m)))"
        done = subprocess.run(self.python("-c", code, *APP_MODULES), cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        return done.stdout.split()

    def find_data(self) -> Path:
        if self.args.data:
            return self.args.data
        if self.args.tiny:
            if not (ROOT / "data" / "splits" / "train.tsv").is_file():
                raise SystemExit("--tiny needs --data DIR (train/dev/test.tsv) or data/splits")
            sizes = {"train": 150, "dev": 8, "test": 8}
            return slice_splits(ROOT / "data" / "splits", self.work / "data" / "splits", sizes)
        if (PACK / "data.tar.xz").is_file():
            self.say("unpacking .gpu/data.tar.xz")
            extract(PACK / "data.tar.xz", self.work / "data")
            return self.work / "data" / "splits"
        return ROOT / "data" / "splits"

    def train(self) -> None:
        started = time.monotonic()
        a = self.args
        export = self.work / "weights" / a.name
        later = [p for p in ("test", "bench", "serve") if p in a.phases] + ["final"]  # only what will run
        if a.tiny:
            train_min = a.train_min or 1.0
            timeout = min(180.0, self.left() - sum(LEAST[p] for p in later))
        else:
            fits = (self.left() - TRAIN_OVERHEAD_S - sum(EXPECTED[p] for p in later)) / 60
            train_min = a.train_min or round(max(0.5, min(9.0, fits)), 2)
            timeout = min(train_min * 60 + TRAIN_OVERHEAD_S + 60, self.left() - sum(LEAST[p] for p in later))
        cmd = self.python("-m", "model.training.train", "--data", str(self.data), "--run-dir", str(self.work / "run"),
                          "--export", str(export), "--name", a.name, "--device", a.device,
                          "--max-minutes", str(train_min), "--batch-tokens", str(a.batch_tokens), "--lr", str(a.lr),
                          "--warmup", str(a.warmup), "--dropout", str(a.dropout), "--eval-every", "1000",
                          "--checkpoint-minutes", "1000")
        if a.tiny:
            cmd += TINY_TRAIN
        else:
            # At least two dev evaluations even in a short run, so that an improved model is exported.
            cmd += ["--eval-every-minutes", str(round(max(0.25, train_min / 3), 2)), "--dev-limit", "200",
                    "--eval-batch-size", "256", "--domain-weights", a.domain_weights]
            if a.from_scratch:
                vocabulary = ["--vocab-size", a.vocab] if a.vocab else ["--tokenizer", str(SHIPPED / "tokenizer.json")]
                cmd += ARCHITECTURE + vocabulary
            else:
                cmd += ["--init-from", str(a.init_from)]
        cmd += a.train_args
        self.say(f"training {train_min} min (timeout {timeout:.0f} s): {shlex.join(cmd[1:])}")
        watching = threading.Event()
        watcher = threading.Thread(target=self.watch_exports, args=(export, watching), daemon=True)
        watcher.start()
        try:
            ran = self.command(cmd, "train.log", timeout)
        finally:
            watching.set()
            watcher.join()
        summary = training_summary(self.work / "run", export, init=None if a.tiny or a.from_scratch else a.init_from)
        if (self.work / "run" / "history.json").is_file():
            shutil.copy(self.work / "run" / "history.json", self.res / "history.json")
        if (export / "config.json").is_file():
            self.model = export
        status = "ok" if ran["returncode"] == 0 else ("timed out" if ran["timed_out"] else "failed")
        if status != "ok" and self.model:
            status += ", best export kept"
        self.phase("train", status, started, **{"train_min": train_min, **summary, **ran})
        if self.model:
            self.publish_final()

    def watch_exports(self, export: Path, done: threading.Event) -> None:
        """While training runs, bring every improved export to OUT (a run cut short still returns a model)."""
        while not done.wait(10):
            try:
                if (export / "config.json").is_file():
                    self.publish(export)
            except Exception as e:  # noqa: BLE001 - a snapshot is a bonus; the final publish reports errors
                self.say(f"snapshot skipped: {e}")

    def publish_final(self) -> None:
        started = time.monotonic()
        for _ in range(3):
            record = self.publish(self.model)
            if record:
                break
            time.sleep(1)
        if record is None:
            self.phase("weights", "failed", started, error="model.safetensors does not match config.json's sha256")
            return
        self.phase("weights", "ok", started, sha256=record["sha256"], parts=len(record["parts"]))  # the rest: weights

    def publish(self, folder: Path) -> dict | None:
        """Chunks of folder's weights and model.tgz into OUT, if the export is complete and new."""
        with self.lock:
            config = json.loads((folder / "config.json").read_text())
            snapshot = self.work / "snapshot.safetensors"
            shutil.copy(folder / "model.safetensors", snapshot)
            digest = sha256_file(snapshot)
            if digest != config.get("weights_sha256"):
                return None  # caught between the weights and config.json being written
            if digest != self.published:
                parts = write_parts(snapshot, self.out, self.args.chunk_bytes)
                meta = {"config.json": (folder / "config.json").read_bytes(),
                        "tokenizer.json": (folder / "tokenizer.json").read_bytes(),
                        "card.json": (folder / "card.json").read_bytes() if (folder / "card.json").is_file() else b"{}",
                        "model.safetensors.sha256": f"{digest}  model.safetensors\n".encode()}
                write_atomic(self.out / "model.tgz", targz({f"{self.args.name}/{k}": v for k, v in meta.items()}))
                self.published = digest
                card = json.loads(meta["card.json"])
                self.results["weights"] = {
                    "name": self.args.name, "sha256": digest, "bytes": snapshot.stat().st_size,
                    "storage_dtype": config.get("storage_dtype"), "parameters": card.get("parameters"),
                    "best_dev": card.get("training", {}).get("best_dev"), "parts": parts,
                    "reassemble": (f"mkdir -p runs/gpu && tar -xzf OUT/model.tgz -C runs/gpu && cat "
                                   f"OUT/model.safetensors.part* > runs/gpu/{self.args.name}/model.safetensors && "
                                   f"(cd runs/gpu/{self.args.name} && sha256sum -c model.safetensors.sha256)"),
                }
                self.save()
                self.say(f"weights {digest[:12]} ({len(parts)} parts) in {self.out}")
            snapshot.unlink()
            return self.results["weights"]

    def use_weights(self, folder: Path) -> None:
        """--weights: skip training; the later phases use a copy of this model folder."""
        self.model = self.work / "weights" / self.args.name
        shutil.copytree(folder, self.model, dirs_exist_ok=True)
        self.results["weights_given"] = str(folder)
        self.publish_final()

    def test(self) -> None:
        started = time.monotonic()
        a = self.args
        limit = ["--limit", str(a.eval_limit)] if a.eval_limit else []
        batch = ["--batch-size", "32" if a.tiny else "256"]
        base = self.python("-m", "model.training.evaluate", "--weights", str(self.model), "--data", str(self.data),
                           "--split", "test", "--device", a.device, *batch, *limit)
        domains = split_domains(self.data / "test.tsv")
        runs = []
        if HEADLINE_DOMAIN in domains:
            runs.append(("beam4_" + HEADLINE_DOMAIN, ["--domains", HEADLINE_DOMAIN, "--strategies", "beam4"]))
        runs.append(("greedy", ["--strategies", "greedy"]))
        record: dict = {"domains": domains, "runs": {}}
        for name, extra in runs:
            timeout = self.timeout_for("test", ["bench", "serve", "final"], started)
            if timeout < 10:
                record["runs"][name] = {"skipped": "no time left"}
                continue
            path = self.res / f"test_{name}.json"
            ran = self.command([*base, *extra, "--json", str(path)], "test.log", timeout)
            scores = json.loads(path.read_text()) if path.is_file() else {}
            record["runs"][name] = {**ran, "seconds_decoding": scores.get("meta", {}).get("seconds")}
            for direction in ("es-en", "en-es"):
                for strategy, figures in scores.get(direction, {}).items():
                    record.setdefault(direction, {})[strategy] = figures
            for domain, figures in scores.get("domains", {}).items():
                for direction, by_strategy in figures.items():
                    by_domain = record.setdefault("by_domain", {}).setdefault(domain, {})
                    by_domain.setdefault(direction, {}).update(by_strategy)
            with self.lock:  # what finished so far, should the next run be cut short
                self.results["phases"]["test"] = {"status": "running", **record}
                self.save()
        before = self.results["phases"].get("train", {}).get("init_test")
        if before:
            record["before"] = before
        ok = all(r.get("returncode") == 0 for r in record["runs"].values())
        self.phase("test", "ok" if ok else "incomplete", started, **record)

    def bench(self) -> None:
        started = time.monotonic()
        a = self.args
        sizes = (["--batches", "8", "--sentences", "16", "--profile-always"] if a.tiny else
                 ["--batches", "128", "--sentences", "1024"])
        cmd = self.python("-m", "bench.gpu", "--weights", str(self.model), "--data", str(self.data), "--device",
                          a.device, "--strategies", "greedy", "--dtypes", "float32,bfloat16", "--bleu-limit", "0",
                          "--profile", "--results", str(self.res), *sizes)
        ran = self.command(cmd, "bench.log", self.timeout_for("bench", ["serve", "final"], started))
        path = self.res / "gpu.json"
        figures = json.loads(path.read_text()) if path.is_file() else {}
        self.phase("bench", "ok" if ran["returncode"] == 0 and figures else "failed", started, **{**figures, **ran})

    def serve(self) -> None:
        started = time.monotonic()
        timeout = self.timeout_for("serve", ["final"], started)
        port = free_port()
        env = {**self.env, "WEIGHTS_DIR": str(self.model.parent), "DEVICE": self.args.device, "HOST": "127.0.0.1",
               "PORT": str(port), "SHUTDOWN_GRACE_S": "2", "LOG_LEVEL": "info"}
        if self.args.tiny:
            env["TORCH_THREADS"] = "1"
        url = f"http://127.0.0.1:{port}"
        record: dict = {"command": f"DEVICE={self.args.device} WEIGHTS_DIR={self.model.parent} python -m app",
                        "url": url}
        with open(self.res / "serve.log", "ab") as log:
            proc = subprocess.Popen(self.python("-m", "app"), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                record["ready_s"] = wait_ready(url, proc, timeout - 15)
                if record["ready_s"] is not None:
                    record["models"] = http_json(f"{url}/models")
                    t0 = time.monotonic()
                    record["translate_request"] = {"text": "El gato come pescado.", "source": "es", "target": "en"}
                    record["translate"] = http_json(f"{url}/translate", record["translate_request"])
                    record["translate_ms"] = round((time.monotonic() - t0) * 1e3, 1)
                else:
                    record["exit_code"] = proc.poll()
            except (OSError, urllib.error.URLError, ValueError) as e:
                record["error"] = repr(e)
            finally:
                stop(proc)
        ok = "models" in record and "translate" in record and "error" not in record
        self.phase("serve", "ok" if ok else "failed", started, **record)

    def finish(self) -> None:
        files = sorted(self.out.iterdir())
        self.results["out_files"] = {f.name: f.stat().st_size for f in files}
        problems = [f"{len(files)} files in OUT, more than {MAX_FILES}"] if len(files) > MAX_FILES else []
        problems += [f"{f.name} is {f.stat().st_size} bytes, over 15 MiB" for f in files if f.stat().st_size > 15 * MiB]
        self.results["problems"] = problems
        self.results["finished"] = True
        self.save()
        statuses = ", ".join(f"{name} {record['status']}" for name, record in self.results["phases"].items())
        self.say(f"done in {self.elapsed()} s: {statuses}")
        for key, value in headline(self.results).items():
            print(f"{key}: {json.dumps(value, ensure_ascii=False)}", flush=True)


PROBE = """
import json, sys, torch
device = sys.argv[1]
info = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
if info["cuda"]:
    info["gpu"] = torch.cuda.get_device_name(0)
    info["bf16"] = torch.cuda.is_bf16_supported()
print(json.dumps(info))
"""


def run(args: argparse.Namespace) -> int:
    r = Run(args)
    r.setup()
    if args.weights:
        r.use_weights(args.weights)
    elif "train" in args.phases:
        r.train()
    for name in ("test", "bench", "serve"):
        if name not in args.phases:
            continue
        if r.model is None:
            r.phase(name, "skipped", time.monotonic(), reason="no model")
            continue
        try:
            getattr(r, name)()
        except Exception as e:  # noqa: BLE001 - one phase's failure must not cost the others
            r.phase(name, "failed", time.monotonic(), error=repr(e))
    r.finish()
    return 0 if all(p["status"] == "ok" for p in r.results["phases"].values()) else 1


# --- helpers ----------------------------------------------------------------------------------


def headline(results: dict) -> dict:
    """The figures worth reading first (the device tool shows the end of the output)."""
    phases = results["phases"]
    train, test, bench, serve = (phases.get(p, {}) for p in ("train", "test", "bench", "serve"))
    translation = (serve.get("translate") or {}).get("translations") or [{}]
    change = train.get("dev_change") or {}
    return {
        "train": {k: train.get(k) for k in ("status", "steps", "minutes", "tokens_per_s", "best_dev") if k in train},
        "dev_bleu_change_es_en_en_es": {domain: [d["es-en"]["bleu"], d["en-es"]["bleu"]]
                                        for domain, d in change.get("by_domain", {}).items()},
        "dev_keep_rule_passed": change.get("keep_rule_passed"),
        "test": {d: test.get(d) for d in ("es-en", "en-es") if test.get(d)},
        "test_before": {d: (test.get("before") or {}).get(d) for d in ("es-en", "en-es") if test.get("before")},
        "bench": {k: v for k, v in bench.items() if k in ("gpu", "float32", "bfloat16", "status")
                  or k.startswith("bf16_speedup")},
        "serve": {"models": [{k: m.get(k) for k in ("name", "device", "dtype", "engine")}
                             for m in serve.get("models", [])], "translation": translation[0].get("text")},
        "weights": {k: (results.get("weights") or {}).get(k) for k in ("name", "sha256", "bytes")},
        "out_files": results.get("out_files"),
    }


def write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def write_parts(path: Path, out: Path, chunk: int) -> list[dict]:
    """`path` as out/model.safetensors.partNN of at most `chunk` bytes; stale higher parts removed."""
    size = path.stat().st_size
    count = max(1, math.ceil(size / chunk))
    parts = []
    with open(path, "rb") as f:
        staged = []
        for i in range(count):
            data = f.read(chunk)
            tmp = out / f"model.safetensors.part{i:02d}.tmp"
            tmp.write_bytes(data)
            staged.append(tmp)
            parts.append({"file": tmp.name.removesuffix(".tmp"), "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    for tmp in staged:  # renamed together, so the parts in OUT are one snapshot's but for an instant
        tmp.replace(tmp.with_suffix(""))
    for old in out.glob("model.safetensors.part*"):
        if old.name not in {p["file"] for p in parts}:
            old.unlink()
    return parts


def targz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def extract(archive: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)  # noqa: S202 - our own archive, made by `pack`


def split_domains(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return sorted({line.split("\t", 1)[0] for line in f if line.strip()})


def slice_splits(src: Path, dst: Path, per_domain: dict[str, int], max_words: int = 12) -> Path:
    """The first N rows of each domain of each split whose sides have at most `max_words` words (the tiny
    mode's data: a barely trained model decodes short sources quickly even when it never ends them)."""
    dst.mkdir(parents=True, exist_ok=True)
    for split, n in per_domain.items():
        kept, seen = [], {}
        with open(src / f"{split}.tsv", encoding="utf-8", newline="\n") as f:
            for line in f:
                domain, _, en, es = line.rstrip("\n").split("\t")
                if seen.get(domain, 0) < n and max(len(en.split()), len(es.split())) <= max_words:
                    seen[domain] = seen.get(domain, 0) + 1
                    kept.append(line)
        (dst / f"{split}.tsv").write_text("".join(kept), encoding="utf-8")
    return dst


def training_summary(run_dir: Path, export: Path, init: Path | None) -> dict:
    """Steps, minutes, best dev, and with --init-from the dev change against the starting point."""
    summary: dict = {}
    card_path = export / "card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        t = card.get("training", {})
        summary.update(parameters=card.get("parameters"), hardware=t.get("hardware"), best_dev=t.get("best_dev"),
                       dev_domains_at_best=t.get("dev_domains_at_best"))
        if card.get("parameters", 0) > 30_000_000:
            summary["warning"] = f"{card['parameters']:,} parameters, over the 30 M the issue allows"
    history_path = run_dir / "history.json"
    if history_path.is_file():
        history = json.loads(history_path.read_text())
        if history:
            last = history[-1]
            summary.update(steps=last["step"], minutes=last["minutes"], epochs=last["epoch"],
                           tokens_per_s=last.get("tokens_per_s"),
                           dev_curve=[{k: h[k] for k in ("step", "minutes", "dev_bleu_es_en", "dev_bleu_en_es")}
                                      for h in history])
        if init is not None and history and history[0]["step"] == 0:
            best = max(history, key=lambda h: h["dev_bleu_es_en"] + h["dev_bleu_en_es"])
            summary["dev_change"] = dev_change(history[0]["dev_domains"], best["dev_domains"])
    if init is not None and (init / "card.json").is_file():
        test = json.loads((init / "card.json").read_text()).get("metrics", {}).get("test", {})
        summary["init_test"] = {k: test[k] for k in ("es-en", "en-es", "domains") if k in test}
    return summary


def dev_change(start: dict, best: dict) -> dict:
    """Per domain and direction, best minus start (greedy BLEU and chrF), and the card's keep rule on them."""
    change: dict = {}
    for domain, directions in best.items():
        for direction, by_strategy in directions.items():
            a, b = start[domain][direction]["greedy"], by_strategy["greedy"]
            change.setdefault(domain, {})[direction] = {m: round(b[m] - a[m], 2) for m in ("bleu", "chrf")}
    must_rise = [d for d in ("conversation", "narrative") if d in change]
    rises = all(v > 0 for d in must_rise for direction in change[d].values() for v in direction.values())
    holds = all(v >= -0.5 for d in change if d not in must_rise for direction in change[d].values()
                for v in direction.values())
    return {"by_domain": change, "keep_rule": "conversation and narrative rise, nothing else falls by more than 0.5",
            "keep_rule_passed": rises and holds}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 60) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(url: str, proc: subprocess.Popen, seconds: float) -> float | None:
    """Seconds until GET /ready answered 200, or None (the server exited or took longer)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    return round(time.monotonic() - started, 1)
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    return None


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's own process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --- pack (here, before the GPU session) --------------------------------------------------------


def pack(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_run pack",
                                description="Pack what the GPU machine needs into .gpu/.")
    p.add_argument("--data", type=Path, default=ROOT / "data", help="folder holding splits/ and manifest.json")
    p.add_argument("--no-site", action="store_true", help="only the data")
    args = p.parse_args(argv)
    PACK.mkdir(exist_ok=True)
    record: dict = {"made": time.strftime("%Y-%m-%d %H:%M:%S"), "files": {}}
    data = PACK / "data.tar.xz"
    print(f"compressing {args.data}/splits into {data} (xz -9e, a minute or two)", flush=True)
    with tarfile.open(data, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        for name in ("splits/train.tsv", "splits/dev.tsv", "splits/test.tsv", "manifest.json"):
            if (args.data / name).is_file():
                tar.add(args.data / name, arcname=name)
    if not args.no_site:
        record["site"] = pack_site(PACK / "site.tar.xz")
    for f in sorted(PACK.glob("*.tar.xz")):
        record["files"][f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
    record["travel_bytes"] = travel_bytes()
    record["travel_limit_bytes"] = TRAVEL_LIMIT
    (PACK / "pack.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if record["travel_bytes"] > TRAVEL_LIMIT:
        print(f"WARNING: {record['travel_bytes'] / MiB:.1f} MiB would travel, over the device tool's 64 MiB")
        return 1
    return 0


def pack_site(archive: Path) -> dict:
    """The app's missing packages for the GPU image's CPython 3.12 on x86-64, with py3langid's model cut to
    the two languages model.text.langid asks it for (0.7 MB instead of 4.6 MB; same answers, checked here)."""
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in SITE_PACKAGES]
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        platforms = [x for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                     for x in ("--platform", tag)]
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms,
                        "--target", str(site), *pins], check=True)
        shutil.rmtree(site / "bin", ignore_errors=True)
        checked = slim_langid(site / "py3langid" / "data" / "model.npz.xz")
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            tar.add(site, arcname=".")
    return {"python": "cp312 manylinux x86-64", "packages": pins, "langid_texts_checked": checked}


def slim_langid(model_file: Path) -> int:
    """Keep the English and Spanish columns of py3langid's model; returns how many texts were checked equal."""
    from py3langid.langid import LanguageIdentifier
    from py3langid.modelio import load_model, save_model

    from model.text.langid import LANGUAGES
    from model.training.data import read_split

    ptc, pc, classes, nextmove, row, out = load_model(model_file)
    keep = [classes.index(language) for language in LANGUAGES]
    slim = model_file.with_suffix(".slim")
    save_model(slim, (ptc[:, keep], pc[keep], [classes[i] for i in keep], nextmove, row, out))
    full, cut = (LanguageIdentifier.from_model_file(path.resolve(), norm_probs=True) for path in (model_file, slim))
    for identifier in (full, cut):
        identifier.set_languages(list(LANGUAGES))
    test = ROOT / "data" / "splits" / "test.tsv"
    texts = [t for r in read_split(test) for t in (r.en, r.es)] if test.is_file() else []
    texts += ["OK", "Hola", "", "Hotel", "No", "El gato come pescado.", "The cat eats fish."]
    differ = [t for t in texts if full.rank(t) != cut.rank(t)]
    if differ:
        raise SystemExit(f"the two-language langid model disagrees on {len(differ)} texts, e.g. {differ[:3]}")
    slim.replace(model_file)
    return len(texts)


def travel_bytes() -> int:
    """The working tree that travels to the device (tracked and untracked-not-ignored files) plus .gpu/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    files = [ROOT / os.fsdecode(name) for name in listed if name]
    files += [f for f in PACK.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files if f.is_file())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pack"]:
        return pack(argv[1:])
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
