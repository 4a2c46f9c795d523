"""Every command's --help, and the shared flags: one name, one meaning, everywhere."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tailscope.cli import app
from tailscope.cli._options import HELP

# canonical names of each shared option, the aliases a command may add, the help key and env var
SHARED = {
    "reference": ({"--reference", "-A"}, {"--before"}, None),
    "target": ({"--target", "-B"}, {"--after", "--model"}, None),
    "organism": ({"--organism"}, set(), None),
    "prompts": ({"--prompts", "-p"}, set(), None),
    "judge": ({"--judge", "-j"}, set(), None),
    "run": ({"--run"}, set(), None),
    "runs_dir": ({"--runs-dir"}, set(), "TAILSCOPE_RUNS"),
    "json": ({"--json"}, set(), None),
    "trust_remote_code": ({"--trust-remote-code"}, set(), None),
    "revision": ({"--revision"}, set(), None),
    "device": ({"--device"}, set(), None),
    "dtype": ({"--dtype"}, set(), None),
    "seed": ({"--seed"}, set(), None),
    "batch_size": ({"--batch-size"}, set(), None),
    "max_new_tokens": ({"--max-new-tokens"}, set(), None),
    "temperature": ({"--temperature"}, set(), None),
    "n": ({"-n"}, set(), None),
    "budget": ({"--budget"}, set(), None),
    "threads": ({"--threads"}, set(), "TAILSCOPE_THREADS"),
    "chat": ({"--chat"}, set(), None),
}
# `lowprob` estimates over input distributions, where the units are inputs and model calls, not
# rollouts: its budget counts model calls and its batches hold inputs; its evaluate writes its JSON
# file by default (not "also")
OWN_MEANING = {("lowprob", "budget"), ("lowprob", "batch_size"), ("lowprob evaluate", "json")}
PAIR_COMMANDS = ["sample", "sweep", "estimate"]
PAIR_FLAGS = ["reference", "target", "organism", "prompts", "judge", "run", "runs_dir", "json", "trust_remote_code",
              "revision", "device", "dtype", "seed", "threads"]
NO_RESULTS = {"organisms build", "lowprob build-models", "lowprob ground-truth", "runs export", "serve"}


def _commands(cmd, path=()):
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield " ".join(path), cmd
        return
    for name, sub in sorted(subs.items()):
        yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(get_command(app)))


def _shared_key(param) -> str | None:
    names = set(param.opts) | set(param.secondary_opts)
    for key, (canonical, aliases, _) in SHARED.items():
        if names & canonical:
            return key
    return None


def test_the_walk_finds_every_command():
    assert {"sample", "sweep", "estimate", "report", "demo", "evaluate", "abliterate", "runs list", "runs show",
            "organisms verify", "lowprob estimate"} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_works_and_shared_flags_agree(path):
    result = CliRunner().invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    seen = {}
    for param in COMMANDS[path].params:
        key = _shared_key(param)
        if key is None:
            continue
        canonical, aliases, envvar = SHARED[key]
        names = set(param.opts) | set(param.secondary_opts)
        positive = {n for n in names if not n.startswith("--raw")}
        assert canonical <= positive <= canonical | aliases, f"{path}: {key} is declared as {sorted(names)}"
        group = path.split()[0]
        if (group, key) in OWN_MEANING or (path, key) in OWN_MEANING:
            continue
        assert (param.help or "").startswith(HELP[key]), f"{path}: {key} has its own help {param.help!r}"
        if envvar is not None:
            assert param.envvar == envvar, f"{path}: {key} reads {param.envvar!r}"
        seen[key] = param
    if path in PAIR_COMMANDS:
        assert set(PAIR_FLAGS) <= set(seen), f"{path} lacks {sorted(set(PAIR_FLAGS) - set(seen))}"
    if path not in NO_RESULTS:
        assert any("--json" in p.opts for p in COMMANDS[path].params), f"{path} has no --json PATH"


def test_before_and_after_name_the_same_models_in_the_lda_commands():
    for path in ("sample", "sweep"):
        opts = {o for p in COMMANDS[path].params for o in p.opts}
        assert {"--before", "--after", "--reference", "--target"} <= opts


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    from tailscope import __version__

    assert result.exit_code == 0 and result.output.strip() == f"tailscope {__version__}"


def test_counts_accept_scientific_notation():
    from tailscope.cli._options import count

    assert count("1e8") == 100_000_000 and count("100_000") == 100_000 and count(7) == 7
    for bad in ("0", "1.5", "abc", "-3"):
        with pytest.raises(Exception, match="number"):
            count(bad)
