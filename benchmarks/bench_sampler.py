"""Throughput of the path sampler against two baselines measured in the same run.

* ``generate``: the target model alone through transformers' ``generate`` (same batch, prompt,
  length and sampling: temperature 1, no top-k/top-p). Two forward passes per token make 0.5 the
  nominal ratio for the path sampler.
* ``naive``: a two-model loop that recomputes the whole sequence every step, without KV caches.

Writes ``benchmarks/results/sampler.json``. Run: ``python benchmarks/bench_sampler.py [--fast]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tailscope.models import ModelPair, load_model
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler

RESULTS = Path(__file__).parent / "results" / "sampler.json"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def tiny_checkpoints(root: Path) -> tuple[str, str]:
    from tailscope.tiny import build_model, build_tokenizer, save_checkpoint

    corpus = [PROMPT, "Once upon a time there was a keeper.", "The sea was calm and the night was long."] * 50
    tok = build_tokenizer(corpus, vocab_size=512)
    a = save_checkpoint(build_model(tok, "llama", layers=4, hidden=128, seed=1), tok, root / "a")
    b = save_checkpoint(build_model(tok, "llama", layers=4, hidden=128, seed=2), tok, root / "b")
    return str(a), str(b)


def time_generate(lm, prompt_ids: list[int], rows: int, tokens: int) -> tuple[float, int]:
    ids = torch.tensor([prompt_ids] * rows)
    mask = torch.ones_like(ids)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=mask, do_sample=True, max_new_tokens=tokens,
                                min_new_tokens=tokens, temperature=1.0, top_k=None, top_p=None,
                                pad_token_id=lm.tokenizer.pad_token_id)
    elapsed = time.perf_counter() - start
    return elapsed, int((out.shape[1] - ids.shape[1]) * rows)


def time_path(pair, prompt: Prompt, rows: int, tokens: int, seed: int) -> tuple[float, int]:
    sampler = PathSampler(pair, max_new_tokens=tokens, batch_size=rows, seed=seed)
    start = time.perf_counter()
    rollouts = sampler.sample([prompt], rows, 0.5)
    elapsed = time.perf_counter() - start
    return elapsed, sum(len(r.token_ids) for r in rollouts)


def time_naive(pair, prompt_ids: list[int], rows: int, tokens: int) -> tuple[float, int]:
    """Both models re-run on the full sequence at every step (no caches)."""
    ids = torch.tensor([prompt_ids] * rows)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(tokens):
            la = torch.log_softmax(pair.reference.model(input_ids=ids).logits[:, -1, : pair.vocab_size].float(), -1)
            lb = torch.log_softmax(pair.target.model(input_ids=ids).logits[:, -1, : pair.vocab_size].float(), -1)
            q = torch.softmax(la + 0.5 * (lb - la), -1)
            ids = torch.cat([ids, torch.multinomial(q, 1, generator=gen)], 1)
    return time.perf_counter() - start, rows * tokens


def median_rate(fn, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        elapsed, n = fn()
        rates.append(n / elapsed)
    return statistics.median(rates)


def bench(name: str, pair: ModelPair, rows: int, tokens: int, naive_tokens: int, repeats: int, naive_rows: int) -> dict:
    prompt = Prompt("bench", text=PROMPT)
    sampler = PathSampler(pair)
    prompt_ids = sampler.encode_prompt(prompt, "target")
    time_path(pair, prompt, 2, 2, 0)  # warm up both models
    path = median_rate(lambda: time_path(pair, prompt, rows, tokens, 0), repeats)
    generate = median_rate(lambda: time_generate(pair.target, prompt_ids, rows, tokens), repeats)
    path_long = median_rate(lambda: time_path(pair, prompt, naive_rows, naive_tokens, 1), max(1, repeats // 2))
    naive = median_rate(lambda: time_naive(pair, prompt_ids, naive_rows, naive_tokens), 1)
    return {
        "model": name, "rows": rows, "new_tokens": tokens, "naive_new_tokens": naive_tokens, "naive_rows": naive_rows,
        "path_tokens_per_s": round(path, 1), "generate_tokens_per_s": round(generate, 1),
        "path_tokens_per_s_long": round(path_long, 1), "naive_tokens_per_s": round(naive, 1),
        "ratio_vs_generate": round(path / generate, 3), "ratio_vs_naive": round(path_long / naive, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="fewer repeats, tiny model only")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--naive-rows", type=int, default=4,
                        help="SmolLM2's rows for the no-cache comparison, both sides (its full recomputation is slow)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (1 is stable on shared CPUs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.fast else 5
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        a, b = tiny_checkpoints(Path(tmp))
        pair = ModelPair(load_model(a), load_model(b))
        results.append(bench("tiny llama (4 layers, d=128)", pair, args.rows, args.tokens, 64, repeats, args.rows))
        print(json.dumps(results[-1]), file=sys.stderr)
    if not args.fast:
        lm = load_model("smollm2")
        results.append(bench("SmolLM2-135M-Instruct", ModelPair(lm, lm), args.rows, args.tokens, 64, 3, args.naive_rows))
        print(json.dumps(results[-1]), file=sys.stderr)
    out = RESULTS.with_name("sampler_fast.json") if args.fast else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "sampler",
        "command": "python benchmarks/bench_sampler.py" + (" --fast" if args.fast else ""),
        "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
