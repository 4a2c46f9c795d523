"""Sampling on workers without a cluster: the flags, the specs, and the message when Ray is missing."""

from __future__ import annotations

import inspect
import sys

import pytest
from typer.testing import CliRunner

from tailscope.scale import PairSpec, SamplerSettings, require_ray
from tailscope.scale._cli import scale_options, with_workers


def test_no_flags_keep_sampling_in_process():
    assert scale_options(None, None) is None


def test_worker_settings_without_workers_are_refused():
    with pytest.raises(ValueError, match="need --workers N or --ray"):
        scale_options(None, None, gpus_per_worker=1)
    with pytest.raises(ValueError, match="--workers"):
        scale_options(0, None)
    with pytest.raises(ValueError, match="--threads-per-worker"):
        scale_options(2, None, threads_per_worker=0)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pip install 'tailscope\[ray\]'"):
        require_ray()
    with pytest.raises(ImportError, match=r"tailscope\[ray\]"):
        scale_options(2, None)


def test_cli_without_ray_says_how_to_get_it(monkeypatch):
    from tailscope.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    for command in (["estimate", "--organism", "refusal"], ["sweep", "--organism", "refusal"]):
        result = CliRunner().invoke(app, [*command, "--workers", "2"])
        assert result.exit_code == 2, result.output
        assert "pip install 'tailscope[ray]'" in result.output


def test_with_workers_adds_the_flags_and_hides_pool():
    def command(x: int = 1, pool: object = None) -> tuple:
        return x, pool

    wrapped = with_workers(command)
    names = list(inspect.signature(wrapped).parameters)
    assert names == ["x", "workers", "ray", "gpus_per_worker", "threads_per_worker"]
    assert wrapped(x=3, workers=None, ray=None, gpus_per_worker=0.0, threads_per_worker=None) == (3, None)


def test_pair_spec_of_a_loaded_pair(tiny_dirs, tiny_pair):
    spec = PairSpec.of(tiny_pair)
    assert spec == PairSpec(str(tiny_dirs["ref"]), str(tiny_dirs["tgt"]), "float32", False)


def test_sampler_settings_round_trip(tiny_pair):
    from tailscope.sampling import PathSampler

    sampler = PathSampler(tiny_pair, temperature=0.7, max_new_tokens=5, stop=("\n",), batch_size=3, seed=9)
    settings = SamplerSettings.of(sampler)
    again = PathSampler(tiny_pair, **settings.kwargs())
    assert SamplerSettings.of(again) == settings
    assert settings.batch_size == 3 and settings.stop == ("\n",)
