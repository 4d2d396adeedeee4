# syntax=docker/dockerfile:1
#
# The translation service with the shipped model inside.
#
#   docker build -t transformer-translate .                                       # CPU PyTorch (default)
#   docker build --build-arg TORCH_VARIANT=cu130 -t transformer-translate:cu130 .  # CUDA PyTorch
#   docker run --rm -p 8000:8000 transformer-translate
#
# TORCH_VARIANT names a PyTorch wheel index, https://download.pytorch.org/whl/<variant>: cpu (about
# 200 MB of torch), or a CUDA build such as cu130 or cu128 that your driver supports (several GB).
# TORCH_INDEX_URL replaces the whole URL, for a mirror; https://pypi.org/simple also works, and its
# Linux torch 2.13.0 is the CUDA 13.0 build. The CUDA builds bring their own CUDA libraries, so the
# base image stays python:3.11-slim; the host needs only the NVIDIA driver and container toolkit.
#
# tests/test_clean_install.py runs this file's RUN steps and CMD outside Docker, so keep each RUN
# a plain shell command that works from the WORKDIR with the declared ARG/ENV values.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV VIRTUAL_ENV=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ENV PATH=${VIRTUAL_ENV}/bin:${PATH}
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"
# PyTorch first, from its own index and in its own layer: the biggest one, and the one that changes least.
# hadolint ignore=DL3059
RUN pip install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"
# Then the other dependencies, read from pyproject.toml (the one list of them); torch is already satisfied.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt
# Last the code, so that editing it rebuilds only this layer.
COPY app ./app
COPY model ./model
RUN pip install --no-deps . \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# The CPU engine (model/engine/engine.c) is compiled here, so the runtime image needs no compiler; at run
# time it shares PyTorch's own OpenMP library. Without a C compiler the service runs on PyTorch alone.
# hadolint ignore=DL3008
RUN (command -v cc >/dev/null || (apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
      && rm -rf /var/lib/apt/lists/*)) \
 && TRANSLATE_ENGINE_CACHE="$VIRTUAL_ENV/lib/engine" python -m model.engine

RUN mkdir document-jobs

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it (deploy/kubernetes uses 10001 too).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Document jobs (uploads, states, results) are the one thing the app writes: an empty folder the app user owns.
# Mount a volume there to keep them, the same one on every replica to have them serve each other's jobs.
COPY --from=build --chown=10001:10001 /src/document-jobs /app/document-jobs
WORKDIR /app
COPY weights ./weights
COPY glossaries ./glossaries
# Every setting of app/settings.py can be given with `-e NAME=value` or an env file; these are the defaults.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    TRANSLATE_ENGINE_CACHE=/opt/venv/lib/engine \
    WEIGHTS_DIR=/app/weights \
    GLOSSARIES_DIR=/app/glossaries \
    DOCUMENTS_DIR=/app/document-jobs \
    DEVICE=auto \
    DTYPE=auto \
    LOG_LEVEL=info
USER 10001:10001
EXPOSE 8000
# slim has no curl; urlopen raises (exit 1) on a refused connection and on /ready's 503 while loading.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "app"]
