"""Judges written as Python callables: ``python:module:function`` or ``python:path/to/file.py:function``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._base import Item, JudgeBase, JudgeSpecError, Verdict, split_options

__all__ = ["PythonJudge", "load_object"]


def load_object(target: str) -> Any:
    """Import ``module:attr`` (dotted attributes allowed) or ``path/to/file.py:attr``."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected `module:function` or `file.py:function`, got {target!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise FileNotFoundError(f"no such Python file: {path}")
        spec = importlib.util.spec_from_file_location(f"_tailscope_judge_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise ImportError(f"cannot import module {module_name!r} ({e}); is it on PYTHONPATH?") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _to_verdict(value: Any, threshold: float) -> Verdict:
    """bool -> verdict; number -> score, flagged at ``threshold``; Verdict as is; None -> failed."""
    if isinstance(value, Verdict):
        return value
    if value is None:
        return Verdict.failed("the judge function returned None")
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return Verdict(flagged=bool(value))
    if isinstance(value, (int, float)) or hasattr(value, "__float__"):
        score = float(value)
        if math.isnan(score):
            return Verdict.failed("the judge function returned NaN")
        return Verdict(flagged=score >= threshold, score=score)
    raise TypeError(f"a judge function must return bool, a number or a Verdict, not {type(value).__name__}")


class PythonJudge(JudgeBase):
    """A judge from any callable.

    Per item (default) the function is called as ``fn(prompt, completion)``; with ``batched=True``
    as ``fn(list_of_(prompt, completion))`` returning one result per item. A result is a bool, a
    number (a score, flagged when ``>= threshold``) or a :class:`Verdict`. An exception on an item
    makes that item a failed verdict. The function must be deterministic.

    Args:
        fn: the callable.
        name: its ``module:function`` name, for the spec (required to rebuild the judge from a spec).
        batched: call once per batch instead of once per item.
        threshold: the score at and above which a numeric result is flagged.
    """

    def __init__(self, fn: Callable, *, name: str | None = None, batched: bool = False, threshold: float = 0.5):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self.fn, self.batched, self.threshold = fn, bool(batched), float(threshold)
        self.name = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        doc = inspect.getdoc(fn)
        self.description = doc.splitlines()[0] if doc else f"flags what {self.name} flags"

    @classmethod
    def from_spec(cls, rest: str, spec: str) -> PythonJudge:
        target, options = split_options(rest, spec, allowed=("batched", "threshold"))
        if not target:
            raise JudgeSpecError(f"judge spec {spec!r}: expected python:module:function")
        batched = options.get("batched", "0").lower() in ("1", "true", "yes")
        return cls(load_object(target), name=target, batched=batched, threshold=float(options.get("threshold", 0.5)))

    @property
    def spec(self) -> str:
        opts = ";batched=1" if self.batched else ""
        if self.threshold != 0.5:
            opts += f";threshold={self.threshold:g}"
        return f"python:{self.name}{opts}"

    @property
    def fingerprint(self) -> str:
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):
            return self.spec
        return f"{self.spec}#src={hashlib.sha256(source.encode()).hexdigest()[:12]}"

    def _judge_batch(self, items: Sequence[Item]) -> list[Verdict]:
        if self.batched:
            try:
                results = list(self.fn(list(items)))
            except Exception as e:  # the whole batch failed: every item is unknown
                return [Verdict.failed(f"{type(e).__name__}: {e}")] * len(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name} returned {len(results)} results for {len(items)} items")
            return [_to_verdict(r, self.threshold) for r in results]
        out = []
        for prompt, completion in items:
            try:
                result = self.fn(prompt, completion)
            except Exception as e:  # this item is unknown, not a "no"
                out.append(Verdict.failed(f"{type(e).__name__}: {e}"))
                continue
            out.append(_to_verdict(result, self.threshold))
        return out
