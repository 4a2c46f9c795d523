"""The options every command shares: one name, one meaning, one help text.

A command that loads a model pair takes ``--reference/-A`` and ``--target/-B`` (with ``--before`` /
``--after`` where logit diff amplification's wording helps), ``--organism``, ``--prompts``,
``--judge``, ``--run``, ``--runs-dir`` and ``--trust-remote-code``; every command that produces
results takes ``--json PATH``. ``tests/test_cli_flags.py`` walks every command and checks that each
of these names is declared here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def count(value: Any) -> int:
    """A whole number >= 1 that may be written 1e8, 100000 or 100_000."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = float(value)
    else:
        try:
            number = float(str(value).replace("_", ""))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a number") from None
    if not number.is_integer() or number < 1:
        raise typer.BadParameter(f"{value!r} must be a whole number >= 1")
    return int(number)


def count_or_auto(value: Any) -> int | str:
    """A :func:`count`, or ``auto``."""
    return "auto" if str(value).strip().lower() == "auto" else count(value)


HELP = {
    "reference": "Model A (α = 0): a checkpoint dir, hub id, .gguf file, BASE+ADAPTER or 'smollm2'.",
    "target": "Model B (α = 1), whose behaviour is measured: same forms as --reference.",
    "organism": "A bundled model organism (see `tailscope organisms list`): fills the models, prompts and judge.",
    "prompts": "Prompt file: JSONL or JSON (prompt or messages per record), CSV (a prompt column) or text (one a line).",
    "judge": "Judge spec: refusal | regex:PATTERN | contains:TEXT | hf:PATH | http:URL | python:module:function.",
    "run": "Run name (in --runs-dir) or path to a run file; an existing run resumes (default: named by the config).",
    "runs_dir": "Directory of named runs.",
    "json": "Also write the results as JSON to PATH ('-' prints them on standard output).",
    "trust_remote_code": "Run model code shipped with a checkpoint (off unless asked).",
    "revision": "Hub revision (branch, tag or commit) of every hub model, tokenizer and adapter named "
                "(local paths have none).",
    "device": "Where the models run: cpu, cuda, cuda:N or mps.",
    "dtype": "Weight precision: float32, float16 or bfloat16.",
    "seed": "Seed: with the proposal, prompt and seed index it fixes every rollout (and any split).",
    "batch_size": "Rows decoded together (memory grows with it).",
    "max_new_tokens": "Reply length limit in tokens (default: the organism's, else 64).",
    "temperature": "Sampling temperature (applied after combining the two models' logits).",
    "limit": "Use only the first N prompts.",
    "n": "Rollouts per prompt (at each amplification or path point sampled).",
    "budget": "Rollouts per prompt for each estimate (never exceeded).",
    "threads": "torch CPU threads (default: the cores not busy with other work).",
    "chat": "Apply the chat template to text prompts (default: when the tokenizer has one).",
    "compile": "torch.compile both models' decode steps: the first batch compiles (minutes on a CPU), "
               "later ones run faster (docs/benchmarks.md).",
}


def reference(*, lda: bool = False, required: bool = False) -> Any:
    names = ("--reference", "--before", "-A") if lda else ("--reference", "-A")
    return typer.Option(... if required else None, *names, help=HELP["reference"])


def target(*, lda: bool = False, required: bool = False, alias: str | None = None) -> Any:
    names = ("--target", "--after", "-B") if lda else ("--target", "-B")
    if alias:
        names = (*names[:-1], alias, names[-1])
    return typer.Option(... if required else None, *names, help=HELP["target"])


def organism() -> Any:
    return typer.Option(None, "--organism", help=HELP["organism"])


def prompts(*, required: bool = False) -> Any:
    return typer.Option(... if required else None, "--prompts", "-p", help=HELP["prompts"])


def judge(default: str | None = None) -> Any:
    return typer.Option(default, "--judge", "-j", help=HELP["judge"])


def run() -> Any:
    return typer.Option(None, "--run", help=HELP["run"])


def runs_dir() -> Any:
    return typer.Option(Path("runs"), "--runs-dir", envvar="TAILSCOPE_RUNS", help=HELP["runs_dir"])


def json_out() -> Any:
    return typer.Option(None, "--json", metavar="PATH", help=HELP["json"])


def trust_remote_code() -> Any:
    return typer.Option(False, "--trust-remote-code", help=HELP["trust_remote_code"])


def revision() -> Any:
    return typer.Option(None, "--revision", metavar="REV", help=HELP["revision"])


def device() -> Any:
    return typer.Option("cpu", "--device", help=HELP["device"])


def dtype() -> Any:
    return typer.Option("float32", "--dtype", help=HELP["dtype"])


def seed() -> Any:
    return typer.Option(0, "--seed", help=HELP["seed"])


def batch_size(default: int = 128, *, auto: bool = False) -> Any:
    """``--batch-size N``; with ``auto``, also ``--batch-size auto`` (the sampler's memory-aware batching)."""
    if not auto:
        return typer.Option(default, "--batch-size", parser=count, metavar="N", help=HELP["batch_size"])
    return typer.Option(str(default), "--batch-size", parser=count_or_auto, metavar="N|auto",
                        help=HELP["batch_size"] + " 'auto': as many as fit in free GPU memory (64 on a CPU), "
                        "halved and drawn again on running out of memory.")


def max_new_tokens(default: int | None = None) -> Any:
    return typer.Option(default, "--max-new-tokens", help=HELP["max_new_tokens"])


def temperature() -> Any:
    return typer.Option(1.0, "--temperature", help=HELP["temperature"])


def limit() -> Any:
    return typer.Option(None, "--limit", parser=count, metavar="N", help=HELP["limit"])


def n(default: int) -> Any:
    return typer.Option(default, "-n", parser=count, metavar="N", help=HELP["n"])


def budget(default: int) -> Any:
    return typer.Option(default, "--budget", parser=count, metavar="N", help=HELP["budget"])


def threads() -> Any:
    return typer.Option(None, "--threads", envvar="TAILSCOPE_THREADS", parser=count, metavar="N", help=HELP["threads"])


def compile_decode() -> Any:
    return typer.Option(False, "--compile", help=HELP["compile"])


def chat() -> Any:
    return typer.Option(None, "--chat/--raw", help=HELP["chat"])
