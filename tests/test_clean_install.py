"""The Docker image, built and run without Docker: the Dockerfile's own steps, from a clean copy of
the project, give a server that gets ready and translates with the shipped model.

There is no Docker engine on CI, so this test plays the engine's part:
- the build context is a copy of what a clone of the working tree holds (`git ls-files -co
  --exclude-standard`: tracked files and untracked ones git does not ignore), less what
  .dockerignore leaves out;
- each stage gets a folder standing for its root file system: an image path such as /opt/venv is
  <stage folder>/opt/venv, except the base image's /usr/local (its Python, shared by every stage,
  as both stages start FROM the same image) and system folders (/bin, /usr/bin, /etc, ...), which
  are this machine's; the base image's `python` is this machine's base Python 3.11;
- ARG, ENV and WORKDIR are applied; COPY copies from the context, or with --from from that stage's
  folder; each RUN runs with /bin/sh -c in the WORKDIR with the stage's ARG and ENV values;
- the runtime stage's RUN lines only create the image's user (tests/test_shipping.py checks that),
  so they are skipped and the server runs as the user running the tests;
- before the server starts, every other stage's folder is deleted, so that the runtime cannot
  lean on anything the runtime stage did not COPY; then the image's CMD runs with the image's ENV,
  the image's HEALTHCHECK command must pass, and a real translation must come back.

What differs from `docker build` and `docker run`, and why:
1. TORCH_INDEX_URL. When the Dockerfile's PyTorch index (https://download.pytorch.org/whl/cpu)
   does not answer (this machine reaches only PyPI), the build argument TORCH_INDEX_URL is set to
   this machine's pip index instead, where `torch==2.13.0` resolves to the CPU wheel
   torch-2.13.0+cpu that pip's find-links provide (a local version sorts above PyPI's plain
   2.13.0, which is the CUDA build). The test then checks that the installed torch is a CPU
   build. CLEAN_INSTALL_TORCH_INDEX_URL names another index.
2. pip's configuration of this machine (PIP_* variables, its config files through HOME, proxies)
   reaches the RUN steps, and the image's PIP_NO_CACHE_DIR is dropped so that reruns use pip's cache.
3. PORT is a free port rather than 8000.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.common import free_port
from tests.test_shipping import ROOT, Dockerfile, build_context, env_pairs, exec_form, split_flags, substitute

# The base image python:3.11-slim's environment (only what the steps can notice).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
BASE_IMAGE_PATHS = ("/usr/local/bin", "/usr/local/lib", "/usr/local/include")
THIS_MACHINE_PATHS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/sbin", "/usr/lib", "/usr/share",
                      "/lib", "/lib64", "/etc", "/dev", "/proc", "/tmp")
PASSED_THROUGH = ("HOME", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                  "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
SENTENCE, EXPECTED_WORD = "El gato come pescado.", "cat"


class Machine:
    """Folders standing for the stages' root file systems, and the mapping of image paths onto them."""

    def __init__(self, top: Path):
        self.top = top
        self.base = top / "base-image"
        bin_dir = self.base / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True)
        interpreter = getattr(sys, "_base_executable", sys.executable)
        for name in ("python", "python3", f"python3.{sys.version_info.minor}"):
            (bin_dir / name).symlink_to(interpreter)

    def root(self, index: int) -> Path:
        return self.top / f"stage-{index}"

    def path(self, image_path: str, root: Path) -> Path:
        image_path = posixpath.normpath(image_path)
        if any(image_path == p or image_path.startswith(p + "/") for p in BASE_IMAGE_PATHS):
            return self.base / image_path.lstrip("/")
        if any(image_path == p or image_path.startswith(p + "/") for p in THIS_MACHINE_PATHS):
            return Path(image_path)
        return root / image_path.lstrip("/")

    def value(self, value: str, root: Path) -> str:
        """An environment value with its image paths mapped (a single path or a PATH-like list)."""
        parts = value.split(":")
        if all(p.startswith("/") and not p.startswith("//") for p in parts):
            return ":".join(str(self.path(p, root)) for p in parts)
        return value


