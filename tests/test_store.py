"""RunStore on real SQLite files with a real sampler over tiny checkpoints."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading

import numpy as np
import pytest

from tailscope.judges import JudgeBase, PythonJudge, make_judge
from tailscope.path import Proposal
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler
from tailscope.store import ConfigMismatchError, RunStore, RunStoreError, list_runs, run_config


@pytest.fixture(scope="module")
def sampler(tiny_pair):
    return PathSampler(tiny_pair, max_new_tokens=8, batch_size=4, seed=3)


@pytest.fixture()
def store(tmp_path, sampler):
    with RunStore.open("demo", run_config(sampler), root=tmp_path) as s:
        yield s


def counter():
    seen = []
    return seen, lambda k: seen.append(k)


def assert_same(a, b, tol=1e-4):
    """Rollouts are the same: tokens, text and finish exactly; log-probabilities to float32 rounding."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.prompt_id, x.proposal, x.seed_index, x.token_ids, x.text, x.finish_reason) == (
            y.prompt_id, y.proposal, y.seed_index, y.token_ids, y.text, y.finish_reason)
        assert x.logprob_grid.keys() == y.logprob_grid.keys()
        values = [x.logprob, x.logprob_reference, x.logprob_target, *x.logprob_grid.values()]
        expected = [y.logprob, y.logprob_reference, y.logprob_target, *y.logprob_grid.values()]
        # a switched rollout's reference log-probability is NaN (the reference is not run past the switch)
        assert values == pytest.approx(expected, rel=0, abs=tol, nan_ok=True)


def test_get_or_sample_stores_then_samples_only_what_is_missing(store, sampler, prompts):
    seen, progress = counter()
    direct = sampler.sample([prompts[0]], 6, 0.5, logprob_grid=[0.0, 0.5, 1.0])
    first = store.get_or_sample(sampler, prompts[0], 0.5, 4, logprob_grid=[0.0, 0.5, 1.0], progress=progress)
    assert sum(seen) == 4 and [r.seed_index for r in first] == list(range(4))
    assert_same(first, direct[:4], tol=0)

    seen.clear()
    again = store.get_or_sample(sampler, prompts[0], "a=0.5", 4, logprob_grid=[0.0, 0.5, 1.0], progress=progress)
    assert seen == [] and again == first  # stored values come back bit for bit

    more = store.get_or_sample(sampler, prompts[0], Proposal(alpha=0.5), 6, logprob_grid=[0.0, 0.5, 1.0],
                               progress=progress)
    assert sum(seen) == 2 and more[:4] == first
    assert_same(more, direct)
    assert store.count() == 6 and store.count(prompts[0].id, 0.5) == 6 and store.count(proposal=1.0) == 0


def test_many_prompts_and_proposals_share_batches(store, sampler, prompts):
    seen, progress = counter()
    switch = "a=0;switch=3;mix=0.25"
    out = store.get_or_sample_many(sampler, prompts, switch, 2, progress=progress)
    assert seen == [4, 2]  # 6 rollouts in batches of 4, across prompts
    assert list(out) == [p.id for p in prompts] and all(len(rs) == 2 for rs in out.values())
    assert_same(out[prompts[2].id], sampler.sample([prompts[2]], 2, switch))
    assert store.get_or_sample(sampler, prompts[1], switch, 2) == out[prompts[1].id]


def test_missing_grid_points_are_rescored_not_resampled(store, sampler, prompts):
    store.get_or_sample(sampler, prompts[1], 0.25, 3)
    seen, progress = counter()
    rescored = store.get_or_sample(sampler, prompts[1], 0.25, 3, logprob_grid=[0.0, 0.7, 1.0, 2.0],
                                   progress=progress)
    assert seen == []
    assert all(list(r.logprob_grid) == [0.0, 0.7, 1.0, 2.0] for r in rescored)
    assert all(r.logprob_grid[1.0] == r.logprob_target and r.logprob_grid[0.0] == r.logprob_reference
               for r in rescored)
    assert_same(rescored, sampler.sample([prompts[1]], 3, 0.25, logprob_grid=[0.0, 0.7, 1.0, 2.0]))
    sources = dict(store._conn.execute("SELECT alpha, source FROM grid GROUP BY alpha"))
    assert sources == {0.0: "scored", 0.7: "scored", 1.0: "scored", 2.0: "scored"}


