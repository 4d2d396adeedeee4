"""A help page of ~2,000 characters, end to end, against `python -m app` on 127.0.0.1.

    python -m bench.long_document [--data data] [--chars 2000] [--repeats 3]

The page is built from consecutive documentation paragraphs of the reproducible test split
(prose rows of gimp-help and debian-reference, which the model never trained on), as HTML (one
`<p>` each, with a `<b>` around each paragraph's first word) and as plain text (paragraphs separated
by blank lines), cut to at most --chars characters (MAX_CHARS is 2,000). Each is POSTed to a fresh
server with the default settings (MAX_QUEUE 256, greedy, int8 on CPU), after one warm-up request;
the fastest of --repeats counts. A text of 333 one-word sentences is sent too: it must be answered
200 by an idle server, as every text within the character limit must. Writes
bench/results/long_document.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, app_process, cpu_info, write_result
from model.training.data import read_split


def paragraphs(split: Path, source_prefix: str = "doc:") -> list[tuple[str, str]]:
    """(Spanish, English) documentation paragraphs of the split, in file order."""
    return [(r.es, r.en) for r in read_split(split) if r.source.startswith(source_prefix) and len(r.es) > 80]


def page(texts: list[str], chars: int, html: bool) -> str:
    """As many consecutive paragraphs as fit in `chars` characters."""
    out = ""
    for text in texts:
        if html:
            first, _, rest = text.partition(" ")
            block = f"<p><b>{first}</b> {rest}</p>\n"
        else:
            block = text + "\n\n"
        if len(out) + len(block) > chars:
            break
        out += block
    return out


def timed_post(client: httpx.Client, url: str, body: dict, repeats: int) -> tuple[float, dict]:
    client.post(url, json=body).raise_for_status()  # warm-up
    best, answer = float("inf"), {}
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.post(url, json=body)
        best = min(best, time.perf_counter() - started)
        response.raise_for_status()
        answer = response.json()
    return best, answer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.long_document", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data",
                   help="folder written by `python -m model.training.data`")
    p.add_argument("--weights", type=Path, default=ROOT / "weights")
    p.add_argument("--chars", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    spanish = [es for es, _ in paragraphs(args.data / "splits" / "test.tsv")]
    cases = {
        "html help page": {"text": page(spanish, args.chars, html=True), "format": "html"},
        "text help page": {"text": page(spanish, args.chars, html=False)},
        "333 short sentences": {"text": "Hola. " * 333},
    }
    results = {}
    with tempfile.TemporaryFile() as log, app_process(args.weights, log) as server, \
            httpx.Client(base_url=server.url, timeout=300) as client:
        for name, body in cases.items():
            request = {"source": "es", "target": "en", "output": {"steps": False, "attention": "none"}, **body}
            seconds, answer = timed_post(client, "/translate", request, args.repeats)
            [entry] = answer["translations"]
            results[name] = {"characters": len(body["text"]), "sentences": len(entry.get("segments") or [entry]),
                             "seconds": round(seconds, 3), "status": 200, "output_characters": len(entry["text"]),
                             "output_start": entry["text"][:300]}
            print(f"{name:>20}: {results[name]['characters']} characters, {results[name]['sentences']} sentences, "
                  f"{seconds:.2f} s", flush=True)
    write_result("long_document", {"command": " ".join(["python -m bench.long_document",
                                                        *(sys.argv[1:] if argv is None else argv)]),
                                   "cpu": cpu_info(), "cases": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
