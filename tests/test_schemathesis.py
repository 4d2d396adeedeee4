"""Schemathesis fuzzes every operation of the live server's own /openapi.json: valid and invalid
requests generated from the schema (its examples, boundary values, then random data), sent to
`python -m app` under uvicorn on 127.0.0.1 with the tiny model. No answer may be a 5xx, and every
answer must be what the schema documents: a listed status code, content type and body schema, with
Retry-After on 429 and 503. A second server has API keys and a rate limit switched on.

Schemathesis runs as its CLI (`python -m schemathesis.cli run`): its pytest plugin's lazy schema
loading does not work with this pytest. Bounded: FUZZ_EXAMPLES cases per operation (a third of it
with keys, where most answers are 429s anyway), a fixed seed, no shrinking, small limits so each
translation is quick, and a hard time limit per run (about 10 s each on an idle 2-core machine).

Not checked: `positive_data_acceptance` (a schema-valid request may break a rule the schema cannot
state, e.g. source == target, or beam_size above alternatives, and gets a documented 422) and
`negative_data_rejection` (pydantic's lax mode accepts "2" or true for an integer field).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bench.common import app_process
from tests.app_fixtures import tiny_weights  # noqa: F401 (fixture)

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
RUN_SECONDS = 90
CHECKS = ["not_a_server_error", "negative_data_rejection", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "unsupported_method",
          "allow_header_conformance"]

# Small limits keep each generated translation cheap; whatever lies beyond them is a documented 422.
LIMITS = {"MAX_CHARS": 200, "MAX_ITEMS": 4, "MAX_BEAM_SIZE": 3, "MAX_TOP_K": 3, "MAX_NEW_TOKENS": 12,
          "MAX_SOURCE_TOKENS": 64, "BATCH_WINDOW_MS": 0, "LOG_LEVEL": "warning", "TORCH_THREADS": 1}
KEY = "fuzz-key-1"

SETUPS = {
    "open": ({}, ["--max-examples", str(FUZZ_EXAMPLES)]),
    # Sends the key, so requests get through until the rate limit answers 429s with Retry-After;
    # ignored_auth also sends requests without it, which must get a 401.
    "keys-and-rate-limit": ({"API_KEYS": f"other-key,{KEY}", "RATE_LIMIT_PER_MINUTE": 300},
                            ["--max-examples", str(max(1, FUZZ_EXAMPLES // 3)), "--header", f"X-API-Key: {KEY}",
                             "--checks", "ignored_auth"]),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(setup, tiny_weights, tmp_path):
    settings, extra = SETUPS[setup]
    log_path = tmp_path / "server.log"
    with log_path.open("w+b") as log, \
            app_process(tiny_weights, log, startup_seconds=120, DOCUMENTS_DIR=tmp_path / "jobs", **LIMITS,
                        **settings) as server:
        command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
                   "--checks", ",".join(CHECKS), "--mode", "all", "--seed", "20261127", "--no-shrink",
                   "--workers", "1", "--request-timeout", "30", "--suppress-health-check", "all", *extra]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_SECONDS)
        alive = server.process.poll() is None
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    selected = re.search(r"Selected: (\d+)/(\d+)", done.stdout)
    assert selected and selected[1] == selected[2] and f"Tested: {selected[1]}" in done.stdout, report
    assert alive, "the server died under fuzzing"
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