def pip_index() -> str:
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                capture_output=True, text=True)
    return configured.stdout.strip() if configured.returncode == 0 and configured.stdout.strip() \
        else "https://pypi.org/simple"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


def torch_index(dockerfile: Dockerfile) -> dict[str, str]:
    """The build args: none when the Dockerfile's PyTorch index answers, else substitution 1."""
    if os.environ.get("CLEAN_INSTALL_TORCH_INDEX_URL"):
        return {"TORCH_INDEX_URL": os.environ["CLEAN_INSTALL_TORCH_INDEX_URL"]}
    declared = dockerfile.args(dockerfile.stages[0])["TORCH_INDEX_URL"]
    return {} if answers(declared.rstrip("/") + "/torch/") else {"TORCH_INDEX_URL": pip_index()}


def build(dockerfile: Dockerfile, context: Path, machine: Machine, build_args: dict[str, str]) -> dict:
    """Run every stage; return the final stage's (root, workdir, env) and the steps' timings."""
    passed = {k: v for k, v in os.environ.items() if k in PASSED_THROUGH or k.startswith("PIP_")}
    timings: dict[str, float] = {}
    for index, stage in enumerate(dockerfile.stages):
        root = machine.root(index)
        root.mkdir()
        final = stage is dockerfile.final
        args = dockerfile.args(stage, build_args)
        env, workdir = dict(BASE_ENV), "/"
        for step in stage.instructions:
            assert step.keyword not in {"ADD", "SHELL", "ONBUILD", "VOLUME"}, \
                f"Dockerfile line {step.line}: {step.keyword} is not emulated here yet; teach build() about it"
            scope = {**args, **env}
            if step.keyword == "ENV":
                env.update((k, substitute(v, scope)) for k, v in env_pairs(step.args))
            elif step.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, substitute(step.args, scope))
                machine.path(workdir, root).mkdir(parents=True, exist_ok=True)
            elif step.keyword == "COPY":
                copy(step.args, scope, dockerfile, context, machine, root, workdir)
            elif step.keyword == "RUN" and not final:
                started = time.monotonic()
                run_env = {**passed, **{k: machine.value(v, root) for k, v in {**args, **env}.items()}}
                run_env.pop("PIP_NO_CACHE_DIR", None)  # substitution 2
                done = subprocess.run(["/bin/sh", "-c", step.args], cwd=machine.path(workdir, root), env=run_env,
                                      capture_output=True, text=True, timeout=900)
                assert done.returncode == 0, \
                    f"Dockerfile line {step.line} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                timings[f"RUN line {step.line}"] = round(time.monotonic() - started, 1)
    return {"root": root, "workdir": workdir, "env": env, "timings": timings}


def copy(args: str, scope: dict, dockerfile: Dockerfile, context: Path, machine: Machine, root: Path,
         workdir: str) -> None:
    flags, paths = split_flags(substitute(args, scope))
    *sources, destination = paths
    if "from" in flags:
        index = next(i for i, s in enumerate(dockerfile.stages) if s.name == flags["from"])
        found = [machine.path(s, machine.root(index)) for s in sources]
    else:
        found = [path for s in sources for path in sorted(context.glob(s))]
    assert found, f"COPY {args}: nothing to copy in the build context"
    target = machine.path(posixpath.join(workdir, destination), root)
    for source in found:
        if source.is_dir():
            # Hard links: the venv is a gigabyte; symlinks stay links, as in an image layer.
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True, copy_function=os.link)
        else:
            into = target / source.name if destination.endswith("/") or len(found) > 1 else target
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into)


