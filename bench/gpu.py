"""Decoding on a GPU: test BLEU, and sentences/s by batch size, strategy and dtype.

    python -m bench.gpu --weights weights/<name> [--data data/splits] [--sentences 512]
    python -m bench.gpu --weights W --batches 128 --strategies greedy --bleu-limit 0 --profile   # about a minute

Every figure comes from the same process on the same card: greedy and beam-4 at batch 1, 32 and
128 (or --batches / --strategies), float32 against bfloat16 weights (--dtypes). With --profile,
when bfloat16 greedy decoding at the largest batch is slower than float32, one of its decoder
steps (the --profile-step'th of the first batch) runs again under torch.profiler, and the
operators that took the most device and CPU time are recorded: bf16 decoded 7-13x slower than
float32 on an H200 before (docs/gpu.md), and this says where a step's time goes.
Writes bench/results/gpu.json naming the GPU (--results elsewhere). Runs on CPU too
(`--device cpu`), only to try it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import write_result
from model.checkpoint import load
from model.search.backend import TorchBackend
from model.search.options import DecodeOptions
from model.training.data import read_split
from model.training.evaluate import evaluate_rows, translate_texts

BATCHES = (1, 32, 128)
STRATEGIES = {"greedy": DecodeOptions(strategy="greedy"), "beam4": DecodeOptions(strategy="beam", beam_size=4)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sentences_per_s(loaded, texts: list[str], opts: DecodeOptions, batch: int) -> float:
    backend = TorchBackend(loaded.model)
    translate_texts(backend, loaded.tokenizer, texts[: min(len(texts), batch * 2)], "en", opts, batch)  # warm-up
    synchronize(loaded.device)
    start = time.perf_counter()
    translate_texts(backend, loaded.tokenizer, texts, "en", opts, batch)
    synchronize(loaded.device)
    return round(len(texts) / (time.perf_counter() - start), 1)


def throughput(loaded, texts: list[str], batch1_sentences: int, strategies: list[str], batches: list[int]) -> dict:
    out = {}
    for name in strategies:
        for batch in batches:
            sample = texts[:batch1_sentences] if batch == 1 else texts
            out[f"{name}_batch{batch}"] = sentences_per_s(loaded, sample, STRATEGIES[name], batch)
            print(f"  {loaded.dtype} {name} batch {batch}: {out[f'{name}_batch{batch}']} sentences/s", flush=True)
    return out


class StepProfiler(TorchBackend):
    """A TorchBackend that runs its `at`-th greedy decoder step under torch.profiler."""

    def __init__(self, model, at: int):
        super().__init__(model)
        self.at, self.calls, self.report = at, 0, None

    def greedy_step(self, cache, forbidden, self_layers, cross_layers):
        self.calls += 1
        if self.calls != self.at:
            return super().greedy_step(cache, forbidden, self_layers, cross_layers)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        synchronize(self.device)
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            out = super().greedy_step(cache, forbidden, self_layers, cross_layers)
            synchronize(self.device)
            wall = time.perf_counter() - started
        self.report = step_report(prof, wall, cache.n)
        return out


def _device_us(event) -> float:
    """Self time on the GPU of a profiler row (named self_device_time_total from torch 2.4 on)."""
    return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)) or 0.0)


def step_report(prof, wall: float, rows: int, top: int = 12) -> dict:
    """The step's wall time, self CPU and device time, and the operators (CUDA runtime calls included)
    that took the most of each."""
    events = list(prof.key_averages())
    cpu_total = sum(e.self_cpu_time_total for e in events) / 1e3
    device_total = sum(_device_us(e) for e in events) / 1e3

    def rows_of(key) -> list[dict]:
        largest = sorted(events, key=key, reverse=True)[:top]
        return [{"op": e.key, "calls": e.count, "self_device_ms": round(_device_us(e) / 1e3, 3),
                 "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 3)} for e in largest]

    report = {"rows": rows, "wall_ms": round(wall * 1e3, 3), "self_cpu_ms": round(cpu_total, 3)}
    if device_total:
        # Far below 1: the step waits on Python and kernel launches, not on the GPU's arithmetic.
        report.update(self_device_ms=round(device_total, 3), device_busy_share=round(device_total / (wall * 1e3), 3),
                      top_device=rows_of(_device_us))
    report["top_cpu"] = rows_of(lambda e: e.self_cpu_time_total)
    return report


def profile_step(loaded, texts: list[str], batch: int, at: int) -> dict:
    """Greedy decoder step `at` of the first batch of `texts` (its last, if it has fewer), profiled; the
    same batch decoded once before, unprofiled, warms up and counts the steps."""
    sample = texts[:batch]
    counting = StepProfiler(loaded.model, 0)
    translate_texts(counting, loaded.tokenizer, sample, "en", STRATEGIES["greedy"], batch)
    at = max(1, min(at, counting.calls))
    backend = StepProfiler(loaded.model, at)
    translate_texts(backend, loaded.tokenizer, sample, "en", STRATEGIES["greedy"], batch)
    if backend.report is None:
        return {"error": f"the batch finished in {backend.calls} steps, before step {at}"}
    return {"dtype": str(loaded.dtype).removeprefix("torch."), "batch": len(sample), "step": at,
            "steps_in_batch": counting.calls, **backend.report}


def comma_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--data", type=Path, default=Path("data/splits"))
    p.add_argument("--sentences", type=int, default=512, help="test sentences timed at batch 32 and 128")
    p.add_argument("--batch1-sentences", type=int, default=64, help="sentences timed one at a time")
    p.add_argument("--bleu-limit", type=int, default=None,
                   help="Tatoeba test sentences for BLEU (default all; 0: no BLEU)")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma list of batch sizes")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list of: " + ", ".join(STRATEGIES))
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma list of: " + ", ".join(DTYPES))
    p.add_argument("--profile", action="store_true",
                   help="profile one bfloat16 greedy step at the largest batch if bfloat16 is slower there")
    p.add_argument("--profile-always", action="store_true", help="profile that step even if bfloat16 is faster")
    p.add_argument("--profile-step", type=int, default=8, help="which decoder step of the batch to profile")
    p.add_argument("--device", default="cuda")
    p.add_argument("--results", type=Path, default=Path("bench/results"), help="folder for gpu.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in comma_list(args.batches)]
    strategies, dtypes = comma_list(args.strategies), comma_list(args.dtypes)
    unknown = (set(strategies) - set(STRATEGIES)) | (set(dtypes) - set(DTYPES))
    if unknown:
        raise SystemExit(f"unknown strategies or dtypes {sorted(unknown)}")
    rows = read_split(args.data / "test.tsv")
    tatoeba = [r for r in rows if r.source == "tatoeba"] or rows
    texts = [r.es for r in tatoeba[: args.sentences]]
    result: dict = {"weights": str(args.weights), "device": str(device), "sentences": len(texts),
                    "command": "python -m bench.gpu " + " ".join(argv or [])}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    loaded = {}
    for dtype in dtypes:
        loaded[dtype] = load(args.weights, device=device, dtype=DTYPES[dtype])
        result["model"] = loaded[dtype].name
        if dtype == "float32" and args.bleu_limit != 0:
            started = time.perf_counter()
            test_rows = tatoeba[: args.bleu_limit] if args.bleu_limit else tatoeba
            scores = evaluate_rows(TorchBackend(loaded[dtype].model), loaded[dtype].tokenizer, test_rows,
                                   list(STRATEGIES), 128)
            result["test_bleu_fp32"] = {k: v for k, v in scores.items() if k != "domains"}
            result["bleu_seconds"] = round(time.perf_counter() - started, 1)
            print("test BLEU (fp32):", result["test_bleu_fp32"], flush=True)
        result[dtype] = throughput(loaded[dtype], texts, args.batch1_sentences, strategies, batches)
        if dtype != "bfloat16":
            del loaded[dtype]  # one copy on the card at a time, but the bfloat16 one for the profile
    key = f"greedy_batch{max(batches)}"
    if key in result.get("float32", {}) and key in result.get("bfloat16", {}):
        speedup = round(result["bfloat16"][key] / result["float32"][key], 2)
        result[f"bf16_speedup_{key}"] = speedup
        if (args.profile and speedup < 1) or args.profile_always:
            result["bf16_step_profile"] = profile_step(loaded["bfloat16"], texts, max(batches), args.profile_step)
            print("bfloat16 step:", {k: v for k, v in result["bf16_step_profile"].items() if k != "top"}, flush=True)
    path = write_result("gpu", result, args.results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
