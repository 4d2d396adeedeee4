"""Export a trained model to CTranslate2, the C++ inference engine we measure ours against.

CTranslate2's `TransformerSpec` accepts our weights as they are (the same fused projections, the
same pre-norm layout); the weight map they go through is the one the C engine packs
(`model.checkpoint.weight_map`), so both engines receive exactly the same tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.checkpoint import weight_map
from model.search.options import SpecialIds
from model.tokenizer import TranslationTokenizer
from model.transformer import Transformer


def vocabulary_of(tokenizer: TranslationTokenizer) -> list[str]:
    """Token strings in id order: CTranslate2 takes and returns tokens, and numbers them this way."""
    return [tokenizer.tok.id_to_token(i) for i in range(tokenizer.vocab_size)]


def ctranslate2_spec(model: Transformer, vocabulary: list[str], special: SpecialIds):
    """A CTranslate2 TransformerSpec holding `model`'s weights and `vocabulary`.

    Our layout was chosen to match CTranslate2's, so every tensor goes over unchanged: the fused
    self-attention projection is [q; k; v], the cross-attention one [k; v]. The sinusoid table is
    passed explicitly because CTranslate2's own concatenates sines and cosines instead of
    interleaving them. ctranslate2 is an optional peer (`make peers`), imported only here.
    """
    from ctranslate2.specs import transformer_spec

    cfg, weights = model.cfg, weight_map(model)
    if len(vocabulary) != cfg.vocab_size:
        raise ValueError(f"vocabulary has {len(vocabulary)} tokens, the model {cfg.vocab_size}")

    def array(t: torch.Tensor):
        return t.detach().to("cpu", torch.float32).numpy()

    def linear(spec, module: nn.Linear) -> None:
        spec.weight, spec.bias = array(module.weight), array(module.bias)

    def layer_norm(spec, module: nn.LayerNorm) -> None:
        spec.gamma, spec.beta = array(module.weight), array(module.bias)

    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.n_heads, pre_norm=cfg.norm_first
    )
    embedding = array(weights.embedding)  # shared by both sides and the projection
    spec.encoder.embeddings[0].weight = embedding
    spec.decoder.embeddings.weight = embedding
    spec.decoder.projection.weight = embedding
    for side in (spec.encoder, spec.decoder):
        side.scale_embeddings = True  # TokenEmbedding multiplies by sqrt(d_model)
        side.position_encodings.encodings = array(weights.positions)
    for theirs, ours in zip(spec.encoder.layer, weights.encoder):
        layer_norm(theirs.self_attention.layer_norm, ours.norm1)
        linear(theirs.self_attention.linear[0], ours.qkv)
        linear(theirs.self_attention.linear[1], ours.out)
        layer_norm(theirs.ffn.layer_norm, ours.norm2)
        linear(theirs.ffn.linear_0, ours.ff1)
        linear(theirs.ffn.linear_1, ours.ff2)
    for theirs, ours in zip(spec.decoder.layer, weights.decoder):
        layer_norm(theirs.self_attention.layer_norm, ours.norm1)
        linear(theirs.self_attention.linear[0], ours.qkv)
        linear(theirs.self_attention.linear[1], ours.self_out)
        layer_norm(theirs.attention.layer_norm, ours.norm2)
        linear(theirs.attention.linear[0], ours.q)
        linear(theirs.attention.linear[1], ours.kv)
        linear(theirs.attention.linear[2], ours.cross_out)
        layer_norm(theirs.ffn.layer_norm, ours.norm3)
        linear(theirs.ffn.linear_0, ours.ff1)
        linear(theirs.ffn.linear_1, ours.ff2)
    if cfg.norm_first:  # pre-norm ends each stack with a norm; post-norm has none
        layer_norm(spec.encoder.layer_norm, weights.encoder_norm)
        layer_norm(spec.decoder.layer_norm, weights.decoder_norm)
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.config.bos_token = spec.config.decoder_start_token = vocabulary[special.bos]
    spec.config.eos_token = vocabulary[special.eos]
    spec.config.layer_norm_epsilon = weights.eps
    return spec


def export_ctranslate2(model: Transformer, vocabulary: list[str], folder: str | Path, special: SpecialIds) -> Path:
    """Write a CTranslate2 model folder (float32; CTranslate2 quantises at load time if asked)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = ctranslate2_spec(model, vocabulary, special)
    spec.validate()
    spec.optimize(quantization=None)
    spec.save(str(folder))
    return folder


def ctranslate2_options(vocabulary: list[str], special: SpecialIds, beam_size: int, max_new_tokens: int) -> dict:
    """translate_batch arguments that make CTranslate2 search exactly as `model.search` does."""
    return {
        "beam_size": beam_size,
        "max_decoding_length": max_new_tokens,  # both count </s> among the generated tokens
        "min_decoding_length": 0,
        "suppress_sequences": [[vocabulary[i]] for i in sorted(set(special.forbidden))],  # <pad>, <s>, <unk>, tags
        "return_end_token": True,
        "length_penalty": 1.0,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "sampling_topk": 1,
        "max_input_length": 0,
    }
