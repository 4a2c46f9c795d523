"""benchmarks/bench_memory.py: the random-weight LoRA pair it builds, and the table rendered from its results."""

import json

import pytest
from benchmark_scripts import load_benchmark

pytest.importorskip("peft")


def test_random_lora_pair_is_a_bf16_base_and_a_nonzero_adapter_that_loads_shared(tmp_path):
    import torch
    from safetensors import safe_open

    from tailscope.models import ModelPair

    bench = load_benchmark("bench_memory")
    task = {"pair": "tiny-lora", "threads": 1, "seed": 7, "base": str(tmp_path / "base"),
            "adapter": str(tmp_path / "adapter")}
    built = bench.child_build_random(task)
    assert built["shape"] == "tiny" and built["lora"]["parameters"] > 0
    with safe_open(str(tmp_path / "base" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        b = [f.get_tensor(k) for k in f.keys() if "lora_B" in k]
    assert b and all(t.abs().max() > 0 for t in b)  # PEFT's own init (B = 0) would leave the target the base
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"] and config["r"] == 16

    reference, target = bench._pair_specs(task)
    pair = ModelPair.load(reference, target, share=True)
    assert pair.shares_base
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        gap = (pair.reference.model(input_ids=ids).logits - pair.target.model(input_ids=ids).logits).abs().max()
    assert gap > 1e-4


def test_unknown_shape_is_refused(tmp_path):
    bench = load_benchmark("bench_memory")
    with pytest.raises(SystemExit, match="unknown shape"):
        bench.child_build_random({"pair": "qwen9-lora", "threads": 1, "seed": 0, "base": str(tmp_path / "b"),
                                  "adapter": str(tmp_path / "a")})


def _result(pair: str, memory: float, speed: float, params: int, cpu: float | None = None) -> dict:
    cpu = speed if cpu is None else cpu
    way = {"peak_rss_mb": 1000.0, "before_load": {"rss_mb": 304.0}, "base_parameters": params}
    return {"pair": pair, "base_parameters": params, "memory_ratio": memory, "memory_ratio_above_runtime": memory,
            "sampling_memory_ratio": memory, "sampling_memory_ratio_above_runtime": memory,
            "tokens_per_s": {"shared": 10.0, "copies": 10.0}, "tokens_per_s_ratio": speed,
            "tokens_per_cpu_s_ratio": cpu, "identical_rollouts": True, "identical_estimates": True,
            "estimates_within_1e-4": True, "mixed_batch": None, "shared": [way], "copies": [way]}


def test_memory_table_says_per_pair_whether_the_targets_are_met():
    render = load_benchmark("render_readme")
    data = {"command": "python benchmarks/bench_memory.py --fast", "alpha": 0.5,
            "settings": {"rows": 16, "tokens": 24, "seed": 7, "dtype": "float32"},
            "targets": {"memory_ratio_max": 0.6, "tokens_per_s_ratio_min": 0.95},
            "machine": {"cpu_threads": 1, "torch": "t", "peft": "p", "load_average_start": [1.0],
                        "load_average_end": [1.0]},
            "results": [_result("small", 0.69, 1.05, 134_515_008), _result("large", 0.55, 0.90, 596_049_920),
                        _result("loaded", 0.60, 1.30, 596_049_920, cpu=0.90)]}
    rows = {line.split(" | ")[0].strip("| "): line for line in render.memory_table(data).splitlines()
            if line.startswith(("| small", "| large", "| loaded"))}
    assert "| 135M |" in rows["small"] and "memory **no**, tok/s yes" in rows["small"]
    assert "| 596M |" in rows["large"] and "memory yes, tok/s **no**" in rows["large"]
    # a wall-clock ratio that CPU time does not confirm (other jobs slowed one way) does not count
    assert "memory yes, tok/s **no**" in rows["loaded"]
