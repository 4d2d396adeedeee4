"""Holding up under overload and faults: a flood past MAX_QUEUE is refused fast with Retry-After while
what was admitted is answered right; a request whose deadline passes mid-decode gets a 503 and gives
its place back without disturbing the texts decoded beside it; a broken model folder stops the
server with one clear log line; SIGTERM drains the requests in flight and refuses new ones; and no
pickle is ever loaded.

The overload, startup and shutdown tests run `python -m app` under real uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.common import ROOT, app_process, free_port
from model.search.greedy import GreedySearch
from tests.app_fixtures import (  # noqa: F401 (fixtures)
    MODEL_NAME,
    PAIRS,
    anyio_backend,
    one_torch_thread,
    serving,
    tiny_weights,
)

FLOOD, QUEUE = 200, 32


def _body(text: str | list[str]) -> dict:
    return {"text": text, "source": "es", "target": "en", "decoding": {"strategy": "greedy"},
            "output": {"steps": False, "attention": "none"}}


# --- overload --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(tiny_weights, tmp_path_factory):
    """A server whose MAX_QUEUE is 32 and whose batches wait 3 s for company (more than 32 texts
    could fill one), so what it admits stays queued while a flood arrives."""
    log_path = tmp_path_factory.mktemp("overload") / "server.log"
    settings = {"MAX_QUEUE": QUEUE, "BATCH_WINDOW_MS": 3000, "BATCH_QUIET_MS": 3000, "CONTINUOUS_BATCHING": "false",
                "BATCH_MAX_ITEMS": 64, "REQUEST_TIMEOUT_S": 60, "LOG_LEVEL": "warning", "TORCH_THREADS": 1}
    with log_path.open("w+b") as log, app_process(tiny_weights, log, startup_seconds=120, **settings) as server:
        yield server
    assert "Traceback" not in log_path.read_text()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict
    seconds: float  # from opening the connection to the end of the answer


async def _raw_post(url: str, body: dict) -> Answer:
    """POST /translate over a fresh connection with a bare HTTP/1.1 client: 200 httpx requests at
    once spend more time in the client than the server takes to answer them."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    request = (f"POST /translate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head, _, rest = (await reader.read()).partition(b"\r\n\r\n")
    finally:
        writer.close()
    seconds = time.perf_counter() - began
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return Answer(int(status_line.split()[1]), headers, json.loads(rest), seconds)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def test_a_flood_past_the_queue_is_refused_fast_and_what_was_admitted_is_answered_right(slow_server):
    texts = [es for es, _ in PAIRS]

    async def scenario():
        async with httpx.AsyncClient(base_url=slow_server.url, timeout=60) as client:
            reference = (await client.post("/translate", json=_body(texts))).json()["translations"]
            flood = [asyncio.create_task(_raw_post(slow_server.url, _body(texts[i % len(texts)])))
                     for i in range(FLOOD)]
            await asyncio.sleep(0.5)
            ready_during = await client.get("/ready")
            answers = await asyncio.gather(*flood)
            after = await client.post("/translate", json=_body(texts[0]))
            ready_after = await client.get("/ready")
            metrics = (await client.get("/metrics")).text
        return reference, answers, ready_during, after, ready_after, metrics

    reference, answers, ready_during, after, ready_after, metrics = asyncio.run(scenario())
    expected = {es: t["text"] for es, t in zip(texts, reference)}
    accepted = [(i, a) for i, a in enumerate(answers) if a.status == 200]
    refused = [a for a in answers if a.status in (429, 503)]
    assert len(accepted) + len(refused) == FLOOD, sorted({a.status for a in answers})
    assert QUEUE <= len(accepted) < FLOOD // 2 and refused
    for answer in refused:
        assert int(answer.headers["retry-after"]) >= 1 and "MAX_QUEUE" in answer.body["detail"]
        assert answer.seconds < 1.0, f"a refusal took {answer.seconds:.2f} s"
    for i, answer in accepted:
        assert answer.body["translations"][0]["text"] == expected[texts[i % len(texts)]]
    assert ready_during.status_code == 200 and ready_after.status_code == 200
    assert after.status_code == 200 and after.json()["translations"][0]["text"] == expected[texts[0]]
    assert "translate_in_flight 0.0" in metrics and "translate_queue_depth 0.0" in metrics


