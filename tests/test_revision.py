"""--revision: hub models, tokenizers and adapters load at the revision asked for, and a run records it.

The hub is out of reach here, so the models are put where transformers looks for hub downloads: a
Hugging Face cache (``models--ORG--NAME/refs/REV`` -> a commit, ``snapshots/COMMIT/``) in a temp
directory, read offline. The loading code is the real one; only the download is skipped.
"""

from __future__ import annotations

import shutil

import pytest

from tailscope.models import ModelPair, load_model
from tailscope.sampling import PathSampler, model_fingerprint
from tailscope.store import ConfigMismatchError, RunStore, run_config

peft = pytest.importorskip("peft")


def _commit(i: int) -> str:
    return f"{i:040x}"


def _publish(cache, repo: str, refs: dict[str, tuple[int, object]]) -> None:
    """Put checkpoint directories in the cache as ``repo`` at the given refs (ref -> (commit number, dir))."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    for ref, (number, folder) in refs.items():
        snapshot = root / "snapshots" / _commit(number)
        if not snapshot.exists():
            shutil.copytree(folder, snapshot)
        (root / "refs" / ref).write_text(_commit(number))


@pytest.fixture
def hub(tiny_dirs, tmp_path, monkeypatch):
    """A hub cache: ``org/tiny`` at main (the ref checkpoint) and v1 = tag release (the third one);
    ``org/tiny-lora`` at main and v1, two LoRA adapters of the ref checkpoint."""
    import huggingface_hub.constants
    import torch
    from peft import LoraConfig, get_peft_model

    from tailscope.adapters import quiet_peft

    cache = tmp_path / "hub"
    _publish(cache, "org/tiny", {"main": (1, tiny_dirs["ref"]), "v1": (2, tiny_dirs["third"]),
                                 "release": (2, tiny_dirs["third"])})
    adapters = {}
    for i, ref in enumerate(("main", "v1")):
        torch.manual_seed(10 + i)
        with quiet_peft():
            lora = get_peft_model(load_model(str(tiny_dirs["ref"])).model,
                                  LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        lora.save_pretrained(tmp_path / f"lora-{ref}")
        adapters[ref] = (3 + i, tmp_path / f"lora-{ref}")
    _publish(cache, "org/tiny-lora", adapters)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_a_hub_model_and_its_tokenizer_load_at_the_revision(hub, tiny_dirs):
    default, v1 = load_model("org/tiny"), load_model("org/tiny", revision="v1")
    assert default.revision is None and v1.revision == "v1"
    assert model_fingerprint(default.model) == model_fingerprint(load_model(str(tiny_dirs["ref"])).model)
    assert model_fingerprint(v1.model) == model_fingerprint(load_model(str(tiny_dirs["third"])).model)
    assert model_fingerprint(load_model("org/tiny", revision=_commit(2)).model) == model_fingerprint(v1.model)
    assert v1.tokenizer.get_vocab() == default.tokenizer.get_vocab()
    with pytest.raises(OSError):
        load_model("org/tiny", revision="no-such-branch")


def test_a_local_checkpoint_has_no_revision(tiny_dirs):
    lm = load_model(str(tiny_dirs["ref"]), revision="v1")  # transformers reads a local folder as it is
    assert lm.revision is None
    assert model_fingerprint(lm.model) == model_fingerprint(load_model(str(tiny_dirs["ref"])).model)


@pytest.mark.parametrize("share", [True, False])
def test_a_hub_adapter_loads_at_the_revision(hub, tiny_dirs, share):
    base = str(tiny_dirs["ref"])
    merged = {ref: load_model(f"{base}+{hub}/lora-{ref}") for ref in ("main", "v1")}  # the local copies
    pair = ModelPair.load(base, f"{base}+org/tiny-lora", revision="v1", share=share)
    assert pair.target.revision == "v1" and pair.reference.revision is None
    sampler = PathSampler(pair, max_new_tokens=6)
    want = PathSampler(ModelPair(pair.reference, merged["v1"]), max_new_tokens=6)
    other = PathSampler(ModelPair(pair.reference, merged["main"]), max_new_tokens=6)
    from tailscope.prompts import Prompt

    prompts = [Prompt("p", text="hello there")]
    got = sampler.sample(prompts, 4, 1.0)
    assert [r.token_ids for r in got] == [r.token_ids for r in want.sample(prompts, 4, 1.0)]
    assert [r.logprob for r in got] == pytest.approx([r.logprob for r in want.sample(prompts, 4, 1.0)], abs=1e-5)
    assert [r.logprob for r in got] != pytest.approx([r.logprob for r in other.sample(prompts, 4, 1.0)], abs=1e-5)


def test_the_run_records_the_revision_and_checks_it_on_resume(hub, tmp_path):
    def sampler(revision):
        lm = load_model("org/tiny", revision=revision)
        return PathSampler(ModelPair(lm, lm), max_new_tokens=4)

    at_v1 = sampler("v1")
    assert at_v1.settings()["models"]["target"]["revision"] == "v1"
    assert "revision" not in sampler(None).settings()["models"]["target"]  # runs made before stay as they were
    path = tmp_path / "run.sqlite"
    RunStore.open(path, run_config(at_v1)).close()
    # another revision with other weights: refused, naming the weights
    with pytest.raises(ConfigMismatchError, match="models.target.weights"):
        RunStore.open(path, run_config(sampler("main")))
    # another name for the same commit: the same weights and rollouts, so a warning, not a refusal
    with pytest.warns(UserWarning, match="models.target.revision"):
        RunStore.open(path, run_config(sampler("release"))).close()


def test_workers_load_at_the_revision(hub):
    from tailscope.scale import PairSpec

    lm = load_model("org/tiny", revision="v1")
    spec = PairSpec.of(ModelPair(lm, lm))
    assert spec.revision == "v1"
    loaded = spec.load_reference("cpu")
    assert loaded.revision == "v1" and model_fingerprint(loaded.model) == model_fingerprint(lm.model)


def test_cli_revision_reaches_the_run_store(hub, tmp_path):
    from typer.testing import CliRunner

    from tailscope.cli import app

    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\n")
    args = ["sample", "-A", "org/tiny", "-B", "org/tiny", "--prompts", str(prompts), "-n", "2",
            "--max-new-tokens", "3", "--run", "r", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, [*args, "--revision", "v1"])
    assert result.exit_code == 0, result.output
    with RunStore.open(tmp_path / "runs" / "r.sqlite", readonly=True) as store:
        assert store.config["models"]["reference"]["revision"] == "v1"
    result = CliRunner().invoke(app, [*args, "--revision", "main"])
    assert result.exit_code == 2 and "models.target.weights" in result.output
    result = CliRunner().invoke(app, [*args, "--revision", "no-such-branch"])
    assert result.exit_code == 2 and "at revision 'no-such-branch'" in result.output
