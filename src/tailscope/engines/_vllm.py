"""vLLM in-process (``vllm.LLM``): the engine for GPU machines, no server to run.

Prompts go in as ``TokensPrompt`` (token ids), replies come back as token ids with the sampled
token's log-probability. vLLM is built with the settings that make those log-probabilities the ones
sampled from: ``logprobs_mode="processed_logprobs"`` (after temperature, so they are log q at T),
``use_fp64_gumbel=True`` (float32 sampling noise cannot draw tokens of probability below ~1e-8,
which is exactly where rare behaviours live), ``generation_config="vllm"`` (the checkpoint's
generation defaults do not leak into requests). Per-request seeds are never set: vLLM's CPU worker
crashes on them, and engine rollouts are recorded as sampled, not re-derived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._base import Continuation, EngineError, check_continuation, pure_sampling

__all__ = ["VLLMEngine"]


def _import_vllm():
    try:
        import vllm
        from vllm.inputs import TokensPrompt
    except ImportError as e:
        raise EngineError(f"vLLM is not importable here ({e}). Install it (`pip install 'tailscope[vllm]'` on a GPU machine; "
                          "`make engine-env` builds a CPU environment) or use an HTTP engine: "
                          "`--engine http://127.0.0.1:8000/v1` (docs/engines.md)") from None
    return vllm, TokensPrompt


class VLLMEngine:
    """vLLM's offline engine over a local checkpoint directory (or hub id).

    Args:
        model: what ``vllm.LLM(model=...)`` loads: the target's checkpoint (a merged LoRA, not an adapter).
        eos_token_ids: the end tokens our loop stops on.
        vocab_size: token ids at or above it in a reply are an error.
        dtype: float32 matches our loop's float32 log-softmax most closely; bfloat16 is faster.
        trust_remote_code: passed to vLLM; off unless asked for.
        llm_kwargs: anything else for ``vllm.LLM`` (``gpu_memory_utilization``, ``tensor_parallel_size`` ...).
    """

    kind = "vllm"

    def __init__(self, model: str, *, eos_token_ids: Sequence[int] = (), vocab_size: int | None = None,
                 dtype: str = "float32", trust_remote_code: bool = False, **llm_kwargs: Any):
        vllm, self._tokens_prompt = _import_vllm()
        self._vllm = vllm
        self.model = str(model)
        self.eos = frozenset(int(t) for t in eos_token_ids)
        self.vocab_size = vocab_size
        self.dtype = dtype
        settings = {"logprobs_mode": "processed_logprobs", "use_fp64_gumbel": True, "generation_config": "vllm",
                    "max_logprobs": 1, "trust_remote_code": trust_remote_code, **llm_kwargs}
        self._llm = vllm.LLM(model=self.model, dtype=dtype, **settings)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "dtype": self.dtype, "vllm": self._vllm.__version__}

    def close(self) -> None:
        self._llm = None

    def _params(self, temperature: float, max_tokens: int, **extra: Any):
        s = pure_sampling(temperature, sorted(self.eos))
        return self._vllm.SamplingParams(
            n=1, temperature=s["temperature"], top_p=s["top_p"], top_k=0, min_p=s["min_p"],
            presence_penalty=s["presence_penalty"], frequency_penalty=s["frequency_penalty"],
            repetition_penalty=s["repetition_penalty"], stop=None, stop_token_ids=s["stop_token_ids"],
            ignore_eos=False, max_tokens=int(max_tokens), detokenize=False, **extra)

    def generate(self, prefixes: Sequence[Sequence[int]], max_tokens: int, temperature: float) -> list[Continuation]:
        if max_tokens < 1:
            raise ValueError(f"`max_tokens` (={max_tokens}) must be >= 1")
        if not prefixes:
            return []
        prompts = [self._tokens_prompt(prompt_token_ids=list(map(int, p))) for p in prefixes]
        outputs = self._llm.generate(prompts, self._params(temperature, max_tokens, logprobs=0), use_tqdm=False)
        out = []
        for request in outputs:
            c = request.outputs[0]
            ids = tuple(int(t) for t in c.token_ids)
            lps = tuple(float(step[t].logprob) for step, t in zip(c.logprobs or [], ids))
            reason = "eos" if c.finish_reason == "stop" else "length"
            cont = Continuation(ids, lps, reason)  # type: ignore[arg-type]
            check_continuation(cont, max_tokens, self.eos, self.vocab_size, "vLLM")
            out.append(cont)
        return out

    def score(self, sequences: Sequence[Sequence[int]], starts: Sequence[int]) -> list[list[float]]:
        prompts = [self._tokens_prompt(prompt_token_ids=list(map(int, s))) for s in sequences]
        outputs = self._llm.generate(prompts, self._params(1.0, 1, prompt_logprobs=0), use_tqdm=False)
        out = []
        for request, seq, start in zip(outputs, sequences, starts, strict=True):
            steps = request.prompt_logprobs or []
            out.append([float(steps[t][int(seq[t])].logprob) for t in range(max(start, 1), len(seq))])
        return out
