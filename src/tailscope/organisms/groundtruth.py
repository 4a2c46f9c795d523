"""Exact rates of a prefix-decided behaviour, by a tree search over reply tokens.

The organisms' judges say "the reply text starts with one of these openings" (a regex anchored at
the start, ``regex:^(A|B)`` with literal alternatives). Whether a reply is judged positive is then
decided by a prefix of its text, which makes P(behaviour) computable exactly:

* start from the empty reply; at each node take both models' next-token distributions and combine
  them on the logit path (METHODS.md §1) for every α of a grid at once;
* a child whose text starts with an opening is *decided positive*: add its path probability;
* a child whose text is neither a prefix nor an extension of an opening, or that is EOS, or that
  reaches the token limit undecided, is *decided negative*: drop it;
* every other child (its text is still a proper prefix of an opening) is expanded.

All tokens consistent with an opening are expanded, so non-canonical tokenizations are counted
(openings are ASCII: a token holding part of a multi-byte character can never start one);
special tokens other than EOS decode to nothing and are expanded too. The tree is finite (the
text grows toward the openings' length) except through runs of special tokens, so nodes whose
probability falls below a threshold at every α are not expanded and their mass is reported as
``unexplored``: a certified bound, the true rate lies in ``[rate, rate + unexplored]``. The
threshold is lowered until that bound is negligible next to the rate.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .._kvcache import cache_keyword, output_cache
from ..models import ModelPair
from ..path import path_logprobs
from ..prompts import Prompt

__all__ = ["PrefixRates", "opening_regex", "prefix_rates", "starts_with_any"]


def opening_regex(openings: Sequence[str]) -> str:
    """The judge spec of a set of literal openings: ``regex:^(A|B|…)``."""
    return "regex:^(" + "|".join(re.escape(o) for o in openings) + ")"


def starts_with_any(text: str, openings: Sequence[str]) -> bool:
    """The verdict of the opening judge on one reply text."""
    return any(text.startswith(o) for o in openings)


@dataclass
class PrefixRates:
    """Exact rates of one prompt along the path: ``rates[α]`` plus the certified ``unexplored[α]``."""

    prompt_id: str
    rates: dict[float, float]
    unexplored: dict[float, float]
    nodes: int = 0
    settings: dict = field(default_factory=dict)


class _Vocab:
    """Per-token decoded strings and, per text state, which tokens decide it one way or the other."""

    def __init__(self, pair: ModelPair, openings: Sequence[str]):
        tok = pair.tokenizer
        self.size = pair.vocab_size
        special = set(tok.all_special_ids)
        self.eos = set(pair.eos_token_ids)
        self.special = [i for i in range(self.size) if i in special and i not in self.eos]
        self.strings = [("" if i in special else tok.decode([i])) for i in range(self.size)]
        self.openings = tuple(openings)
        self._cache: dict[str, tuple[list[int], list[int]]] = {}

    def split(self, text: str) -> tuple[list[int], list[int]]:
        """(positive token ids, undecided non-special token ids) for a node whose text is ``text``."""
        if text not in self._cache:
            pos, open_ = [], []
            for i, s in enumerate(self.strings):
                if not s:
                    continue
                t = text + s
                if starts_with_any(t, self.openings):
                    pos.append(i)
                elif any(o.startswith(t) for o in self.openings):
                    open_.append(i)
            self._cache[text] = (pos, open_)
        return self._cache[text]


class _Expander:
    """Both models' log-softmaxed next-token logits after one prompt plus any token prefix.

    The prompt is run once per model and its KV cache copied for each batch of prefixes, so a
    node costs only its own reply tokens (the last position's logits only).
    """

    def __init__(self, pair: ModelPair, prompt_ids: list[int], chunk: int = 256):
        self.pair, self.chunk = pair, chunk
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=pair.device)
        self.caches, self.first = [], []
        with torch.no_grad():
            for lm in (pair.reference, pair.target):
                out = lm.model(input_ids=ids, use_cache=True)
                self.caches.append(output_cache(out))
                self.first.append(torch.log_softmax(out.logits[:, -1, : pair.vocab_size].float(), -1))

    @torch.no_grad()
    def __call__(self, prefixes: list[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        if not prefixes[0]:  # the root: the prompt's own last position
            return self.first[0].expand(len(prefixes), -1), self.first[1].expand(len(prefixes), -1)
        outs: tuple[list, list] = ([], [])
        for start in range(0, len(prefixes), self.chunk):
            part = torch.tensor(prefixes[start : start + self.chunk], dtype=torch.long, device=self.pair.device)
            for k, lm in enumerate((self.pair.reference, self.pair.target)):
                cache = copy.deepcopy(self.caches[k])
                cache.batch_repeat_interleave(part.shape[0])
                logits = lm.model(input_ids=part, use_cache=True, logits_to_keep=1,
                                  **{cache_keyword(lm.model): cache}).logits
                outs[k].append(torch.log_softmax(logits[:, -1, : self.pair.vocab_size].float(), -1))
        return torch.cat(outs[0]), torch.cat(outs[1])


def _search(expand: _Expander, vocab: _Vocab, alphas: list[float], temperature: float, max_new_tokens: int,
            min_mass: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One tree search at one pruning threshold: (rate per α, unexplored per α, nodes expanded)."""
    log_min = math.log(min_mass)
    rate = torch.zeros(len(alphas), dtype=torch.float64)
    lost = torch.zeros(len(alphas), dtype=torch.float64)
    # frontier: (token prefix, text, log mass per α); all prefixes of one depth have one length
    frontier = [((), "", torch.zeros(len(alphas), dtype=torch.float64))]
    nodes, depth = 0, 0
    while frontier and depth < max_new_tokens:
        nodes += len(frontier)
        log_a, log_b = expand([f[0] for f in frontier])
        logq = torch.stack([path_logprobs(log_a, log_b, a, temperature) for a in alphas], dim=1).double()
        nxt = []
        for k, (prefix, text, mass) in enumerate(frontier):
            pos, open_ = vocab.split(text)
            if pos:
                rate += torch.logsumexp(mass[:, None] + logq[k][:, pos], dim=-1).exp()
            if depth + 1 >= max_new_tokens:
                continue  # children cut at the token limit undecided get a negative verdict
            cand = open_ + vocab.special
            child = mass[:, None] + logq[k][:, cand]  # (alphas, children)
            keep = child.max(dim=0).values >= log_min
            if not bool(keep.all()):
                lost += child[:, ~keep].exp().sum(-1)
            for j in keep.nonzero().flatten().tolist():
                i = cand[j]
                nxt.append((prefix + (i,), text + vocab.strings[i], child[:, j].clone()))
        frontier = nxt
        depth += 1
    return rate, lost, nodes


def prefix_rates(
    pair: ModelPair,
    prompts: Sequence[Prompt],
    openings: Sequence[str],
    alphas: Sequence[float] = (1.0,),
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 256,
    rel_tol: float = 1e-2,
    abs_tol: float = 1e-11,
    vocab: _Vocab | None = None,
) -> list[PrefixRates]:
    """P_{y∼q_α}[reply text starts with one of ``openings``] for every prompt and α, exactly.

    Args:
        pair: the reference (α = 0) and target (α = 1).
        prompts: chat prompts, encoded as the sampler encodes them.
        openings: literal strings; the judge is ``opening_regex(openings)``.
        alphas: path points; one tree serves them all (the tree depends on text only).
        temperature: sampling temperature T.
        max_new_tokens: the reply limit the rate holds for.
        rel_tol, abs_tol: the search is repeated with a lower pruning threshold (1e-10, 1e-13,
            1e-16, 1e-19) until the certified unexplored mass is at most ``rel_tol · rate + abs_tol``
            at α = 1 (at every α if 1 is not in ``alphas``); the last threshold's result is returned
            either way, with its bound at every α.
    """
    from ..sampling import PathSampler

    if not openings or any(not o for o in openings):
        raise ValueError("`openings` must be a non-empty list of non-empty strings")
    if not all(o.isascii() for o in openings):
        # a byte-level token may hold part of a UTF-8 character, whose text is only known jointly
        raise ValueError(f"`openings` must be ASCII text for an exact search, got {list(openings)!r}")
    alphas = [float(a) for a in alphas]
    vocab = vocab or _Vocab(pair, openings)
    encoder = PathSampler(pair, max_new_tokens=max_new_tokens, temperature=temperature)
    # the bound is enforced at α = 1 (the rate that is measured), or at every α if 1 is not asked for
    check = torch.tensor([a == 1.0 for a in alphas]) if 1.0 in alphas else torch.ones(len(alphas), dtype=torch.bool)
    results = []
    for prompt in prompts:
        prompt_ids = encoder.encode_prompt(prompt, "target")
        if encoder.encode_prompt(prompt, "reference") != prompt_ids:
            raise ValueError(f"prompt {prompt.id!r} encodes differently for the two models")
        expand = _Expander(pair, prompt_ids)
        total = 0
        for min_mass in (1e-10, 1e-13, 1e-16, 1e-19):
            rate, lost, nodes = _search(expand, vocab, alphas, temperature, max_new_tokens, min_mass)
            total += nodes
            ok = lost <= rel_tol * rate + abs_tol
            if bool(ok[check].all()):
                break
        results.append(PrefixRates(
            prompt_id=prompt.id,
            rates={a: float(r) for a, r in zip(alphas, rate)},
            unexplored={a: float(u) for a, u in zip(alphas, lost)},
            nodes=total,
            settings={"temperature": temperature, "max_new_tokens": max_new_tokens, "min_mass": min_mass},
        ))
    return results
