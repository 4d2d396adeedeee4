"""Shared fixtures: tiny real models built in milliseconds from a fixed seed."""

from __future__ import annotations

import pytest
import torch

from model.search.options import SpecialIds
from model.transformer import Transformer, TransformerConfig

SPECIAL = SpecialIds(pad=0, bos=1, eos=2)


def tiny_model(seed: int = 0, vocab: int = 40, **overrides) -> Transformer:
    """A random model of the real architecture, small enough to build in milliseconds."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(
        vocab_size=vocab, d_model=32, n_heads=4, d_ff=64, encoder_layers=2, decoder_layers=2,
        dropout=0.0, max_len=128, **overrides,
    )
    return Transformer(cfg).eval()


def random_sources(seed: int, lengths: list[int], vocab: int = 40) -> torch.Tensor:
    """Right-padded (B, S) batch of random token ids avoiding the special ids 0..3."""
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(4, vocab, (n - 1,), generator=g)
        src[i, n - 1] = SPECIAL.eos
    return src




def copy_task_batch(g: torch.Generator, batch: int, vocab: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources of 2..8 random tokens; the target is the source reversed, then </s>."""
    lengths = torch.randint(2, 9, (batch,), generator=g).tolist()
    src = torch.zeros(batch, 9, dtype=torch.long)
    tgt = torch.zeros(batch, 10, dtype=torch.long)  # <s> + up to 8 tokens + </s>
    for i, n in enumerate(lengths):
        toks = torch.randint(4, vocab, (n,), generator=g)
        src[i, :n], src[i, n] = toks, SPECIAL.eos
        tgt[i, 0], tgt[i, 1 : n + 1], tgt[i, n + 1] = SPECIAL.bos, toks.flip(0), SPECIAL.eos
    return src, tgt


def train_tiny(steps: int = 250, seed: int = 0) -> Transformer:
    """A tiny model trained a few seconds on reversal, so that it ends its outputs with </s>
    at varied lengths and has confident and uncertain steps, like a real model."""
    model = tiny_model(seed)
    model.train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        src, tgt = copy_task_batch(g, 64)
        logits = model(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1), ignore_index=SPECIAL.pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained() -> Transformer:
    return train_tiny()
