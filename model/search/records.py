"""What a search returns: per generated token a `Step`, per output a `Hypothesis`.

Results are plain dataclasses of Python numbers, so callers never touch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TopToken:
    id: int
    probability: float


@dataclass
class Step:
    id: int
    probability: float  # p(token | source, previous tokens)
    top: list[TopToken]
    cross_attention: dict[int, list[list[float]]] = field(default_factory=dict)  # layer -> [head][src]
    self_attention: dict[int, list[list[float]]] = field(default_factory=dict)  # layer -> [head][pos]
    forced: bool = False  # the token came from DecodeOptions.prefix, not from the search


@dataclass
class Hypothesis:
    ids: list[int]  # generated ids, </s> included when the hypothesis finished
    steps: list[Step]
    score: float  # length-normalised log probability
    finished: bool  # False when max_new_tokens cut it before </s>


def length_normalised(logp_sum: float, length: int, alpha: float) -> float:
    """The score a hypothesis is ranked by: sum(log p) / length ** alpha (an empty one counts as length 1)."""
    return logp_sum / (max(length, 1) ** alpha)


def top_tokens(ids: list[int], probabilities: list[float]) -> list[TopToken]:
    return [TopToken(int(i), float(p)) for i, p in zip(ids, probabilities)]
