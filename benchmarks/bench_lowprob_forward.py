"""Brute-force throughput of the low-probability benchmark models: inputs per second of the argmax.

Compares, in one run on the same inputs, the transformers forward at the old default batch (8,192)
and at 256 rows, the lean Llama forward (``LlamaLastLogits``) and the lean forward compiled; checks
that all four give the same argmax. Writes benchmarks/results/lowprob_forward.json.

    python benchmarks/bench_lowprob_forward.py [--inputs 65536] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tailscope.lowprob import LowProbModel, zoo
from tailscope.lowprob.groundtruth import chunk_generator

OUT = Path(__file__).resolve().parent / "results" / "lowprob_forward.json"
VARIANTS = {  # name -> LowProbModel settings
    "transformers, batch 8192": {"batch_size": 8192},
    "transformers, batch 256": {"batch_size": 256},
    "lean, batch 256": {"batch_size": 256, "lean": True},
    "lean + torch.compile, batch 256": {"batch_size": 256, "lean": True, "compile": True},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=2**16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distribution", default="colon")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = zoo.load_distribution(args.distribution).sample(args.inputs, chunk_generator(0, 0))
    results = []
    for name in zoo.model_names():
        model = zoo.load_model(name)
        row = {"model": name, "inputs_per_s": {}}
        reference = None
        for variant, settings in VARIANTS.items():
            lm = LowProbModel(model, **settings)
            lm.argmax(x[:512])  # warm-up (and compilation)
            start = time.perf_counter()
            out = lm.argmax(x)
            row["inputs_per_s"][variant] = args.inputs / (time.perf_counter() - start)
            reference = out if reference is None else reference
            row.setdefault("same_argmax", True)
            row["same_argmax"] &= bool(torch.equal(out, reference))
        base = row["inputs_per_s"]["transformers, batch 8192"]
        row["ratio_vs_batch_8192"] = {k: v / base for k, v in row["inputs_per_s"].items()}
        results.append(row)
        print(name, {k: round(v) for k, v in row["inputs_per_s"].items()}, "same argmax:", row["same_argmax"])
    OUT.write_text(json.dumps({
        "command": "python benchmarks/bench_lowprob_forward.py", "inputs": args.inputs,
        "distribution": args.distribution,
        "machine": {"cpu_threads": args.threads, "torch": torch.__version__, "python": platform.python_version()},
        "results": results,
    }, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