@pytest.mark.parametrize("proposal", ["a=0.25;switch=3", "a=0.5;switch=2;mix=0.4"])
def test_rescored_grid_of_a_switching_proposal_is_the_proposal_moved_along_the_path(store, sampler, prompts,
                                                                                    proposal):
    store.get_or_sample(sampler, prompts[2], proposal, 3)
    grid = [0.0, 0.6, 1.0]
    rescored = store.get_or_sample(sampler, prompts[2], proposal, 3, logprob_grid=grid)
    assert_same(rescored, sampler.sample([prompts[2]], 3, proposal, logprob_grid=grid))
    assert all(r.logprob_grid[1.0] == r.logprob_target and r.logprob_grid[0.0] != r.logprob_reference
               for r in rescored)


def test_reopening_with_another_config_names_the_fields(tmp_path, sampler, tiny_pair, prompts):
    with RunStore.open("r", run_config(sampler), root=tmp_path) as s:
        s.get_or_sample(sampler, prompts[0], 1.0, 2)
    other = PathSampler(tiny_pair, max_new_tokens=12, temperature=0.7, batch_size=4, seed=3)
    with pytest.raises(ConfigMismatchError) as e:
        RunStore.open("r", run_config(other), root=tmp_path)
    assert set(e.value.differences) == {"sampling.max_new_tokens", "sampling.temperature"}
    assert "sampling.temperature: stored 1.0, given 0.7" in str(e.value)
    # a sampler with other settings cannot write into the run either, even through an open store
    with RunStore.open("r", root=tmp_path) as s:
        with pytest.raises(ConfigMismatchError, match="sampling.max_new_tokens"):
            s.get_or_sample(other, prompts[0], 1.0, 2)
        assert s.count() == 2
    with pytest.raises(ConfigMismatchError, match="judge: stored None, given 'refusal'"):
        RunStore.open("r", run_config(sampler, judge=make_judge("refusal")), root=tmp_path)
    # batch size does not change rollouts, so it is not part of the config; the code version only warns
    bigger = PathSampler(tiny_pair, max_new_tokens=8, batch_size=16, seed=3)
    config = run_config(bigger)
    config["code"]["tailscope"] = "0.0.1"
    config["models"]["target"]["name"] = "/elsewhere/the-same-checkpoint"  # moved: same weights
    with pytest.warns(UserWarning, match="do not change rollouts.*code.tailscope.*models.target.name"):
        RunStore.open("r", config, root=tmp_path).close()


def test_swapped_models_are_a_config_mismatch(tmp_path, sampler, tiny_dirs):
    from tailscope.models import ModelPair

    with RunStore.open("r", run_config(sampler), root=tmp_path):
        pass
    swapped = PathSampler(ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["third"])), max_new_tokens=8, seed=3)
    with pytest.raises(ConfigMismatchError, match="models.target.weights") as e:
        RunStore.open("r", run_config(swapped), root=tmp_path)
    assert set(e.value.differences) == {"models.target.weights"}  # names alone only warn


def test_a_changed_prompt_under_a_stored_id_is_an_error(store, sampler, prompts):
    store.get_or_sample(sampler, prompts[0], 1.0, 1)
    with pytest.raises(RunStoreError, match="prompt 'short' differs"):
        store.get_or_sample(sampler, Prompt("short", text="goodbye"), 1.0, 1)


def test_foreign_corrupt_and_missing_files_give_clear_errors(tmp_path, sampler, prompts):
    with pytest.raises(RunStoreError, match="no run at .*nope.sqlite"):
        RunStore.open("nope", root=tmp_path)
    text = tmp_path / "notes.sqlite"
    text.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(RunStoreError, match="not an SQLite database"):
        RunStore.open(text, run_config(sampler))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    with pytest.raises(RunStoreError, match=r"not a tailscope run store \(its tables: \['customers'\]\)"):
        RunStore.open(other, run_config(sampler))
    assert other.read_bytes()[:16] == b"SQLite format 3\x00"  # a foreign database is never written to

    path = tmp_path / "broken.sqlite"
    with RunStore.open(path, run_config(sampler)) as s:
        (r,) = s.get_or_sample(sampler, prompts[1], 0.5, 1)
        s.add_rollouts([dataclasses.replace(r, seed_index=i) for i in range(1, 300)])
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * 4096
    data[2 * 4096: 3 * 4096] = b"\xde\xad\xbe\xef" * 1024  # overwrite a page in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(RunStoreError, match="corrupted"):
        RunStore.open(path, run_config(sampler))


