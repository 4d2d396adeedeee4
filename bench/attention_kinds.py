"""What asking for every attention map costs: a plain translation against every kind, layer and head.

    python -m bench.attention_kinds [--weights weights/es-en-multidomain] [--repeats 7]

Serves the shipped model in-process (the real app, its lifespan and JSON encoding, through httpx)
and times `POST /translate` for a 40-token Spanish sentence, greedy and beam 4: plain (steps and
top-3, last-layer mean cross-attention, the default) against `attention: heads` with
`attention_kinds` cross, encoder and decoder over every layer. The two requests alternate and the
median of --repeats counts, so a noisy shared machine slows both alike. Writes
bench/results/attention_kinds.json with each time, the answer sizes, and `ratio_all_maps_<strategy>`
(all maps / plain; the target is at most 2).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

from app.main import create_app
from app.settings import Settings
from bench.common import cpu_info, write_result

ROOT = Path(__file__).resolve().parents[1]
# 40 tokens with the shipped tokenizer (checked at run time).
SENTENCE = ("El gato negro de mi vecina duerme todas las tardes en el sofá del salón, mientras los niños "
            "juegan en el jardín y su madre prepara la cena para toda la familia.")
TARGET_RATIO = 2.0


async def timed(client: httpx.AsyncClient, body: dict) -> tuple[float, int]:
    start = time.perf_counter()
    response = await client.post("/translate", json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, len(response.content)


async def measure(weights: Path, repeats: int) -> dict:
    app = create_app(Settings(weights_dir=weights.parent, batching=False))
    results = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=300) as client:
            while (await client.get("/ready")).status_code != 200:
                await asyncio.sleep(0.1)
            models = (await client.get("/models")).json()
            cfg = next(m for m in models if m["name"] == weights.name)["config"]
            plain_request = {"text": SENTENCE, "source": "es", "target": "en"}
            answer = (await client.post("/translate", json=plain_request)).json()
            source_tokens = answer["translations"][0]["source_tokens"]
            for strategy in ("greedy", "beam"):
                plain = {**plain_request, "decoding": {"strategy": strategy}}
                every = {**plain, "output": {
                    "attention": "heads", "attention_kinds": ["cross", "encoder", "decoder"],
                    "attention_layers": list(range(cfg["decoder_layers"])),
                    "encoder_attention_layers": list(range(cfg["encoder_layers"])),
                    "decoder_attention_layers": list(range(cfg["decoder_layers"]))}}
                await timed(client, plain), await timed(client, every)  # warm both paths
                times = {"plain": [], "all_maps": []}
                sizes = {}
                for _ in range(repeats):
                    for name, body in (("plain", plain), ("all_maps", every)):
                        seconds, sizes[name] = await timed(client, body)
                        times[name].append(seconds)
                medians = {name: statistics.median(values) for name, values in times.items()}
                results[strategy] = {"median_s": medians, "answer_bytes": sizes,
                                     "ratio": medians["all_maps"] / medians["plain"]}
                print(f"{strategy:6s} plain {medians['plain'] * 1000:7.1f} ms ({sizes['plain']:,} B)   all maps "
                      f"{medians['all_maps'] * 1000:7.1f} ms ({sizes['all_maps']:,} B)   "
                      f"x{results[strategy]['ratio']:.2f}")
    return {"source_tokens": len(source_tokens), **results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attention_kinds", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "weights" / "es-en-multidomain")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    cpu = cpu_info()
    print(f"on {cpu['model_name']} (AVX-512: {cpu['avx512']})")
    figures = asyncio.run(measure(args.weights, args.repeats))
    path = write_result("attention_kinds", {
        "command": "python -m bench.attention_kinds " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu_info": cpu, **figures, "target_ratio": TARGET_RATIO,
        **{f"ratio_all_maps_{s}": figures[s]["ratio"] for s in ("greedy", "beam")},
    })
    print(f"{figures['source_tokens']} source tokens; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
