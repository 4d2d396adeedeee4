"""HTTP throughput and latency of our service against Apertium's server (APy), side by side.

    python -m bench.serve_peers [--weights weights] [--requests 400] [--rounds 2] [--max-seconds 60]
                                [--server-env KEY=VALUE ...]

Starts `python -m app` (greedy decoding, dynamic batching on) and `apertium-apy` (Debian's
package, its default settings), both on free ports of 127.0.0.1 only, and sends both the same
Tatoeba test sentences, one per request, alternating es->en and en->es, from 1, 8 and 32
concurrent clients; at each client count the two servers take turns for --rounds rounds, so that
both meet the same moments of a shared machine, and each one's best round is its figure. Our
server runs with its default settings (int8 weights on CPU, torch's own thread count) unless
--server-env says otherwise.

Every run is bounded by --requests and --max-seconds, and the servers are stopped at the end.
Writes bench/results/serve_peers.json (requests/s and p50/p95/p99 latency of every run, the best
round per server and client count, `ours_rps_8` and `apertium_rps_8`) and a plot of latency
against concurrency, bench/results/serve_peers.png. Apertium and matplotlib need `make peers`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import RESULTS, free_port, running, write_result
from bench.serve import Send, Work, environment, send_load, server, translate_request, weights_dir
from model.training.data import read_split

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "splits" / "test.tsv"
CLIENTS = (1, 8, 32)
APY_MODES = Path("/usr/share/apertium/modes")
APY_PAIRS = {("es", "en"): "spa|eng", ("en", "es"): "eng|spa"}
# APy has no option for its listen address (it binds every interface), so it is started through
# this launcher, which pins tornado's bind() to the loopback address before APy's own main runs.
APY_LAUNCHER = """
import sys
import tornado.tcpserver
bind = tornado.tcpserver.TCPServer.bind
tornado.tcpserver.TCPServer.bind = lambda self, port, address=None, *a, **k: bind(self, port, "127.0.0.1", *a, **k)
from apertium_apy.apy import main
sys.argv = ["apertium-apy", *sys.argv[1:]]
main()
"""


def sentences(limit: int, split: Path = TEST_SPLIT) -> Work:
    """Tatoeba test sentences, alternating es->en and en->es."""
    rows = [r for r in read_split(split) if r.source == "tatoeba"][:limit]
    if not rows:
        raise SystemExit(f"no Tatoeba rows in {split}: run `python -m model.training.data` first")
    return [(r.es, "es", "en") if i % 2 == 0 else (r.en, "en", "es") for i, r in enumerate(rows)]


def apertium_request(url: str) -> Send:
    async def send(client: httpx.AsyncClient, text: str, source: str, target: str) -> bool:
        form = {"langpair": APY_PAIRS[(source, target)], "q": text, "markUnknown": "no"}
        response = await client.post(f"{url}/translate", data=form)
        return response.status_code == 200 and response.json().get("responseStatus") == 200

    return send


@contextmanager
def apertium_server(startup_seconds: float) -> Iterator[str]:
    """APy on a free port of 127.0.0.1; yields its base URL once it lists its pairs."""
    if shutil.which("apertium") is None or not APY_MODES.is_dir():
        raise SystemExit("Apertium and its es-en pair are not installed: run `make peers`")
    port = free_port()
    # Debian's APy runs on the system Python, where its package (and tornado) live.
    command = ["/usr/bin/python3", "-c", APY_LAUNCHER, "-p", str(port), str(APY_MODES)]
    with tempfile.TemporaryFile() as log, \
            running(command, port, "/listPairs", log, startup_seconds, {"LC_ALL": "C.UTF-8"}) as apy:
        yield apy.url


def warm_up(send: Send, work: Work, max_seconds: float) -> None:
    asyncio.run(send_load(send, work[:8], 2, max_seconds))  # both directions' pipelines and caches


def measure(servers: list[tuple[str, Send]], work: Work, rounds: int, max_seconds: float) -> list[dict]:
    """Every client count, `rounds` times, the servers taking turns (the order flips every round),
    so that both see the same moments of a shared, noisy machine."""
    runs = []
    for clients in CLIENTS:
        for round_ in range(rounds):
            for name, send in servers if round_ % 2 == 0 else servers[::-1]:
                run = {"server": name, "round": round_, **asyncio.run(send_load(send, work, clients, max_seconds))}
                runs.append(run)
                print(f"{name:>8} clients={clients:>2} round {round_}: {run['requests_per_s']:7.2f} requests/s  "
                      f"p50 {run['p50_ms']:7.1f} ms  p95 {run['p95_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  "
                      f"({run['requests']} requests, {run['failures']} failed)", flush=True)
    return runs


def best_runs(runs: list[dict]) -> dict[tuple[str, int], dict]:
    """Per server and client count, the round with the most requests/s: the one least disturbed."""
    best: dict[tuple[str, int], dict] = {}
    for run in runs:
        key = (run["server"], run["clients"])
        if key not in best or run["requests_per_s"] > best[key]["requests_per_s"]:
            best[key] = run
    return best


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, rate) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (("ours", "tab:blue"), ("apertium", "tab:orange")):
        mine = [r for r in runs if r["server"] == name]
        clients = [r["clients"] for r in mine]
        for key, style in (("p50_ms", "-o"), ("p95_ms", "--s"), ("p99_ms", ":^")):
            latency.plot(clients, [r[key] for r in mine], style, color=color, label=f"{name} {key.removesuffix('_ms')}")
        rate.plot(clients, [r["requests_per_s"] for r in mine], "-o", color=color, label=name)
    for ax in (latency, rate):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(CLIENTS), [str(c) for c in CLIENTS])
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    latency.set_yscale("log")
    latency.set_ylabel("latency per request (ms)")
    latency.set_title("Latency, one sentence per request")
    rate.set_ylabel("requests/s")
    rate.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.serve_peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=ROOT / "weights",
                   help="a WEIGHTS_DIR (folder of model folders) or one model folder (default: weights/)")
    p.add_argument("--split", type=Path, default=TEST_SPLIT, help="test split TSV (domain, source, en, es)")
    p.add_argument("--requests", type=int, default=400, help="requests per run, one sentence each (default 400)")
    p.add_argument("--rounds", type=int, default=2, help="runs per server and client count, taking turns (default 2)")
    p.add_argument("--max-seconds", type=float, default=60, help="stop sending after this long per run (default 60)")
    p.add_argument("--startup-seconds", type=float, default=180, help="give up if a server is not ready by then")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for our server (app/settings.py), repeatable; default: none")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bad := [item for item in args.server_env if "=" not in item]:
        raise SystemExit(f"--server-env wants KEY=VALUE, not {bad}")
    server_env = dict(item.split("=", 1) for item in args.server_env)
    work = sentences(args.requests, args.split)
    with tempfile.TemporaryDirectory() as scratch, environment(server_env):
        weights = weights_dir(args.weights, Path(scratch))
        # Both servers stay up for the whole run; the idle one waits on its socket.
        with server(weights, batching=True, startup_seconds=args.startup_seconds) as ours, \
                apertium_server(args.startup_seconds) as apy:
            served = httpx.get(f"{ours}/models", timeout=10).json()[0]
            servers = [("ours", translate_request(ours, "greedy")), ("apertium", apertium_request(apy))]
            for _, send in servers:
                warm_up(send, work, args.max_seconds)
            runs = measure(servers, work, args.rounds, args.max_seconds)
    best = best_runs(runs)
    rate = {key: run["requests_per_s"] for key, run in best.items()}
    out = args.out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": served["name"], "device": served["device"], "dtype": served["dtype"],
        "quantization": served["quantization"], "strategy": "greedy",
        "server_env": server_env,
        "sentences": "Tatoeba rows of "
                     + str(args.split.relative_to(ROOT) if args.split.is_relative_to(ROOT) else args.split),
        "apertium": "apertium-apy with its default settings, markUnknown=no",
        **{f"{name}_rps_{c}": rate[(name, c)] for name in ("ours", "apertium") for c in CLIENTS},
        "ours_at_least_apertium_8": rate[("ours", 8)] >= rate[("apertium", 8)],
        "rounds": args.rounds,
        "best": [best[(name, c)] for name in ("ours", "apertium") for c in CLIENTS],
        "runs": runs,
        "plot": "serve_peers.png",
        "command": " ".join(["python -m bench.serve_peers", *(sys.argv[1:] if argv is None else argv)]),
    }
    path = write_result("serve_peers", result, out)  # before the plot, so a missing matplotlib loses no figure
    plot(list(best.values()), out / "serve_peers.png")
    print(f"at 8 clients: ours {result['ours_rps_8']} requests/s, Apertium {result['apertium_rps_8']}; wrote {path} "
          f"and {out / 'serve_peers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
