"""Temperature choice for ITGIS and MHIS on held-out targets.

For three (model, distribution) pairs, five targets with at least 16 ground-truth hits that are
not among the evaluated targets are estimated at 4096 calls (seed 7) for a grid of temperatures;
the mean Itakura–Saito loss (zeros floored at 1/(2·budget)) and the count of zero estimates are
printed. The recorded run is benchmarks/results/lowprob_tuning.txt (stopped after the ITGIS grid
of the third pair).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from tailscope.lowprob import LowProbModel, estimate, load_ground_truth, zoo
from tailscope.lowprob.loss import itakura_saito

BUDGET = 4096
PAIRS = [("L2", "hex"), ("L1", "if"), ("L4", "camel")]
GRID = {"itgis": [0.25, 0.5, 1.0, 2.0], "mhis": [0.5, 1.0, 2.0, 4.0]}


def main() -> None:
    torch.set_num_threads(1)
    for model, name in PAIRS:
        truth = load_ground_truth(f"src/tailscope/lowprob/data/ground_truth/{model}__{name}.json")
        cache = f"benchmarks/results/lowprob_estimates/{model}__{name}.json"
        evaluated = {r["target"] for r in json.load(open(cache))}
        held_out = sorted((t for t in truth.targets(min_hits=16, max_probability=5e-4) if t not in evaluated),
                          key=truth.probability)
        targets = [held_out[i] for i in np.linspace(0, len(held_out) - 1, 5).round().astype(int)]
        lm = LowProbModel(zoo.load_model(model), batch_size=1024)
        dist = zoo.load_distribution(name)
        for method, temperatures in GRID.items():
            for temperature in temperatures:
                start, losses, zeros = time.time(), [], 0
                for t in targets:
                    r = estimate(method, lm, dist, t, BUDGET, seed=7, temperature=temperature)
                    zeros += r.estimate == 0
                    losses.append(float(itakura_saito(truth.probability(t), max(r.estimate, 1 / (2 * BUDGET)))))
                print(model, name, method, temperature, "zeros", zeros, "loss", round(float(np.mean(losses)), 3),
                      round(time.time() - start, 1), flush=True)


if __name__ == "__main__":
    main()
