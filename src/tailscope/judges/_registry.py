"""The registry of judge kinds: a spec's ``KIND`` names a factory ``(rest, spec) -> Judge``.

Built-in kinds are lazy ``module:object`` targets, imported the first time a spec names them, so
building a ``regex`` judge never imports transformers. Plug-ins register more kinds with
:func:`register_judge`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ._base import Judge, JudgeSpecError

__all__ = ["judge_kinds", "make_judge", "register_judge"]

JudgeFactory = Callable[[str, str], Judge]
_REGISTRY: dict[str, JudgeFactory] = {}
_BUILTIN: dict[str, str] = {
    "contains": "._text:ContainsJudge",
    "hf": "._hf:HFJudge",
    "http": "._http:HttpJudge",
    "python": "._python:PythonJudge",
    "refusal": "._text:RefusalJudge",
    "regex": "._text:RegexJudge",
}


def register_judge(kind: str) -> Callable[[JudgeFactory], JudgeFactory]:
    """Register a factory ``(rest, spec) -> Judge`` for specs ``KIND[:TARGET][;k=v...]``.

    ``rest`` is the spec after ``KIND:`` (split it with :func:`split_options`), ``spec`` the whole
    spec for error messages. Classes work as factories through a ``from_spec(rest, spec)`` classmethod.
    """

    def wrap(factory):
        if kind in _REGISTRY or kind in _BUILTIN:
            raise ValueError(f"a judge kind named {kind!r} is already registered")
        _REGISTRY[kind] = getattr(factory, "from_spec", factory)
        return factory

    return wrap


def judge_kinds() -> list[str]:
    """The known judge kinds, sorted."""
    return sorted({*_REGISTRY, *_BUILTIN})


def _factory(kind: str) -> JudgeFactory:
    if kind not in _REGISTRY:
        module, _, name = _BUILTIN[kind].partition(":")
        target = getattr(importlib.import_module(module, __package__), name)
        _REGISTRY[kind] = getattr(target, "from_spec", target)
    return _REGISTRY[kind]


def make_judge(spec: str) -> Judge:
    """Build a judge from its spec.

    Kinds: ``refusal``, ``regex:PATTERN``, ``contains:TEXT``, ``hf:PATH``, ``http:URL``,
    ``python:module:function`` (see docs/judges.md for the options of each).

    Raises:
        JudgeSpecError: the spec names no known kind or its options are wrong.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise JudgeSpecError(f"empty judge spec {spec!r}; kinds: {', '.join(judge_kinds())}")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    known = set(judge_kinds())
    if kind not in known:
        kind_opts = kind.split(";")[0]
        if kind_opts in known:
            kind, rest = kind_opts, spec.strip()[len(kind_opts):]
        else:
            raise JudgeSpecError(f"unknown judge kind {kind!r} in spec {spec!r}; kinds: {', '.join(judge_kinds())}")
    try:
        return _factory(kind)(rest, spec)
    except JudgeSpecError:
        raise
    except (ValueError, ImportError, OSError, AttributeError) as e:
        raise JudgeSpecError(f"judge spec {spec!r}: {e}") from e
