"""GPU throughput of the path sampler against ``generate``, and peak memory, with no downloads.

Random-initialised pairs with Qwen3-0.6B's and Qwen3-4B's real configurations (``random_pairs.py``:
a random init and that init plus 2% noise, Qwen3's vocabulary size), in bfloat16 on CUDA. At each
batch size, in the same run:

* ``path``: :class:`~tailscope.sampling.PathSampler` at α = 0.5 (both models every token), one
  prompt, ``rows`` rollouts of ``tokens`` new tokens;
* ``generate``: the target alone through transformers' ``generate``, same prompt, rows and length,
  sampling at temperature 1 with no truncation.

Two forward passes per token make 0.5 the nominal ratio path ÷ generate. Peak memory is CUDA's
``max_memory_allocated`` during each run, weights included (the CPU has no such counter: null).
A cell that runs out of memory is recorded as such and the rest goes on. ``--compile`` also times
the path sampler with both models' decode steps compiled (``PathSampler(compile=True)``), and the
compilation itself, into ``gpu_compile.json`` (``gpu_tiny_compile.json`` with ``--tiny``).

    python benchmarks/bench_gpu.py            # a CUDA machine: benchmarks/results/gpu.json
    python benchmarks/bench_gpu.py --tiny     # the same code on a tiny Qwen3 on the CPU (float32), in seconds:
                                              # benchmarks/results/gpu_tiny.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_pairs  # noqa: E402

from tailscope.batching import is_out_of_memory  # noqa: E402
from tailscope.devices import resolve_device, resolve_dtype  # noqa: E402
from tailscope.prompts import Prompt  # noqa: E402
from tailscope.sampling import PathSampler  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = Prompt("bench", text=" ".join(f"w{i}" for i in range(100, 132)))  # 32 tokens
TARGET = {"shape": "qwen3-4b", "batch": 64, "ratio_at_least": 0.45}  # issue 22's bar for the full run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, int, int | None]:
    """(seconds, tokens, peak bytes allocated) of one run of ``fn() -> tokens``."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    tokens = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return seconds, tokens, peak


def run_path(pair, rows: int, tokens: int, compile: bool = False) -> int:
    sampler = PathSampler(pair, max_new_tokens=tokens, batch_size=rows, chat=False, seed=rows, compile=compile)
    return sum(len(r.token_ids) for r in sampler.sample([PROMPT], rows, 0.5))


def run_generate(pair, rows: int, tokens: int) -> int:
    lm = pair.target
    ids = torch.tensor([PathSampler(pair, chat=False).encode_prompt(PROMPT, "target")] * rows, device=pair.device)
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                max_new_tokens=tokens, min_new_tokens=tokens, temperature=1.0, top_k=None,
                                top_p=None, pad_token_id=lm.tokenizer.pad_token_id)
    return int((out.shape[1] - ids.shape[1]) * rows)


def measure(fn, device: torch.device, repeats: int) -> dict[str, Any]:
    """Median tokens/s over ``repeats`` runs and the largest peak; ``{"oom": True}`` if a run ran out of memory."""
    rates, peaks = [], []
    for _ in range(repeats):
        try:
            seconds, tokens, peak = _timed(fn, device)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            return {"tokens_per_s": None, "peak_memory_bytes": None, "oom": True}
        rates.append(tokens / seconds)
        peaks.append(peak)
    peak = None if peaks[0] is None else max(peaks)
    return {"tokens_per_s": round(statistics.median(rates), 1), "peak_memory_bytes": peak, "oom": False}


def _ratio(a: dict, b: dict) -> float | None:
    return round(a["tokens_per_s"] / b["tokens_per_s"], 3) if a["tokens_per_s"] and b["tokens_per_s"] else None


