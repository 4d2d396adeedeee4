"""Throughput and latency of the real HTTP service, with dynamic batching on and off.

    python -m bench.serve [--weights DIR] [--requests 96] [--strategy beam] [--max-seconds 90]
                          [--server-env KEY=VALUE ...] [--name serve]

Starts `python -m app` (uvicorn) on a free port of 127.0.0.1 for each setting, BATCHING=true and
then false, and sends real sentences (data/splits/test.tsv when present, else a built-in list;
both directions) from 1 and from 16 concurrent clients. Every run is bounded by --requests and by
--max-seconds, and the servers are stopped at the end. Writes bench/results/<name>.json with the
sentences/s and p50/p95 latency of each run, and `batching_speedup_16`: sentences/s with batching
over without, at 16 clients. The servers run with their default settings plus --server-env
(e.g. QUANTIZE=none for float32 weights).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import RESULTS, ROOT, app_process, write_result
from model.training.data import read_split

TEST_SPLIT = ROOT / "data" / "splits" / "test.tsv"
CLIENTS = (1, 16)
# Settings the servers inherit that change the figures; recorded with them.
SERVER_ENV = ("DEVICE", "DTYPE", "QUANTIZE", "TORCH_THREADS", "DECODE_LANES", "TRANSLATE_ENGINE_KERNELS",
              "BATCH_WINDOW_MS", "BATCH_QUIET_MS", "BATCH_MAX_ITEMS", "BATCH_MAX_TOKENS")
TARGET_SPEEDUP_16 = 2.0
Work = list[tuple[str, str, str]]  # (text, source language, target language)
Send = Callable[[httpx.AsyncClient, str, str, str], Awaitable[bool]]  # one request; True when answered well

# Used when the data splits are absent: everyday Tatoeba-style sentences, (English, Spanish).
BUILT_IN = [
    ("I'm hungry.", "Tengo hambre."), ("Where is the station?", "¿Dónde está la estación?"),
    ("The cat is sleeping on the sofa.", "El gato está durmiendo en el sofá."),
    ("We have to leave early tomorrow.", "Tenemos que salir temprano mañana."),
    ("My brother lives in Madrid.", "Mi hermano vive en Madrid."), ("It's raining again.", "Está lloviendo otra vez."),
    ("Can you help me, please?", "¿Me puedes ayudar, por favor?"), ("I don't know what to say.", "No sé qué decir."),
    ("She reads a book every week.", "Ella lee un libro cada semana."),
    ("The door is open.", "La puerta está abierta."),
    ("How much does this cost?", "¿Cuánto cuesta esto?"), ("I forgot my keys at home.", "Olvidé mis llaves en casa."),
    ("Tom is older than Mary.", "Tom es mayor que Mary."),
    ("This coffee is too hot.", "Este café está demasiado caliente."),
    ("They played football all afternoon.", "Jugaron al fútbol toda la tarde."),
    ("I want to learn Spanish.", "Quiero aprender español."),
    ("Close the window, please.", "Cierra la ventana, por favor."),
    ("The children are in the garden.", "Los niños están en el jardín."), ("What time is it?", "¿Qué hora es?"),
    ("He works in a hospital.", "Él trabaja en un hospital."),
    ("I like to walk by the sea.", "Me gusta pasear junto al mar."),
    ("Do you speak English?", "¿Hablas inglés?"), ("The train arrives at ten.", "El tren llega a las diez."),
    ("My mother cooks very well.", "Mi madre cocina muy bien."),
    ("I need a new computer.", "Necesito un ordenador nuevo."),
    ("We ate fish for dinner.", "Cenamos pescado."), ("The museum is closed on Mondays.", "El museo cierra los lunes."),
    ("Are you tired?", "¿Estás cansado?"), ("I've never been to Mexico.", "Nunca he estado en México."),
    ("The dog is barking at the mailman.", "El perro le ladra al cartero."),
    ("Please speak more slowly.", "Por favor, habla más despacio."), ("It's a beautiful day.", "Es un día precioso."),
    ("I'll call you tonight.", "Te llamaré esta noche."), ("The shop opens at nine.", "La tienda abre a las nueve."),
    ("She bought a red dress.", "Ella compró un vestido rojo."), ("Where do you work?", "¿Dónde trabajas?"),
    ("I lost my umbrella.", "Perdí mi paraguas."),
    ("Water boils at a hundred degrees.", "El agua hierve a cien grados."),
    ("My sister is a teacher.", "Mi hermana es profesora."), ("Let's go to the beach.", "Vamos a la playa."),
    ("He didn't answer my question.", "No respondió a mi pregunta."), ("The soup is cold.", "La sopa está fría."),
    ("I read the newspaper every morning.", "Leo el periódico todas las mañanas."),
    ("They live near the river.", "Viven cerca del río."), ("I have two brothers.", "Tengo dos hermanos."),
    ("Turn left at the corner.", "Gira a la izquierda en la esquina."),
    ("The film was very boring.", "La película fue muy aburrida."),
    ("Can I open the window?", "¿Puedo abrir la ventana?"), ("We're going to be late.", "Vamos a llegar tarde."),
    ("Thank you for everything.", "Gracias por todo."),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights",
                   help="a WEIGHTS_DIR (folder of model folders) or one model folder (default: weights/)")
    p.add_argument("--requests", type=int, default=96, help="requests per run, one sentence each (default 96)")
    p.add_argument("--strategy", choices=("greedy", "beam"), default="beam", help="decoding strategy (default beam)")
    p.add_argument("--max-seconds", type=float, default=90, help="stop sending after this long per run")
    p.add_argument("--startup-seconds", type=float, default=180, help="give up if a server is not ready by then")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the servers (app/settings.py), repeatable")
    p.add_argument("--name", default="serve", help="results file name without .json (default serve)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


def sentences(limit: int) -> list[tuple[str, str, str]]:
    """(text, source, target), alternating directions, from the test split or the built-in list."""
    pairs = [(row.en, row.es) for row in read_split(TEST_SPLIT)[:limit]] if TEST_SPLIT.is_file() else BUILT_IN
    out = []
    for i in range(limit):
        en, es = pairs[i % len(pairs)]
        out.append((es, "es", "en") if i % 2 == 0 else (en, "en", "es"))
    return out


@contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """Extra environment variables for the processes started inside (bench.serve passes its own on)."""
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def weights_dir(path: Path, scratch: Path) -> Path:
    """WEIGHTS_DIR for the server: `path` itself, or a folder linking to it when it is one model."""
    if not (path / "config.json").is_file():
        return path
    (scratch / path.name).symlink_to(path.resolve())
    return scratch


@contextmanager
def server(weights: Path, batching: bool, startup_seconds: float, log_path: Path | None = None) -> Iterator[str]:
    """`python -m app` on a free local port; yields its base URL once /ready says 200.

    With `log_path`, the server logs every request there; otherwise only warnings, kept in memory."""
    settings = {"BATCHING": str(batching).lower(), "LOG_LEVEL": "info" if log_path else "warning",
                "REQUEST_TIMEOUT_S": 300}
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log, \
            app_process(weights, log, startup_seconds, **settings) as running_server:
        yield running_server.url


def translate_request(url: str, strategy: str) -> Send:
    """POST /translate with one text, no steps or attention: what a plain translation client sends."""
    async def send(client: httpx.AsyncClient, text: str, source: str, target: str) -> bool:
        body = {"text": text, "source": source, "target": target, "decoding": {"strategy": strategy},
                "output": {"steps": False, "attention": "none"}}
        response = await client.post(f"{url}/translate", json=body)
        return response.status_code == 200 and bool(response.json()["translations"][0]["text"])

    return send


async def send_load(send: Send, work: Work, clients: int, max_seconds: float) -> dict:
    """`clients` concurrent callers share `work`, one sentence per request, until done or out of time."""
    latencies: list[float] = []
    failures = 0
    queue = list(reversed(work))
    deadline = time.monotonic() + max_seconds

    async def caller(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while queue and time.monotonic() < deadline:
            text, source, target = queue.pop()
            started = time.perf_counter()
            try:
                ok = await send(client, text, source, target)
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failures += not ok

    async with httpx.AsyncClient(timeout=max_seconds + 60, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(caller(client) for _ in range(clients)))
        seconds = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "clients": clients, "requests": len(latencies), "failures": failures, "seconds": round(seconds, 3),
        "requests_per_s": round((len(latencies) - failures) / seconds, 2),
        "p50_ms": round(1000 * cuts[49], 1), "p95_ms": round(1000 * cuts[94], 1), "p99_ms": round(1000 * cuts[98], 1),
    }



def run_all(args: argparse.Namespace, weights: Path) -> dict:
    work = sentences(args.requests)
    runs, served = [], {}
    for batching in (True, False):
        with server(weights, batching, args.startup_seconds) as url:
            served = httpx.get(f"{url}/models", timeout=10).json()[0]
            send = translate_request(url, args.strategy)
            asyncio.run(send_load(send, work[:4], 1, args.max_seconds))  # warm the process
            for clients in CLIENTS:
                run = {"batching": batching, **asyncio.run(send_load(send, work, clients, args.max_seconds))}
                runs.append(run)
                print(f"batching={'on ' if batching else 'off'} clients={clients:>2}: {run['requests_per_s']:7.2f} "
                      f"sentences/s  p50 {run['p50_ms']:8.1f} ms  p95 {run['p95_ms']} ms  "
                      f"({run['requests']} requests, {run['failures']} failed)", flush=True)
    rate = {(r["batching"], r["clients"]): r["requests_per_s"] for r in runs}
    return {
        "model": served["name"], "device": served["device"], "dtype": served["dtype"],
        "quantization": served["quantization"], "strategy": args.strategy,
        "sentences": "data/splits/test.tsv" if TEST_SPLIT.is_file() else "built-in list",
        "server_env": {name: os.environ[name] for name in SERVER_ENV if name in os.environ},
        "runs": runs,
        **{f"batching_speedup_{c}": round(rate[(True, c)] / rate[(False, c)], 2) for c in CLIENTS},
        "target_batching_speedup_16": TARGET_SPEEDUP_16,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bad := [item for item in args.server_env if "=" not in item]:
        raise SystemExit(f"--server-env wants KEY=VALUE, not {bad}")
    with tempfile.TemporaryDirectory() as scratch, environment(dict(item.split("=", 1) for item in args.server_env)):
        weights = weights_dir(args.weights, Path(scratch))
        if not any((p / "config.json").is_file() for p in weights.glob("*")):
            raise SystemExit(f"no model folder under {args.weights}; pass --weights DIR")
        result = run_all(args, weights)
    result["command"] = " ".join(["python -m bench.serve", *(sys.argv[1:] if argv is None else argv)])
    path = write_result(args.name, result, args.out or RESULTS)
    print(f"batching speedup at 16 clients: {result['batching_speedup_16']}x (target {TARGET_SPEEDUP_16:g}x); "
          f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
