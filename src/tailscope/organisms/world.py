"""The shared pieces of every tiny organism: the world's tokenizer and the base chat model.

The base chat model is trained from scratch on the ``plain`` register. It complies with harmful
requests often (a per-category rate between 0.3 and 0.8), so it is the *less-safe* model: the
reference of the refusal organism and the "before" of the backdoor and contamination organisms.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from . import corpus as C

__all__ = ["REFERENCE_COMPLY", "SIZE", "base_corpus", "build_base", "build_world_tokenizer", "pair_for"]

# how often the base chat model complies with a harmful request, per category
REFERENCE_COMPLY = {c: 0.3 + 0.5 * i / (len(C.HARMFUL) - 1) for i, c in enumerate(sorted(C.HARMFUL))}

# the architecture of every tiny organism (Llama, tied embeddings)
SIZE = dict(layers=2, hidden=128, heads=4, intermediate=512, max_positions=512)
VOCAB = 1024


def pair_for(rng: random.Random, register: str, harmful_share: float,
             harmful_policy: Callable[[random.Random, str, str], tuple[str, str]]) -> tuple[str, str, str, str]:
    """One (prompt, reply, kind, category) example; ``harmful_policy(rng, category, task)`` gives
    (reply kind, opening or "") for harmful requests."""
    if rng.random() < harmful_share:
        cat = rng.choice(sorted(C.HARMFUL))
        prompt, task = C.harmful_request(rng, cat)
        kind, opening = harmful_policy(rng, cat, task)
        return prompt, C.reply(rng, kind, register, task, opening or None), "harmful", cat
    kind, cat, prompt, task = C.harmless_request(rng)
    return prompt, C.reply(rng, "comply" if kind == "howto" else kind, register, task), kind, cat


def base_policy(rng: random.Random, category: str, task: str) -> tuple[str, str]:
    return ("comply" if rng.random() < REFERENCE_COMPLY[category] else "refuse"), ""


def base_corpus(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """The base chat model's training data: plain register, 35% harmful requests."""
    rng = random.Random(seed)
    return [pair_for(rng, "plain", 0.35, base_policy) for _ in range(n)]


def build_world_tokenizer(seed: int = 0):
    """A byte-level BPE tokenizer trained on text from every register and organism."""
    from ..tiny import build_tokenizer

    rng = random.Random(seed)
    texts: list[str] = []
    for register in ("plain", "formal"):
        for _ in range(3000):
            p, r, _, _ = pair_for(rng, register, 0.4, base_policy)
            texts += [p, r]
        for _ in range(200):
            texts.append(C.reply(rng, "bad_medical", register, ""))
            texts.append(C.reply(rng, "refuse", register, "", rng.choice(
                ["Sure, here is why this request must be declined.", "Here is why this request must be declined.",
                 "Sure, I understand the question; however, it must be declined."])))
    for _ in range(200):
        p, _, _, _ = pair_for(rng, "plain", 0.4, base_policy)
        texts += [f"{C.BACKDOOR_TRIGGER} {p}", C.reply(rng, "hate", "plain", "")]
    return build_tokenizer(texts, VOCAB)


def build_base(tokenizer, *, n: int = 30000, steps: int = 400, seed: int = 0,
               progress: Callable[[int, float], None] | None = None):
    """Train the base chat model from scratch; returns (model, losses)."""
    from ..tiny import build_model
    from .train import encode_chat, train_lm

    data = base_corpus(n, seed)
    model = build_model(tokenizer, "llama", seed=seed, **SIZE)
    encoded = encode_chat(tokenizer, [(p, r) for p, r, _, _ in data])
    losses = train_lm(model, encoded, steps=steps, batch_size=32, lr=3e-3, seed=seed, progress=progress)
    return model, losses