def fetch(url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


@pytest.fixture
def machine(tmp_path):
    made = Machine(tmp_path / "machine")
    yield made
    shutil.rmtree(made.top, ignore_errors=True)  # a gigabyte of virtualenv; pytest keeps its last 3 tmp folders


@pytest.mark.timeout(1500)  # a cold pip cache downloads the dependencies from the registry
def test_dockerfile_steps_build_a_server_that_translates(tmp_path, machine):
    dockerfile = Dockerfile.read()
    image_python = dockerfile.final.base.split(":")[1].split("-")[0]
    if image_python != f"{sys.version_info.major}.{sys.version_info.minor}":
        pytest.skip(f"the image's Python is {image_python}; this machine's is {sys.version.split()[0]}")

    context = tmp_path / "context"
    for name in build_context():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, context / name)
        assert (ROOT / name).stat().st_mode & 0o004, f"{name} is not world-readable: the image's user cannot read it"

    build_args = torch_index(dockerfile)
    started = time.monotonic()
    image = build(dockerfile, context, machine, build_args)
    build_seconds = time.monotonic() - started
    for index in range(len(dockerfile.stages) - 1):
        shutil.rmtree(machine.root(index))

    root, env = image["root"], {k: machine.value(v, image["root"]) for k, v in image["env"].items()}
    home = re.search(r"--home-dir\s+(\S+)", " ".join(i.args for i in dockerfile.final.all("RUN")))
    env["HOME"] = machine.value(home.group(1) if home else "/root", root)  # Docker sets it from the USER's entry
    port = free_port()
    env["PORT"] = str(port)  # substitution 3
    before = files_under(root)
    workdir = machine.path(image["workdir"], root)
    flavour = subprocess.run(["python", "-c", "import torch; print(torch.__version__, torch.version.cuda)"],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert flavour.returncode == 0, flavour.stderr
    if build_args:
        assert flavour.stdout.split()[1] == "None", f"the substituted index gave a CUDA torch: {flavour.stdout}"

    _, healthcheck = dockerfile.healthcheck()
    probe = subprocess.run(healthcheck, cwd=workdir, env=env, capture_output=True, timeout=30)
    assert probe.returncode != 0, "the health check passes with no server running"

    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(exec_form(dockerfile.final.last("CMD").args), cwd=workdir, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while (status := fetch(f"{url}/ready")[0]) != 200:
            assert server.poll() is None, f"the server exited with {server.returncode}:\n{_tail(tmp_path)}"
            assert time.monotonic() - started < 240, f"not ready after 240 s (last {status}):\n{_tail(tmp_path)}"
            time.sleep(0.5)
        ready_seconds = time.monotonic() - started

        probe = subprocess.run(healthcheck, cwd=workdir, env=env, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, f"the image's HEALTHCHECK fails on a ready server: {probe.stderr}"

        status, answer = fetch(f"{url}/translate", {"text": SENTENCE, "source": "es", "target": "en"})
        assert status == 200, _tail(tmp_path)
        text = answer["translations"][0]["text"]
        assert EXPECTED_WORD in text.lower(), f"{SENTENCE!r} -> {text!r}"
        assert fetch(f"{url}/health")[0] == 200
        # The docs' assets are package data: a plain `pip install .` must ship them too.
        docs = urllib.request.urlopen(f"{url}/docs", timeout=30).read().decode()
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', docs)
        assert assets, docs[:500]
        for asset in assets:
            assert urllib.request.urlopen(f"{url}{asset}", timeout=30).status == 200, asset
        memory_mib = resident_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)  # what `docker stop` and Kubernetes send
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        log.close()
    # uvicorn re-raises the SIGTERM once it has drained, so a clean stop is 0 or "killed by SIGTERM" (143).
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in _tail(tmp_path), \
        f"SIGTERM should stop the server cleanly, got exit code {code}:\n{_tail(tmp_path)}"
    written = sorted(files_under(root) - before)
    assert not written, f"the server wrote into the image ({written[:5]}): Kubernetes mounts it read-only"
    timings = {**image["timings"], "build": round(build_seconds, 1), "ready": round(ready_seconds, 1)}
    print("clean install:", shlex.join(f"{k}={v}" for k, v in timings.items()), f"rss_mib={memory_mib}",
          "torch", flavour.stdout.strip(), "index", build_args.get("TORCH_INDEX_URL", "as in the Dockerfile"))


def files_under(root: Path) -> set[str]:
    return {os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names}


def resident_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) // 1024


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()[-3000:]
