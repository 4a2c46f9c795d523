"""An OpenAI-compatible completions server as the engine (`vllm serve`, SGLang, llama.cpp's server).

Prompts go as token ids (``/v1/completions`` takes a list of id lists), replies come back as token
ids: from ``token_ids`` (vLLM's ``return_token_ids``) or from ``token_id:N`` tokens
(``return_tokens_as_token_ids``). Text is never re-tokenized. Several base URLs share the work:
each batch is split across them, and a retry moves to the next URL.

Faults are bounded: connection errors, timeouts, 429 and 5xx answers and malformed or truncated
bodies are retried with exponential backoff (honouring ``Retry-After``), then
:class:`EngineUnavailableError` stops the run. Nothing sampled is kept unless it is complete, so a
rerun resumes from what the run store holds.
"""

from __future__ import annotations

import email.utils
import itertools
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ._base import (
    Continuation,
    EngineRequestError,
    EngineResponseError,
    EngineUnavailableError,
    check_continuation,
    pure_sampling,
)

__all__ = ["HTTPEngine"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _token_ids(choice: dict[str, Any]) -> list[int]:
    ids = choice.get("token_ids")
    if ids is not None:
        return [int(t) for t in ids]
    tokens = (choice.get("logprobs") or {}).get("tokens") or []
    out = []
    for tok in tokens:
        if not (isinstance(tok, str) and tok.startswith("token_id:")):
            raise ValueError(f"token {tok!r} is not a token id (the server ignored return_tokens_as_token_ids)")
        out.append(int(tok.removeprefix("token_id:")))
    return out


class HTTPEngine:
    """An engine behind one or more OpenAI-compatible base URLs (e.g. ``http://127.0.0.1:8000/v1``).

    Args:
        urls: base URLs that all serve the same model.
        model: the served model name; None takes the one model ``/models`` lists.
        eos_token_ids: the end tokens our loop stops on (sent as ``stop_token_ids``).
        vocab_size: token ids at or above it in a reply are an error.
        api_key: sent as a bearer token when given.
        timeout: seconds per request.
        retries: attempts after the first one, per batch.
        backoff, max_backoff: the first retry's delay and the cap (seconds); the delay doubles.
        max_batch: prompts per request.
    """

    kind = "http"

    def __init__(
        self,
        urls: Sequence[str] | str,
        *,
        model: str | None = None,
        eos_token_ids: Sequence[int] = (),
        vocab_size: int | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_batch: int = 64,
    ):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("give at least one engine URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.eos = frozenset(int(t) for t in eos_token_ids)
        self.vocab_size = vocab_size
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self.max_batch = int(max_batch)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._next = itertools.count()
        self._jitter = random.Random(0)
        self.model = model or self._only_model()

    # ------------------------------------------------------------------ plumbing
    def _post(self, path: str, body: dict[str, Any], check) -> Any:
        """POST to the next URL in turn, retrying transient faults; ``check`` parses and validates
        the JSON answer (raising ValueError/KeyError/TypeError/EngineResponseError on a bad one)."""
        errors: list[str] = []
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            url = self.urls[next(self._next) % len(self.urls)]
            wait = None
            try:
                response = self._client.post(f"{url}{path}", json=body)
                if response.status_code in _RETRY_STATUS:
                    wait = _retry_after(response)
                    raise httpx.HTTPStatusError(f"HTTP {response.status_code}: {response.text[:200]}",
                                                request=response.request, response=response)
                if response.status_code >= 400:
                    raise EngineRequestError(f"the engine at {url} refused the request (HTTP {response.status_code}): "
                                             f"{response.text[:300]}")
                return check(response.json(), url)
            except EngineRequestError:
                raise
            except (httpx.TransportError, httpx.HTTPStatusError, ValueError, KeyError, TypeError,
                    EngineResponseError) as e:
                errors.append(f"{url}: {type(e).__name__}: {str(e)[:200]}")
            if attempt < self.retries:
                delay = min(self.max_backoff, self.backoff * 2**attempt) * (1 + 0.1 * self._jitter.random())
                time.sleep(max(delay, min(wait, 4 * self.max_backoff)) if wait is not None else delay)
        raise EngineUnavailableError(
            f"the engine did not give a valid answer after {self.retries + 1} attempts over "
            f"{time.monotonic() - started:.0f} s (last: {errors[-1]}). Check that it is running "
            "(docs/engines.md), then rerun the same command: stored rollouts are kept and not sampled again.")

    def _only_model(self) -> str:
        url = self.urls[0]
        try:
            data = self._client.get(f"{url}/models").json()
            names = [m["id"] for m in data["data"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            raise EngineUnavailableError(f"could not list the models served at {url} ({e}); is the server "
                                         "running? (docs/engines.md)") from None
        if len(names) != 1:
            raise EngineRequestError(f"the engine at {url} serves {names}; say which with model=")
        return names[0]

    def served_models(self) -> dict[str, list[str]]:
        """The model names each URL lists at ``/models``."""
        out = {}
        for url in self.urls:
            data = self._client.get(f"{url}/models").json()
            out[url] = [m["id"] for m in data["data"]]
        return out

    def per_url(self) -> list[HTTPEngine]:
        """One engine per URL (the identity check checks each server on its own)."""
        return [HTTPEngine([u], model=self.model, eos_token_ids=sorted(self.eos), vocab_size=self.vocab_size,
                           timeout=self._client.timeout.read or 300.0, retries=self.retries, backoff=self.backoff,
                           max_backoff=self.max_backoff, max_batch=self.max_batch) for u in self.urls]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model}

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ sampling
    def _request(self, prefixes: Sequence[Sequence[int]], max_tokens: int, temperature: float) -> list[Continuation]:
        settings = pure_sampling(temperature, sorted(self.eos))
        body = {
            "model": self.model, "prompt": [list(map(int, p)) for p in prefixes], "max_tokens": int(max_tokens),
            **{k: v for k, v in settings.items() if k != "top_k"}, "top_k": -1, "n": 1, "logprobs": 0, "echo": False,
            "return_tokens_as_token_ids": True, "return_token_ids": True, "skip_special_tokens": True,
        }

        def check(data: dict[str, Any], url: str) -> list[Continuation]:
            choices = sorted(data["choices"], key=lambda c: int(c["index"]))
            if [int(c["index"]) for c in choices] != list(range(len(prefixes))):
                raise EngineResponseError(f"{url} answered {len(choices)} choices for {len(prefixes)} prompts")
            out = []
            for c in choices:
                ids = _token_ids(c)
                lps = [float(x) for x in c["logprobs"]["token_logprobs"]]
                reason = {"length": "length", "stop": "eos"}.get(c.get("finish_reason"))
                if reason is None:
                    raise EngineResponseError(f"{url} finished a reply with {c.get('finish_reason')!r}")
                cont = Continuation(tuple(ids), tuple(lps), reason)  # type: ignore[arg-type]
                check_continuation(cont, max_tokens, self.eos, self.vocab_size, f"the engine at {url}")
                out.append(cont)
            return out

        return self._post("/completions", body, check)

    def generate(self, prefixes: Sequence[Sequence[int]], max_tokens: int, temperature: float) -> list[Continuation]:
        """One continuation per prefix, at most ``max_tokens`` new tokens each; batches go to the URLs in parallel."""
        if max_tokens < 1:
            raise ValueError(f"`max_tokens` (={max_tokens}) must be >= 1")
        if not prefixes:
            return []
        chunks = [prefixes[i : i + self.max_batch] for i in range(0, len(prefixes), self.max_batch)]
        if len(chunks) == 1 or len(self.urls) == 1:
            return [c for chunk in chunks for c in self._request(chunk, max_tokens, temperature)]
        with ThreadPoolExecutor(max_workers=min(len(chunks), 2 * len(self.urls))) as pool:
            parts = list(pool.map(lambda ch: self._request(ch, max_tokens, temperature), chunks))
        return [c for part in parts for c in part]

    def score(self, sequences: Sequence[Sequence[int]], starts: Sequence[int]) -> list[list[float]]:
        """The served model's log-probabilities (temperature 1) of ``sequence[start:]``, by echoing prompts."""
        body = {"model": self.model, "prompt": [list(map(int, s)) for s in sequences], "max_tokens": 1,
                "temperature": 1.0, "echo": True, "logprobs": 0, "return_tokens_as_token_ids": True}

        def check(data: dict[str, Any], url: str) -> list[list[float]]:
            choices = sorted(data["choices"], key=lambda c: int(c["index"]))
            out = []
            for c, seq, start in zip(choices, sequences, starts, strict=True):
                lp = c["logprobs"]["token_logprobs"][: len(seq)]
                echoed = _token_ids({"logprobs": {"tokens": c["logprobs"]["tokens"][: len(seq)]}})
                if echoed != list(seq):
                    raise EngineResponseError(f"{url} echoed other token ids than it was sent")
                out.append([float(x) for x in lp[start:]])
            return out

        return self._post("/completions", body, check)
