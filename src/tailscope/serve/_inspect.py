"""An inspect_ai model provider that runs the path model in-process: ``--model tailscope/<name>``.

``<name>`` is a bundled organism (``tailscope/backdoor``), or any label with ``-M reference=A
-M target=B``. Model args: ``alpha`` (or ``amplify``: α = 1 + a), ``max_tokens`` (the default reply
limit), ``batch_size``, ``seed``, ``device``, ``dtype``, ``trust_remote_code``. A sample may move
along the path with ``extra_body={"alpha": ...}`` in its generate config. Concurrent generate calls
(inspect's ``max_connections``, by default the batch size) share batches of the one decoding loop.
"""

from __future__ import annotations

import secrets
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    TopLogprob,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from ..prompts import Prompt
from ._engine import Engine
from ._jobs import Choice, GenerationSpec

__all__ = ["TailscopeAPI"]

_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def _alpha(alpha: Any, amplify: Any) -> float:
    if alpha is not None and amplify is not None:
        raise ValueError("give one of -M alpha=... and -M amplify=..., not both")
    if amplify is not None:
        return 1.0 + float(amplify)
    return 1.0 if alpha is None else float(alpha)


def _load_pair(name: str, reference: str | None, target: str | None, device: str, dtype: str, trust_remote_code: bool):
    """The pair and its default reply limit: an organism by name, or two models given as model args."""
    if reference or target:
        if not (reference and target):
            raise ValueError("give both -M reference=A and -M target=B (or name a bundled organism)")
        from ..models import ModelPair

        return ModelPair.load(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code), 64
    from ..organisms import list_organisms, load

    if name not in list_organisms():
        raise ValueError(f"tailscope/{name}: no organism of that name (have: {', '.join(list_organisms())}); "
                         "for your own models pass -M reference=A -M target=B")
    org = load(name, device=device, dtype=dtype)
    return org.pair, org.max_new_tokens


class TailscopeAPI(ModelAPI):
    """Replies drawn from ``l_A + α (l_B − l_A)`` by tailscope's decoding loop, in this process."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), *, alpha: float | None = None, amplify: float | None = None,
                 reference: str | None = None, target: str | None = None, max_tokens: int | None = None,
                 batch_size: int = 32, seed: int = 0, device: str = "cpu", dtype: str = "float32",
                 trust_remote_code: bool = False, **model_args: Any):
        super().__init__(model_name, base_url, api_key, [], config)
        if model_args:
            raise ValueError(f"unknown model args for tailscope/{model_name}: {sorted(model_args)} (see docs/serve.md)")
        pair, default_tokens = _load_pair(model_name, reference, target, device, dtype, bool(trust_remote_code))
        self.engine = Engine(pair, name=model_name, alpha=_alpha(alpha, amplify),
                             max_tokens=int(max_tokens or default_tokens), batch_size=int(batch_size), seed=int(seed))

    def max_connections(self) -> int:
        return self.engine.batch_size

    def close(self) -> None:
        self.engine.close()

    def _spec(self, input: list[ChatMessage], config: GenerateConfig) -> tuple[GenerationSpec, bool]:
        turns = []
        for k, m in enumerate(input):
            role = _ROLES.get(m.role)
            if role is None:
                raise ValueError(f"message {k} has role {m.role!r}: tailscope models take system, user and assistant turns")
            turns.append({"role": role, "content": m.text})
        extra = config.extra_body or {}
        spec = GenerationSpec(
            prompt=Prompt.from_messages("chat", turns), n=config.num_choices or 1,
            alpha=_alpha(extra["alpha"], None) if "alpha" in extra else self.engine.alpha,
            temperature=1.0 if config.temperature is None else config.temperature,
            top_k=config.top_k, top_p=config.top_p, max_tokens=config.max_tokens or self.engine.max_tokens,
            stop=tuple(config.stop_seqs or ()), seed=secrets.randbits(63) if config.seed is None else config.seed,
            logprobs=bool(config.logprobs), top_logprobs=config.top_logprobs or 0,
        )
        return spec, config.max_tokens is None

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        if tools:
            raise ValueError("tailscope models do not call tools: run the task without tools")
        spec, default_limit = self._spec(input, config)
        result = await self.engine.complete(spec, fit=default_limit)
        choices = [self._choice(c, spec.logprobs) for c in result.choices]
        usage = ModelUsage(input_tokens=result.prompt_tokens, output_tokens=result.completion_tokens,
                           total_tokens=result.prompt_tokens + result.completion_tokens)
        meta = {"alpha": spec.alpha, "seed": spec.seed, "token_ids": [list(c.token_ids) for c in result.choices],
                "logprob": [c.logprob for c in result.choices]}
        return ModelOutput(model=self.model_name, choices=choices, usage=usage, metadata=meta)

    def _choice(self, c: Choice, logprobs: bool) -> ChatCompletionChoice:
        message = ChatMessageAssistant(content=c.text, model=self.model_name, source="generate")
        lp = None
        if logprobs:
            text = self.engine.token_text
            lp = Logprobs(content=[
                Logprob(token=text(t), logprob=v, bytes=list(text(t).encode()),
                        top_logprobs=[TopLogprob(token=text(i), logprob=w, bytes=list(text(i).encode())) for i, w in top])
                for t, v, top in zip(c.token_ids, c.logprobs, c.top_logprobs)
            ])
        return ChatCompletionChoice(message=message, stop_reason="stop" if c.finish_reason == "stop" else "max_tokens",
                                    logprobs=lp)
