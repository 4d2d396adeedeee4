"""The network's blocks: masking, causality, padding invariance, fast-path equivalence."""

import torch

from model.transformer import MultiHeadAttention, ScaledDotProductAttention, causal_mask, padding_mask
from tests.conftest import SPECIAL, random_sources, tiny_model


def test_masked_positions_get_exactly_zero_weight_and_rows_sum_to_one():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    ids = torch.tensor([[5, 6, 7, 2, 0, 0, 0], [5, 6, 7, 8, 9, 10, 2]])
    _, w = ScaledDotProductAttention(0.0)(q, k, v, padding_mask(ids, SPECIAL.pad), need_weights=True)
    assert torch.all(w[0, :, :, 4:] == 0.0)
    assert torch.all(w[0, :, :, :4] > 0.0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))


def test_causal_mask_hides_the_future_exactly():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 6, 8)
    _, w = ScaledDotProductAttention(0.0)(x, x, x, causal_mask(6, x.device), need_weights=True)
    assert torch.all(w.triu(1) == 0.0)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 3, 6))


def test_fused_kernel_agrees_with_explicit_attention():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, 0.0, cross=False).eval()
    x = torch.randn(3, 9, 32)
    mask = padding_mask(random_sources(0, [9, 4, 6]), SPECIAL.pad)
    fast, none = mha(x, mask, need_weights=False)
    slow, weights = mha(x, mask, need_weights=True)
    assert none is None and weights.shape == (3, 4, 9, 9)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_changing_a_future_target_token_never_changes_earlier_outputs():
    model = tiny_model(1)
    src = random_sources(2, [8, 5])
    tgt = torch.randint(4, 40, (2, 10), generator=torch.Generator().manual_seed(3))
    base = model(src, tgt)
    for j in range(1, 10):
        changed = tgt.clone()
        changed[:, j] = (changed[:, j] + 7) % 36 + 4
        out = model(src, changed)
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, j:], base[:, j:])


def test_padding_a_source_does_not_change_its_encoding_or_logits():
    model = tiny_model(2)
    src = random_sources(4, [9, 4])
    tgt = torch.randint(4, 40, (1, 6), generator=torch.Generator().manual_seed(1))
    alone = model(src[1:2, :4], tgt)
    batched = model(src, tgt.expand(2, -1))[1:2]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_embedding_and_projection_share_one_matrix():
    model = tiny_model(0)
    assert model.projection.embedding.weight is model.embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert names.count("embedding.weight") == 1 and "projection.embedding.weight" not in names


def test_post_norm_variant_runs_and_differs_from_pre_norm():
    src = random_sources(0, [6, 3])
    tgt = torch.full((2, 4), 5)
    pre = tiny_model(0, norm_first=True)(src, tgt)
    post = tiny_model(0, norm_first=False)(src, tgt)
    assert pre.shape == post.shape == (2, 4, 40)
    assert not torch.allclose(pre, post)
