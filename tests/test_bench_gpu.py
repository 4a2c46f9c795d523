"""benchmarks/bench_gpu.py --tiny: the GPU benchmark's code on a tiny Qwen3 on the CPU, and its JSON."""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def test_tiny_run_writes_every_field(tmp_path):
    bench = load_benchmark("bench_gpu")
    out = bench.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "gpu_tiny.json")])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "gpu" and data["command"] == "python benchmarks/bench_gpu.py --tiny"
    assert data["machine"]["device"] == "cpu" and data["dtype"] == "float32" and data["tokens"] == 16
    (shape,) = data["shapes"]
    assert shape["shape"] == "tiny" and shape["config"]["num_key_value_heads"] == 1
    assert shape["auto_batch_size"] == 64 and shape["parameters_per_model"] > 0
    assert [r["batch"] for r in shape["rows"]] == [1, 8, 32, 64]
    for row in shape["rows"]:
        for side in ("path", "generate"):
            assert row[side]["tokens_per_s"] > 0 and row[side]["oom"] is False
            assert row[side]["peak_memory_bytes"] is None  # the CPU has no allocator peak
        assert row["ratio"] == round(row["path"]["tokens_per_s"] / row["generate"]["tokens_per_s"], 3)
    assert data["target"] == {"shape": "qwen3-4b", "batch": 64, "ratio_at_least": 0.45, "ratio": None, "met": None}

    render = load_benchmark("render_readme")
    text = render.gpu_table(data)
    assert "pending" in text and "| tiny |" in text


def test_real_shapes_are_qwen3s_configurations():
    pairs = load_benchmark("random_pairs")
    small, big = pairs.config("qwen3-0.6b"), pairs.config("qwen3-4b")
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads, small.num_key_value_heads) == \
        (1024, 28, 16, 8)
    assert (big.hidden_size, big.num_hidden_layers, big.intermediate_size, big.vocab_size) == (2560, 36, 9728, 151936)
    assert big.model_type == "qwen3" and big.tie_word_embeddings