def test_readers_see_whole_batches_while_a_run_writes(tmp_path, sampler, prompts):
    path = tmp_path / "busy run #1.sqlite"  # read-only URIs must quote such names
    with RunStore.open(path, run_config(sampler)) as s:
        base = s.get_or_sample(sampler, prompts[0], 1.0, 4)
    batches, size = 40, 4
    errors, counts = [], []
    done = threading.Event()
    reading = threading.Barrier(3, timeout=60)  # the writer starts once both readers are reading

    def write():
        reading.wait()
        with RunStore.open(path, run_config(sampler)) as w:
            for b in range(batches):
                w.add_rollouts([dataclasses.replace(base[i], seed_index=100 + b * size + i) for i in range(size)])
        done.set()

    def read():
        try:
            with RunStore.open(path, readonly=True) as r:
                reading.wait()
                while True:  # at least one read, however fast the writer is on a loaded machine
                    finished = done.is_set()
                    n = r.count()
                    counts.append(n)
                    assert len(r.rollouts(prompts[0].id)) >= n
                    if finished:
                        break
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert counts and all(c % size == 0 for c in counts)  # a batch is visible whole or not at all
    with RunStore.open(path, readonly=True) as r:
        assert r.count() == size * (batches + 1)


def flag_long(prompt: str, completion: str) -> bool:
    """Flags completions longer than 20 characters (fails while the switch is on)."""
    if FLAKY["on"]:
        raise ConnectionError("judge unavailable")
    FLAKY["calls"] += 1
    return len(completion) > 20


FLAKY = {"on": False, "calls": 0}


def test_verdicts_are_stored_reused_and_failures_retried(store, sampler, prompts):
    rollouts = store.get_or_sample(sampler, prompts[0], 1.0, 5)
    judge = PythonJudge(flag_long, name=f"{__name__}:flag_long")
    FLAKY.update(on=True, calls=0)
    failed = store.judge(judge, rollouts, batch_size=4)
    assert all(v.flagged is None and "ConnectionError" in v.error for v in failed)
    assert store.summary()["judges"][0]["failed"] == 5

    FLAKY["on"] = False
    fresh = PythonJudge(flag_long, name=f"{__name__}:flag_long")  # no in-memory cache: the store's counts
    verdicts = store.judge(fresh, rollouts)
    assert [v.flagged for v in verdicts] == [len(r.text) > 20 for r in rollouts]
    distinct = len({r.text for r in rollouts})
    assert FLAKY["calls"] == distinct
    assert store.judge(PythonJudge(flag_long, name=f"{__name__}:flag_long"), rollouts) == verdicts
    assert FLAKY["calls"] == distinct  # stored verdicts are not judged again
    summary = store.summary()["judges"][0]
    assert (summary["judged"], summary["failed"], summary["flagged"]) == (5, 0, sum(v.flagged for v in verdicts))

    # a copy of a stored completion under another seed index reuses the verdict by content
    twin = dataclasses.replace(rollouts[0], seed_index=999)
    store.add_rollouts([twin])
    assert store.judge(PythonJudge(flag_long, name=f"{__name__}:flag_long"), [twin]) == verdicts[:1]
    assert FLAKY["calls"] == distinct

    with pytest.raises(RunStoreError, match="not stored in the run"):
        store.judge(judge, [dataclasses.replace(rollouts[0], seed_index=12345)])


@dataclasses.dataclass
class FakeEstimate:
    rate: float
    interval: tuple[float, float]
    rollouts: int
    weights: np.ndarray