def test_a_chunked_body_over_the_limit_is_refused_before_parsing(slow_server):
    def chunks():
        yield b'{"text": "'
        for _ in range(64):
            yield b"a" * 16384  # 1 MiB in all, past MAX_BODY_BYTES (512 KiB), without a Content-Length
        yield b'", "source": "es", "target": "en"}'

    response = httpx.post(f"{slow_server.url}/translate", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and "MAX_BODY_BYTES" in response.json()["detail"]


# --- a deadline that passes mid-decode ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_deadline_passing_mid_decode_gets_503_frees_its_place_and_spares_its_neighbours(tiny_weights):
    """A is admitted first, B a second later; both leave in one batch. The decode is held (on the
    decode thread) until A's deadline has passed and A has its 503: A's place is then free for
    a new request C although its batch is still running, and B and C get the right translations."""
    (first, _), (second, second_en), (third, third_en) = PAIRS[:3]
    timeout = 3.0
    async with serving(tiny_weights, max_queue=2, request_timeout_s=timeout, batch_window_ms=2000,
                       batch_quiet_ms=2000, continuous_batching=False) as client:
        translator = client.app.state.translator
        decode, batches = translator.decoder.batcher.run_batch, []
        started, release = threading.Event(), threading.Event()

        def held_decode(items):
            batches.append(len(items))
            started.set()
            release.wait(30)  # a long decode: it runs past A's deadline
            return decode(items)

        translator.decoder.batcher.run_batch = held_decode
        a = asyncio.create_task(client.post("/translate", json=_body(first)))
        await _until(lambda: translator.decoder.admission.used == 1)
        await asyncio.sleep(1.0)  # B's deadline comes a second after A's; both wait for the 2 s window
        b_sent = time.monotonic()
        b = asyncio.create_task(client.post("/translate", json=_body(second)))
        await _until(lambda: len(translator.decoder.batcher.waiting) == 2)

        a_answer = await a
        assert started.is_set(), "A timed out before its batch started decoding"
        assert a_answer.status_code == 503 and int(a_answer.headers["retry-after"]) >= 1
        assert "REQUEST_TIMEOUT_S" in a_answer.json()["detail"]
        assert not b.done() and translator.decoder.admission.used == 1  # A's place is free, B's is held
        c = asyncio.create_task(client.post("/translate", json=_body(third)))  # admitted in A's place
        await _until(lambda: len(translator.decoder.batcher.waiting) == 1)
        assert time.monotonic() - b_sent < timeout - 0.3, "B's own deadline is near: the machine is too slow"
        release.set()
        b_answer, c_answer = await b, await c
        translator.decoder.batcher.run_batch = decode
        assert batches[0] == 2, "A and B were not decoded in one batch"
        for answer, translation in ((b_answer, second_en), (c_answer, third_en)):
            assert answer.status_code == 200, answer.text
            got = answer.json()["translations"][0]
            assert got["text"] == translation and got["finish_reason"] == "stop"
        assert translator.decoder.admission.used == 0 and translator.decoder.batcher.waiting == []
        metrics = (await client.get("/metrics")).text
        assert 'translate_rejected_total{reason="timeout"} 1.0' in metrics


@pytest.mark.anyio
async def test_a_greedy_text_timing_out_leaves_the_running_batch_and_its_neighbours_finish(tiny_weights, monkeypatch):
    """Continuous batching: A decodes alone until B joins its running batch a second later; the
    steps are then held until A's deadline passes. A gets its 503 and its row leaves the batch; B,
    whose deadline is a second later, goes on alone and gets the right translation."""
    (first, _), (second, second_en) = PAIRS[:2]
    b_queued, both_running, release = threading.Event(), threading.Event(), threading.Event()
    rows_seen: list[int] = []
    step = GreedySearch.step

    def held_step(self):
        rows_seen.append(len(self))
        if len(self) == 1 and not b_queued.is_set():
            b_queued.wait(30)  # A alone: keep it decoding until B is queued
        elif len(self) == 2:
            both_running.set()
            release.wait(30)  # a long step: it runs past A's deadline
        return step(self)

    async with serving(tiny_weights, request_timeout_s=2.0) as client:
        # Held from here: the warm-up at startup runs greedy search too.
        monkeypatch.setattr(GreedySearch, "step", held_step)
        translator = client.app.state.translator
        a = asyncio.create_task(client.post("/translate", json=_body(first)))
        await _until(lambda: rows_seen)
        await asyncio.sleep(1.0)
        b = asyncio.create_task(client.post("/translate", json=_body(second)))
        await _until(lambda: translator.decoder.continuous._waiting)
        b_queued.set()
        assert await asyncio.to_thread(both_running.wait, 10)
        a_answer = await a
        assert a_answer.status_code == 503 and "REQUEST_TIMEOUT_S" in a_answer.json()["detail"]
        release.set()
        b_answer = await b
        assert b_answer.status_code == 200 and b_answer.json()["translations"][0]["text"] == second_en
        await _until(lambda: not translator.decoder.continuous._has_work())
        assert rows_seen[-1] == 1  # A's row left; B finished alone
        assert translator.decoder.admission.used == 0 and translator.decoder.continuous._futures == {}


async def _until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# --- faults at startup -----------------------------------------------------------------------


def _copy_model(tiny_weights: Path, root: Path) -> Path:
    """A WEIGHTS_DIR with its own copy of the tiny model, to break."""
    shutil.copytree(tiny_weights / MODEL_NAME, root / MODEL_NAME)
    return root / MODEL_NAME


def _set_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if key in config["model"]:
            config["model"][key] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _missing_weights_dir(tiny_weights: Path, root: Path) -> tuple[Path, list[str]]:
    return root / "no-such-folder", ["no-such-folder", "WEIGHTS_DIR", "does not exist"]


def _missing_weights_file(tiny_weights: Path, root: Path) -> tuple[Path, list[str]]:
    (_copy_model(tiny_weights, root) / "model.safetensors").unlink()
    return root, ["model.safetensors", "missing"]


def _truncated_weights(tiny_weights: Path, root: Path) -> tuple[Path, list[str]]:
    """Cut in half, with the sha256 in config.json updated to match, so the reader itself sees it."""
    from model.checkpoint import sha256_file

    folder = _copy_model(tiny_weights, root)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _set_config(folder, weights_sha256=sha256_file(weights))
    return root, ["model.safetensors", "cannot read weights"]


def _wrong_sha256(tiny_weights: Path, root: Path) -> tuple[Path, list[str]]:
    _set_config(_copy_model(tiny_weights, root), weights_sha256="0" * 64)
    return root, ["model.safetensors", "sha256", "does not match"]


def _tokenizer_and_config_disagree(tiny_weights: Path, root: Path) -> tuple[Path, list[str]]:
    folder = _copy_model(tiny_weights, root)
    vocab = json.loads((folder / "config.json").read_text())["model"]["vocab_size"]
    _set_config(folder, vocab_size=vocab + 100)
    return root, [MODEL_NAME, "tokenizer has", f"config expects {vocab + 100}"]


FAULTS = [_missing_weights_dir, _missing_weights_file, _truncated_weights, _wrong_sha256,
          _tokenizer_and_config_disagree]


def test_each_broken_model_folder_exits_non_zero_with_one_clear_line(tiny_weights, tmp_path):
    """All five servers start at once (each pays for importing torch); each must exit by itself."""
    runs = []
    for fault in FAULTS:
        root = tmp_path / fault.__name__.strip("_")
        root.mkdir()
        weights, words = fault(tiny_weights, root)
        env = {"HOST": "127.0.0.1", "PORT": str(free_port()), "WEIGHTS_DIR": str(weights), "TORCH_THREADS": "1"}
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env={**os.environ, **env},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs.append((fault.__name__, process, words))
    for name, process, words in runs:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"{name}: the server kept running with a broken model")
        assert process.returncode == 1, f"{name}: exit status {process.returncode}\n{stderr[-2000:]}"
        assert "Traceback" not in stderr + stdout, f"{name}:\n{stderr}"
        lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert len(lines) == len(stderr.splitlines()), f"{name}: a line that is not JSON:\n{stderr}"
        errors = [line["message"] for line in lines if line["level"] in ("ERROR", "CRITICAL")]
        assert len(errors) == 1 and "exception" not in json.dumps(lines), f"{name}:\n{stderr}"
        assert all(word in errors[0] for word in words), f"{name}: {errors[0]!r} lacks {words}"
        assert "\n" not in errors[0]


