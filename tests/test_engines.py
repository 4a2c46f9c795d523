"""The engine layer without an engine server: validation, routing, settings, and fault handling
against real sockets (a closed port; a local HTTP server that answers with faults)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tailscope.engines import (
    Continuation,
    EngineRequestError,
    EngineResponseError,
    EngineUnavailableError,
    HTTPEngine,
    HybridSampler,
    engine_route,
    free_port,
    make_engine,
    pure_sampling,
)
from tailscope.engines._base import check_continuation
from tailscope.rollout import Proposal
from tailscope.sampling import PathSampler

EOS = frozenset({2})


@pytest.mark.parametrize("cont, limit, message", [
    (Continuation((5, 6), (-1.0,), "length"), 2, "2 tokens but 1"),
    (Continuation((5, 6, 7), (-1.0, -1.0, -1.0), "length"), 2, "for a limit of 2"),
    (Continuation((5, 6), (-1.0, -1.0), "eos"), 4, "not an end token"),
    (Continuation((5, 6), (-1.0, -1.0), "length"), 4, "after 2 of 4"),
    (Continuation((2, 6), (-1.0, -1.0), "length"), 2, "past an end token"),
    (Continuation((5, 2000), (-1.0, -1.0), "length"), 2, "outside the vocabulary"),
    (Continuation((5, 6), (-1.0, float("nan")), "length"), 2, "not finite"),
])
def test_malformed_continuations_are_errors(cont, limit, message):
    with pytest.raises(EngineResponseError, match=message):
        check_continuation(cont, limit, EOS, 1024, "the engine")


def test_well_formed_continuations_pass():
    check_continuation(Continuation((5, 2), (-1.0, -0.5), "eos"), 4, EOS, 1024, "e")
    check_continuation(Continuation((5, 6), (-1.0, -0.5), "length"), 2, EOS, 1024, "e")


def test_routes():
    assert engine_route(Proposal(1.0)) == "target"
    assert engine_route(Proposal(0.0, switch_after=8)) == "tail"
    assert engine_route(Proposal(0.3, switch_after=8, mixture=0.5)) == "tail"
    assert engine_route(Proposal(0.0, switch_after=0)) == "target"
    assert engine_route(Proposal(0.5)) == "loop"  # the mix on every token
    assert engine_route(Proposal(0.0)) == "loop"
    assert engine_route(Proposal(0.0), reference_engine=True) == "reference"
    assert engine_route(Proposal(0.2, mixture=0.5)) == "loop"


def test_sampling_settings_are_the_pure_distribution():
    s = pure_sampling(0.7, [2, 0])
    assert s["top_p"] == 1.0 and s["top_k"] is None and s["min_p"] == 0.0 and s["stop"] == []
    assert s["stop_token_ids"] == [0, 2] and s["ignore_eos"] is False and s["repetition_penalty"] == 1.0


def test_hybrid_refuses_truncated_sampling(tiny_pair):
    engine = HTTPEngine(["http://127.0.0.1:9/v1"], model="m")
    with pytest.raises(ValueError, match="full distribution"):
        HybridSampler(PathSampler(tiny_pair, top_k=5), engine)


def test_loop_proposals_stay_in_our_loop(tiny_pair, prompts):
    sampler = PathSampler(tiny_pair, max_new_tokens=8, seed=3)
    hybrid = HybridSampler(sampler, HTTPEngine([f"http://127.0.0.1:{free_port()}/v1"], model="m"))
    assert hybrid.sample(prompts, 3, 0.4) == sampler.sample(prompts, 3, 0.4)  # never contacts the engine
    assert hybrid.counts["loop"] == 1 and hybrid.identity is None
    assert hybrid.max_new_tokens == 8 and hybrid.pair is tiny_pair


def test_engine_specs(tiny_pair):
    with pytest.raises(ValueError, match="--engine takes"):
        make_engine("localhost:8000", tiny_pair)
    with pytest.raises(EngineUnavailableError, match="is the server running"):
        make_engine(f"http://127.0.0.1:{free_port()}/v1", tiny_pair)


def test_a_dead_engine_is_retried_then_a_clear_stop():
    engine = HTTPEngine([f"http://127.0.0.1:{free_port()}/v1"], model="m", retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError, match="after 3 attempts.*rerun the same command"):
        engine.generate([[1, 2, 3]], 4, 1.0)
    assert time.monotonic() - started < 30


class _Faulty(BaseHTTPRequestHandler):
    """Answers /completions from a script of (status, headers, body) and records each request."""

    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((time.monotonic(), body))
        status, headers, text = type(self).script.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty():
    _Faulty.script, _Faulty.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _answer(ids, lps, reason):
    return json.dumps({"choices": [{"index": 0, "token_ids": ids, "finish_reason": reason,
                                    "logprobs": {"token_logprobs": lps, "tokens": [f"token_id:{t}" for t in ids]}}]})


def test_overload_truncation_and_malformed_answers_are_retried(faulty):
    good = _answer([7, 2], [-0.5, -0.25], "stop")
    _Faulty.script = [(503, {"Retry-After": "1"}, "busy"), (200, {}, good[:40]),  # truncated JSON
                      (200, {}, _answer([7, 8, 9], [-0.5, -0.25, -1], "stop")),  # ended on a non-end token
                      (500, {}, "oops"), (200, {}, good)]
    engine = HTTPEngine([faulty], model="m", eos_token_ids=[2], retries=5, backoff=0.01)
    (cont,) = engine.generate([[1, 2, 3]], 4, 1.0)
    assert cont == Continuation((7, 2), (-0.5, -0.25), "eos")
    times = [t for t, _ in _Faulty.seen]
    assert len(times) == 5 and times[1] - times[0] >= 0.9  # Retry-After was honoured
    body = _Faulty.seen[0][1]
    assert body["prompt"] == [[1, 2, 3]] and body["top_p"] == 1.0 and body["stop"] == [] and "seed" not in body
    assert body["stop_token_ids"] == [2] and body["ignore_eos"] is False and body["return_tokens_as_token_ids"]


def test_a_refused_request_is_not_retried(faulty):
    _Faulty.script = [(400, {}, '{"error": "max_tokens too large"}')]
    engine = HTTPEngine([faulty], model="m", eos_token_ids=[2], retries=5, backoff=0.01)
    with pytest.raises(EngineRequestError, match="max_tokens too large"):
        engine.generate([[1]], 4, 1.0)
    assert len(_Faulty.seen) == 1


def test_several_urls_share_the_work_and_a_retry_moves_on(faulty):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    _Faulty.script = [(200, {}, _answer([7, 8], [-0.5, -0.25], "length"))]
    engine = HTTPEngine([dead, faulty], model="m", eos_token_ids=[2], retries=2, backoff=0.01)
    assert engine.generate([[1]], 2, 1.0)[0].token_ids == (7, 8)


def test_cli_engine_down_is_a_one_line_error_before_any_rollout(tiny_dirs, tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hello there"}\n')
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(app, ["estimate", "--method", "mis", "--switch", "2", "--budget", "20",
                                      "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]),
                                      "--prompts", str(prompts), "--judge", "regex:xyz", "--max-new-tokens", "6",
                                      "--runs-dir", str(tmp_path / "runs"), "--engine", url])
    assert result.exit_code != 0
    assert "is the server running" in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "runs").glob("*.sqlite"))  # nothing was opened or sampled


def test_cli_reference_engine_needs_the_target_engine(tiny_dirs, tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "hello there"}\n')
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(app, ["estimate", "--method", "is", "--budget", "20",
                                      "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]),
                                      "--prompts", str(prompts), "--judge", "regex:xyz", "--max-new-tokens", "6",
                                      "--runs-dir", str(tmp_path / "runs"), "--reference-engine", url])
    assert result.exit_code != 0 and "--reference-engine needs --engine" in result.output
    assert not list((tmp_path / "runs").glob("*.sqlite"))


@pytest.mark.parametrize("modules", [["q_proj", "v_proj"], ["embed_tokens", "q_proj"]])
def test_export_of_a_shared_base_pair_writes_plain_models(tiny_dirs, tmp_path, modules):
    """Each role of a pair sharing one base (BASE and BASE+ADAPTER) exports as a plain checkpoint whose
    logits are that role's: the adapter merged for the target, the base alone for the reference; an
    edit of the token embedding (as the abliteration adapters make) included."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft
    from tailscope.engines import export_for_engine
    from tailscope.models import ModelPair, load_model

    torch.manual_seed(0)
    with quiet_peft():
        lora = get_peft_model(load_model(str(tiny_dirs["ref"])).model,
                              LoraConfig(r=4, target_modules=modules, init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)  # the LoRA factors only
    pair = ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{tmp_path / 'adapter'}")
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    for role in ("reference", "target"):
        lm = getattr(pair, role)
        out = export_for_engine(lm, tmp_path / role)
        plain = load_model(str(out)).model
        assert not any("lora" in k or "base_layer" in k for k in plain.state_dict())
        with torch.no_grad():
            want, got = lm.model(input_ids=ids).logits, plain(input_ids=ids).logits
        assert torch.allclose(want, got, atol=1e-5), (role, float((want - got).abs().max()))
    with torch.no_grad():  # the export left the shared pair as it was: the two roles still differ
        assert not torch.allclose(pair.reference.model(input_ids=ids).logits, pair.target.model(input_ids=ids).logits)
