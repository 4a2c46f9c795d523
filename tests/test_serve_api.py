"""The OpenAI-compatible API in-process: the real `openai` client talks to the app through Starlette's
test transport (no socket), on small real checkpoints."""

from __future__ import annotations

import json

import openai
import pytest
from starlette.testclient import TestClient

from tailscope.prompts import Prompt
from tailscope.scoring import Scorer
from tailscope.serve import Engine
from tailscope.serve import create_app

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def engine(tiny_pair):
    with Engine(tiny_pair, name="tiny-pair", alpha=2.0, max_tokens=10, batch_size=8) as eng:
        yield eng


@pytest.fixture(scope="module")
def http(engine):
    with TestClient(create_app(engine)) as client:
        yield client


@pytest.fixture(scope="module")
def client(http):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def test_models_lists_the_served_pair(client, engine):
    assert [m.id for m in client.models.list()] == ["tiny-pair"]
    assert client.models.retrieve("tiny-pair").model_extra["tailscope"]["alpha"] == 2.0


def test_chat_with_logprobs_matches_the_scorer(client, tiny_pair):
    r = client.chat.completions.create(model="tiny-pair", messages=MESSAGES, n=3, max_tokens=8, temperature=0.9,
                                       logprobs=True, top_logprobs=2, seed=4, extra_body={"alpha": 3.0})
    assert len(r.choices) == 3 and r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)
    prompt = Prompt.from_messages("q", MESSAGES)
    token_ids = [c.model_extra["tailscope"]["token_ids"] for c in r.choices]
    scores = Scorer(tiny_pair, temperature=0.9, chat=False).score([prompt] * 3, token_ids, alphas=[3.0])[:, 0]
    for c, s in zip(r.choices, scores):
        assert c.model_extra["tailscope"]["alpha"] == 3.0
        assert sum(t.logprob for t in c.logprobs.content) == pytest.approx(float(s), abs=1e-4)
        assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in c.logprobs.content)
    again = client.chat.completions.create(model="tiny-pair", messages=MESSAGES, n=3, max_tokens=8, temperature=0.9,
                                           seed=4, extra_body={"alpha": 3.0})
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_completions_take_a_list_of_prompts(client):
    r = client.completions.create(model="tiny-pair", prompt=["hello there", "the quick brown"], n=2, max_tokens=6,
                                  logprobs=1, seed=9, extra_body={"amplify": 0.5})
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert all(c.model_extra["tailscope"]["alpha"] == 1.5 for c in r.choices)
    for c in r.choices:
        assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) == len(c.model_extra["tailscope"]["token_ids"])


def test_streaming_gives_the_same_reply_as_a_plain_request(client):
    kw = dict(model="tiny-pair", messages=MESSAGES, n=2, max_tokens=10, seed=21, logprobs=True)
    plain = client.chat.completions.create(**kw)
    text, logprobs, finish, usage = {0: "", 1: ""}, {0: [], 1: []}, {}, None
    for chunk in client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            logprobs[c.index] += [t.logprob for t in (c.logprobs.content if c.logprobs else [])]
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    for c in plain.choices:
        assert text[c.index] == c.message.content and finish[c.index] == c.finish_reason
        assert logprobs[c.index] == [t.logprob for t in c.logprobs.content]
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_stop_strings_cut_the_reply(client):
    kw = dict(model="tiny-pair", prompt="hello there", max_tokens=10, seed=3, n=4)
    free = client.completions.create(**kw)
    word = next(c.text.split()[0] for c in free.choices if c.text.split())
    cut = client.completions.create(**kw, stop=[word])
    for a, b in zip(free.choices, cut.choices):
        assert word not in b.text and a.text.startswith(b.text)
        if word in a.text:
            assert b.finish_reason == "stop"


@pytest.mark.parametrize("kwargs,status,param", [
    ({"model": "no-such-model"}, 404, "model"),
    ({"temperature": 0}, 400, "temperature"),
    ({"max_tokens": 100_000}, 400, "max_tokens"),
    ({"n": 9}, 400, "n"),
    ({"presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"extra_body": {"alpha": 1e39}}, 400, "alpha"),
    ({"extra_body": {"alpha": 2, "amplify": 1}}, 400, "alpha"),
    ({"extra_body": {"alpha": "high"}}, 400, "alpha"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
])
def test_bad_requests_get_openai_errors_and_the_server_carries_on(client, kwargs, status, param):
    kw = {"model": "tiny-pair", "messages": MESSAGES, "max_tokens": 4} | kwargs
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**kw)
    assert e.value.status_code == status
    assert e.value.body["param"] == param and e.value.body["message"]
    assert client.chat.completions.create(model="tiny-pair", messages=MESSAGES, max_tokens=2).choices


def test_malformed_json_is_a_400(http):
    r = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = http.post("/v1/nowhere", json={})
    assert r.status_code == 404 and r.json()["error"]["message"]


def test_api_key_is_required_when_set(engine):
    with TestClient(create_app(engine, api_key="sesame")) as http:
        wrong = openai.OpenAI(base_url="http://testserver/v1", api_key="nope", http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url="http://testserver/v1", api_key="sesame", http_client=http, max_retries=0)
        assert [m.id for m in right.models.list()] == ["tiny-pair"]
        assert json.loads(http.get("/health").text)["status"] == "ok"
