"""The OpenAI request bodies the server accepts, and how each becomes :class:`GenerationSpec` requests.

Fields the path sampler cannot honour (penalties, logit bias, tools, ``best_of``, ``echo``) are
refused with a 400 naming the field rather than silently ignored; fields that do not change what
is sampled (``user``, ``metadata``) are accepted. Extra body fields: ``alpha`` (the path point for
this request), ``amplify`` (α = 1 + a) and ``top_k``.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..prompts import Prompt
from ._errors import ServeError
from ._jobs import GenerationSpec

__all__ = ["ChatRequest", "CompletionRequest"]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None


class _Request(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="allow")

    model: str
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # tailscope's own fields (the openai client sends them through `extra_body`)
    alpha: float | None = None
    amplify: float | None = None
    top_k: int | None = None

    def _refuse_unsupported(self, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if value not in (None, 0, 0.0, False, {}, []):
                raise ServeError(400, f"`{name}` is not supported by the path sampler (it would change the "
                                 "distribution the replies are drawn from); leave it unset", param=name)

    def _alpha(self, default: float) -> float:
        if self.alpha is not None and self.amplify is not None:
            raise ServeError(400, "give one of `alpha` and `amplify` (α = 1 + amplify), not both", param="alpha")
        if self.amplify is not None:
            return 1.0 + self.amplify
        return default if self.alpha is None else self.alpha

    def _stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise ServeError(400, f"`stop` holds {len(stops)} strings; at most 4 are allowed", param="stop")
        return tuple(s for s in stops if s)

    def _spec(self, prompt: Prompt, *, alpha: float, max_tokens: int, logprobs: bool, top_logprobs: int) -> GenerationSpec:
        return GenerationSpec(
            prompt=prompt, n=self.n, alpha=alpha, temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k, top_p=None if self.top_p in (None, 1.0) else self.top_p, max_tokens=max_tokens,
            stop=self._stops(), seed=secrets.randbits(63) if self.seed is None else self.seed,
            logprobs=logprobs, top_logprobs=top_logprobs, stream=self.stream,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Request):
    """``POST /v1/completions``: raw text prompts, no chat template."""

    prompt: str | list[str]
    max_tokens: int | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @property
    def asked_max_tokens(self) -> int | None:
        return self.max_tokens

    def specs(self, *, alpha: float, max_tokens: int) -> list[GenerationSpec]:
        self._refuse_unsupported({"presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
                                  "logit_bias": self.logit_bias, "echo": self.echo, "suffix": self.suffix,
                                  "best_of": None if self.best_of in (None, self.n) else self.best_of})
        texts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not texts or not all(t for t in texts):
            raise ServeError(400, "`prompt` must be a non-empty string or list of non-empty strings", param="prompt")
        logprobs = self.logprobs is not None
        return [self._spec(Prompt(id=f"prompt-{k}", text=t), alpha=self._alpha(alpha),
                           max_tokens=max_tokens if self.max_tokens is None else self.max_tokens, logprobs=logprobs,
                           top_logprobs=self.logprobs or 0) for k, t in enumerate(texts)]


class ChatRequest(_Request):
    """``POST /v1/chat/completions``: messages through each model's own chat template."""

    messages: list[Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    @property
    def asked_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_completion_tokens is None else self.max_completion_tokens

    def specs(self, *, alpha: float, max_tokens: int) -> list[GenerationSpec]:
        self._refuse_unsupported({"presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
                                  "logit_bias": self.logit_bias, "tools": self.tools})
        if self.tool_choice not in (None, "none", "auto"):
            raise ServeError(400, "`tool_choice` is not supported: the server has no tools", param="tool_choice")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ServeError(400, "`response_format` other than text is not supported", param="response_format")
        if self.top_logprobs and not self.logprobs:
            raise ServeError(400, "`top_logprobs` needs `logprobs: true`", param="top_logprobs")
        limit = max_tokens if self.asked_max_tokens is None else self.asked_max_tokens
        return [self._spec(self.prompt(), alpha=self._alpha(alpha), max_tokens=limit, logprobs=self.logprobs,
                           top_logprobs=self.top_logprobs or 0)]

    def prompt(self) -> Prompt:
        if not self.messages:
            raise ServeError(400, "`messages` must hold at least one message", param="messages")
        turns = []
        for k, m in enumerate(self.messages):
            role = _ROLES.get(m.role)
            if role is None:
                raise ServeError(400, f"messages[{k}] has role {m.role!r}; the server takes {sorted(_ROLES)}",
                                 param=f"messages.{k}.role")
            if isinstance(m.content, list):
                if any(p.type != "text" for p in m.content):
                    kinds = sorted({p.type for p in m.content})
                    raise ServeError(400, f"messages[{k}] holds {kinds} parts; only text is supported",
                                     param=f"messages.{k}.content")
                content = "".join(p.text or "" for p in m.content)
            else:
                content = m.content or ""
            turns.append({"role": role, "content": content})
        return Prompt.from_messages("chat", turns)


Endpoint = Literal["completion", "chat"]
