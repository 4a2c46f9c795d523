"""Shared fixtures: small real checkpoints built once per test session in a temp directory."""

from __future__ import annotations

import os

# tiny tensors: a second thread only adds contention, and on a machine shared with other jobs
# oversubscribed OpenMP/BLAS threads slow the suite down many times over (set before numpy/torch load)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

CORPUS = [
    "hello there, how are you today?",
    "I am fine, thank you for asking.",
    "what is the weather like in the city?",
    "tell me a story about a cat and a dog.",
    "Sure, here is a short answer to your question.",
    "I can't help with that request, sorry.",
    "The quick brown fox jumps over the lazy dog.",
    "please explain how plants grow in the spring.",
] * 25


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Checkpoint directories: two llama models sharing a tokenizer (the target with a padded logit
    dimension), a third with its own tokenizer, and a gpt2 pair."""
    from tailscope.tiny import build_model, build_tokenizer, save_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer(CORPUS, vocab_size=320)
    other = build_tokenizer(CORPUS[:4] * 10, vocab_size=300)
    dirs = {
        "ref": save_checkpoint(build_model(tok, "llama", seed=1), tok, root / "ref"),
        "tgt": save_checkpoint(build_model(tok, "llama", seed=2, pad_vocab_to=352), tok, root / "tgt"),
        "third": save_checkpoint(build_model(tok, "llama", seed=3), tok, root / "third"),
        "other_tok": save_checkpoint(build_model(other, "llama", seed=4), other, root / "other_tok"),
        "gpt2_a": save_checkpoint(build_model(tok, "gpt2", seed=5), tok, root / "gpt2_a"),
        "gpt2_b": save_checkpoint(build_model(tok, "gpt2", seed=6), tok, root / "gpt2_b"),
    }
    return dirs


@pytest.fixture(scope="session")
def tiny_pair(tiny_dirs):
    from tailscope.models import ModelPair

    return ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]))


@pytest.fixture(scope="session")
def prompts():
    from tailscope.prompts import Prompt

    return [
        Prompt("short", text="hello"),
        Prompt("long", text="tell me a story about a cat and a dog, please, and make it long"),
        Prompt("chat", messages=(("system", "be brief"), ("user", "what is the weather like?"))),
    ]
