"""What ships agrees with itself and with the app: the Dockerfile, .dockerignore, docker-compose.yml,
.env.example and deploy/kubernetes name real routes, one port, real settings with valid values, a
non-root user and resource limits, so that a typo in any of them fails here rather than in a cluster.

The Dockerfile reader below is also what tests/test_clean_install.py runs the Dockerfile with.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"

# Environment variables that are not settings of the app but may be set next to them.
# TRANSLATE_ENGINE_CACHE: where model/engine/binding.py keeps the compiled engine (the image builds it in).
NON_APP_VARIABLES = re.compile(r"(PATH|LANG|LC_\w+|PYTHON\w*|PIP_\w+|VIRTUAL_ENV|OMP_NUM_THREADS|MKL_NUM_THREADS"
                               r"|TORCH_\w+|CUDA_\w+|NVIDIA_\w+|TRANSLATE(_GPU)?_PORT|TRANSLATE_ENGINE_CACHE)")


# ---------------------------------------------------------------------------------------------
# Reading a Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # the rest of the logical line, continuation lines joined
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"the Dockerfile's stage {self.name or self.base} has no {keyword}"
        return found[-1]


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def substitute(text: str, values: dict[str, str]) -> str:
    """Docker's (and compose's) `$VAR`, `${VAR}`, `${VAR:-default}`; unknown variables become ''."""
    def one(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        value = values.get(name, "")
        return value if value or match.group(2) is None else match.group(2)
    return _VARIABLE.sub(one, text)


def env_pairs(args: str) -> list[tuple[str, str]]:
    """ENV/ARG arguments: `A=1 B="two words"`, or the legacy `ENV A value`."""
    words = shlex.split(args)
    if "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [tuple(word.split("=", 1)) for word in words]  # type: ignore[misc]


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """`--from=build --chown=app src dest` -> ({'from': 'build', 'chown': 'app'}, ['src', 'dest'])."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    assert args.lstrip().startswith("["), f"use the exec (JSON) form, not the shell form: {args}"
    return json.loads(args)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def read(cls, path: Path = ROOT / "Dockerfile") -> Dockerfile:
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        logical, start = "", 0
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue  # Docker drops these, inside a continued instruction too
            start = start or number
            if raw.rstrip().endswith("\\"):
                logical += raw.rstrip()[:-1] + " "
                continue
            keyword, _, args = (logical + raw).strip().partition(" ")
            logical, line, start = "", start, 0
            instruction = Instruction(keyword.upper(), args.strip(), line)
            if instruction.keyword == "FROM":
                words = substitute(instruction.args, global_args).split()
                stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
            elif not stages:
                assert instruction.keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
                for name, _, default in (word.partition("=") for word in shlex.split(instruction.args)):
                    global_args[name] = default
            else:
                stages[-1].instructions.append(instruction)
        return cls(global_args, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def args(self, stage: Stage, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The ARG values a stage sees: its own declarations, defaults expanded in order, build args first."""
        overrides = overrides or {}
        values: dict[str, str] = {}
        for instruction in stage.all("ARG"):
            for word in shlex.split(instruction.args):
                name, has_default, default = word.partition("=")
                if name in overrides:
                    values[name] = overrides[name]
                elif has_default:
                    values[name] = substitute(default, values)
                else:
                    values[name] = self.global_args.get(name, "")
        return values

    def env(self, stage: Stage, base: dict[str, str] | None = None) -> dict[str, str]:
        """The stage's environment after all of its ENV lines (image paths, not mapped to this machine)."""
        env = dict(base or {})
        scope = {**self.args(stage), **env}
        for instruction in stage.all("ENV"):
            pairs = [(k, substitute(v, scope)) for k, v in env_pairs(instruction.args)]  # one ENV sees the one before
            env.update(pairs)
            scope.update(pairs)
        return env

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """(options, exec-form command) of the final stage's HEALTHCHECK."""
        options, command = re.split(r"(?:^|\s)CMD\s+", self.final.last("HEALTHCHECK").args, maxsplit=1)
        return split_flags(options)[0], exec_form(command)

    def uid(self) -> int:
        user = substitute(self.final.last("USER").args, self.args(self.final)).split(":")[0]
        assert user.isdigit(), f"USER {user}: use a numeric uid, so that Kubernetes' runAsNonRoot can verify it"
        return int(user)


# ---------------------------------------------------------------------------------------------
# Reading .dockerignore


def dockerignore_rules(path: Path = ROOT / ".dockerignore") -> list[tuple[re.Pattern, bool]]:
    """(regex, excludes) per line; Docker's rules: the last matching line wins, `!` re-includes, and a
    line that matches a folder matches everything under it."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + "(?:/.*)?"), excludes))
    return rules


def in_build_context(relative: str, rules: list[tuple[re.Pattern, bool]]) -> bool:
    included = True
    for regex, excludes in rules:
        if regex.fullmatch(relative):
            included = not excludes
    return included


def project_files(root: Path = ROOT) -> list[str]:
    """What a clone of the working tree holds: tracked files plus untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    return sorted(name for name in listed if name and (root / name).is_file())


def build_context(root: Path = ROOT) -> list[str]:
    rules = dockerignore_rules(root / ".dockerignore")
    return [name for name in project_files(root) if in_build_context(name, rules)]


# ---------------------------------------------------------------------------------------------
# Reading compose and Kubernetes files


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_value(text) -> str:
    """A compose value with `${VAR:-default}` resolved as on a machine that sets none of them."""
    return substitute(str(text), {})


def kustomization_documents(folder: Path) -> list[dict]:
    """Every manifest a kustomization lists, recursively (patches and generators not applied)."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        assert path.exists(), f"{folder / 'kustomization.yaml'} lists {resource}, which does not exist"
        documents += kustomization_documents(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    return documents


def manifest(kind: str, folder: Path = K8S) -> dict:
    found = [d for d in kustomization_documents(folder) if d and d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in {folder}, found {len(found)}"
    return found[0]


def the_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (kustomize's and compose's syntax)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


# ---------------------------------------------------------------------------------------------
# What the app offers


@pytest.fixture(scope="module")
def get_routes() -> set[str]:
    """Paths the app answers GET on, from its OpenAPI schema (the probes' routes are all in it)."""
    schema = create_app(Settings(_env_file=None)).openapi()
    return {path for path, operations in schema["paths"].items() if "get" in operations}


def assert_valid_settings(variables: dict[str, str], where: str) -> None:
    """Each name is a setting of app/settings.py (or a known non-app variable) and its value validates."""
    unknown = [name for name in variables if name.lower() not in Settings.model_fields
               and not NON_APP_VARIABLES.fullmatch(name)]
    assert not unknown, f"{where}: {unknown} are not settings of app/settings.py (typo?)"
    settings = {name.lower(): value for name, value in variables.items() if name.lower() in Settings.model_fields}
    Settings(_env_file=None, **settings)  # raises on a value the app would refuse at start


def url_path(command: list[str]) -> str:
    found = re.search(r"https?://[^/\s'\"]+(/[^\s'\"]*)", " ".join(command))
    assert found, f"no URL in the health check {command}"
    return found.group(1)


def exposed_port(dockerfile: Dockerfile) -> int:
    (port,) = dockerfile.final.last("EXPOSE").args.split()
    return int(port.split("/")[0])


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_is_multi_stage_on_slim_python_311():
    dockerfile = Dockerfile.read()
    assert len(dockerfile.stages) >= 2, "build in one stage, run in another"
    for stage in dockerfile.stages:
        assert re.fullmatch(r"(docker\.io/(library/)?)?python:3\.11(\.\d+)?-slim(-\w+)?", stage.base), stage.base
    earlier = {s.name for s in dockerfile.stages[:-1]}
    copied_from = {split_flags(i.args)[0].get("from") for i in dockerfile.final.all("COPY")}
    assert earlier & copied_from, "the runtime stage should take the installed environment from the build stage"
    assert not dockerfile.final.all("RUN") or all(
        re.match(r"(groupadd|useradd)\b", part.strip())
        for i in dockerfile.final.all("RUN") for part in i.args.split("&&")
    ), "the runtime stage only creates its user; install in the build stage"


def test_torch_is_the_cpu_build_of_the_pinned_version_with_a_cuda_switch():
    dockerfile = Dockerfile.read()
    build = dockerfile.stages[0]
    args = dockerfile.args(build)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert dockerfile.args(build, {"TORCH_VARIANT": "cu130"})["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cu130"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if re.match(r"torch\s*==", d)]
    assert args["TORCH_VERSION"] == pin.split("==")[1].strip(), "the image's torch differs from pyproject.toml's pin"
    torch_step = [i.args for i in build.all("RUN") if "torch==" in i.args]
    assert torch_step and "$TORCH_INDEX_URL" in torch_step[0] and "$TORCH_VERSION" in torch_step[0]


def test_image_runs_as_a_non_root_numeric_user():
    dockerfile = Dockerfile.read()
    uid = dockerfile.uid()
    assert uid != 0
    created = [i.args for i in dockerfile.final.all("RUN") if "useradd" in i.args]
    assert created and re.search(rf"--uid {uid}\b", created[0]), "USER names a uid that useradd does not create"
    assert dockerfile.final.instructions.index(dockerfile.final.last("USER")) < \
        dockerfile.final.instructions.index(dockerfile.final.last("CMD"))


def test_image_environment_is_valid_settings_and_points_at_the_shipped_weights():
    dockerfile = Dockerfile.read()
    env = dockerfile.env(dockerfile.final)
    assert_valid_settings(env, "Dockerfile ENV")
    assert int(env["PORT"]) == exposed_port(dockerfile) == Settings.model_fields["port"].default
    workdir = Path(dockerfile.final.last("WORKDIR").args)
    weights = workdir / env.get("WEIGHTS_DIR", str(Settings.model_fields["weights_dir"].default))
    copies = {workdir / split_flags(i.args)[1][-1]: split_flags(i.args)[1][:-1] for i in dockerfile.final.all("COPY")}
    assert copies.get(weights) == ["weights"], f"WEIGHTS_DIR={weights} is not where COPY puts weights/"
    assert list((ROOT / "weights").glob("*/model.safetensors")), "no shipped model under weights/"
    assert exec_form(dockerfile.final.last("CMD").args) == ["python", "-m", "app"]


def test_healthcheck_asks_ready_on_the_served_port(get_routes):
    dockerfile = Dockerfile.read()
    flags, command = dockerfile.healthcheck()
    assert command[0] == "python", "slim has no curl: probe with python"
    assert url_path(command) == "/ready" and "/ready" in get_routes
    assert "PORT" in command[-1], "the probe should follow PORT when it is changed"
    assert {"interval", "timeout", "start-period"} <= set(flags)


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    rules = dockerignore_rules()
    for left_out in [".git/HEAD", ".venv/bin/python", "data/tatoeba/spa.tsv", "runs/x/log.json", "artifacts/a.bin",
                     ".gpu/wheels/x.whl", ".whl/x.whl", "tests/test_app.py", ".env", "checkpoints/last.pt",
                     "app/__pycache__/main.cpython-311.pyc", "weights/m/last.pt", "bench/engine.py"]:
        assert not in_build_context(left_out, rules), f"{left_out} would be sent to the Docker build"
    context = build_context()
    dockerfile = Dockerfile.read()
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            flags, paths = split_flags(copy.args)
            for source in [] if "from" in flags else paths[:-1]:
                assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), \
                    f"Dockerfile line {copy.line} copies {source}, which .dockerignore leaves out"
    for needed in project_files():
        if needed.startswith(("app/", "model/", "weights/")) and "__pycache__" not in needed:
            assert needed in context, f"{needed} is left out of the image"


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_service_has_health_check_restart_limits_and_optional_env_file(get_routes):
    dockerfile = Dockerfile.read()
    services = compose()["services"]
    default = [name for name, s in services.items() if not s.get("profiles")]
    assert default, "`docker compose up` without a profile should start the CPU service"
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert url_path(service["healthcheck"]["test"]) == "/ready" and "/ready" in get_routes, name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+(\.\d+)?[kmgKMG]?[bB]?", str(limits["memory"])), name
        threads = service.get("environment", {}).get("TORCH_THREADS")
        assert threads is not None and int(compose_value(threads)) == int(float(limits["cpus"])), \
            f"{name}: TORCH_THREADS should match the CPU limit"
        for entry in service["env_file"]:
            assert isinstance(entry, dict) and (entry.get("required") is False or (ROOT / entry["path"]).exists()), \
                f"{name}: env_file {entry} must exist or be `required: false`"
        environment = {k: compose_value(v) for k, v in service.get("environment", {}).items()}
        assert_valid_settings(environment, f"compose service {name}")
        for port in service["ports"]:
            assert int(compose_value(port).rsplit(":", 1)[1]) == exposed_port(dockerfile), name
        assert service["build"]["context"] == "."


def test_compose_gpu_profile_builds_cuda_and_reserves_an_nvidia_gpu():
    gpu = [s for s in compose()["services"].values() if "gpu" in s.get("profiles", [])]
    assert len(gpu) == 1
    (service,) = gpu
    assert compose_value(service["build"]["args"]["TORCH_VARIANT"]).startswith("cu")
    assert service["environment"]["DEVICE"] == "cuda"
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device.get("count") == "all" or int(device.get("count", 0)) >= 1 or device.get("device_ids")
    cpu_ports = {compose_value(p).rsplit(":", 1)[0] for s in compose()["services"].values() if not s.get("profiles")
                 for p in s["ports"]}
    assert not cpu_ports & {compose_value(p).rsplit(":", 1)[0] for p in service["ports"]}, \
        "with --profile gpu both services run: they need different host ports"


def test_env_example_lists_every_setting_with_its_default():
    lines = (ROOT / ".env.example").read_text().splitlines()
    variables = dict(m.groups() for m in (re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line) for line in lines) if m)
    assert_valid_settings(variables, ".env.example")
    for line in lines:
        assert not re.fullmatch(r"#?\s*[A-Z][A-Z0-9_]*=.*\s#.*", line), \
            f"{line!r}: `docker run --env-file` would keep the comment in the value"
    names = {name.lower() for name in variables}
    missing = [name.upper() for name in Settings.model_fields if name not in names]
    assert not missing, f".env.example does not mention {missing}"
    shown = {n.lower(): v for n, v in variables.items() if n.lower() in Settings.model_fields}
    values = Settings(_env_file=None, **shown)
    for name, info in Settings.model_fields.items():
        assert getattr(values, name) == info.default, f".env.example shows {name.upper()}={variables[name.upper()]}, " \
                                                      f"the default is {info.default}"


def docker_compose_cli() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]):
            version = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
            if version.returncode == 0 and not version.stdout.strip().startswith("1."):
                return command
    return None


