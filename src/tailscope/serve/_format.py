"""OpenAI response bodies and stream chunks from the engine's replies.

Log-probabilities are of the distribution each token was drawn from: the path point at the
request's α and temperature (after top-k/top-p when asked for). They cover every drawn token,
the end-of-reply token included, so their sum is log q(reply | prompt) as our scorer computes it.
Each choice also carries ``tailscope``: its token ids (the record), that sum, and the α used.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from ._jobs import Choice

__all__ = ["Formatter"]

TokenText = Callable[[int], str]


def _top_list(top, token_text: TokenText) -> list[dict[str, Any]]:
    return [{"token": (s := token_text(t)), "logprob": lp, "bytes": list(s.encode())} for t, lp in top]


def chat_logprobs(tokens, logprobs, tops, token_text: TokenText) -> dict[str, Any]:
    content = []
    for t, lp, top in zip(tokens, logprobs, tops):
        s = token_text(t)
        content.append({"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": _top_list(top, token_text)})
    return {"content": content, "refusal": None}


def completion_logprobs(tokens, logprobs, tops, token_text: TokenText, offset: int = 0) -> dict[str, Any]:
    strings = [token_text(t) for t in tokens]
    offsets, at = [], offset
    for s in strings:
        offsets.append(at)
        at += len(s)
    return {"tokens": strings, "token_logprobs": list(logprobs),
            "top_logprobs": [{token_text(t): lp for t, lp in top} for top in tops], "text_offset": offsets}


class Formatter:
    """Builds the bodies of one response (one id and timestamp for all its chunks)."""

    def __init__(self, kind: str, model: str, alpha: float, token_text: TokenText, logprobs: bool):
        self.kind, self.model, self.alpha, self.token_text, self.logprobs = kind, model, alpha, token_text, logprobs
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _extra(self, c: Choice) -> dict[str, Any]:
        return {"token_ids": list(c.token_ids), "logprob": c.logprob, "alpha": self.alpha}

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def _logprobs(self, tokens, logprobs, tops, offset: int = 0) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        if self.kind == "chat":
            return chat_logprobs(tokens, logprobs, tops, self.token_text)
        return completion_logprobs(tokens, logprobs, tops, self.token_text, offset)

    def response(self, choices: list[tuple[int, Choice]], prompt_tokens: int) -> dict[str, Any]:
        """The whole (non-streamed) response; ``choices`` pairs each reply with its index in the response."""
        body = self._head("chat.completion" if self.kind == "chat" else "text_completion")
        out = []
        for index, c in choices:
            lp = self._logprobs(c.token_ids, c.logprobs, c.top_logprobs or [()] * len(c.token_ids))
            item: dict[str, Any] = {"index": index}
            if self.kind == "chat":
                item["message"] = {"role": "assistant", "content": c.text}
            else:
                item["text"] = c.text
            item |= {"logprobs": lp, "finish_reason": c.finish_reason, "tailscope": self._extra(c)}
            out.append(item)
        body["choices"] = out
        body["usage"] = self.usage(prompt_tokens, sum(len(c.token_ids) for _, c in choices))
        return body

    def chunk(self, index: int, text: str, *, token: int | None = None, logprob: float = 0.0, top=(),
              offset: int = 0, finish: Choice | None = None, role: bool = False) -> dict[str, Any]:
        """One stream chunk: a piece of text (with the token's log-probabilities), or a reply's end."""
        body = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        lp = self._logprobs([token], [logprob], [top], offset) if token is not None else None
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text or role:
                delta["content"] = text
            item: dict[str, Any] = {"index": index, "delta": delta}
        else:
            item = {"index": index, "text": text}
        item |= {"logprobs": lp, "finish_reason": finish.finish_reason if finish else None}
        if finish is not None:
            item["tailscope"] = self._extra(finish)
        body["choices"] = [item]
        return body

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        body = self._head("chat.completion.chunk" if self.kind == "chat" else "text_completion")
        body["choices"] = []
        body["usage"] = self.usage(prompt_tokens, completion_tokens)
        return body
