"""Random-initialised model pairs with real architectures, for benchmarks that download nothing.

The shapes are Qwen3's published configurations (layers, widths, heads, vocabulary, RoPE base);
``tiny`` is the same architecture small enough for a CPU check. A pair is a random init (the
reference) and that init plus Gaussian noise of 2% of each weight's spread (the target): two
models as close as a fine-tune and its base, so the path between them is a real mix. The
tokenizer is a word-level vocabulary of the shape's size (``w0 w1 …``): the loop's per-step work
over the vocabulary is the real model's. Used by ``bench_gpu.py`` and ``bench_engine.py --pair``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

# Qwen3-0.6B and Qwen3-4B as published (config.json of each); both tie the LM head to the embedding
QWEN3_COMMON = {"vocab_size": 151936, "max_position_embeddings": 40960, "rope_theta": 1_000_000.0,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "head_dim": 128}
SHAPES: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": {**QWEN3_COMMON, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                   "num_attention_heads": 16, "num_key_value_heads": 8},
    "qwen3-4b": {**QWEN3_COMMON, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8},
    # vLLM's CPU attention wants head sizes of 32 and up
    "tiny": {"vocab_size": 4096, "max_position_embeddings": 4096, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
             "tie_word_embeddings": True, "head_dim": 32, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1},
}
TOKENIZER_SIZE = {"qwen3-0.6b": 151669, "qwen3-4b": 151669}  # Qwen3's tokenizer; the logit rows past it are padding
NOISE = 0.02
SPECIALS = ("<pad>", "<bos>", "<eos>")


def word_tokenizer(size: int):
    """A fast word-level tokenizer of ``size`` tokens: ``<pad> <bos> <eos>`` and the words ``w3 … w{size-1}``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def config(shape: str, tokenizer: Any = None):
    """The Qwen3Config of a shape; with ``tokenizer`` (for SmolLM2's, say) the vocabulary is the tokenizer's."""
    from transformers import Qwen3Config

    fields = dict(SHAPES[shape])
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if tokenizer is not None:
        fields["vocab_size"] = len(tokenizer)
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    return Qwen3Config(**fields, **ids)


def random_models(shape: str, *, dtype: torch.dtype, device: str | torch.device, seed: int = 0,
                  tokenizer: Any = None) -> tuple[Any, Any]:
    """The reference (a random init, built on ``device`` in ``dtype``) and the target (it plus noise)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        reference = AutoModelForCausalLM.from_config(config(shape, tokenizer), dtype=dtype).eval()
    target = copy.deepcopy(reference)
    with torch.no_grad():
        for w in target.parameters():
            w.add_(torch.randn_like(w) * (NOISE * w.float().std()).to(w.dtype))
    return reference, target


def random_pair(shape: str, *, dtype: torch.dtype, device: str | torch.device, seed: int = 0):
    """A :class:`~tailscope.models.ModelPair` of :func:`random_models` with the shape's word-level tokenizer."""
    from tailscope.models import LoadedModel, ModelPair

    tok = word_tokenizer(TOKENIZER_SIZE.get(shape, SHAPES[shape]["vocab_size"]))
    reference, target = random_models(shape, dtype=dtype, device=device, seed=seed)
    device = torch.device(device)
    return ModelPair(LoadedModel(reference, tok, f"random-{shape}-reference", device),
                     LoadedModel(target, tok, f"random-{shape}-target", device))


def save_random_pair(out: Path, shape: str, dtype: torch.dtype, tokenizer: Any, seed: int = 0) -> tuple[str, str]:
    """:func:`random_models` on ``tokenizer``'s vocabulary, saved as two checkpoint directories (for a
    serving engine, which loads from disk): returns the reference's and the target's."""
    dirs = []
    for name, model in zip(("reference", "target"), random_models(shape, dtype=dtype, device="cpu", seed=seed,
                                                                  tokenizer=tokenizer)):
        path = out / name
        model.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        dirs.append(str(path))
    return dirs[0], dirs[1]
