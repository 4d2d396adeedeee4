"""Shipped model folders: config.json, tokenizer.json, model.safetensors, card.json.

Weights are stored as safetensors (never pickles), optionally in fp16 to halve the download;
loading upcasts to the requested dtype and refuses weights whose sha256 differs from the one
recorded at export, so a truncated or swapped file fails loudly instead of translating badly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.search.backend import Backend, TorchBackend
from model.tokenizer import LANGUAGES, TranslationTokenizer
from model.transformer import Transformer, TransformerConfig

CONFIG, TOKENIZER, WEIGHTS, CARD = "config.json", "tokenizer.json", "model.safetensors", "card.json"
# The projection reuses the embedding matrix; safetensors stores each tensor once.
TIED = "projection.embedding.weight"


@dataclass
class EncoderLayerWeights:
    """One encoder layer's modules by the role an inference engine gives them (pre-norm order)."""

    norm1: nn.LayerNorm
    qkv: nn.Linear  # fused [q; k; v]
    out: nn.Linear
    norm2: nn.LayerNorm
    ff1: nn.Linear
    ff2: nn.Linear


@dataclass
class DecoderLayerWeights:
    norm1: nn.LayerNorm
    qkv: nn.Linear  # self-attention, fused [q; k; v]
    self_out: nn.Linear
    norm2: nn.LayerNorm
    q: nn.Linear  # cross-attention query, from the decoder
    kv: nn.Linear  # cross-attention, fused [k; v], from the encoder output
    cross_out: nn.Linear
    norm3: nn.LayerNorm
    ff1: nn.Linear
    ff2: nn.Linear


@dataclass
class WeightMap:
    """Every weight of a `Transformer` by role: what the C engine packs and the CTranslate2 export writes."""

    embedding: torch.Tensor  # (V, D), shared by both sides and the projection
    positions: torch.Tensor  # (max_len, D) sinusoids
    encoder: list[EncoderLayerWeights]
    decoder: list[DecoderLayerWeights]
    encoder_norm: nn.Module  # LayerNorm after the stack (pre-norm), Identity (post-norm)
    decoder_norm: nn.Module
    eps: float  # the LayerNorms' epsilon


def weight_map(model: Transformer) -> WeightMap:
    encoder = [EncoderLayerWeights(norm1=layer.add_norm1.norm, qkv=layer.self_attn.qkv_proj,
                                   out=layer.self_attn.out_proj, norm2=layer.add_norm2.norm,
                                   ff1=layer.feed_forward.linear1, ff2=layer.feed_forward.linear2)
               for layer in model.encoder.layers]
    decoder = [DecoderLayerWeights(norm1=layer.add_norm1.norm, qkv=layer.self_attn.qkv_proj,
                                   self_out=layer.self_attn.out_proj, norm2=layer.add_norm2.norm,
                                   q=layer.cross_attn.q_proj, kv=layer.cross_attn.kv_proj,
                                   cross_out=layer.cross_attn.out_proj, norm3=layer.add_norm3.norm,
                                   ff1=layer.feed_forward.linear1, ff2=layer.feed_forward.linear2)
               for layer in model.decoder.layers]
    return WeightMap(embedding=model.embedding.weight, positions=model.positional.table, encoder=encoder,
                     decoder=decoder, encoder_norm=model.encoder.norm, decoder_norm=model.decoder.norm,
                     eps=model.encoder.layers[0].add_norm1.norm.eps)


class ModelLoadError(RuntimeError):
    """A model folder that cannot be served; the message says which file and why."""


@dataclass
class LoadedModel:
    name: str
    path: Path
    model: Transformer
    tokenizer: TranslationTokenizer
    config: TransformerConfig
    card: dict
    weights_sha256: str
    directions: list[tuple[str, str]]
    quantization: str = "none"  # "int8" when `backend` runs int8 weights
    parameters: int = 0  # of the float model as trained
    backend: Backend | None = None  # what decodes it: PyTorch unless the loader chooses (model.engine.backend)

    def __post_init__(self):
        self.parameters = self.parameters or self.model.num_parameters()
        self.backend = self.backend or TorchBackend(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embedding.weight.dtype


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def all_directions() -> list[tuple[str, str]]:
    return [(s, t) for s in LANGUAGES for t in LANGUAGES if s != t]


def export(
    model: Transformer,
    tokenizer: TranslationTokenizer,
    folder: str | Path,
    name: str,
    card: dict | None = None,
    storage_dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a servable model folder and return it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", storage_dtype).contiguous() for k, v in model.state_dict().items() if k != TIED}
    save_file(state, str(folder / WEIGHTS), metadata={"name": name})
    tokenizer.save(folder / TOKENIZER)
    config = {
        "name": name,
        "architecture": "transformer-encoder-decoder",
        "model": model.cfg.to_dict(),
        "directions": [list(d) for d in all_directions()],
        "weights_sha256": sha256_file(folder / WEIGHTS),
        "storage_dtype": str(storage_dtype).removeprefix("torch."),
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    card_path = folder / CARD
    merged = json.loads(card_path.read_text()) if card_path.exists() else {}
    merged.update(card or {})
    merged.update({"name": name, "parameters": model.num_parameters()})
    card_path.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None


def load(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load and verify a model folder; raises ModelLoadError with a one-line reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: model folder not found")
    config = _read_json(folder / CONFIG)
    card = _read_json(folder / CARD) if (folder / CARD).exists() else {}
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: missing")
    digest = sha256_file(weights)
    if digest != config.get("weights_sha256"):
        raise ModelLoadError(
            f"{weights}: sha256 {digest[:12]}… does not match {str(config.get('weights_sha256'))[:12]}… "
            f"recorded in {CONFIG}"
        )
    try:
        cfg = TransformerConfig(**config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{folder / CONFIG}: bad model section ({e})") from None
    try:
        tokenizer = TranslationTokenizer.load(folder / TOKENIZER)
    except Exception as e:  # tokenizers raises plain Exception subclasses for unreadable files
        raise ModelLoadError(f"{folder / TOKENIZER}: cannot load ({e})") from None
    if tokenizer.vocab_size != cfg.vocab_size or tokenizer.pad_id != cfg.pad_id:
        raise ModelLoadError(
            f"{folder}: tokenizer has {tokenizer.vocab_size} tokens (pad {tokenizer.pad_id}) but config expects "
            f"{cfg.vocab_size} (pad {cfg.pad_id})"
        )
    model = Transformer(cfg)
    try:
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise ModelLoadError(f"{weights}: cannot read weights ({e})") from None
    if unexpected or set(missing) - {TIED}:
        raise ModelLoadError(f"{weights}: weights do not fit the config (missing {missing}, unexpected {unexpected})")
    model.to(device=device, dtype=dtype).eval()
    directions = [tuple(d) for d in config.get("directions", all_directions())]
    return LoadedModel(config.get("name", folder.name), folder, model, tokenizer, cfg, card, digest, directions)
