"""Helpers shared by the benchmarks: timing, result files, servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def best_of(fn, repeats: int) -> float:
    """Fastest of `repeats` runs in seconds: the least disturbed by a noisy shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_info() -> dict:
    """The CPU as `lscpu` names it, and whether it has AVX-512: figures differ between such machines."""
    name = platform.processor() or platform.machine()
    try:
        done = subprocess.run(["lscpu"], capture_output=True, text=True, check=False)
        name = next((line.split(":", 1)[1].strip() for line in done.stdout.splitlines()
                     if line.startswith("Model name:")), name)
    except FileNotFoundError:
        pass
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), []) if Path("/proc/cpuinfo").exists() else []
    return {"model_name": name, "avx512": "avx512f" in flags, "avx2": "avx2" in flags,
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_info(),
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(name: str, payload: dict, results_dir: Path = RESULTS) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=2, ensure_ascii=False) + "\n")
    return path


# --- servers on 127.0.0.1 ---------------------------------------------------------------------


@asynccontextmanager
async def app_in_process(weights: Path, timeout: float, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the real app in this process (2 torch threads), once it is ready; `settings` as Settings takes."""
    from app.main import create_app  # the app pulls in torch: only when translating
    from app.settings import Settings

    app = create_app(Settings(torch_threads=2, weights_dir=weights, **settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     timeout=timeout) as client:
            while (await client.get("/ready")).status_code != 200:
                await asyncio.sleep(0.2)
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def rss_mb(self) -> float:
        """Resident memory of the server process, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line in /proc/PID/status")


@contextmanager
def running(command: list[str], port: int, ready_path: str, log: IO[bytes], startup_seconds: float,
            env: dict[str, str] | None = None, wait: bool = True) -> Iterator[Server]:
    """`command` (a server on `port` of 127.0.0.1), its output in `log`; yields once GET `ready_path`
    says 200 (at once with wait=False). Terminated, then killed, on the way out if still running."""
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        if wait:
            _wait_ready(server, ready_path, startup_seconds, log)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def app_process(weights: Path, log: IO[bytes], startup_seconds: float = 120, wait: bool = True,
                **settings: object) -> Iterator[Server]:
    """`python -m app` on a free port of 127.0.0.1 serving `weights`; `settings` are environment
    variables, e.g. MAX_QUEUE=32 (see `running`)."""
    port = free_port()
    env = {"HOST": "127.0.0.1", "PORT": str(port), "WEIGHTS_DIR": str(weights),
           **{name: str(value) for name, value in settings.items()}}
    return running([sys.executable, "-m", "app"], port, "/ready", log, startup_seconds, env, wait)


def _wait_ready(server: Server, path: str, seconds: float, log: IO[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{server.process.args[0]} exited with {server.process.returncode}:\n"
                               f"{log.read().decode(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{server.url}{path}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server at {server.url} was not ready within {seconds:g} s")
