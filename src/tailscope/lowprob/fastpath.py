"""A lean forward pass for brute-force ground truth on small Llama models.

Brute force runs one model over 2^24 short inputs per pair; on these models (a few hundred
thousand parameters, 8 tokens) the generic transformers forward spends most of its time outside
the matrix products (masks, caches, dispatch). ``LlamaLastLogits`` recomputes the same function
with plain tensor ops, and in the last layer only for the last position, which is all the argmax
needs. It reads the weights of a ``LlamaForCausalLM`` and refuses configurations it does not
implement (rope scaling, biases, grouped heads are fine; anything else is rejected), so a model it
accepts gives the logits of ``model(input_ids).logits[:, -1]`` up to float rounding; a test checks
this on the benchmark models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LlamaLastLogits", "supports"]


def supports(model) -> bool:
    """Whether :class:`LlamaLastLogits` implements ``model`` exactly."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    return (rope.get("rope_type", "default") == "default" and getattr(cfg, "hidden_act", "") == "silu"
            and not getattr(cfg, "mlp_bias", False) and not getattr(cfg, "attention_bias", False))


class LlamaLastLogits:
    """Last-position logits of a Llama causal LM on unpadded inputs of one length."""

    def __init__(self, model) -> None:
        if not supports(model):
            raise ValueError("LlamaLastLogits implements plain Llama models only (default rope, SiLU, no biases)")
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        rope = getattr(cfg, "rope_parameters", None) or {}
        self.theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
        inner = model.model

        def w(t: torch.Tensor) -> torch.Tensor:
            return t.detach().float()

        self.embed = w(inner.embed_tokens.weight)
        self.layers = [
            {
                "in_norm": w(layer.input_layernorm.weight), "post_norm": w(layer.post_attention_layernorm.weight),
                "qkv": torch.cat([w(layer.self_attn.q_proj.weight), w(layer.self_attn.k_proj.weight),
                                  w(layer.self_attn.v_proj.weight)]).T.contiguous(),
                "o": w(layer.self_attn.o_proj.weight).T.contiguous(),
                "gate_up": torch.cat([w(layer.mlp.gate_proj.weight), w(layer.mlp.up_proj.weight)]).T.contiguous(),
                "down": w(layer.mlp.down_proj.weight).T.contiguous(),
            }
            for layer in inner.layers
        ]
        self.final_norm = w(inner.norm.weight)
        self.unembed = w(model.get_output_embeddings().weight).T.contiguous()
        self._rope: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _rms(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps))

    def _cos_sin(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if k not in self._rope:
            self._rope[k] = self._tables(k)
        return self._rope[k]

    def _tables(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))
        freqs = torch.arange(k, dtype=torch.float32)[:, None] * inv[None, :]
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos(), emb.sin(), torch.full((k, k), float("-inf")).triu(1)

    @staticmethod
    def _attend(q: torch.Tensor, key: torch.Tensor, val: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # softmax written out: aten's softmax over a last dimension of 8 was the slowest op here
        s = (q @ key.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        if bias is not None:
            s = s + bias
        e = (s - s.amax(-1, keepdim=True)).exp()
        return (e / e.sum(-1, keepdim=True)) @ val

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        b, k = input_ids.shape
        cos, sin, causal = self._cos_sin(k)
        h = self.embed[input_ids]
        hq, hk, d = self.heads, self.kv_heads, self.head_dim
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            a = self._rms(h, layer["in_norm"])
            qkv = a @ layer["qkv"]
            q, key, val = qkv.split([hq * d, hk * d, hk * d], -1)
            key = self._rotate(key.view(b, k, hk, d).transpose(1, 2), cos, sin)
            val = val.view(b, k, hk, d).transpose(1, 2)
            if hk != hq:
                key = key.repeat_interleave(hq // hk, 1)
                val = val.repeat_interleave(hq // hk, 1)
            if last:  # only the last position's query is needed
                q = self._rotate(q[:, -1:].view(b, 1, hq, d).transpose(1, 2), cos[-1:], sin[-1:])
                att = self._attend(q, key, val, None)
                h = h[:, -1:] + att.transpose(1, 2).reshape(b, 1, hq * d) @ layer["o"]
            else:
                q = self._rotate(q.view(b, k, hq, d).transpose(1, 2), cos, sin)
                att = self._attend(q, key, val, causal)
                h = h + att.transpose(1, 2).reshape(b, k, hq * d) @ layer["o"]
            m = self._rms(h, layer["post_norm"])
            gate, up = (m @ layer["gate_up"]).chunk(2, -1)
            h = h + (F.silu(gate) * up) @ layer["down"]
        return self._rms(h[:, -1], self.final_norm) @ self.unembed
