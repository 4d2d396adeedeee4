"""The network's blocks: masking, causality, padding invariance, fast-path equivalence."""

import torch

from model.transformer import MultiHeadAttention, RowLengths, ScaledDotProductAttention, causal_mask, padding_mask
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


def test_row_by_row_attention_matches_the_masked_one_and_leaves_nothing_to_the_padding():
    torch.manual_seed(3)
    q, k, v = torch.randn(4, 2, 6, 8), torch.randn(4, 2, 6, 8), torch.randn(4, 2, 6, 8)
    lengths = [6, 2, 4, 2]
    mask = torch.zeros(4, 1, 1, 6)
    for row, n in enumerate(lengths):
        mask[row, ..., n:] = float("-inf")
    attention = ScaledDotProductAttention(0.0)
    masked, masked_w = attention(q, k, v, mask, need_weights=True)
    rows = RowLengths.of_mask(mask)
    assert [n for n, _ in rows.groups] == [2, 4, 6]
    out, weights = attention(q, k, v, mask, need_weights=True, rows=rows)
    torch.testing.assert_close(out, masked)
    torch.testing.assert_close(weights, masked_w)
    for row, n in enumerate(lengths):
        assert torch.all(weights[row, ..., n:] == 0)
    # Encoder self-attention: padded queries are cut off too and come out as zeros.
    cut, _ = attention(q, k, v, mask, need_weights=False, rows=RowLengths.of_mask(mask, cut_queries=True))
    for row, n in enumerate(lengths):
        torch.testing.assert_close(cut[row, :, :n], masked[row, :, :n])
        assert torch.all(cut[row, :, n:] == 0)


def test_row_by_row_attention_gives_a_padded_row_the_same_bits_as_alone():
    """Attention alone (float linears may still depend on the batch): from the same q, k and v, a
    padded row's output in the batch is bit-identical to its output computed alone."""
    torch.manual_seed(5)
    lengths = [3, 9, 5, 12, 9]
    q, k, v = (torch.randn(5, 4, 12, 16) for _ in range(3))
    mask = torch.zeros(5, 1, 1, 12)
    for row, n in enumerate(lengths):
        mask[row, ..., n:] = float("-inf")
    attention = ScaledDotProductAttention(0.0)
    together, weights = attention(q, k, v, mask, True, RowLengths.of_mask(mask, cut_queries=True))
    for row, n in enumerate(lengths):
        alone, alone_w = attention(*(t[row : row + 1, :, :n] for t in (q, k, v)), None, True,
                                   RowLengths.full(1, n, q.device))
        assert torch.equal(together[row : row + 1, :, :n], alone)
        assert torch.equal(weights[row : row + 1, :, :n, :n], alone_w)
