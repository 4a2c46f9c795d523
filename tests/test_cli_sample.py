"""`tailscope sample` end to end on two local checkpoints."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tailscope.cli import app


def test_sample_writes_jsonl(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\ntell me a story\n")
    out = tmp_path / "s.jsonl"
    result = CliRunner().invoke(app, [
        "sample", "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]), "--prompts", str(prompts),
        "--amplify", "1.5", "-n", "3", "--max-new-tokens", "5", "--grid", "0,1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["proposal"] for r in rows} == {"a=2.5"}
    assert set(rows[0]["logprob_grid"]) == {"0", "1"}


def test_sample_reports_bad_prompt_file_line(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\nnot json\n')
    result = CliRunner().invoke(app, [
        "sample", "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]), "--prompts", str(prompts),
    ])
    assert result.exit_code == 2
    assert "p.jsonl:2" in result.output


def test_sample_reports_tokenizer_mismatch(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    result = CliRunner().invoke(app, [
        "sample", "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["other_tok"]), "--prompts", str(prompts),
    ])
    assert result.exit_code == 2 and "tokenizers differ" in result.output
