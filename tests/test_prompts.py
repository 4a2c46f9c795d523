"""Prompt files: formats, ids, and errors that name the line."""

from __future__ import annotations

import json

import pytest

from tailscope.prompts import Prompt, PromptFileError, PromptSet, load_prompts


def test_jsonl_with_prompts_and_messages(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"id": "a", "prompt": "hi", "category": "x"}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "yo"}]}) + "\n"
    )
    ps = load_prompts(f)
    assert [p.id for p in ps] == ["a", "p1"]
    assert ps[0].meta == {"category": "x"} and ps[1].chat() == [{"role": "user", "content": "yo"}]


def test_plain_text_csv_and_json(tmp_path):
    (tmp_path / "p.txt").write_text("first\n\n second \n")
    assert [p.text for p in load_prompts(tmp_path / "p.txt")] == ["first", "second"]
    (tmp_path / "p.csv").write_text("id,prompt\nq1,hello\nq2,bye\n")
    assert [p.id for p in load_prompts(tmp_path / "p.csv")] == ["q1", "q2"]
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "x"}]))
    assert load_prompts(tmp_path / "p.json")[0].text == "x"


@pytest.mark.parametrize(
    "body,message",
    [
        ('{"prompt": "ok"}\n{"prompt": "ok2"\n', r"p.jsonl:2: not valid JSON"),
        ('{"prompt": "ok"}\n{"text": "no"}\n', r"p.jsonl:2: the object has neither"),
        ('{"prompt": ""}\n', r"p.jsonl:1: `prompt` must be a non-empty string"),
        ('{"messages": [{"role": "user"}]}\n', r"p.jsonl:1: `messages` must be"),
        ('[1, 2]\n', r"p.jsonl:1: expected a JSON object"),
        ('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n', r"duplicate prompt id 'x'"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path, body, message):
    f = tmp_path / "p.jsonl"
    f.write_text(body)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(f)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PromptFileError, match="not found"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(tmp_path / "e.txt")
    (tmp_path / "bad.csv").write_text("question\nhi\n")
    with pytest.raises(PromptFileError, match="bad.csv:1: the CSV header needs a `prompt` column"):
        load_prompts(tmp_path / "bad.csv")


def test_prompt_needs_exactly_one_body():
    with pytest.raises(ValueError, match="exactly one"):
        Prompt("x")
    assert PromptSet.from_texts(["a", "b"]).by_id("p1").text == "b"
