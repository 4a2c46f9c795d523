"""PathSampler(compile=True): both models' decode steps through torch.compile, the same rollouts."""

from __future__ import annotations

import pytest

from tailscope._kvcache import compiled_forward
from tailscope.sampling import PathSampler


@pytest.mark.slow  # compiling takes minutes on a CPU
def test_compiled_decoding_gives_the_eager_rollouts(tiny_dirs, prompts):
    from tailscope.models import ModelPair

    pair = ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]))  # its own models: compiling changes them
    eager = PathSampler(pair, max_new_tokens=12, batch_size=8).sample(prompts, 4, "a=0.5", logprob_grid=(0.0, 1.0))
    compiled = PathSampler(pair, max_new_tokens=12, batch_size=8, compile=True)
    assert compiled._forwards["target"] is compiled_forward(pair.target.model)  # once per model
    got = compiled.sample(prompts, 4, "a=0.5", logprob_grid=(0.0, 1.0))
    assert [r.token_ids for r in got] == [r.token_ids for r in eager]
    for x, y in zip(got, eager):  # fused kernels: equal to float rounding, not bit for bit
        assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
        assert x.logprob_grid == pytest.approx(y.logprob_grid, abs=1e-4)


def test_a_shared_base_role_is_not_compiled(tiny_dirs, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft
    from tailscope.models import ModelPair, load_model

    with quiet_peft():
        lora = get_peft_model(load_model(str(tiny_dirs["ref"])).model, LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    pair = ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{tmp_path / 'lora'}")
    assert pair.shares_base
    with pytest.raises(ValueError, match="share=False"):
        PathSampler(pair, compile=True)


def test_a_failed_compile_draws_the_batch_again_eagerly(tiny_dirs, prompts):
    from tailscope.models import ModelPair

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    pair = ModelPair.load(str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]))
    eager = PathSampler(pair, max_new_tokens=6, batch_size=4).sample(prompts[:2], 2, "a=0.5")
    for lm in (pair.reference, pair.target):  # the sampler takes these (one per model) instead of inductor's
        compiled_forward(lm.model, backend=broken_backend)
    sampler = PathSampler(pair, max_new_tokens=6, batch_size=4, compile=True)
    with pytest.warns(UserWarning, match="torch.compile of the decode step failed"):
        got = sampler.sample(prompts[:2], 2, "a=0.5")
    assert got == eager  # the batch drawn again from the start, eagerly: bit for bit


def test_a_compiled_model_is_freed_with_its_pair(tiny_dirs):
    import gc
    import weakref

    from tailscope.models import load_model

    lm = load_model(str(tiny_dirs["ref"]))
    forward = compiled_forward(lm.model)  # torch.compile is lazy: nothing compiles until a call
    assert compiled_forward(lm.model) is forward
    with pytest.raises(ValueError, match="already compiled with backend"):
        compiled_forward(lm.model, backend="eager")
    gone = weakref.ref(lm.model)
    del lm, forward
    gc.collect()
    assert gone() is None


def test_the_cli_loads_two_plain_models_to_compile(tiny_dirs, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft
    from tailscope.cli._setup import load_pair
    from tailscope.models import load_model

    with quiet_peft():
        lora = get_peft_model(load_model(str(tiny_dirs["ref"])).model, LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    spec = f"{tiny_dirs['ref']}+{tmp_path / 'lora'}"
    assert load_pair(str(tiny_dirs["ref"]), spec, device="cpu", dtype="float32").shares_base
    pair = load_pair(str(tiny_dirs["ref"]), spec, device="cpu", dtype="float32", share=False)
    assert not pair.shares_base
    PathSampler(pair, compile=True)  # both roles are plain models: nothing to refuse
