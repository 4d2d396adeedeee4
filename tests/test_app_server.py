"""`python -m app` under real uvicorn: it starts, gets ready, translates, streams Server-Sent Events
as they are produced, and logs one JSON line per request. The same server runner drives bench.serve."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from bench.serve import server
from tests.app_fixtures import PAIRS, tiny_weights  # noqa: F401 (fixture)

SENTENCE, TRANSLATION = PAIRS[0]


def test_python_m_app_serves_translations_and_streams(tiny_weights, tmp_path):
    log = tmp_path / "server.log"
    with server(tiny_weights, batching=True, startup_seconds=120, log_path=log) as url:
        body = {"text": SENTENCE, "source": "es", "target": "en", "decoding": {"strategy": "greedy"}}
        answer = httpx.post(f"{url}/translate", json=body, timeout=30).json()
        assert answer["translations"][0]["text"] == TRANSLATION

        with httpx.stream("POST", f"{url}/translate/stream", json=body, timeout=30) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event: ")]
        assert events[0] == "start" and events[-1] == "done"
        assert events.count("token") == len(answer["translations"][0]["tokens"])
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request" and line["path"] == "/translate"]
    assert requests and requests[0]["direction"] == "es-en" and requests[0]["status"] == 200


def test_bench_serve_has_help():
    done = subprocess.run([sys.executable, "-m", "bench.serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "batching_speedup_16" in done.stdout
