"""Sampling on a real local Ray cluster: the same bits as in process, whatever the number of
workers; a worker killed mid-run loses nothing and counts nothing twice; a model that fails to
load is named."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the integration tests need Ray: pip install 'tailscope[ray]'")

from tailscope.estimators import StoreSource, mis  # noqa: E402
from tailscope.judges import make_judge  # noqa: E402
from tailscope.organisms import load  # noqa: E402
from tailscope.sampling import PathSampler, SampleRequest  # noqa: E402
from tailscope.scale import PairSpec, RaySampler, SamplerSettings, WorkerLoadError  # noqa: E402
from tailscope.store import RunStore, run_config  # noqa: E402

pytestmark = pytest.mark.integration

GRID = (0.0, 0.5)


@pytest.fixture(scope="session")
def cluster():
    """One local cluster for the session: two CPUs, bound to this machine only."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def organism():
    return load("refusal")


@pytest.fixture(scope="module")
def local(organism):
    return PathSampler(organism.pair, max_new_tokens=12, batch_size=8, seed=3)


def _requests(organism, per_prompt=12, prompts=3):
    return [SampleRequest(p, i) for p in list(organism.prompts)[:prompts] for i in range(per_prompt)]


def test_one_and_two_workers_give_the_in_process_bits(cluster, organism, local):
    requests = _requests(organism)
    expected = local.sample_requests(requests, "a=0.5", logprob_grid=GRID)
    for workers in (1, 2):
        with RaySampler.from_sampler(local, workers=workers, threads_per_worker=1) as pool:
            got = pool.sample_requests(requests, "a=0.5", logprob_grid=GRID)
            assert got == expected  # token ids, text and every log-probability, bit for bit
            stats = pool.throughput()
            assert sum(s["rollouts"] for s in stats) == len(requests)
            if workers == 2:
                assert all(s["units"] > 0 for s in stats)  # both workers took part
            assert pool.settings()["models"] == run_config(local)["models"]


def test_estimates_through_the_store_match(cluster, organism, local, tmp_path):
    """MIS's adaptive walk, grid rescoring on the workers, and the store: same estimate as in process."""
    judge = make_judge(organism.judge_spec)
    prompts = list(organism.prompts)[:2]
    with RunStore.open(tmp_path / "local.db", run_config(local, judge=judge)) as store:
        want = [mis(StoreSource(store, local, judge), p, 96) for p in prompts]
    with RaySampler.from_sampler(local, workers=2, threads_per_worker=1) as pool:
        with RunStore.open(tmp_path / "ray.db", run_config(pool, judge=judge)) as store:
            got = [mis(StoreSource(store, pool, judge), p, 96) for p in prompts]
            rescored = pool.scorer().score_rollouts({p.id: p for p in prompts}, store.rollouts(prompts[0].id), (0.25,))
        with RunStore.open(tmp_path / "local.db") as store:
            direct = local.scorer().score_rollouts({p.id: p for p in prompts}, store.rollouts(prompts[0].id), (0.25,))
    assert [e.to_dict() for e in got] == [e.to_dict() for e in want]
    assert (rescored == direct).all()


def test_killed_worker_loses_nothing_and_counts_nothing_twice(cluster, organism, local, tmp_path):
    requests = _requests(organism, per_prompt=24)  # 72 rollouts: 9 units of 8
    prompts = list(organism.prompts)[:3]
    expected = local.sample_requests(requests, "a=0.5")
    with RaySampler.from_sampler(local, workers=2, threads_per_worker=1) as pool:
        killed = []
        counted = []

        def kill_once(k: int) -> None:
            counted.append(k)
            if not killed:  # a unit has landed; worker 0 still holds queued or running units
                killed.append(pool.actors[0])
                ray.kill(pool.actors[0], no_restart=True)

        with RunStore.open(tmp_path / "run.db", run_config(pool)) as store:
            got = store.get_or_sample_many(pool, prompts, "a=0.5", 24, progress=kill_once)
            assert store.count() == len(requests)
            keys = [(r.prompt_id, r.seed_index) for r in store.rollouts()]
            assert len(keys) == len(set(keys)) == len(requests)
        stats = pool.stats
        assert stats[0].restarts == 1 and pool.actors[0] is not killed[0]
        assert sum(s.lost_units for s in stats) >= 1
        assert sum(counted) == len(requests)  # each unit reported once, after it finished
        assert sum(s.rollouts for s in stats) == len(requests)
    assert [r for p in prompts for r in got[p.id]] == sorted(expected, key=lambda r: (r.prompt_id, r.seed_index))


def test_a_model_that_fails_to_load_is_named(cluster, organism, tmp_path):
    target = PairSpec.of(organism.pair).target
    spec = PairSpec(str(tmp_path / "no-such-model"), target)
    with pytest.raises(WorkerLoadError, match=r"worker 0 .*reference model .*no-such-model"):
        RaySampler(spec, SamplerSettings(max_new_tokens=4), workers=1)


DRIVER = """
import sys
from tailscope.organisms import load
from tailscope.sampling import PathSampler
from tailscope.scale import RaySampler
from tailscope.store import RunStore, run_config

run, n = sys.argv[1], int(sys.argv[2])
org = load("refusal")
local = PathSampler(org.pair, max_new_tokens=12, batch_size=8, seed=3)
with RaySampler.from_sampler(local, workers=2, threads_per_worker=1) as pool:
    with RunStore.open(run, run_config(pool)) as store:
        store.get_or_sample_many(pool, list(org.prompts)[:3], "a=0.5", n)
        print(store.count())
"""


def test_killed_driver_resumes_from_the_store(organism, local, tmp_path):
    """kill -9 the driver (its own Ray cluster) after some units are committed; the rerun samples
    only the rest, and the store equals an uninterrupted in-process run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tailscope.store import RunStoreError

    script, run, n = tmp_path / "driver.py", tmp_path / "run.db", 40  # 120 rollouts: 15 units of 8
    script.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)  # its own local cluster, not the test session's
    proc = subprocess.Popen([sys.executable, str(script), str(run), str(n)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = 0, time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                with RunStore.open(run, readonly=True, check=False) as reader:
                    seen = reader.count()
            except RunStoreError:
                pass
            if seen >= 16:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the driver was not killed mid-run: {proc.stderr.read()[-2000:]}"
    with RunStore.open(run) as store:
        partial = store.count()
    assert 16 <= partial < 3 * n and partial % 8 == 0  # whole units only

    out, err = subprocess.Popen([sys.executable, str(script), str(run), str(n)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE).communicate(timeout=600)
    assert out.strip().endswith(str(3 * n)), err[-2000:]
    prompts = list(organism.prompts)[:3]
    expected = local.sample(prompts, n, "a=0.5")
    with RunStore.open(run) as store:
        got = store.rollouts()
    assert got == sorted(expected, key=lambda r: (r.prompt_id, r.seed_index))
