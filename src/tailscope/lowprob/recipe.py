"""The seeded, single-threaded recipe for the small models of the low-probability benchmark.

A byte-level BPE tokenizer and three Llama models (1, 2 and 4 layers, 130k–200k parameters) are
trained on the Python standard library's source files, which every Python installation carries,
so the recipe needs no network. The result is written as fp16 safetensors under
``lowprob/data/`` (METHODS.md §3: "ground truth by brute force ... on small models").
"""

from __future__ import annotations

import json
import math
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["MODEL_SPECS", "ModelSpec", "build_all", "corpus_files", "read_corpus", "token_stream", "train_model"]


@dataclass(frozen=True)
class ModelSpec:
    """Shape and training schedule of one benchmark model."""

    name: str
    layers: int
    hidden: int
    steps: int
    heads: int = 4
    batch: int = 32
    context: int = 32
    lr: float = 3e-3
    seed: int = 0


MODEL_SPECS = {
    "L1": ModelSpec("L1", layers=1, hidden=64, steps=3000),
    "L2": ModelSpec("L2", layers=2, hidden=64, steps=3000),
    "L4": ModelSpec("L4", layers=4, hidden=48, steps=3000),
}


def corpus_files(stdlib: str | Path | None = None) -> list[Path]:
    """The top-level ``*.py`` files of the standard library, sorted by name."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise FileNotFoundError(f"no *.py files in the standard library directory {root}; pass `stdlib=`")
    return files


def read_corpus(stdlib: str | Path | None = None) -> list[str]:
    """The text of every corpus file, in sorted order."""
    return [f.read_text(encoding="utf-8", errors="replace") for f in corpus_files(stdlib)]


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All texts tokenized and concatenated into one 1-D id tensor."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


def train_model(spec: ModelSpec, tokenizer, stream: torch.Tensor, *, log_every: int = 200):
    """Train one model on random windows of ``stream`` with AdamW and a cosine schedule."""
    from tailscope.tiny import build_model

    model = build_model(tokenizer, "llama", layers=spec.layers, hidden=spec.hidden, heads=spec.heads,
                        max_positions=spec.context, seed=spec.seed).train()
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    losses = []
    for step in range(spec.steps):
        lr = spec.lr * 0.5 * (1 + math.cos(math.pi * step / spec.steps)) * min(1.0, (step + 1) / 50)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(stream) - spec.context - 1, (spec.batch,), generator=gen)
        windows = torch.stack([stream[s:s + spec.context + 1] for s in starts.tolist()])
        loss = model(input_ids=windows[:, :-1], labels=windows[:, :-1].clone()).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"{spec.name} step {step + 1}/{spec.steps} loss {sum(losses[-log_every:]) / log_every:.3f}",
                  flush=True)
    return model.eval(), losses


def build_all(out: str | Path, *, vocab_size: int = 1024, stdlib: str | Path | None = None,
              names: list[str] | None = None) -> Path:
    """Run the whole recipe: tokenizer, token-frequency table, then each model in ``names``.

    The shipped models were trained with one torch thread (``torch.set_num_threads(1)``, which the
    CLI sets); other thread counts change float rounding and so the weights."""
    from tailscope.tiny import build_tokenizer

    out = Path(out)
    texts = read_corpus(stdlib)
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
        tokenizer.save_pretrained(tok_dir)
    stream = token_stream(tokenizer, texts)
    counts = torch.bincount(stream, minlength=len(tokenizer)).tolist()
    (out / "token_counts.json").write_text(json.dumps({"tokens": len(stream), "counts": counts}))
    for name in names or list(MODEL_SPECS):
        spec = MODEL_SPECS[name]
        model, losses = train_model(spec, tokenizer, stream)
        model_dir = out / "models" / name
        model.to(torch.float16).save_pretrained(model_dir, safe_serialization=True)
        meta = {**asdict(spec), "final_loss": sum(losses[-100:]) / 100,
                "parameters": sum(p.numel() for p in model.parameters())}
        (model_dir / "recipe.json").write_text(json.dumps(meta, indent=2))
    return out
