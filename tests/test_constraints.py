"""Glossary terms forced while decoding (model/search/constraints.py), in every search driver:
greedy(), stream(), the running batch and beam search."""

import copy

import pytest
import torch

from model.search import decode
from model.search.backend import TorchBackend
from model.search.constraints import At, TermState, choose, steer_beams, took, written_again
from model.search.greedy import GreedySearch, Request, stream
from model.search.options import Constraint, DecodeOptions
from tests.conftest import SPECIAL, train_tiny

EOS = SPECIAL.eos
DROPPED = 5  # the token the model is made never to choose on its own


def _walk(state: TermState, positions: list[int], best: int = 9, source_length: int = 12) -> list[int | None]:
    """The forced token (or None) at each step, the model attending to `positions[t]` at step t."""
    return [choose(state, At(t, position, best, source_length, EOS, steps_left=20))
            for t, position in enumerate(positions)]


@pytest.mark.parametrize("span, first_step", [((1, 2), 0), ((5, 7), 4), ((10, 11), 9)])
def test_a_term_is_forced_where_the_attention_reaches_its_source(span, first_step):
    """A term at the start, in the middle and at the end of the source: its tokens come at the step whose
    attention reaches its first source token, one per step, and never again."""
    state = TermState([Constraint(*span, target=(30, 31))])
    forced = _walk(state, positions=list(range(1, 12)))
    assert forced[first_step:first_step + 2] == [30, 31]
    assert [f for f in forced if f is not None] == [30, 31]
    assert len(state.done) == 1 and not state.pending


def test_a_term_the_model_chooses_itself_near_its_source_is_not_forced_twice():
    state = TermState([Constraint(5, 6, target=(30, 31))])
    assert choose(state, At(0, 1, 30, 12, EOS, 20)) is None  # far from the term: the model's own word
    assert choose(state, At(1, 4, 30, 12, EOS, 20)) == 30  # next to it: its first token begins it
    assert choose(state, At(2, 2, 8, 12, EOS, 20)) == 31
    assert _walk(state, positions=[5, 6, 7]) == [None, None, None]


def test_a_term_not_reached_is_forced_before_the_end():
    """Attention that skips the term (the model drops it), or a row about to end: the term comes first."""
    skipped = TermState([Constraint(3, 4, target=(30,))])
    assert _walk(skipped, positions=[1, 2, 5]) == [None, None, 30]
    ending = TermState([Constraint(8, 9, target=(30,))])
    assert choose(ending, At(0, 1, EOS, 12, EOS, 20)) == 30


def test_a_term_is_forced_when_only_the_steps_to_write_it_are_left():
    state = TermState([Constraint(8, 9, target=(30, 31))])
    assert choose(state, At(0, 1, 9, 12, EOS, steps_left=4)) is None
    assert choose(state, At(1, 1, 9, 12, EOS, steps_left=3)) == 30  # 2 term tokens and </s>


def test_a_lower_case_term_opening_the_output_takes_its_capitalised_ids():
    state = TermState([Constraint(1, 2, target=(30,), opening=(33,))])
    assert choose(state, At(0, 1, 9, 12, EOS, 20)) == 33
    later = TermState([Constraint(2, 3, target=(30,), opening=(33,))])
    assert _walk(later, positions=[1, 2]) == [None, 30]


def test_two_overlapping_terms_are_each_written_once():
    state = TermState([Constraint(2, 4, target=(30,)), Constraint(3, 5, target=(31, 32))])
    forced = _walk(state, positions=[1, 3, 3, 4, 6, 7, 8])
    assert [f for f in forced if f is not None] == [30, 31, 32]


def test_a_freely_chosen_first_token_begins_the_term_in_beam_search_near_its_source():
    state = TermState([Constraint(5, 6, target=(30, 31))], position=1)
    took(state, 30, t=0)
    assert state.writing == () and not state.done
    state.position = 6
    took(state, 30, t=1)
    assert state.writing == (31,) and len(state.done) == 1


def test_a_term_the_model_wrote_whole_away_from_its_source_is_not_forced_again():
    state = TermState([Constraint(8, 9, target=(30, 31))])
    for t, token in enumerate([7, 30, 31]):
        assert choose(state, At(t, 1, token, 12, EOS, 20)) is None
        took(state, token, t)
    assert not state.pending and len(state.done) == 1
    assert _walk(state, positions=[8, 9]) == [None, None]


