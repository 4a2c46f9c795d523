"""batch_size="auto": a batch that runs out of memory is drawn again in halves, the same rollouts.

The out-of-memory condition is real: ``memory_limit`` gives a batch fewer bytes than the machine
has, the sampler measures the KV caches it actually allocated, and a batch over the limit raises
``torch.OutOfMemoryError`` from inside the batch, after the reference's cache is built, as a full
GPU would.
"""

from __future__ import annotations

import logging

import pytest
import torch

from tailscope.batching import (
    AUTO_CPU_ROWS,
    MEMORY_SHARE,
    OutOfMemoryAtOneRowError,
    auto_batch_size,
    cache_bytes,
    is_out_of_memory,
    kv_bytes_per_token,
    row_bytes,
)
from tailscope.sampling import PathSampler, SampleRequest
from tailscope.store import RunStore, run_config

TOKENS = 64  # long replies: the reply dominates the cache, so rows of any prompt compare


def _kv_bytes(pair, sampler, prompts, rows: int) -> int:
    """The KV cache bytes of a batch of ``rows`` rows padded to the widest of ``prompts``."""
    width = max(len(sampler.encode_prompt(p, which)) for p in prompts for which in ("reference", "target"))
    per_position = kv_bytes_per_token(pair.reference.model) + kv_bytes_per_token(pair.target.model)
    return per_position * rows * (width + TOKENS)


def _store_run(tmp_path, name, sampler, prompts, n):
    """Sample through a run store; returns its rollouts, the rollouts progress counted, and every
    rollout offered to the store (a partial batch stored twice would show up here)."""
    counted, offered = [], []
    store = RunStore.open(tmp_path / f"{name}.sqlite", run_config(sampler))
    add = store.add_rollouts

    def add_rollouts(batch, **kw):
        offered.extend((r.prompt_id, r.seed_index) for r in batch)
        return add(batch, **kw)

    store.add_rollouts = add_rollouts
    with store:
        store.get_or_sample_many(sampler, prompts, "a=0.5", n, logprob_grid=(0.0, 1.0), progress=counted.append)
        return store.rollouts(), sum(counted), offered


def test_out_of_memory_halves_and_draws_the_same_rollouts_again(tiny_pair, prompts, tmp_path, caplog):
    n = 8  # 24 requests: the first batch takes them all (64 rows on a CPU)
    fixed = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size=3)
    limit = _kv_bytes(tiny_pair, fixed, prompts, 3)  # three rows of any prompt fit, six rows of none
    assert _kv_bytes(tiny_pair, fixed, [min(prompts, key=lambda p: len(fixed.encode_prompt(p, "target")))], 6) > limit

    auto = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size="auto", memory_limit=limit)
    assert auto.batch_size == AUTO_CPU_ROWS
    want, want_counted, want_offered = _store_run(tmp_path, "fixed", fixed, prompts, n)
    with caplog.at_level(logging.WARNING, logger="tailscope.sampling"):
        got, got_counted, got_offered = _store_run(tmp_path, "auto", auto, prompts, n)

    assert auto.batch_size == 3
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"out of memory with {rows} rows" for rows in (24, 12, 6)]
    assert got == want  # bit-identical: tokens, texts, every log-probability and grid point
    assert len(got) == got_counted == len(got_offered) == len(set(got_offered)) == len(prompts) * n
    assert sorted(got_offered) == sorted(want_offered)