def test_compose_file_passes_docker_compose_config():
    command = docker_compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI here (it needs no engine for `config`)")
    for profile in ([], ["--profile", "gpu"]):
        done = subprocess.run([*command, *profile, "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------
# deploy/kubernetes


def test_kubernetes_deployment_probes_real_routes_on_the_image_port(get_routes):
    deployment = manifest("Deployment")
    container = the_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [exposed_port(Dockerfile.read())]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in get_routes, f"{probe} asks {get['path']}, which the app does not serve"
        assert get["port"] in ports or get["port"] in ports.values(), f"{probe} port {get['port']}"
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in annotations:
        assert annotations["prometheus.io/path"] in get_routes
        assert int(annotations["prometheus.io/port"]) in ports.values()


def test_kubernetes_pod_runs_as_the_image_user_without_privileges():
    deployment = manifest("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = the_container(deployment)
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == Dockerfile.read().uid() != 0
    assert security["allowPrivilegeEscalation"] is False
    assert "ALL" in security["capabilities"]["drop"]
    if security.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"


def test_kubernetes_resources_and_threads_follow_the_cpu_limit():
    container = the_container(manifest("Deployment"))
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    (threads,) = [e for e in container["env"] if e["name"] == "TORCH_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_kubernetes_grace_period_covers_the_longest_request():
    deployment = manifest("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    settings = env_file(K8S / "base" / "settings.env")
    timeout = float(settings.get("REQUEST_TIMEOUT_S", Settings.model_fields["request_timeout_s"].default))
    pre_stop = the_container(deployment).get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0
    assert pod["terminationGracePeriodSeconds"] > sleep + timeout


def test_kubernetes_service_hpa_and_pdb_select_the_deployment():
    deployment = manifest("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = the_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    service = manifest("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    for port in service["spec"]["ports"]:
        assert ports.get(port["targetPort"], port["targetPort"]) in ports.values()

    hpa = manifest("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    target = cpu["resource"]["target"]
    assert target["type"] == "Utilization" and 0 < target["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "cpu" in container["resources"]["requests"], "an HPA on CPU utilisation needs a CPU request"

    pdb = manifest("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kubernetes_settings_and_image_are_wired_through_kustomize():
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (generator,) = base["configMapGenerator"]
    container = the_container(manifest("Deployment"))
    assert {"configMapRef": {"name": generator["name"]}} in container["envFrom"]
    for path in generator["envs"]:
        assert_valid_settings(env_file(K8S / "base" / path), f"deploy/kubernetes/base/{path}")
    image = container["image"].rsplit(":", 1)[0]
    for folder in (K8S, K8S / "gpu"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert [i["name"] for i in kustomization["images"]] == [image], folder


def test_kubernetes_gpu_overlay_asks_for_an_nvidia_gpu_and_cuda():
    overlay = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    (generator,) = overlay["configMapGenerator"]
    assert generator["behavior"] == "merge" and "DEVICE=cuda" in generator["literals"]
    deployment = manifest("Deployment", K8S / "gpu")
    patched = False
    for patch in overlay["patches"]:
        document = yaml.safe_load((K8S / "gpu" / patch["path"]).read_text())
        assert document["metadata"]["name"] == manifest(document["kind"], K8S / "gpu")["metadata"]["name"]
        if document["kind"] == "Deployment":
            (container,) = document["spec"]["template"]["spec"]["containers"]
            assert container["name"] == the_container(deployment)["name"], "the patch would add a second container"
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
            patched = True
    assert patched


def test_kustomize_builds_both_variants():
    kubectl = shutil.which("kubectl") or shutil.which("kustomize")
    if kubectl is None:
        pytest.skip("neither kubectl nor kustomize is installed here")
    command = [kubectl, "kustomize"] if kubectl.endswith("kubectl") else [kubectl, "build"]
    for folder in (K8S, K8S / "gpu"):
        done = subprocess.run([*command, str(folder)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout))
        assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
