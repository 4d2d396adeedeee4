"""Finding, loading and warming up the models under WEIGHTS_DIR."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model.checkpoint import CONFIG, LoadedModel, ModelLoadError, load
from model.engine.backend import backend_for
from model.search import decode
from model.search.options import DecodeOptions, special_ids

log = logging.getLogger("app.registry")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WARMUP_TEXT = "Hola, ¿qué tal?"


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda but torch sees no CUDA device")
    return torch.device(setting)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """float32 unless asked otherwise: bfloat16 weights decoded slower than float32 on GPU, and on
    CPU half precision gains nothing (docs/gpu.md)."""
    return torch.float32 if setting == "auto" else DTYPES[setting]


def resolve_quantization(setting: str, device: torch.device, dtype: torch.dtype) -> str:
    """int8 where the kernels exist (CPU, float32 activations); auto chooses it there because a
    small-batch decoding step mostly waits for weights to arrive from memory."""
    if setting == "auto":
        return "int8" if device.type == "cpu" and dtype == torch.float32 else "none"
    if setting == "int8" and (device.type != "cpu" or dtype != torch.float32):
        raise ModelLoadError(f"QUANTIZE=int8 needs DEVICE=cpu and float32, not {device.type} and "
                             f"{str(dtype).removeprefix('torch.')}")
    return setting


def model_folders(weights_dir: Path) -> list[Path]:
    if not weights_dir.is_dir():
        return []
    return sorted(p for p in weights_dir.iterdir() if (p / CONFIG).is_file())


def load_all(weights_dir: Path, device_setting: str, dtype_setting: str, quantize_setting: str = "none",
             engine_setting: str = "auto") -> dict[str, LoadedModel]:
    """Every model folder under `weights_dir`, loaded and warmed up; ModelLoadError names the culprit."""
    if not weights_dir.is_dir():
        raise ModelLoadError(f"{weights_dir}: the weights folder (WEIGHTS_DIR) does not exist")
    folders = model_folders(weights_dir)
    if not folders:
        raise ModelLoadError(f"no model folder (one holding {CONFIG}) under {weights_dir}")
    device = resolve_device(device_setting)
    dtype = resolve_dtype(dtype_setting, device)
    quantization = resolve_quantization(quantize_setting, device, dtype)
    models: dict[str, LoadedModel] = {}
    for folder in folders:
        loaded = load(folder, device, dtype)
        loaded.quantization = quantization
        # backend_for logs why, where the engine was asked for and cannot run.
        loaded.backend = backend_for(loaded.model, int8=quantization == "int8", engine=engine_setting == "auto")
        if loaded.name in models:
            raise ModelLoadError(f"{folder}: a model named {loaded.name!r} is already loaded from "
                                 f"{models[loaded.name].path}")
        warm_up(loaded)
        models[loaded.name] = loaded
        log.info("loaded %s from %s on %s as %s (quantization: %s, engine: %s)", loaded.name, folder, device,
                 str(dtype).removeprefix("torch."), loaded.quantization, loaded.backend.name)
    return models


def warm_up(loaded: LoadedModel) -> None:
    """Run both strategies once per direction, so the first caller does not pay for kernel setup."""
    last_layer = loaded.config.decoder_layers - 1
    for strategy in ("greedy", "beam"):
        opts = DecodeOptions(strategy=strategy, max_new_tokens=8, top_k=3, cross_attention_layers=(last_layer,))
        for _, target in loaded.directions:
            ids = loaded.tokenizer.encode_source(WARMUP_TEXT, target)
            decode(loaded.backend, torch.tensor([ids], device=loaded.device), opts, special_ids(loaded.tokenizer))
