"""model.training.export: the same weights give the same model in CTranslate2 as in ours.

The CTranslate2 checks are skipped where ctranslate2 is not installed (CI); `make peers` installs
it. The export module itself must import without it.
"""

import pytest
import torch

from model.search import decode
from model.search.backend import TorchBackend
from model.search.options import DecodeOptions
from model.training.export import ctranslate2_options, export_ctranslate2
from tests.conftest import SPECIAL, random_sources, tiny_model

VOCAB = ["<pad>", "<s>", "</s>", "<unk>", *(f"tok{i}" for i in range(4, 40))]


def _translator(model, folder):
    ctranslate2 = pytest.importorskip("ctranslate2")
    return ctranslate2.Translator(str(export_ctranslate2(model, VOCAB, folder, SPECIAL)), device="cpu",
                                  compute_type="float32", intra_threads=1)


def _tokens(row: torch.Tensor) -> list[str]:
    return [VOCAB[i] for i in row.tolist() if i != SPECIAL.pad]


def test_options_forbid_what_our_decoder_forbids():
    options = ctranslate2_options(VOCAB, SPECIAL, beam_size=1, max_new_tokens=7)
    assert options["suppress_sequences"] == [["<pad>"], ["<s>"]]
    assert options["max_decoding_length"] == 7 and options["min_decoding_length"] == 0
    assert options["return_end_token"] and options["beam_size"] == 1


@pytest.mark.parametrize("norm_first", [True, False])
def test_ctranslate2_scores_targets_as_our_model_does(tmp_path, norm_first):
    """Teacher-forced log-probabilities of random targets: every weight and norm must be in place."""
    model = tiny_model(seed=4, norm_first=norm_first)
    translator = _translator(model, tmp_path / "ct2")
    src = random_sources(9, [3, 7, 5, 11])
    tgt = random_sources(10, [6, 4, 9, 7])  # each ends with </s>, as CTranslate2 appends it
    with torch.inference_mode():
        bos = torch.full((tgt.size(0), 1), SPECIAL.bos)
        logp = model(src, torch.cat([bos, tgt[:, :-1]], dim=1)).log_softmax(-1)
    results = translator.score_batch([_tokens(s) for s in src], [_tokens(t)[:-1] for t in tgt])
    for i, result in enumerate(results):
        ids = [t for t in tgt[i].tolist() if t != SPECIAL.pad]
        ours = [float(logp[i, j, t]) for j, t in enumerate(ids)]
        assert result.log_probs == pytest.approx(ours, abs=1e-4)


def test_ctranslate2_greedy_equals_ours_token_for_token(tmp_path, trained):
    translator = _translator(trained, tmp_path / "ct2")
    src = random_sources(9, [3, 7, 5, 9, 4, 8])
    ours = decode(TorchBackend(trained), src, DecodeOptions(max_new_tokens=20), SPECIAL)
    theirs = translator.translate_batch([_tokens(s) for s in src], **ctranslate2_options(VOCAB, SPECIAL, 1, 20))
    for hyps, result in zip(ours, theirs):
        assert [VOCAB[i] for i in hyps[0].ids] == result.hypotheses[0]
    assert all(h[0].finished for h in ours) and len({len(h[0].ids) for h in ours}) > 1  # real sentences, not loops

