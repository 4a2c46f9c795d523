"""Input distributions with independent positions (METHODS.md §3).

A distribution over token sequences of length k is a (k, V) table of per-position
probabilities; a fixed position is a one-hot row. Named distributions are built from a
token-frequency table: each free position keeps the tokens whose decoded text matches a
pattern, weighted by how often they occur in the corpus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DISTRIBUTIONS",
    "DistributionSpec",
    "InputDistribution",
    "build_distribution",
    "count_tokens",
    "from_counts",
    "register_distribution",
]


@dataclass(frozen=True, eq=False)
class InputDistribution:
    """Independent per-position categoricals over a vocabulary.

    Attributes:
        name: a label for reports.
        probs: float64 tensor of shape (k, V); each row sums to one.
    """

    name: str
    probs: torch.Tensor

    def __post_init__(self) -> None:
        if self.probs.ndim != 2:
            raise ValueError(f"distribution {self.name!r}: `probs` must be (length, vocab), "
                             f"got {tuple(self.probs.shape)}")
        if (self.probs < 0).any():
            raise ValueError(f"distribution {self.name!r}: `probs` has negative entries")
        sums = self.probs.sum(1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
            bad = int((sums - 1).abs().argmax())
            raise ValueError(f"distribution {self.name!r}: position {bad} sums to {float(sums[bad]):.6f}, not 1")
        object.__setattr__(self, "probs", self.probs.to(torch.float64))

    @property
    def length(self) -> int:
        return self.probs.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.probs.shape[1]

    @property
    def free_positions(self) -> list[int]:
        """Positions with more than one possible token."""
        return [i for i in range(self.length) if int((self.probs[i] > 0).sum()) > 1]

    def support_sizes(self) -> list[int]:
        return [int((row > 0).sum()) for row in self.probs]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` sequences, a LongTensor of shape (n, k)."""
        return sample_positions(self.probs, n, generator)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for a batch of sequences x of shape (n, k), float64."""
        return log_prob_positions(self.probs, x)

    def with_vocab(self, vocab_size: int) -> InputDistribution:
        """The same distribution with the vocabulary padded by zero-probability tokens."""
        if vocab_size < self.vocab_size:
            raise ValueError(f"cannot shrink distribution {self.name!r} from {self.vocab_size} to {vocab_size} tokens")
        pad = torch.zeros(self.length, vocab_size - self.vocab_size, dtype=torch.float64)
        return InputDistribution(self.name, torch.cat([self.probs, pad], 1))


def sample_positions(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample each position independently from the rows of ``probs`` (k, V)."""
    cols = [torch.multinomial(row.float() if row.dtype != torch.float64 else row, n, replacement=True,
                              generator=generator) for row in probs]
    return torch.stack(cols, 1)


def log_prob_positions(probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_i log probs[i, x_i] for each row of x."""
    if x.ndim != 2 or x.shape[1] != probs.shape[0]:
        raise ValueError(f"inputs of shape {tuple(x.shape)} do not match a length-{probs.shape[0]} distribution")
    picked = probs.gather(1, x.T.to(torch.long)).T  # (n, k)
    return picked.log().sum(1)


def count_tokens(tokenizer, texts: Iterable[str]) -> list[int]:
    """A token-frequency table: how often each id occurs when ``texts`` are tokenized."""
    counts = torch.zeros(len(tokenizer), dtype=torch.long)
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=len(tokenizer))
    return counts.tolist()


Position = str | Callable[[str], bool]
"""A free position is a regex (full match on the token's decoded text) or a predicate; a fixed
position is written ``"=text"`` and must be exactly one token."""


def from_counts(name: str, tokenizer, counts: Sequence[int], positions: Sequence[Position]) -> InputDistribution:
    """Build a distribution from a frequency table and one rule per position.

    Args:
        name: label of the distribution.
        tokenizer: the model's tokenizer (used to decode each id).
        counts: occurrences of every token id in a corpus, as from :func:`count_tokens`.
        positions: per position, ``"=text"`` for a fixed token, a regex matched against the
            decoded token, or a predicate on the decoded token.
    """
    vocab = len(counts)
    texts = [tokenizer.decode([i]) for i in range(vocab)]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    weights = torch.tensor(counts, dtype=torch.float64)
    rows = []
    for pos, rule in enumerate(positions):
        row = torch.zeros(vocab, dtype=torch.float64)
        if isinstance(rule, str) and rule.startswith("="):
            ids = tokenizer(rule[1:], add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"distribution {name!r}, position {pos}: fixed text {rule[1:]!r} is "
                                 f"{len(ids)} tokens, not one")
            row[ids[0]] = 1.0
        else:
            match = (lambda s, r=re.compile(rule): r.fullmatch(s) is not None) if isinstance(rule, str) else rule
            keep = torch.tensor([i not in special and match(t) for i, t in enumerate(texts)])
            row = torch.where(keep, weights, torch.zeros_like(weights))
            if row.sum() == 0:
                raise ValueError(f"distribution {name!r}, position {pos}: no token with a nonzero count "
                                 f"matches {rule!r}")
            row = row / row.sum()
        rows.append(row)
    return InputDistribution(name, torch.stack(rows))


@dataclass(frozen=True)
class DistributionSpec:
    """A named recipe: one rule per position (see :func:`from_counts`)."""

    name: str
    positions: tuple[Position, ...]
    description: str = ""


_ANY = r"[^\n]+"  # any token that does not break the line
DISTRIBUTIONS: dict[str, DistributionSpec] = {}


def register_distribution(spec: DistributionSpec, *, replace: bool = False) -> DistributionSpec:
    """Add a named distribution to the registry."""
    if spec.name in DISTRIBUTIONS and not replace:
        raise ValueError(f"a distribution named {spec.name!r} is already registered; pass replace=True")
    DISTRIBUTIONS[spec.name] = spec
    return spec


for _spec in [
    DistributionSpec("hex", (r"[0-9a-f]+",) * 8, "hexadecimal fragments"),
    DistributionSpec("camel", (r"[a-z]{2,}",) + (r"[A-Z][a-z]*|[a-z]+",) * 7, "a camelCase identifier"),
    DistributionSpec("colon", (_ANY,) * 7 + ("=:",), "a line of code ending in a colon"),
    DistributionSpec("if", ("= if",) + (_ANY,) * 7, "code after `if`"),
    DistributionSpec("caps", (r" ?[A-Z][a-z]+",) * 8, "capitalised words"),
    DistributionSpec("english", (r" [a-z]+",) * 8, "lowercase English-like words"),
]:
    register_distribution(_spec)


def build_distribution(name: str, tokenizer, counts: Sequence[int]) -> InputDistribution:
    """Build the registered distribution ``name`` for ``tokenizer`` from a frequency table."""
    if name not in DISTRIBUTIONS:
        raise KeyError(f"unknown distribution {name!r}; registered: {sorted(DISTRIBUTIONS)}")
    spec = DISTRIBUTIONS[name]
    return from_counts(name, tokenizer, counts, spec.positions)
