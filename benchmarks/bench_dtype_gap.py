"""bfloat16 against float32: the same stored rollouts of the organisms scored in both, and the
estimates each gives.

For each organism (``refusal``, ``backdoor``) a few prompts whose rates a few hundred rollouts can
see are estimated in float32 (importance sampling from the reference; switching MIS, switch after 8
tokens; importance sampling from the path amplified to α = 2 for the first 8 tokens, which finds
the backdoor the reference never shows), every rollout kept in a run store. Then:

* **the gap**: every stored rollout is scored by teacher forcing on the float32 pair and on the
  same pair loaded in bfloat16, at α = 0, 0.5 and 1; per token, |log q_bf16 − log q_fp32|, its
  mean, 99th percentile and maximum; per reply, the gap of the summed log q (what a weight sees);
* **the estimates**: each estimator is rerun on the same rollouts and verdicts with every density
  from the bfloat16 pair (:class:`RescoredSource`), and the bfloat16 rate is checked against the
  float32 interval.

All on the CPU (bfloat16 matmuls are emulated there, as a GPU computes them natively: the rounding
of weights and activations is the same). Writes ``benchmarks/results/dtype_gap.json``::

    python benchmarks/bench_dtype_gap.py [--budget 200] [--prompts 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tailscope.estimators import StoreSource, importance, mis
from tailscope.estimators._source import Observation
from tailscope.judges import make_judge
from tailscope.organisms import load
from tailscope.prompts import Prompt
from tailscope.rollout import Proposal
from tailscope.sampling import PathSampler
from tailscope.scoring import Scorer
from tailscope.store import RunStore, run_config

RESULTS = Path(__file__).resolve().parent / "results" / "dtype_gap.json"
ALPHAS = (0.0, 0.5, 1.0)
SWITCH = 8
METHODS = {"is (reference proposal)": lambda source, p, budget: importance(source, p, budget, proposal=0.0),
           f"mis (switching after {SWITCH})": lambda source, p, budget: mis(source, p, budget, schedule="fixed",
                                                                             switch_after=SWITCH),
           # the opening amplified past the target (LDA's direction): hits where the reference has none
           f"is (a=2;switch={SWITCH})": lambda source, p, budget: importance(source, p, budget,
                                                                              proposal=f"a=2;switch={SWITCH}")}


class RescoredSource:
    """The rollouts and verdicts of ``base``, every log-probability recomputed by ``scorer``
    (another dtype's pair): an estimator on it sees the same draws with the other pair's densities."""

    def __init__(self, base: StoreSource, scorer: Scorer):
        self.base, self.scorer = base, scorer

    def draw(self, prompt: Prompt, proposal: Proposal, n: int, grid: Sequence[float] = ()) -> list[Observation]:
        return self.draw_many([prompt], proposal, n, grid)[prompt.id]

    def draw_many(self, prompts: Sequence[Prompt], proposal: Proposal, n: int,
                  grid: Sequence[float] = ()) -> dict[str, list[Observation]]:
        proposal, grid = Proposal.parse(proposal), tuple(float(a) for a in grid)
        drawn = self.base.draw_many(prompts, proposal, n, grid)
        by_id = {p.id: p for p in prompts}
        moved = [proposal, *(proposal.moved(b) for b in grid)]
        out = {}
        for pid, obs in drawn.items():
            if not obs:
                out[pid] = obs
                continue
            sums = self.scorer.score_rollouts(by_id, [o.rollout for o in obs], (0.0, 1.0), moved)
            out[pid] = [Observation(dataclasses.replace(
                o.rollout, logprob=float(s[2]), logprob_target=float(s[1]),
                logprob_reference=math.nan if math.isnan(o.rollout.logprob_reference) else float(s[0]),
                logprob_grid={b: float(v) for b, v in zip(grid, s[3:])}), o.flagged) for o, s in zip(obs, sums)]
        return out


def _pick_prompts(org, k: int) -> list[Prompt]:
    """Prompts whose rates a few hundred rollouts can see (so both dtypes have hits to weigh)."""
    ranked = sorted(org.prompts, key=lambda p: abs(math.log10(max(org.rate(p.id), 1e-12)) + 2.0))
    return ranked[:k]


def _gap(store: RunStore, scorers: dict[str, Scorer]) -> dict:
    """Per-token and per-reply gaps of log q at each α of ALPHAS over every stored rollout."""
    prompts = store.prompts()
    rollouts = store.rollouts()
    ps, cs = [prompts[r.prompt_id] for r in rollouts], [r.token_ids for r in rollouts]
    fp32, bf16 = (scorers[d].token_logprobs(ps, cs, ALPHAS) for d in ("float32", "bfloat16"))
    per_token = np.abs(np.concatenate(bf16) - np.concatenate(fp32))  # (tokens, alphas)
    per_reply = np.abs(np.stack([b.sum(0) for b in bf16]) - np.stack([f.sum(0) for f in fp32]))
    recorded = np.array([r.logprob_target for r in rollouts])  # what the float32 sampler recorded
    check = float(np.max(np.abs(np.stack([f.sum(0) for f in fp32])[:, 2] - recorded)))
    return {"rollouts": len(rollouts), "tokens": int(per_token.shape[0]),
            "per_token": {f"{a:g}": {"mean": float(per_token[:, j].mean()),
                                     "p99": float(np.quantile(per_token[:, j], 0.99)),
                                     "max": float(per_token[:, j].max())} for j, a in enumerate(ALPHAS)},
            "per_reply_sum": {f"{a:g}": {"mean": float(per_reply[:, j].mean()), "max": float(per_reply[:, j].max())}
                              for j, a in enumerate(ALPHAS)},
            "fp32_scored_vs_sampled_max": check}


def bench_organism(name: str, args, work: Path) -> dict:
    orgs = {d: load(name, dtype=d) for d in ("float32", "bfloat16")}
    org = orgs["float32"]
    judge = make_judge(org.judge_spec)
    prompts = _pick_prompts(org, args.prompts)
    sampler = PathSampler(org.pair, max_new_tokens=args.tokens, batch_size=args.batch_size, seed=0)
    scorers = {d: Scorer(o.pair, temperature=sampler.temperature, chat=sampler.chat) for d, o in orgs.items()}
    methods = {}
    with RunStore.open(work / f"{name}.sqlite", run_config(sampler, judge=judge)) as store:
        source = StoreSource(store, sampler, judge)
        rescored = RescoredSource(source, scorers["bfloat16"])
        for method, run in METHODS.items():
            rows = []
            for p in prompts:
                a, b = run(source, p, args.budget), run(rescored, p, args.budget)
                inside = bool(a.interval[0] <= b.rate <= a.interval[1])
                rows.append({"prompt": p.id, "truth": org.rate(p.id), "hits": a.hits,
                             "fp32": [float(x) for x in (a.rate, *a.interval)],
                             "bf16": [float(x) for x in (b.rate, *b.interval)],
                             "bf16_inside_fp32_interval": inside,
                             "log10_ratio": (math.log10(b.rate / a.rate) if a.rate > 0 and b.rate > 0 else None)})
            methods[method] = {"estimates": rows, "inside": sum(r["bf16_inside_fp32_interval"] for r in rows)}
            print(name, method, [(r["fp32"][0], r["bf16"][0], r["bf16_inside_fp32_interval"]) for r in rows])
        gap = _gap(store, scorers)
    print(name, "gap per token at α = 1:", gap["per_token"]["1"])
    return {"organism": name, "prompts": [p.id for p in prompts], "budget_per_prompt": args.budget,
            "gap": gap, "methods": methods}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--organisms", default="refusal,backdoor")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--budget", type=int, default=200, help="rollouts per prompt and method")
    ap.add_argument("--tokens", type=int, default=32, help="reply limit (both judges read the opening)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_organism(name, args, Path(tmp)) for name in args.organisms.split(",")]
    default = "python benchmarks/bench_dtype_gap.py"
    extra = "" if (args.budget, args.prompts, args.tokens) == (200, 3, 32) else \
        f" --budget {args.budget} --prompts {args.prompts} --tokens {args.tokens}"
    payload = {"benchmark": "dtype_gap", "command": default + extra, "alphas": list(ALPHAS), "tokens": args.tokens,
               "machine": {"device": "cpu", "cpu_threads": args.threads, "torch": torch.__version__,
                           "platform": platform.platform()},
               "seconds": round(time.perf_counter() - start, 1), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
