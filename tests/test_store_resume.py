"""Kill -9 a real sampling run in a subprocess, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, RunStoreError, run_config

SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
from tailscope.models import ModelPair
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

ref, tgt, run, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sampler = PathSampler(ModelPair.load(ref, tgt), max_new_tokens=6, batch_size=4, seed=11)
prompts = [Prompt("p0", text="hello"), Prompt("p1", text="tell me a story about a cat")]
sampled = []
with RunStore.open(run, run_config(sampler)) as store:
    store.get_or_sample_many(sampler, prompts, "a=0.5", n, logprob_grid=[0.0, 0.5, 1.0], progress=sampled.append)
print(sum(sampled))
"""
N = 16  # per prompt: 32 rollouts in 8 batches of 4
GRID = [0.0, 0.5, 1.0]


def _run(tmp_path: Path, tiny_dirs, run: Path) -> subprocess.Popen:
    script = tmp_path / "sample_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(script), str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]), str(run),
                             str(N)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_dirs, tiny_pair):
    run = tmp_path / "killed.sqlite"
    proc = _run(tmp_path, tiny_dirs, run)
    reader, counts = None, []
    deadline = time.time() + 120
    try:
        # read while the run writes: every count seen is a whole number of batches
        while time.time() < deadline and proc.poll() is None:
            if reader is None:
                try:
                    reader = RunStore.open(run, readonly=True, check=False)
                except RunStoreError:
                    time.sleep(0.02)
                    continue
            counts.append(reader.count())
            if counts[-1] >= 8:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if reader is not None:
        reader.close()
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: {proc.stderr.read()[-2000:]}"
    assert counts == sorted(counts) and all(c % 4 == 0 for c in counts)

    with RunStore.open(run) as store:  # opens cleanly (integrity check) after the kill
        before = store.rollouts()
    assert 8 <= len(before) < 2 * N and len(before) % 4 == 0

    resumed = _run(tmp_path, tiny_dirs, run)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert int(out.split()[-1]) == 2 * N - len(before)  # only the missing rollouts were sampled

    sampler = PathSampler(tiny_pair, max_new_tokens=6, batch_size=4, seed=11)
    prompts = [Prompt("p0", text="hello"), Prompt("p1", text="tell me a story about a cat")]
    with RunStore.open(tmp_path / "whole.sqlite", run_config(sampler)) as whole:
        reference = whole.get_or_sample_many(sampler, prompts, "a=0.5", N, logprob_grid=GRID)
    with RunStore.open(run, run_config(sampler)) as store:
        dupes = store._conn.execute("SELECT prompt_id, proposal, seed_index FROM rollouts "
                                    "GROUP BY prompt_id, proposal, seed_index HAVING COUNT(*) > 1").fetchall()
        assert dupes == [] and store.count() == 2 * N
        after = store.rollouts()
        stored_before = {(r.prompt_id, r.seed_index): r for r in before}
        assert all(stored_before[(r.prompt_id, r.seed_index)] == r for r in after
                   if (r.prompt_id, r.seed_index) in stored_before)
        got = store.get_or_sample_many(sampler, prompts, "a=0.5", N, logprob_grid=GRID)
    for pid in ("p0", "p1"):
        assert [r.seed_index for r in got[pid]] == list(range(N))
        for x, y in zip(got[pid], reference[pid]):
            assert (x.token_ids, x.text, x.finish_reason) == (y.token_ids, y.text, y.finish_reason)
            assert [x.logprob, x.logprob_reference, x.logprob_target, *x.logprob_grid.values()] == pytest.approx(
                [y.logprob, y.logprob_reference, y.logprob_target, *y.logprob_grid.values()], abs=1e-4)