def bench_shape(shape: str, *, device: torch.device, dtype: torch.dtype, batches: list[int], tokens: int,
                repeats: int, compile: bool = False) -> dict[str, Any]:
    pair = random_pairs.random_pair(shape, dtype=dtype, device=device)
    weights = sum(p.numel() * p.element_size() for m in (pair.reference.model, pair.target.model)
                  for p in m.parameters())
    run_path(pair, 2, 2), run_generate(pair, 2, 2)  # warm up both (kernels, allocator)
    extra: dict[str, Any] = {}
    if compile:  # the first compiled batch compiles both models' decode step (dynamic shapes: once)
        eager, start = _timed(lambda: run_path(pair, 2, 4), device)[0], time.perf_counter()
        run_path(pair, 2, 4, compile=True)
        extra["compile_seconds"] = round(time.perf_counter() - start - eager, 1)
    rows = []
    for batch in batches:
        path = measure(lambda: run_path(pair, batch, tokens), device, repeats)
        generate = measure(lambda: run_generate(pair, batch, tokens), device, repeats)
        rows.append({"batch": batch, "path": path, "generate": generate, "ratio": _ratio(path, generate)})
        if compile:
            compiled = measure(lambda: run_path(pair, batch, tokens, compile=True), device, repeats)
            rows[-1].update(path_compiled=compiled, compiled_vs_eager=_ratio(compiled, path))
        print(shape, batch, json.dumps(rows[-1]), file=sys.stderr)
    auto = PathSampler(pair, max_new_tokens=tokens, batch_size="auto").batch_size
    result = {"shape": shape, "config": random_pairs.SHAPES[shape], "vocab_used": int(pair.vocab_size),
              "parameters_per_model": sum(p.numel() for p in pair.target.model.parameters()),
              "weights_bytes_both_models": weights, "auto_batch_size": auto, **extra, "rows": rows}
    del pair
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _machine(device: torch.device) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": device.type, "device_name": name, "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "load_average_1min_at_end": os.getloadavg()[0]}


def _target(shapes: list[dict]) -> dict[str, Any]:
    """Issue 22's bar: path ÷ generate at batch 64 on the 4B shape (None when that cell was not run)."""
    cells = (r for s in shapes if s["shape"] == TARGET["shape"] for r in s["rows"] if r["batch"] == TARGET["batch"])
    cell = next(cells, None)
    ratio = cell["ratio"] if cell else None
    return {**TARGET, "ratio": ratio, "met": None if ratio is None else ratio >= TARGET["ratio_at_least"]}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny Qwen3 on the CPU in float32 (the CI check)")
    ap.add_argument("--shapes", default="qwen3-0.6b,qwen3-4b", help=f"of {', '.join(random_pairs.SHAPES)}")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--tokens", type=int, help="new tokens per rollout (default 128; 16 with --tiny)")
    ap.add_argument("--repeats", type=int, help="runs per cell, median taken (default 3; 2 with --tiny)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto: bfloat16 on a recent GPU, float32 on the CPU")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--compile", action="store_true", help="also time the path sampler with compiled decode steps")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile:  # a fresh inductor cache: the compile time a first run pays, not a cached one
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    device = resolve_device("cpu" if args.tiny else args.device)
    dtype = resolve_dtype("float32" if args.tiny else args.dtype, device)
    shapes = ["tiny"] if args.tiny else args.shapes.split(",")
    tokens = args.tokens or (16 if args.tiny else 128)
    repeats = args.repeats or (2 if args.tiny else 3)
    batches = [int(b) for b in args.batches.split(",")]
    name = ("gpu_tiny" if args.tiny else "gpu") + ("_compile" if args.compile else "")
    out = args.out or RESULTS / f"{name}.json"

    results = [bench_shape(s, device=device, dtype=dtype, batches=batches, tokens=tokens, repeats=repeats,
                           compile=args.compile) for s in shapes]
    flags = [f for f, on in (("--tiny", args.tiny), ("--compile", args.compile), (f"--tokens {tokens}", args.tokens),
                             (f"--batches {args.batches}", args.batches != "1,8,32,64")) if on]
    command = " ".join(["python benchmarks/bench_gpu.py", *flags])
    payload = {"benchmark": "gpu", "command": command, "machine": _machine(device), "dtype": str(dtype).split(".")[-1],
               "attention": "sdpa (transformers' default)", "inductor_cache": "fresh" if args.compile else None, "tokens": tokens, "prompt_tokens": 32, "repeats": repeats,
               "pair": f"a random init and that init plus Gaussian noise of {random_pairs.NOISE:g} of each weight's "
                       "standard deviation; path at α = 0.5", "shapes": results, "target": _target(results)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