def test_a_later_batch_out_of_memory_keeps_every_rollout_once(tiny_pair, prompts, tmp_path):
    short, long = prompts[0], prompts[1]
    fixed = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size=4)
    limit = max(_kv_bytes(tiny_pair, fixed, [short], 8), _kv_bytes(tiny_pair, fixed, [long], 4))
    assert _kv_bytes(tiny_pair, fixed, [long], 8) > limit  # eight short rows fit, eight long ones do not

    auto = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size="auto", memory_limit=limit)
    auto.batch_size = 8
    requests = [SampleRequest(p, i) for p in (short, long) for i in range(8)]
    sizes = []
    got = [r for batch in auto.iter_batches(requests, 0.5, progress=sizes.append) for r in batch]
    assert sizes == [8, 4, 4] and auto.batch_size == 4
    want = fixed.sample_requests(requests, 0.5)
    assert [(r.prompt_id, r.seed_index) for r in got] == [(r.prompt.id, r.seed_index) for r in requests]
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    for x, y in zip(got, want):  # other batch neighbours: equal to float rounding
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_out_of_memory_at_one_row_is_a_clear_error(tiny_pair, prompts):
    sampler = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size="auto", memory_limit=1)
    with pytest.raises(OutOfMemoryAtOneRowError, match="batch of one row.*--max-new-tokens") as info:
        sampler.sample(prompts[:1], 4, 0.5)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_a_fixed_batch_size_or_a_streaming_hook_does_not_back_off(tiny_pair, prompts):
    fixed = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size=4, memory_limit=1)
    with pytest.raises(torch.OutOfMemoryError, match="over the memory limit of 1 bytes"):
        fixed.sample(prompts[:1], 4, 0.5)
    # a hook may have streamed the failed batch's tokens: they cannot be taken back
    auto = PathSampler(tiny_pair, max_new_tokens=TOKENS, batch_size="auto", memory_limit=1)
    with pytest.raises(torch.OutOfMemoryError):
        list(auto.iter_batches([SampleRequest(prompts[0], 0)], 0.5, on_step=lambda view: None))


def test_kv_bytes_per_token_is_what_the_cache_holds(tiny_dirs):
    from tailscope._kvcache import forward_step, output_cache
    from tailscope.models import load_model

    for name in ("ref", "gpt2_a"):
        model = load_model(str(tiny_dirs[name])).model
        ids = torch.arange(3, 10).reshape(1, -1).repeat(2, 1)  # 2 rows of 7 positions
        mask = torch.ones_like(ids)
        with torch.no_grad():
            cache = output_cache(forward_step(model, ids, mask, (mask.cumsum(-1) - 1)))
        assert cache_bytes([cache]) == kv_bytes_per_token(model) * 2 * 7, name


def test_auto_batch_size_follows_free_memory(tiny_pair):
    per_row = row_bytes(tiny_pair, 256 + 64)
    assert auto_batch_size(tiny_pair, 64, free=int(10 * per_row / MEMORY_SHARE) + 1) == 10
    assert auto_batch_size(tiny_pair, 64, free=0) == 1
    assert auto_batch_size(tiny_pair, 64, free=10**15) == 256
    assert auto_batch_size(tiny_pair, 64) == AUTO_CPU_ROWS  # a CPU: the default, whatever memory it has
    assert row_bytes(tiny_pair, 512) > row_bytes(tiny_pair, 256)


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_batch_size_is_checked(tiny_pair):
    for bad in (0, "big"):
        with pytest.raises(ValueError, match=r"`batch_size` \(="):
            PathSampler(tiny_pair, batch_size=bad)
    with pytest.raises(ValueError, match=r"`memory_limit` \(=0\)"):
        PathSampler(tiny_pair, batch_size="auto", memory_limit=0)


def test_cli_batch_size_auto(tiny_dirs, tmp_path):
    import json

    from typer.testing import CliRunner

    from tailscope.cli import app

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\ntell me a story\n")
    out = tmp_path / "s.jsonl"
    common = ["sample", "-A", str(tiny_dirs["ref"]), "-B", str(tiny_dirs["tgt"]), "--prompts", str(prompts),
              "-n", "3", "--max-new-tokens", "4", "--out", str(out)]
    result = CliRunner().invoke(app, [*common, "--batch-size", "auto"])
    assert result.exit_code == 0, result.output
    auto = [json.loads(line) for line in out.read_text().splitlines()]
    result = CliRunner().invoke(app, [*common, "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    assert auto == [json.loads(line) for line in out.read_text().splitlines()] and len(auto) == 6
    result = CliRunner().invoke(app, [*common, "--batch-size", "many"])
    assert result.exit_code == 2 and "'many' is not a number" in result.output

