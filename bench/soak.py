"""Soak test of the real HTTP service: steady load for minutes, watching for memory growth and errors.

    python -m bench.soak [--minutes 10] [--clients 4] [--warmup-minutes 1] [--weights weights/]

Starts `python -m app` (uvicorn) on a free port of 127.0.0.1 with the shipped model, then keeps
--clients concurrent clients busy with real sentences (data/splits/test.tsv when present, else a
built-in list; both directions) in a steady mix of requests: beam search with steps and attention,
greedy with every head's attention, lists of texts, Server-Sent Events and LibreTranslate's route.
Every few seconds it reads the server's resident memory (VmRSS in /proc/PID/status).

Writes bench/results/soak.json: requests and errors (any answer but 200, any transport error),
the RSS at the end of the warm-up and at the end, `rss_growth_pct` between them (the median of a
few samples at each end, so one allocator hiccup does not count), the RSS trend after warm-up
in MB per hour, latency percentiles, and the in-flight and queue gauges once the load stops (both
must be back to 0). `passed` is rss_growth_pct < 5 and errors == 0. The run ends after --minutes
whatever happens, and the server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.common import RESULTS, ROOT, Server, app_process, write_result
from bench.serve import sentences, weights_dir

SAMPLE_EVERY_S = 5.0
ENDS = 3  # samples whose median stands for each end of the measured span
MAX_GROWTH_PCT = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10, help="length of the whole run, warm-up included (default 10)")
    p.add_argument("--warmup-minutes", type=float, default=None,
                   help="load before the memory baseline is taken (default: a tenth of the run, at most 1)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--weights", type=Path, default=ROOT / "weights",
                   help="a WEIGHTS_DIR (folder of model folders) or one model folder (default: weights/)")
    p.add_argument("--startup-seconds", type=float, default=180, help="give up if the server is not ready by then")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


# --- the server under test ------------------------------------------------------------------


# --- the load -------------------------------------------------------------------------------


def request_for(i: int, work: list[tuple[str, str, str]]) -> tuple[str, dict]:
    """The i-th request of the mix: (path, JSON body)."""
    text, source, target = work[i % len(work)]
    kind = i % 10
    if kind < 5:
        return "/translate", {"text": text, "source": source, "target": target}
    if kind < 7:
        return "/translate", {"text": text, "source": source, "target": target, "decoding": {"strategy": "greedy"},
                              "output": {"top_k": 5, "attention": "heads", "attention_layers": [0, -1]}}
    if kind == 7:
        texts = [work[(i + k) % len(work)] for k in range(3)]
        same = [t for t, s, _ in texts if s == source] or [text]
        return "/translate", {"text": same, "source": source, "target": target, "output": {"steps": False}}
    if kind == 8:
        return "/translate/stream", {"text": text, "source": source, "target": target,
                                     "decoding": {"strategy": "greedy"}}
    return "/compat/libretranslate/translate", {"q": text, "source": source, "target": target, "alternatives": 1}


async def one_request(client: httpx.AsyncClient, path: str, body: dict) -> str | None:
    """None when the answer is a complete 200, else what went wrong."""
    try:
        if path.endswith("/stream"):
            async with client.stream("POST", path, json=body) as response:
                text = (await response.aread()).decode()
                ok = response.status_code == 200 and "event: done" in text
        else:
            response = await client.post(path, json=body)
            text = response.text
            ok = response.status_code == 200 and bool(response.json())
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        return f"{path}: {type(e).__name__}: {e}"
    return None if ok else f"{path}: {response.status_code} {text[:200]}"


async def run_load(server: Server, clients: int, seconds: float, warmup_s: float) -> dict:
    work = sentences(500)
    latencies: list[float] = []
    errors: list[str] = []
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS MB)
    started = time.monotonic()
    deadline = started + seconds
    counter = iter(range(10**9))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            path, body = request_for(next(counter), work)
            began = time.perf_counter()
            problem = await one_request(client, path, body)
            latencies.append(time.perf_counter() - began)
            if problem:
                errors.append(problem)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - started, server.rss_mb()))
            await asyncio.sleep(SAMPLE_EVERY_S)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=server.url, timeout=180, limits=limits) as client:
        await asyncio.gather(sampler(), *(client_loop(client) for _ in range(clients)))
        gauges = await _gauges(client)
    samples.append((time.monotonic() - started, server.rss_mb()))
    return {"latencies": latencies, "errors": errors, "samples": samples, "gauges": gauges,
            "seconds": time.monotonic() - started}


async def _gauges(client: httpx.AsyncClient) -> dict:
    text = (await client.get("/metrics")).text
    wanted = ("translate_in_flight", "translate_queue_depth")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(wanted)}


# --- the figures ----------------------------------------------------------------------------


def memory_figures(samples: list[tuple[float, float]], warmup_s: float) -> dict:
    after = [(t, rss) for t, rss in samples if t >= warmup_s]
    if len(after) < 2 * ENDS:
        raise RuntimeError(f"only {len(after)} memory samples after the warm-up: run longer")
    start = statistics.median(rss for _, rss in after[:ENDS])
    end = statistics.median(rss for _, rss in after[-ENDS:])
    times, values = [t for t, _ in after], [rss for _, rss in after]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values)) / sum((t - mean_t) ** 2 for t in times)
    return {
        "rss_mb_at_start": round(samples[0][1], 1),
        "rss_mb_after_warmup": round(start, 1),
        "rss_mb_at_end": round(end, 1),
        "rss_mb_peak": round(max(values), 1),
        "rss_growth_pct": round(100 * (end - start) / start, 2),
        "rss_trend_mb_per_hour": round(slope * 3600, 1),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    seconds = args.minutes * 60
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(1.0, args.minutes / 10))
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    weights = weights_dir(args.weights, scratch)
    settings = {"LOG_LEVEL": "warning", "REQUEST_TIMEOUT_S": 120}  # a soak measures leaks, not a slow machine
    with (scratch / "server.log").open("w+b") as log, \
            app_process(weights, log, args.startup_seconds, **settings) as server:
        load = asyncio.run(run_load(server, args.clients, seconds, warmup_s))
        still_running = server.process.poll() is None
        # The server's own warnings and errors (LOG_LEVEL=warning), kept for the report.
        log.seek(0)
        server_log = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()][-20:]
    memory = memory_figures(load["samples"], warmup_s)
    latencies = load["latencies"]
    result = {
        "minutes": args.minutes,
        "warmup_minutes": warmup_s / 60,
        "clients": args.clients,
        "weights": str(args.weights),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / load["seconds"], 2),
        "errors": len(load["errors"]),
        "first_errors": load["errors"][:10],
        "latency_p50_s": round(percentile(latencies, 0.5), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        **memory,
        "gauges_after_load": load["gauges"],
        "server_running_at_end": still_running,
        "server_log_tail": server_log,
        "rss_samples_mb": [[round(t, 1), round(rss, 1)] for t, rss in load["samples"]],
    }
    result["passed"] = (result["errors"] == 0 and memory["rss_growth_pct"] < MAX_GROWTH_PCT and still_running
                        and not any(load["gauges"].values()))
    path = write_result("soak", result, args.out or RESULTS)
    summary = {k: result[k] for k in ("requests", "errors", "rss_mb_after_warmup", "rss_mb_at_end", "rss_growth_pct",
                                      "rss_trend_mb_per_hour", "latency_p50_s", "latency_p95_s", "passed")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