def test_a_term_met_is_not_written_once_more():
    state = TermState([Constraint(3, 4, target=(30, 31)), Constraint(8, 9, target=(32,))])
    for t, token in enumerate([30, 31, 7]):
        choose(state, At(t, 3, token, 12, EOS, 20))
        took(state, token, t)
    assert written_again(state) == []  # 30 31 is met; 31 would end it only right after 30
    took(state, 30, 3)
    assert written_again(state) == [31]
    assert choose(state, At(4, 8, 9, 12, EOS, 20)) == 32
    took(state, 32, 4)
    assert written_again(state) == [32]  # a one-token term, anywhere


def test_beam_rows_are_held_to_their_terms():
    """A row writing a term offers only its next token, at the model's probability; a row with a term to
    write never offers </s>; a row with nothing left is untouched."""
    logp = torch.log_softmax(torch.randn(3, 40, generator=torch.Generator().manual_seed(0)), dim=-1)
    cross = {1: torch.zeros(3, 4, 12)}
    cross[1][:, :, 5] = 1.0  # every row attends to source token 5
    terms = [TermState([Constraint(5, 6, target=(30,))]), TermState([Constraint(8, 9, target=(31,))]), TermState([])]
    opts = DecodeOptions(constraints=(Constraint(5, 6, (30,)),), align_layer=1)
    ranked = steer_beams(terms, logp, cross, opts, [12, 12, 12], t=1, eos=EOS)
    assert ranked[0].isfinite().nonzero().flatten().tolist() == [30] and ranked[0, 30] == logp[0, 30]
    assert ranked[1, EOS] == float("-inf") and ranked[1, 31] == logp[1, 31]
    assert torch.equal(ranked[2], logp[2])


# --- every search driver, on a real tiny model -----------------------------------------------------


@pytest.fixture(scope="module")
def dropping():
    """The reversal model with token DROPPED's output row zeroed: its logit is 0 whatever the state, far
    below the tokens the model chooses, so unforced it is never produced."""
    model = copy.deepcopy(train_tiny())
    with torch.no_grad():
        model.projection.embedding.weight[DROPPED].zero_()
    return model


SOURCE = [11, 12, 13, 14, 15, 16, EOS]
TERMS = (Constraint(3, 4, target=(DROPPED, 20)), Constraint(5, 6, target=(21,)))


def _opts(strategy: str, constraints=TERMS) -> DecodeOptions:
    return DecodeOptions(strategy=strategy, beam_size=4, max_new_tokens=20, constraints=constraints, align_layer=1)


def _holds(ids: list[int], term: tuple[int, ...]) -> int:
    return sum(tuple(ids[i:i + len(term)]) == term for i in range(len(ids)))


def _check(hypothesis) -> None:
    assert hypothesis.finished
    for term in TERMS:
        assert _holds(hypothesis.ids, term.target) == 1
    forced = [step.id for step in hypothesis.steps if step.forced]
    assert DROPPED in forced and 20 in forced


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_a_term_the_model_would_drop_is_written_in_greedy_and_beam_search(dropping, strategy):
    backend = TorchBackend(dropping)
    free = decode(backend, torch.tensor([SOURCE]), _opts(strategy, ()), SPECIAL)[0][0]
    assert DROPPED not in free.ids
    _check(decode(backend, torch.tensor([SOURCE]), _opts(strategy), SPECIAL)[0][0])


def test_a_term_in_a_streamed_translation(dropping):
    steps = list(stream(TorchBackend(dropping), SOURCE, _opts("greedy"), SPECIAL))
    hypothesis = steps[-1][1]
    assert [step.id for step, _ in steps] == hypothesis.ids
    _check(hypothesis)


def test_a_term_in_a_running_batch_leaves_the_other_rows_alone(dropping):
    backend = TorchBackend(dropping)
    other = [20, 19, 18, 17, EOS]
    alone = decode(backend, torch.tensor([other]), _opts("greedy", ()), SPECIAL)[0][0]
    batch = GreedySearch(backend, SPECIAL)
    batch.add([Request(other, _opts("greedy", ()), tag="other")])
    results = dict((request.tag, hyp) for request, hyp in batch.step())
    batch.add([Request(SOURCE, _opts("greedy"), tag="terms")])  # joins a step later
    while len(batch):
        results |= {request.tag: hyp for request, hyp in batch.step()}
    _check(results["terms"])
    assert results["other"].ids == alone.ids
