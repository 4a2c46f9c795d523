"""Bad input gives one line that says what to do, no traceback, and loads nothing it need not."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from tailscope.cli import app


@pytest.fixture(scope="module")
def bad_dirs(tiny_dirs, tmp_path_factory):
    """Checkpoint directories that cannot load: an unknown architecture, no weights, no config."""
    root = tmp_path_factory.mktemp("bad")
    unknown = root / "unknown"
    shutil.copytree(tiny_dirs["tgt"], unknown)
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "nosuchmodel"}))
    noweights = root / "noweights"
    shutil.copytree(tiny_dirs["tgt"], noweights)
    for f in noweights.glob("*.safetensors"):
        f.unlink()
    (root / "empty").mkdir()
    return {"unknown": unknown, "noweights": noweights, "empty": root / "empty", "missing": root / "missing"}


@pytest.fixture()
def prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("hello there\ntell me a story\n")
    return f


def _error_line(result) -> str:
    """The run's one error line; fails unless the output is exactly one line with no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("[")]
    lines = [line for line in lines if "torch thread" not in line and "TAILSCOPE_THREADS" not in line]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, AttributeError))
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _estimate(tiny_dirs, prompt_file, tmp_path, *extra, target=None):
    return CliRunner().invoke(app, [
        "estimate", "--reference", str(tiny_dirs["ref"]), "--target", str(target or tiny_dirs["tgt"]),
        "--prompts", str(prompt_file), "--judge", "regex:[aeiou]{2}", "--max-new-tokens", "4", "--budget", "10",
        "--runs-dir", str(tmp_path / "runs"), "--threads", "1", *extra])


CHECKED_BEFORE_LOADING = [
    (["--judge", "nosuchkind:x"], "unknown judge kind"),
    (["--judge", "regex:("], "invalid regular expression"),
    (["--prompts", "/no/such/prompts.jsonl"], "prompt file not found"),
    (["--budget", "0"], "whole number >= 1"),
    (["--budget", "lots"], "not a number"),
    (["--limit", "-1"], "whole number >= 1"),
    (["--dtype", "float8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--temperature", "0"], "--temperature"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--organism", "no-such-organism"], "no organism"),
    (["--method", "magic"], "--method"),
]


@pytest.mark.parametrize("extra,expected", CHECKED_BEFORE_LOADING)
def test_bad_input_is_one_line_before_any_model_loads(tiny_dirs, bad_dirs, prompt_file, tmp_path, extra, expected):
    # the target cannot load: an error about the input itself shows it was checked first
    result = _estimate(tiny_dirs, prompt_file, tmp_path, *extra, target=bad_dirs["unknown"])
    assert expected in _error_line(result)


def test_bad_prompt_file_names_the_line(tiny_dirs, bad_dirs, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\nnot json\n')
    line = _error_line(_estimate(tiny_dirs, f, tmp_path, target=bad_dirs["unknown"]))
    assert "p.jsonl:2" in line


def test_sample_n_is_checked(tiny_dirs, prompt_file):
    result = CliRunner().invoke(app, ["sample", "-A", str(tiny_dirs["ref"]), "-B", str(tiny_dirs["tgt"]),
                                      "--prompts", str(prompt_file), "-n", "0"])
    assert "-n" in _error_line(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_no_cuda(tiny_dirs, prompt_file, tmp_path):
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, "--device", "cuda"))
    assert "no CUDA GPU" in line and "--device cpu" in line


@pytest.mark.parametrize("which,expected", [
    ("missing", "no such file or directory"),
    ("empty", "no config.json"),
    ("unknown", "does not know this architecture"),
    ("noweights", "holds no weights"),
])
def test_checkpoints_that_cannot_load(tiny_dirs, bad_dirs, prompt_file, tmp_path, which, expected):
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, target=bad_dirs[which]))
    assert line.startswith("error: --target ") and expected in line


def test_hub_id_offline(tiny_dirs, prompt_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, target="my/safe-model"))
    assert "my/safe-model" in line and "HF_HUB_OFFLINE" in line


def test_hub_id_unreachable(tiny_dirs, prompt_file, tmp_path, monkeypatch):
    from tailscope.cli._errors import _hub_reachable

    if _hub_reachable():
        pytest.skip("the hub is reachable from here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, target="my/safe-model"))
    assert "unreachable" in line


def test_tokenizer_mismatch(tiny_dirs, prompt_file, tmp_path):
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, target=tiny_dirs["other_tok"]))
    assert "tokenizers differ" in line


def test_a_foreign_sqlite_file_is_refused_untouched(tiny_dirs, prompt_file, tmp_path):
    foreign = tmp_path / "mine.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.close()
    before = foreign.read_bytes()
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, "--run", str(foreign)))
    assert "not a tailscope run store" in line
    assert foreign.read_bytes() == before
    assert not (tmp_path / "mine.sqlite-wal").exists() and not (tmp_path / "mine.sqlite-shm").exists()


def test_a_changed_config_names_the_field_in_one_line(tiny_dirs, prompt_file, tmp_path):
    first = _estimate(tiny_dirs, prompt_file, tmp_path, "--method", "naive", "--run", "r")
    assert first.exit_code == 0, first.output
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, "--method", "naive", "--run", "r", "--seed", "3"))
    assert "sampling.seed" in line and "another --run" in line


def test_a_method_that_cannot_work_says_so_and_names_the_command_that_fits(tmp_path):
    result = CliRunner().invoke(app, ["estimate", "--organism", "backdoor", "-m", "mis", "--budget", "4", "--limit", "1",
                                      "--runs-dir", str(tmp_path / "runs"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "model before training" in text and "tailscope sweep --organism backdoor" in text


def test_a_config_that_does_not_fit_its_weights(tiny_dirs, prompt_file, tmp_path):
    # a BERT config beside llama weights: transformers would build a BERT with random weights
    from transformers import BertConfig

    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_dirs["tgt"], mixed)
    BertConfig(vocab_size=352, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(mixed)
    line = _error_line(_estimate(tiny_dirs, prompt_file, tmp_path, target=mixed))
    assert "would be random" in line and "config.json" in line


def test_an_unexpected_error_surfaces_as_itself():
    """A bug inside a command reaches the user as that exception, not as an error of the CLI's own handler."""
    import typer

    from tailscope.cli import _Root

    probe = typer.Typer(cls=_Root)

    @probe.command()
    def boom() -> None:
        raise RuntimeError("the real cause")

    @probe.command()
    def other() -> None:
        pass

    with pytest.raises(RuntimeError, match="the real cause"):
        typer.main.get_command(probe).main(["boom"], standalone_mode=False)
