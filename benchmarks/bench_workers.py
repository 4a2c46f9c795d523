"""Rollouts/s on Ray workers: 2 workers against 1 (one torch thread each), measured in the same run.

The workload is what a sweep or an estimator asks of the run store: ``get_or_sample_many`` for
8 prompts × 64 rollouts at one path point of an organism, committed unit by unit into a fresh
SQLite store on the driver. Each repetition times 1 worker, 2 workers and the in-process sampler
(one thread, in the driver: the reference for Ray's overhead) at a new path point (α = 0.5, 0.55,
…), so nothing comes from a store; the pools are loaded beforehand (start-up is not timed). The
rollouts of the last repetition are compared bit for bit across 1 worker, 2 workers and in process,
and so are the importance-sampling estimates of the target's rate judged from them.

Needs both cores idle: run it under ``flock -x /work/cpu.lock``. Writes
``benchmarks/results/workers.json``. Run: ``python benchmarks/bench_workers.py [--organism NAME]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tailscope.estimators import StoreSource, importance
from tailscope.judges import make_judge
from tailscope.organisms import load
from tailscope.sampling import PathSampler
from tailscope.scale import RaySampler
from tailscope.store import RunStore, run_config

RESULTS = Path(__file__).parent / "results" / "workers.json"


def timed_run(sampler, prompts, proposal: str, n: int, root: Path, name: str) -> tuple[float, RunStore]:
    store = RunStore.open(root / f"{name}.db", run_config(sampler))
    start = time.perf_counter()
    store.get_or_sample_many(sampler, prompts, proposal, n)
    elapsed = time.perf_counter() - start
    assert store.count() == n * len(prompts)
    return elapsed, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--organism", default="refusal")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("-n", type=int, default=64, help="rollouts per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per unit (one sampler batch)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    torch.set_num_threads(1)  # this script's own process: the in-process reference uses one thread too
    org = load(args.organism)
    prompts = list(org.prompts)[: args.prompts]
    # 1 + 2 workers stay loaded side by side (CPUs here are Ray's bookkeeping; idle workers use none)
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    times: dict[str, list[float]] = {"in_process": [], "1": [], "2": []}
    try:
        local = PathSampler(org.pair, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=0)
        with RaySampler.from_sampler(local, workers=1, threads_per_worker=1) as one, \
                RaySampler.from_sampler(local, workers=2, threads_per_worker=1) as two:
            samplers = {"1": one, "2": two, "in_process": local}
            for sampler in samplers.values():  # warm up each worker's first calls, on another proposal
                sampler.sample(prompts[:2], args.batch_size, "a=0.3")
            last: dict[str, RunStore] = {}
            with tempfile.TemporaryDirectory() as tmp:
                for rep in range(args.repeats):
                    proposal = f"a={0.5 + 0.05 * rep:g}"  # a new path point each time: nothing is stored yet
                    for key, sampler in samplers.items():
                        elapsed, store = timed_run(sampler, prompts, proposal, args.n, Path(tmp), f"{key}-{rep}")
                        times[key].append(elapsed)
                        if key in last:
                            last[key].close()
                        last[key] = store
                rollouts = {k: s.rollouts() for k, s in last.items()}
                judge = make_judge(org.judge_spec)
                # importance sampling from the stored rollouts toward the target: nothing new is sampled
                estimates = {k: [importance(StoreSource(s, samplers[k], judge), p, args.n, proposal=proposal).to_dict()
                                 for p in prompts] for k, s in last.items()}
                for s in last.values():
                    s.close()
            per_worker = {k: samplers[k].throughput() for k in ("1", "2")}
    finally:
        ray.shutdown()

    total = args.n * len(prompts)
    rate = {k: total / statistics.median(v) for k, v in times.items()}
    data = {
        "command": "flock -x /work/cpu.lock python benchmarks/bench_workers.py"
                   + (f" --organism {args.organism}" if args.organism != "refusal" else ""),
        "organism": args.organism, "prompts": len(prompts), "rollouts_per_prompt": args.n,
        "rollouts": total, "max_new_tokens": args.max_new_tokens, "rows_per_unit": args.batch_size,
        "repeats": args.repeats, "seconds": times,
        "rollouts_per_s": {k: round(v, 2) for k, v in rate.items()},
        "speedup": round(rate["2"] / rate["1"], 3),
        "ray_vs_in_process": round(rate["1"] / rate["in_process"], 3),
        "identical_rollouts": rollouts["1"] == rollouts["2"] == rollouts["in_process"],
        "identical_estimates": estimates["1"] == estimates["2"] == estimates["in_process"],
        "per_worker": per_worker,
        "machine": {"cpu_threads_per_worker": 1, "torch": torch.__version__, "ray": ray.__version__,
                    "python": platform.python_version()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: data[k] for k in ("rollouts_per_s", "speedup", "ray_vs_in_process", "identical_rollouts",
                                           "identical_estimates")}, indent=1))


if __name__ == "__main__":
    main()
