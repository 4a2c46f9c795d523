"""A real vLLM server (CPU build, from .venv-engine) behind the hybrid sampler: identity, agreement
with our loop, the distribution of its samples, and a crash in the middle of a run.

Needs `make engine-env`; CI runs these through `make test-integration`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from tailscope.engines import (
    EngineIdentityError,
    EngineUnavailableError,
    HTTPEngine,
    HybridSampler,
    VLLMServer,
    engine_python,
    make_engine,
)
from tailscope.estimators import StoreSource, mis
from tailscope.judges import make_judge
from tailscope.models import ModelPair, load_model
from tailscope.organisms import load
from tailscope.organisms.registry import DATA_DIR
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]  # a server start under load takes minutes
ROOT = Path(__file__).resolve().parents[1]
TARGET = DATA_DIR / "refusal" / "target"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    srv = VLLMServer(str(TARGET), "refusal-target", engine_python(ROOT), log=log, max_model_len=512).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def organism():
    return load("refusal")


def _rare_prompts(org, low=2e-3, high=0.05, k=2):
    chosen = [p for p in org.prompts if low <= org.rate(p.id) <= high]
    return chosen[:k]


def test_identity_check_passes_and_records_the_gap(server, organism, tmp_path):
    sampler = PathSampler(organism.pair, max_new_tokens=24, seed=0)
    hybrid = HybridSampler(sampler, make_engine(server.url, organism.pair))
    report = hybrid.check(list(organism.prompts)[:3])["target"]
    assert report["tokens"] > 0 and report["max_gap_scored"] < 2e-3 and report["max_gap_sampled"] < 2e-3
    with RunStore.open(tmp_path / "r.sqlite", run_config(sampler, engine=hybrid.engine_config())) as store:
        store.record_estimate("engine-identity", hybrid.identity)
        assert store.estimates("engine-identity")[0]["data"]["target"]["max_gap_scored"] == report["max_gap_scored"]
        assert store.config["extra"]["engine"]["sampling"]["top_p"] == 1.0


def test_another_model_behind_the_url_fails_before_any_rollout(server, organism, tmp_path):
    chat = load_model(str(DATA_DIR / "chat"))  # the organism's reference, not what the server serves
    pair = ModelPair(chat, chat)
    sampler = PathSampler(pair, max_new_tokens=24, seed=0)
    hybrid = HybridSampler(sampler, make_engine(server.url, pair))
    prompt = list(organism.prompts)[0]
    with RunStore.open(tmp_path / "r.sqlite", run_config(sampler)) as store:
        with pytest.raises(EngineIdentityError, match="does not serve the target"):
            store.get_or_sample(hybrid, prompt, "a=0;switch=4", 8)
        assert store.count() == 0


def test_switching_mis_through_the_engine_agrees_with_our_loop(server, organism, tmp_path):
    judge = make_judge(organism.judge_spec)
    prompts = _rare_prompts(organism)
    assert prompts, "the refusal organism has prompts with rates in 2e-3..5e-2"
    loop = PathSampler(organism.pair, max_new_tokens=48, batch_size=32, seed=1)
    hybrid = HybridSampler(PathSampler(organism.pair, max_new_tokens=48, batch_size=32, seed=2),
                           make_engine(server.url, organism.pair))
    for p in prompts:
        truth = organism.rate(p.id)
        estimates = []
        for name, s in (("loop", loop), ("hybrid", hybrid)):
            with RunStore.open(tmp_path / f"{name}-{p.id}.sqlite", run_config(s)) as store:
                estimates.append(mis(StoreSource(store, s, judge), p, 240, schedule="fixed", switch_after=8))
        (lo_a, hi_a), (lo_b, hi_b) = estimates[0].interval, estimates[1].interval
        assert max(lo_a, lo_b) <= min(hi_a, hi_b), (p.id, truth, estimates[0].describe(), estimates[1].describe())
        # the engine is not seeded: a fixed tolerance (within x10 of the truth), not the 95% interval
        assert truth / 10 <= estimates[1].rate <= truth * 10, (p.id, truth, estimates[1].describe())
    assert hybrid.counts["tail"] > 0


def test_engine_samples_follow_the_target_distribution(server, organism):
    """Chi-square of the engine's first two reply tokens against our model's exact probabilities, at T = 0.8."""
    pair, T, n = organism.pair, 0.8, 3000
    sampler = PathSampler(pair, temperature=T, seed=0)
    prompt = list(organism.prompts)[0]
    ids = sampler.encode_prompt(prompt, "target")
    engine = HTTPEngine([server.url], eos_token_ids=sorted(pair.eos_token_ids), vocab_size=pair.vocab_size,
                        max_batch=500)
    conts = engine.generate([ids] * n, 2, T)
    first = [c.token_ids[0] for c in conts]
    with torch.no_grad():
        logits = pair.target.model(input_ids=torch.tensor([ids])).logits[0, -1, : pair.vocab_size].float()
    p = torch.softmax(logits / T, -1).double().numpy()
    observed = np.bincount(first, minlength=len(p)).astype(float)
    big = p * n >= 5  # pool the rare tokens into one cell
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(p[big] * n, p[~big].sum() * n)
    keep = exp > 0
    result = stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum())
    assert result.pvalue > 1e-4, result
    # and each sampled token's reported log-probability is ours at T (processed log-probabilities)
    logq = torch.log_softmax(logits / T, -1).double().numpy()
    assert max(abs(c.logprobs[0] - logq[c.token_ids[0]]) for c in conts[:200]) < 2e-3


def test_killing_the_engine_mid_run_loses_nothing_and_samples_nothing_twice(organism, tmp_path):
    judge = make_judge(organism.judge_spec)
    prompt = list(organism.prompts)[0]
    srv = VLLMServer(str(TARGET), "refusal-target", engine_python(ROOT), log=tmp_path / "server.log",
                     max_model_len=512).start()
    try:
        sampler = PathSampler(organism.pair, max_new_tokens=32, batch_size=16, seed=4)
        engine = HTTPEngine([srv.url], eos_token_ids=sorted(organism.pair.eos_token_ids), retries=2, backoff=0.2)
        hybrid = HybridSampler(sampler, engine, engine_batch=16)  # six requests, so the kill lands mid-run
        batches = []

        def crash_after_two(k):
            batches.append(k)
            if len(batches) == 2:
                srv.kill()

        path = tmp_path / "run.sqlite"
        with RunStore.open(path, run_config(sampler)) as store:
            with pytest.raises(EngineUnavailableError, match="rerun the same command"):
                store.get_or_sample(hybrid, prompt, "a=0;switch=4", 96, progress=crash_after_two)
            kept = store.rollouts(prompt.id, "a=0;switch=4")
        assert 32 <= len(kept) < 96
        srv.start()
        hybrid = HybridSampler(sampler, HTTPEngine([srv.url], eos_token_ids=sorted(organism.pair.eos_token_ids)),
                               engine_batch=16)
        with RunStore.open(path, run_config(sampler)) as store:
            rollouts = store.get_or_sample(hybrid, prompt, "a=0;switch=4", 96)
            store.judge(judge, rollouts)
            assert store.count() == 96
            dupes = store._conn.execute("SELECT COUNT(*) FROM rollouts GROUP BY prompt_id, proposal, seed_index "
                                        "HAVING COUNT(*) > 1").fetchall()
        assert dupes == []
        assert [r.seed_index for r in rollouts] == list(range(96))
        before = {r.seed_index: r for r in kept}
        assert all(r.token_ids == before[r.seed_index].token_ids for r in rollouts if r.seed_index in before)
        assert hybrid.counts["tail"] == 96 - len(kept)  # only the missing ones were sampled
    finally:
        srv.stop()


def test_vllm_offline_engine_in_the_engine_environment(tmp_path):
    """vllm.LLM in-process (the GPU path), run where vLLM imports: the engine environment."""
    import subprocess

    script = (
        "from tailscope.engines import VLLMEngine\n"
        f"e = VLLMEngine({str(TARGET)!r}, eos_token_ids=[2], vocab_size=1024, max_model_len=256)\n"
        "c = e.generate([[1, 5, 6, 7]] * 4, 8, 1.0)\n"
        "s = e.score([[1, 5, 6, 7, *c[0].token_ids]], [4])[0]\n"
        "print('RESULT', max(abs(a - b) for a, b in zip(s, c[0].logprobs)), len(c))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = subprocess.run([str(engine_python(ROOT)), "-c", script], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    gap, count = line.split()[1:]
    assert int(count) == 4 and float(gap) < 2e-3


def test_cli_estimate_through_the_engine(server, organism, tmp_path):
    import json

    from typer.testing import CliRunner

    from tailscope.cli import app

    out = tmp_path / "e.json"
    args = ["estimate", "--organism", "refusal", "--method", "mis", "--switch", "8", "--budget", "40",
            "--limit", "1", "--max-new-tokens", "24", "--runs-dir", str(tmp_path / "runs"), "--run", "r",
            "--engine", server.url, "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "serves the target" in result.output
    first = json.loads(out.read_text())["estimates"]
    again = CliRunner().invoke(app, args)  # resumes: same rollouts, same estimate
    assert again.exit_code == 0, again.output
    assert json.loads(out.read_text())["estimates"] == first
    with RunStore.open(tmp_path / "runs" / "r.sqlite", readonly=True) as store:
        assert store.config["extra"]["engine"]["target"]["model"] == "refusal-target"
        assert len(store.estimates("engine-identity")) == 2


def test_cli_endpoint_is_samples_on_the_reference_engine(server, organism, tmp_path):
    """IS from the reference endpoint: whole replies on a second server (the reference), weights from our
    own teacher-forced scoring; the estimate agrees with the same estimator in our loop."""
    import json

    from typer.testing import CliRunner

    from tailscope.cli import app

    ref = VLLMServer(str(organism.pair.reference.name), "refusal-reference", engine_python(ROOT),
                     log=tmp_path / "ref.log", max_model_len=512).start()
    try:
        prompt = _rare_prompts(organism, k=1)[0]
        prompts = tmp_path / "p.jsonl"
        row = {"id": prompt.id, **({"prompt": prompt.text} if prompt.text is not None else {"messages": prompt.chat()})}
        prompts.write_text(json.dumps(row) + "\n")
        common = ["estimate", "--organism", "refusal", "--prompts", str(prompts), "--method", "is",
                  "--proposal", "alpha=0", "--budget", "200", "--max-new-tokens", "24", "--runs-dir", str(tmp_path / "runs")]
        out = {}
        for name, extra in (("loop", []), ("engine", ["--engine", server.url, "--reference-engine", ref.url])):
            path = tmp_path / f"{name}.json"
            result = CliRunner().invoke(app, [*common, "--run", name, "--json", str(path), *extra])
            assert result.exit_code == 0, result.output
            out[name] = {e["prompt_id"]: e for e in json.loads(path.read_text())["estimates"]}[prompt.id]
        assert "serves the reference" in result.output
        (lo_a, hi_a), (lo_b, hi_b) = out["loop"]["interval"], out["engine"]["interval"]
        assert max(lo_a, lo_b) <= min(hi_a, hi_b), (out["loop"], out["engine"])
        with RunStore.open(tmp_path / "runs" / "engine.sqlite", readonly=True) as store:
            assert store.config["extra"]["engine"]["reference"]["model"] == "refusal-reference"
            assert "reference" in store.estimates("engine-identity")[0]["data"]
    finally:
        ref.stop()