def test_estimates_round_trip(store):
    est = FakeEstimate(rate=1.5e-5, interval=(2e-6, 4e-5), rollouts=np.int64(500), weights=np.array([0.5, 2.0]))
    i = store.record_estimate("importance", est, prompt_id="short")
    store.record_estimate("naive", {"rate": 0.0, "upper": float("inf")})
    got = store.estimates("importance")
    assert [e["id"] for e in got] == [i] and got[0]["prompt_id"] == "short"
    assert got[0]["data"] == {"rate": 1.5e-5, "interval": [2e-6, 4e-5], "rollouts": 500, "weights": [0.5, 2.0]}
    assert store.estimates("naive")[0]["data"]["upper"] == float("inf")
    assert len(store.estimates()) == 2


def test_cli_lists_shows_and_exports_runs(tmp_path, sampler, prompts):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from tailscope.cli import app

    with RunStore.open("first", run_config(sampler), root=tmp_path) as s:
        rollouts = s.get_or_sample(sampler, prompts[0], 0.5, 3, logprob_grid=[0.5, 1.0])
        s.judge(make_judge("refusal"), rollouts)
        s.record_estimate("naive", {"rate": 0.25})
    (tmp_path / "junk.sqlite").write_text("not a run")
    assert [p.stem for p in list_runs(tmp_path)] == ["first", "junk"]
    runner = CliRunner()

    listed = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path), "--json", "-"])
    assert listed.exit_code == 0, listed.output
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["first"]["rollouts"] == 3 and "not an SQLite database" in rows["junk"]["error"]

    shown = runner.invoke(app, ["runs", "show", "first", "--runs-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "a=0.5" in shown.stdout and "refusal" in shown.stdout
    missing = runner.invoke(app, ["runs", "show", "nope", "--runs-dir", str(tmp_path)])
    assert missing.exit_code == 2

    out = tmp_path / "first.jsonl"
    done = runner.invoke(app, ["runs", "export", "first", "--runs-dir", str(tmp_path), "--format", "jsonl", "-o", str(out)])
    assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seed_index"] for r in records] == [0, 1, 2]
    assert records[0]["token_ids"] == list(rollouts[0].token_ids)
    assert records[0]["verdicts"]["refusal"]["flagged"] in (True, False)

    pq_path = tmp_path / "first.parquet"
    done = runner.invoke(app, ["runs", "export", str(tmp_path / "first.sqlite"), "-f", "parquet", "-o", str(pq_path)])
    assert done.exit_code == 0, done.output
    table = pq.read_table(pq_path).to_pylist()
    assert table[1]["logprob"] == rollouts[1].logprob and dict(table[1]["logprob_grid"]) == rollouts[1].logprob_grid
    assert table[1]["verdicts"][0]["judge"] == "refusal"
    bad = runner.invoke(app, ["runs", "export", "first", "--runs-dir", str(tmp_path), "-f", "csv"])
    assert bad.exit_code == 2


class _RecordingJudge(JudgeBase):  # flags nothing, remembers the request texts it was shown
    description = "records the request text it is shown"

    def __init__(self):
        super().__init__()
        self.requests: list[str] = []

    @property
    def spec(self) -> str:
        return "recording"

    def _judge_batch(self, items):
        from tailscope.judges import Verdict

        self.requests.extend(p for p, _ in items)
        return [Verdict(False) for _ in items]


def test_live_and_stored_rollouts_are_judged_on_the_same_request_text(tmp_path, sampler):
    """A chat with no user turn: the store and the live source show the judge one text."""
    from tailscope.estimators import LiveSource, StoreSource
    from tailscope.rollout import judge_text

    prompt = Prompt("sys-only", messages=(("system", "be brief"), ("assistant", "hello there")))
    assert judge_text(prompt) == "be brief\nhello there"
    live, stored = _RecordingJudge(), _RecordingJudge()
    LiveSource(sampler, live).draw(prompt, Proposal(1.0), 3)
    with RunStore.open("judged", run_config(sampler), root=tmp_path) as s:
        StoreSource(s, sampler, stored).draw(prompt, Proposal(1.0), 3)
    assert live.requests and set(live.requests) == set(stored.requests) == {"be brief\nhello there"}
