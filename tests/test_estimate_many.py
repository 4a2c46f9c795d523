"""estimate_many: every prompt's estimator in lockstep, draws batched across prompts, same estimates.

A rollout's tokens are fixed by its prompt, proposal and seed index, so batching changes none; its
log-probabilities are computed in a batch padded to other rows, so they agree to float precision.
"""

from __future__ import annotations

import pytest

from tailscope.estimators import StoreSource, estimate, estimate_many
from tailscope.judges import make_judge
from tailscope.sampling import PathSampler
from tailscope.store import RunStore, run_config

SETTINGS = [("mis", {}), ("mis", {"switch_after": 2, "schedule": "fixed"}), ("lpe", {}),
            ("is", {"proposal": "alpha=0"}), ("naive", {})]


class _Counting:
    """A StoreSource that counts the draw_many calls it serves."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def draw_many(self, prompts, proposal, n, grid=()):
        self.calls.append(len(prompts))
        return self.inner.draw_many(prompts, proposal, n, grid)


@pytest.mark.parametrize("method, settings", SETTINGS)
def test_same_estimates_as_one_prompt_at_a_time_in_fewer_batches(tiny_pair, prompts, tmp_path, method, settings):
    judge = make_judge("regex:the")
    sampler = PathSampler(tiny_pair, max_new_tokens=6, batch_size=16, seed=3)
    with RunStore.open(tmp_path / "one.sqlite", run_config(sampler)) as store:
        source = StoreSource(store, sampler, judge)
        one = [estimate(method, source, p, 60, **settings) for p in prompts]
    with RunStore.open(tmp_path / "many.sqlite", run_config(sampler)) as store:
        source = _Counting(StoreSource(store, sampler, judge))
        seen = []
        many = estimate_many(method, source, prompts, 60, on_done=lambda i, e: seen.append(i), **settings)
        assert store.count() == sum(e.total_rollouts for e in many)
    assert sorted(seen) == list(range(len(prompts)))
    for a, b in zip(one, many):  # the same rollouts; log-probs batched with other rows differ in the last bits
        assert (a.prompt_id, a.hits, a.total_rollouts, a.flags) == (b.prompt_id, b.hits, b.total_rollouts, b.flags)
        assert b.rate == pytest.approx(a.rate, rel=1e-5, abs=1e-12)
        assert list(b.interval) == pytest.approx(list(a.interval), rel=1e-5, abs=1e-12)
    assert max(source.calls) == len(prompts)  # at least one draw served every prompt at once


def test_an_error_in_one_estimator_stops_the_run_and_is_raised(tiny_pair, prompts, tmp_path):
    judge = make_judge("regex:the")
    sampler = PathSampler(tiny_pair, max_new_tokens=4, batch_size=16, seed=0)

    def fails_on_second(source, prompt, budget):
        obs = source.draw(prompt, 0.5, 4)
        if prompt.id == prompts[1].id:
            raise RuntimeError(f"estimator broke on {prompt.id}")
        return len(obs)

    with RunStore.open(tmp_path / "s.sqlite", run_config(sampler)) as store:
        done = []
        with pytest.raises(RuntimeError, match="estimator broke"):
            estimate_many(fails_on_second, StoreSource(store, sampler, judge), prompts, 4,
                          on_done=lambda i, e: done.append(i))
        assert store.count() == 4 * len(prompts)  # what was drawn before the error is kept
    # the others finished in the same round as the failing one: each handed on before the error
    assert sorted(done) == [i for i in range(len(prompts)) if i != 1]


def test_a_long_list_goes_in_waves_with_the_same_estimates(tiny_pair, prompts, tmp_path, monkeypatch):
    import tailscope.estimators._lockstep as lockstep

    judge = make_judge("regex:the")
    sampler = PathSampler(tiny_pair, max_new_tokens=6, batch_size=16, seed=3)
    with RunStore.open(tmp_path / "all.sqlite", run_config(sampler)) as store:
        together = estimate_many("mis", StoreSource(store, sampler, judge), prompts, 40)
    monkeypatch.setattr(lockstep, "MAX_AT_ONCE", 2)
    with RunStore.open(tmp_path / "waves.sqlite", run_config(sampler)) as store:
        source = _Counting(StoreSource(store, sampler, judge))
        seen = []
        waves = estimate_many("mis", source, prompts, 40, on_done=lambda i, e: seen.append((i, e.prompt_id)))
    assert len(prompts) > 2 and max(source.calls) <= 2
    assert sorted(seen) == [(i, p.id) for i, p in enumerate(prompts)]
    assert [(e.prompt_id, e.hits, e.total_rollouts) for e in waves] == [
        (e.prompt_id, e.hits, e.total_rollouts) for e in together]


def test_a_failing_draw_is_raised_in_the_caller(prompts):
    class Broken:
        def draw_many(self, prompts, proposal, n, grid=()):
            raise ConnectionError("engine down")

    with pytest.raises(ConnectionError, match="engine down"):
        estimate_many("naive", Broken(), prompts, 10)


def test_repeated_prompt_ids_are_refused(prompts):
    with pytest.raises(ValueError, match="distinct prompt ids"):
        estimate_many("naive", None, [prompts[0], prompts[0]], 10)
