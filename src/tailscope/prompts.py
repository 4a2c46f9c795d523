"""Prompts: raw text or chat messages, loaded and validated from JSONL, CSV or plain text files."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Prompt", "PromptFileError", "PromptSet", "load_prompts"]


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``text`` (a user turn, or raw text when chat is off) or ``messages`` (chat turns)."""

    id: str
    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if (self.text is None) == (self.messages is None):
            raise ValueError(f"prompt {self.id!r} needs exactly one of `text` or `messages`")

    @classmethod
    def from_messages(cls, id: str, messages: Sequence[dict[str, str]], **meta: Any) -> Prompt:
        return cls(id=id, messages=tuple((m["role"], m["content"]) for m in messages), meta=meta)

    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat messages (a text prompt is one user turn)."""
        if self.messages is not None:
            return [{"role": r, "content": c} for r, c in self.messages]
        return [{"role": "user", "content": self.text or ""}]

    @property
    def content_hash(self) -> str:
        body = json.dumps({"text": self.text, "messages": self.messages}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def preview(self, width: int = 60) -> str:
        s = self.text if self.text is not None else self.messages[-1][1]  # type: ignore[index]
        s = " ".join(s.split())
        return s if len(s) <= width else s[: width - 1] + "…"


class PromptSet(Sequence[Prompt]):
    """An ordered set of prompts with unique ids."""

    def __init__(self, prompts: Sequence[Prompt]):
        self._prompts = list(prompts)
        seen: dict[str, int] = {}
        for i, p in enumerate(self._prompts):
            if p.id in seen:
                raise ValueError(f"duplicate prompt id {p.id!r} (prompts {seen[p.id]} and {i})")
            seen[p.id] = i
        self._index = seen

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return PromptSet(self._prompts[i])
        return self._prompts[i]

    def __len__(self) -> int:
        return len(self._prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._prompts)

    def by_id(self, prompt_id: str) -> Prompt:
        return self._prompts[self._index[prompt_id]]

    @classmethod
    def from_texts(cls, texts: Sequence[str], prefix: str = "p") -> PromptSet:
        return cls([Prompt(id=f"{prefix}{i}", text=t) for i, t in enumerate(texts)])


def _prompt_from_record(rec: Any, where: str, default_id: str) -> Prompt:
    if not isinstance(rec, dict):
        raise PromptFileError(f"{where}: expected a JSON object with `prompt` or `messages`, got {type(rec).__name__}")
    pid = str(rec.get("id", default_id))
    meta = {k: v for k, v in rec.items() if k not in {"id", "prompt", "messages"}}
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs
        ):
            raise PromptFileError(f"{where}: `messages` must be a non-empty list of {{role, content}} strings")
        return Prompt.from_messages(pid, msgs, **meta)
    if "prompt" in rec:
        if not isinstance(rec["prompt"], str) or not rec["prompt"].strip():
            raise PromptFileError(f"{where}: `prompt` must be a non-empty string")
        return Prompt(id=pid, text=rec["prompt"], meta=meta)
    raise PromptFileError(f"{where}: the object has neither `prompt` nor `messages` (keys: {sorted(rec)})")


def load_prompts(path: str | Path) -> PromptSet:
    """Load prompts from ``.jsonl`` (``prompt`` or ``messages`` per line, optional ``id``), ``.json``
    (a list of such objects), ``.csv`` (a ``prompt`` column) or any other text file (one prompt a line).

    Errors name the file and the line. Column and dataset specs (``file.csv:COLUMN``, ``.parquet``,
    ``hf:NAME[:SPLIT][:COLUMN]``, ``harmbench``) are read by :mod:`tailscope.prompt_sources`.
    """
    from .prompt_sources import PromptSourceError, is_source_spec, read_source

    if is_source_spec(path):
        try:
            records = read_source(path)
        except PromptSourceError as e:
            raise PromptFileError(str(e)) from None
        try:
            return PromptSet([_prompt_from_record(r, f"{path} row {i}", f"p{i}") for i, r in enumerate(records)])
        except ValueError as e:
            raise PromptFileError(f"{path}: {e}") from None
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"prompt file not found: {path}")
    suffix = path.suffix.lower()
    prompts: list[Prompt] = []
    if suffix == ".jsonl":
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            prompts.append(_prompt_from_record(rec, f"{path}:{lineno}", f"p{len(prompts)}"))
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, list):
            raise PromptFileError(f"{path}: expected a JSON list of prompt objects")
        for i, rec in enumerate(data):
            prompts.append(_prompt_from_record(rec, f"{path}[{i}]", f"p{i}"))
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "prompt" not in reader.fieldnames:
                raise PromptFileError(f"{path}:1: the CSV header needs a `prompt` column (found {reader.fieldnames})")
            for lineno, row in enumerate(reader, 2):
                prompts.append(_prompt_from_record(dict(row), f"{path}:{lineno}", f"p{len(prompts)}"))
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                prompts.append(Prompt(id=f"p{len(prompts)}", text=line.strip()))
    if not prompts:
        raise PromptFileError(f"{path}: no prompts found")
    try:
        return PromptSet(prompts)
    except ValueError as e:
        raise PromptFileError(f"{path}: {e}") from None
