"""The serving engine on small real checkpoints: it draws what the sampler's loop draws, batches
queued requests together, honours per-request limits inside one batch, and survives bad requests."""

from __future__ import annotations

import asyncio

import pytest

from tailscope.path import Proposal
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler, SampleRequest
from tailscope.serve import Engine, GenerationSpec, ServeError
from tailscope.serve._jobs import ChoiceDone, TokenEvent

CHAT = Prompt.from_messages("q", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}])
TEXT = Prompt("t", text="tell me a story about a cat")


@pytest.fixture(scope="module")
def engine(tiny_pair):
    with Engine(tiny_pair, name="tiny", alpha=1.5, max_tokens=12, batch_size=16) as eng:
        yield eng


def run(coro):
    return asyncio.run(coro)


async def _all(engine, *specs):
    """Every request's choices, from one submission (so they queue together)."""
    out: dict[int, list] = {k: [] for k in range(len(specs))}
    async for k, event in engine.events(*specs):
        if isinstance(event, ChoiceDone):
            out[k].append(event.choice)
    return [sorted(v, key=lambda c: c.index) for _, v in sorted(out.items())]


def test_replies_are_the_loops_rollouts_for_the_request_seed(engine, tiny_pair):
    spec = GenerationSpec(prompt=CHAT, n=3, alpha=2.5, temperature=0.8, max_tokens=10, seed=42)
    got = run(engine.complete(spec)).choices
    sampler = PathSampler(tiny_pair, temperature=0.8, max_new_tokens=10, chat=False, seed=engine.seed)
    want = sampler.sample_requests([SampleRequest(spec.rollout_prompt(), i) for i in range(3)], Proposal(alpha=2.5))
    assert [c.token_ids for c in got] == [r.token_ids for r in want]
    for c, r in zip(got, want):
        assert c.logprob == pytest.approx(r.logprob, abs=1e-6)
        assert c.finish_reason == ("stop" if r.finish_reason == "eos" else "length")
        assert c.text == r.text


def test_queued_requests_share_one_batch_and_keep_their_own_limits(engine):
    specs = [
        GenerationSpec(prompt=CHAT, n=2, alpha=2.0, max_tokens=3, seed=1),
        GenerationSpec(prompt=TEXT, n=3, alpha=2.0, max_tokens=12, seed=2),
        GenerationSpec(prompt=CHAT, n=1, alpha=2.0, max_tokens=7, seed=3, stop=(" ",)),
    ]
    before = engine.batches
    together = run(_all(engine, *specs))
    assert engine.batches - before == 1
    assert all(len(c.token_ids) <= 3 for c in together[0])
    assert all(len(c.token_ids) <= 12 for c in together[1])
    assert " " not in together[2][0].text
    # the same requests alone draw the same tokens: a reply does not depend on its batch
    alone = [run(engine.complete(s)).choices for s in specs]
    assert [[c.token_ids for c in cs] for cs in together] == [[c.token_ids for c in cs] for cs in alone]
    for cs_a, cs_b in zip(together, alone):
        for a, b in zip(cs_a, cs_b):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_groups_of_different_alpha_decode_in_separate_batches(engine):
    before = engine.batches
    run(_all(engine, GenerationSpec(prompt=CHAT, alpha=0.5, seed=1), GenerationSpec(prompt=CHAT, alpha=3.0, seed=1)))
    assert engine.batches - before == 2


def test_seed_fixes_the_reply_and_other_seeds_differ(engine):
    spec = GenerationSpec(prompt=TEXT, n=4, alpha=1.5, max_tokens=12, seed=7)
    first, again = run(engine.complete(spec)), run(engine.complete(spec))
    other = run(engine.complete(GenerationSpec(prompt=TEXT, n=4, alpha=1.5, max_tokens=12, seed=8)))
    assert [c.token_ids for c in first.choices] == [c.token_ids for c in again.choices]
    assert [c.token_ids for c in first.choices] != [c.token_ids for c in other.choices]
    assert len({c.token_ids for c in first.choices}) > 1  # choices are distinct draws


def test_streamed_tokens_add_up_to_the_reply(engine):
    spec = GenerationSpec(prompt=CHAT, n=2, alpha=2.0, max_tokens=12, seed=5, stream=True, logprobs=True, top_logprobs=3)

    async def collect():
        pieces, lps, done = {0: "", 1: ""}, {0: [], 1: []}, {}
        async for _, ev in engine.events(spec):
            if isinstance(ev, TokenEvent):
                pieces[ev.choice] += ev.text
                lps[ev.choice].append(ev.logprob)
                assert len(ev.top) == 3 and ev.top[0][1] >= ev.logprob - 1e-6
            elif isinstance(ev, ChoiceDone):
                pieces[ev.choice.index] += ev.rest
                done[ev.choice.index] = ev.choice
        return pieces, lps, done

    pieces, lps, done = run(collect())
    for i in (0, 1):
        assert pieces[i] == done[i].text
        assert lps[i] == list(done[i].logprobs)
        assert len(done[i].top_logprobs) == len(done[i].token_ids)


