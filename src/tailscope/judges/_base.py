"""The judge protocol, verdicts, the content-hash cache and spec options.

A judge turns a batch of (prompt, completion) texts into one :class:`Verdict` each. Judges are
named by a *spec* string, ``KIND`` or ``KIND:TARGET`` optionally followed by ``;key=value``
options (``hf:./classifier;threshold=0.7``); :func:`~tailscope.judges.make_judge` builds one
from it (the registry is in :mod:`._registry`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Judge",
    "JudgeBase",
    "JudgeSpecError",
    "Verdict",
    "content_hash",
    "fill_template",
    "split_options",
]

Item = tuple[str, str]


class JudgeSpecError(ValueError):
    """A judge spec that cannot be parsed or built; the message names the spec."""


@dataclass(frozen=True)
class Verdict:
    """One judged completion.

    ``flagged`` is True when the behaviour happened, False when it did not, and None when the
    judge failed on the item (``error`` says why). A failed item is unknown, never a "no":
    estimators must leave it out of the count or retry it, not read it as False.
    ``score`` is the judge's probability or score for "flagged" where it has one.
    """

    flagged: bool | None
    score: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.flagged is None) != (self.error is not None):
            raise ValueError(
                f"a verdict has either `flagged` or an `error`, not both or neither "
                f"(flagged={self.flagged!r}, error={self.error!r})"
            )

    @property
    def ok(self) -> bool:
        """The judge answered (the verdict is a yes or a no)."""
        return self.error is None

    @classmethod
    def failed(cls, error: str) -> Verdict:
        return cls(flagged=None, score=None, error=error or "unknown error")

    def to_dict(self) -> dict:
        return {"flagged": self.flagged, "score": self.score, "error": self.error}


@runtime_checkable
class Judge(Protocol):
    """Anything that judges a batch of (prompt text, completion text) pairs.

    ``spec`` rebuilds the judge through :func:`make_judge`; ``fingerprint`` identifies its
    verdicts (it changes when anything that can change a verdict changes: weights, template,
    threshold) and keys them in the run store; ``description`` says in one sentence what a
    flagged verdict means. Judges are deterministic: the same input gives the same verdict.
    """

    @property
    def spec(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def description(self) -> str: ...

    def judge(self, items: Sequence[Item]) -> list[Verdict]: ...


def content_hash(prompt: str, completion: str) -> str:
    """The cache key of one judged pair (independent of the judge)."""
    body = json.dumps([prompt, completion], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def fill_template(template: str, prompt: str, completion: str) -> str:
    """Put the texts into a judge template's ``{prompt}`` and ``{completion}`` fields, in one pass
    (other braces in the template, and braces in the texts, are left alone)."""
    values = {"prompt": prompt, "completion": completion}
    return re.sub(r"\{(prompt|completion)\}", lambda m: values[m.group(1)], template)


class JudgeBase:
    """Shared machinery: a content-hash cache in memory, deduplication within a batch.

    Subclasses implement :meth:`_judge_batch` and :attr:`spec`, set :attr:`description`, and may
    extend :attr:`fingerprint` with whatever else fixes their verdicts. Failed verdicts are not
    cached, so the next call retries them. The cache grows with the distinct pairs judged.
    """

    description: str = ""

    def __init__(self) -> None:
        self._cache: dict[str, Verdict] = {}

    @property
    def spec(self) -> str:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        return self.spec

    def _judge_batch(self, items: Sequence[Item]) -> list[Verdict]:
        raise NotImplementedError

    def judge(self, items: Sequence[Item]) -> list[Verdict]:
        """Verdicts for ``items`` in order, judging each distinct uncached pair once."""
        keys = [content_hash(p, c) for p, c in items]
        todo: dict[str, Item] = {}
        for key, item in zip(keys, items):
            if key not in self._cache:
                todo.setdefault(key, (item[0], item[1]))
        fresh: dict[str, Verdict] = {}
        if todo:
            verdicts = self._judge_batch(list(todo.values()))
            if len(verdicts) != len(todo):
                raise RuntimeError(f"judge {self.spec!r} returned {len(verdicts)} verdicts for {len(todo)} items")
            for key, verdict in zip(todo, verdicts):
                fresh[key] = verdict
                if verdict.ok:
                    self._cache[key] = verdict
        return [self._cache.get(k) or fresh[k] for k in keys]

    def __call__(self, prompt: str, completion: str) -> Verdict:
        return self.judge([(prompt, completion)])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def split_options(text: str, spec: str, *, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Split ``TARGET;key=value;...`` into the target and its options, checked against ``allowed``."""
    target, *parts = text.split(";")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in parts)):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise JudgeSpecError(
                f"judge spec {spec!r}: unknown option {part!r} (options: {', '.join(allowed) or 'none'})"
            )
        options[key] = value.strip()
    return target.strip(), options
