"""The lean Llama forward used by brute force computes the model's own last-position logits."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tailscope.lowprob import LowProbModel, zoo
from tailscope.lowprob.fastpath import LlamaLastLogits, supports
from tailscope.lowprob.groundtruth import chunk_generator


@pytest.mark.parametrize("name", ["L1", "L4"])
def test_lean_forward_matches_transformers_on_benchmark_models(name):
    model = zoo.load_model(name)
    x = zoo.load_distribution("colon").sample(512, chunk_generator(0, 0))
    with torch.no_grad():
        ref = model(input_ids=x).logits[:, -1].float()
    lean = LlamaLastLogits(model)(x)
    assert torch.allclose(lean, ref, atol=1e-4, rtol=1e-4)
    assert (lean.argmax(-1) == ref.argmax(-1)).all()


def test_lean_forward_grouped_heads_and_untied_unembedding():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    for p in model.parameters():  # larger weights than the init, so that every part matters
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 50, (64, 7))
    with torch.no_grad():
        ref = model(input_ids=x).logits[:, -1]
    assert torch.allclose(LlamaLastLogits(model)(x), ref, atol=1e-4, rtol=1e-4)


def test_lean_path_is_used_only_where_exact():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_embd=16, n_layer=1, n_head=2, n_positions=8))
    assert not supports(gpt2)
    with pytest.raises(ValueError, match="plain Llama"):
        LlamaLastLogits(gpt2)
    lm = LowProbModel(gpt2, lean=True)  # falls back to the model's own forward
    assert lm.argmax(torch.randint(0, 20, (4, 5))).shape == (4,)
    rope = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert not supports(LlamaForCausalLM(rope))


def test_lowprob_model_lean_argmax_equals_plain_and_counts_calls():
    model = zoo.load_model("L2")
    x = zoo.load_distribution("hex").sample(1000, chunk_generator(0, 1))
    plain, lean = LowProbModel(model, batch_size=256), LowProbModel(model, batch_size=256, lean=True)
    assert torch.equal(plain.argmax(x), lean.argmax(x))
    assert lean.calls == 1000