def test_logprobs_equal_teacher_forced_scoring(engine, tiny_pair):
    from tailscope.scoring import Scorer

    spec = GenerationSpec(prompt=CHAT, n=4, alpha=3.0, temperature=0.7, max_tokens=12, seed=11, logprobs=True)
    choices = run(engine.complete(spec)).choices
    scores = Scorer(tiny_pair, temperature=0.7, chat=False).score([CHAT] * 4, [c.token_ids for c in choices], alphas=[3.0])
    for c, s in zip(choices, scores[:, 0]):
        assert c.logprob == pytest.approx(float(s), abs=1e-4)


def test_bad_requests_fail_alone_and_the_engine_keeps_serving(engine):
    with pytest.raises(ServeError) as e:
        run(engine.complete(GenerationSpec(prompt=CHAT, alpha=1e39, seed=1)))
    assert e.value.status == 400 and e.value.code == "non_finite_logits"
    with pytest.raises(ServeError) as e:
        run(engine.complete(GenerationSpec(prompt=CHAT, n=17)))
    assert e.value.status == 400 and e.value.param == "n"
    with pytest.raises(ServeError) as e:
        run(engine.complete(GenerationSpec(prompt=Prompt("long", text="hello " * 400), max_tokens=8)))
    assert e.value.code == "context_length_exceeded"
    assert run(engine.complete(GenerationSpec(prompt=CHAT, seed=1))).choices


def test_a_failing_batch_is_rerun_request_by_request(engine):
    from tailscope.serve._jobs import JobFailed

    async def outcomes():
        return [(k, ev) async for k, ev in engine.events(GenerationSpec(prompt=CHAT, alpha=1e39, seed=1),
                                                         GenerationSpec(prompt=TEXT, alpha=1e39, seed=2))
                if isinstance(ev, JobFailed)]

    before = engine.batches
    failed = run(outcomes())
    assert sorted(k for k, _ in failed) == [0, 1]
    assert all(ev.error.code == "non_finite_logits" for _, ev in failed)
    assert engine.batches - before == 3  # the shared batch, then each request alone


@pytest.mark.parametrize("field,value", [("temperature", 0.0), ("top_p", 1.5), ("max_tokens", 0), ("n", 0),
                                         ("top_logprobs", 21), ("alpha", float("inf"))])
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(ServeError) as e:
        GenerationSpec(prompt=CHAT, **{field: value})
    assert e.value.status == 400 and e.value.param == field


def test_a_default_reply_limit_is_cut_to_what_the_context_leaves(engine, tiny_pair):
    from tailscope.sampling import encode_prompt

    words = 1
    while len(encode_prompt(tiny_pair.target.tokenizer, Prompt("x", text="hello " * (words + 1)), False)) <= 508:
        words += 1
    long = Prompt("long", text="hello " * words)
    room = engine.context_length - len(encode_prompt(tiny_pair.target.tokenizer, long, False))
    assert 1 <= room < 12
    spec = GenerationSpec(prompt=long, n=2, max_tokens=12, seed=1)
    with pytest.raises(ServeError):
        run(engine.complete(spec))
    choices = run(engine.complete(spec, fit=True)).choices
    assert all(len(c.token_ids) <= room for c in choices)


def test_after_a_full_batch_the_next_waits_for_its_clients_to_return(tiny_pair):
    """A lone request arriving first does not start a batch of one while the last batch's other
    clients are still sending theirs (the engine lingers until as many rows wait as last time)."""
    with Engine(tiny_pair, name="tiny", max_tokens=4, batch_size=8, linger=30.0) as eng:
        run(eng.complete(GenerationSpec(prompt=CHAT, n=4, max_tokens=4, seed=1)))

        async def staggered():
            first = asyncio.ensure_future(eng.complete(GenerationSpec(prompt=CHAT, n=1, max_tokens=4, seed=2)))
            await asyncio.sleep(0.05)
            rest = [eng.complete(GenerationSpec(prompt=TEXT, n=1, max_tokens=4, seed=k)) for k in range(3)]
            return await asyncio.gather(first, *rest)

        before = eng.batches
        assert all(r.choices for r in run(staggered()))
        assert eng.batches - before == 1