def test_without_exit_on_load_error_ready_stays_503_and_says_why(tiny_weights, tmp_path):
    weights, _ = _wrong_sha256(tiny_weights, tmp_path)
    with (tmp_path / "server.log").open("w+b") as log, \
            app_process(weights, log, wait=False, EXIT_ON_LOAD_ERROR="false", TORCH_THREADS=1) as server:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and server.process.poll() is None, "no 503 with the reason"
            try:
                response = httpx.get(f"{server.url}/ready", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if "could be loaded" in response.text:
                break
            time.sleep(0.2)
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert "/" not in response.json()["detail"].replace("/ready", "")  # no path leaks out
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert httpx.post(f"{server.url}/translate", json=_body("hola"), timeout=5).status_code == 503


# --- graceful shutdown -----------------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(tiny_weights, tmp_path):
    text, translation = PAIRS[0]
    settings = {"SHUTDOWN_GRACE_S": 20, "BATCH_WINDOW_MS": 2500, "BATCH_QUIET_MS": 2500, "CONTINUOUS_BATCHING": "false",
                "BATCH_MAX_ITEMS": 64, "LOG_LEVEL": "info", "TORCH_THREADS": 1}
    with (tmp_path / "server.log").open("w+b") as log, app_process(tiny_weights, log, **settings) as server:
        in_flight: dict = {}
        sender = threading.Thread(target=lambda: in_flight.update(
            response=httpx.post(f"{server.url}/translate", json=_body(text), timeout=30)))
        sender.start()
        _wait_in_flight(server.url, 1)
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{server.url}/translate", json=_body(text), timeout=5)
        sender.join(30)
        returncode = server.process.wait(30)
        exited_after = time.monotonic() - stopped_at
    response = in_flight["response"]
    assert response.status_code == 200 and response.json()["translations"][0]["text"] == translation
    assert returncode in (0, -signal.SIGTERM) and exited_after < 20
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_sigterm_exits_within_the_grace_period_when_a_request_would_take_longer(tiny_weights, tmp_path):
    settings = {"SHUTDOWN_GRACE_S": 1, "BATCH_WINDOW_MS": 60_000, "BATCH_QUIET_MS": 60_000,
                "CONTINUOUS_BATCHING": "false", "BATCH_MAX_ITEMS": 64, "TORCH_THREADS": 1}
    with (tmp_path / "server.log").open("w+b") as log, app_process(tiny_weights, log, **settings) as server:
        outcome: dict = {}

        def send():
            try:
                outcome["response"] = httpx.post(f"{server.url}/translate", json=_body(PAIRS[0][0]), timeout=30)
            except httpx.HTTPError as e:
                outcome["error"] = e

        sender = threading.Thread(target=send)
        sender.start()
        _wait_in_flight(server.url, 1)
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(30)
        exited_after = time.monotonic() - stopped_at
        sender.join(30)
    assert returncode in (0, -signal.SIGTERM)
    assert exited_after < 1 + 5, f"exited {exited_after:.1f} s after SIGTERM with SHUTDOWN_GRACE_S=1"
    assert "error" in outcome or outcome["response"].status_code >= 500  # cut off: never a 200


def _wait_in_flight(url: str, n: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        if re.search(rf"^translate_in_flight {n}\.0$", metrics, re.M):
            return
        time.sleep(0.05)
    raise AssertionError(f"never {n} texts in flight")


# --- no pickles --------------------------------------------------------------------------------

UNSAFE_LOADS = re.compile(r"\bpickle\.loads?\(|\bimport pickle\b|\bjoblib\.load\(|\bdill\.loads?\("
                          r"|allow_pickle\s*=\s*True"
                          r"|\btorch\.jit\.load\(")


def test_no_pickle_is_ever_loaded():
    """Weights are safetensors; the one torch.load (training checkpoints) is weights_only=True."""
    sources = [p for folder in ("app", "model", "bench") for p in (ROOT / folder).rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        assert not UNSAFE_LOADS.search(text), f"{path.relative_to(ROOT)} may unpickle"
        for call in re.finditer(r"\btorch\.load\(", text):
            args = text[call.end(): text.index("\n", call.end())]
            assert "weights_only=True" in args, f"{path.relative_to(ROOT)}: torch.load without weights_only=True"


def test_the_shutdown_grace_fits_between_the_request_timeout_and_kubernetes_grace():
    """Every request in flight at SIGTERM can still get its answer (or its timeout), and uvicorn is
    done draining before Kubernetes would SIGKILL it (preStop sleep + SHUTDOWN_GRACE_S)."""
    import yaml

    from app.settings import Settings

    k8s = ROOT / "deploy" / "kubernetes" / "base"
    env = dict(line.split("=", 1) for line in (k8s / "settings.env").read_text().splitlines()
               if line and not line.startswith("#"))
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items()})
    assert settings.shutdown_grace_s > settings.request_timeout_s
    deployment = yaml.safe_load((k8s / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0
    assert pod["terminationGracePeriodSeconds"] > sleep + settings.shutdown_grace_s
