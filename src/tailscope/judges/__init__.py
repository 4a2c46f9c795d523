"""Judges: turn (prompt, completion) texts into verdicts ("did the behaviour happen?").

Build one from a spec with :func:`make_judge` (``refusal``, ``regex:PATTERN``, ``contains:TEXT``,
``hf:PATH``, ``http:URL``, ``python:module:function``) or construct the classes directly.
"""

from ._base import (
    Judge,
    JudgeBase,
    JudgeSpecError,
    Verdict,
    content_hash,
    fill_template,
    split_options,
)
from ._hf import HFJudge
from ._http import HttpJudge
from ._python import PythonJudge
from ._registry import judge_kinds, make_judge, register_judge
from ._text import ContainsJudge, RefusalJudge, RegexJudge, normalize_reply, strip_reasoning

__all__ = [
    "ContainsJudge",
    "HFJudge",
    "HttpJudge",
    "Judge",
    "JudgeBase",
    "JudgeSpecError",
    "PythonJudge",
    "RefusalJudge",
    "RegexJudge",
    "Verdict",
    "content_hash",
    "fill_template",
    "judge_kinds",
    "make_judge",
    "normalize_reply",
    "register_judge",
    "split_options",
    "strip_reasoning",
]
