"""`tailscope estimate` (rare-rate estimates per prompt) and `tailscope report RUN` (HTML report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scale._cli import with_workers
from . import _options as opt
from ._common import console, fail, out, progress_bar, use_threads, write_json
from ._display import proposal_label
from ._setup import open_store, resolve


@with_workers
def estimate(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="naive | is | mis | lpe (default: switching path MIS, the best measured; see docs/estimators.md)"),
    budget: int = opt.budget(1000),
    organism: Optional[str] = opt.organism(),
    target: Optional[str] = opt.target(),
    reference: Optional[str] = opt.reference(),
    prompts: Optional[Path] = opt.prompts(),
    judge: Optional[str] = opt.judge(),
    proposal: str = typer.Option("alpha=0", "--proposal", help="IS proposal, e.g. 'alpha=0', 'alpha=0;mix=0.5', 'alpha=0;switch=8', or 'tune' (cross-entropy search on a calibration split)."),
    switch: Optional[str] = typer.Option(None, "--switch", help="MIS/LPE: draw only the first N reply tokens at each path point, the rest from the target; 'tune' picks N by the cross-entropy search on a calibration split."),
    calibration: int = typer.Option(4, "--calibration", help="With the default method, --proposal tune or --switch tune: prompts set aside (never scored) for the search."),
    family: Optional[str] = typer.Option(None, "--family", help="LPE fit: log-quadratic (default, on the last 5 points with hits) | log-linear | logit-linear | logit-quadratic"),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="LPE/MIS walk: adaptive (MIS default) | frontier (LPE default) | fixed"),
    limit: Optional[int] = opt.limit(),
    max_new_tokens: Optional[int] = opt.max_new_tokens(),
    temperature: float = opt.temperature(),
    seed: int = opt.seed(),
    batch_size: str = opt.batch_size(auto=True),
    device: str = opt.device(),
    dtype: str = opt.dtype(),
    trust_remote_code: bool = opt.trust_remote_code(),
    revision: Optional[str] = opt.revision(),
    compile_: bool = opt.compile_decode(),
    run: Optional[str] = opt.run(),
    runs_dir: Path = opt.runs_dir(),
    json_out: Optional[Path] = opt.json_out(),
    engine: Optional[str] = typer.Option(None, "--engine", help="Decode target-only tokens on an engine: 'vllm' (in-process) or OpenAI-compatible base URLs, comma-separated (http://127.0.0.1:8000/v1). Used by naive and switching proposals; see docs/engines.md."),
    reference_engine: Optional[str] = typer.Option(None, "--reference-engine", help="With --engine: an engine serving the reference (same forms as --engine), so IS from the reference endpoint (--method is --proposal alpha=0) samples whole replies there; weights come from our own teacher-forced scoring of both models."),
    examples: int = typer.Option(1, "--examples", help="Completions shown per prompt beside its estimate (hits first)."),
    threads: Optional[int] = opt.threads(),
    pool: object = None,
) -> None:
    """Estimate how often the target does the rare thing, per prompt, with intervals and rollout counts."""
    from ..batching import OutOfMemoryAtOneRowError
    from ..engines._base import EngineError
    from ..estimators import FAMILIES, StoreSource, estimator_names, get_estimator
    from ..estimators import estimate_many
    from ..estimators.defaults import DEFAULT_METHOD
    from ..path import NonFiniteLogitsError, Proposal

    default = method is None
    method = method or DEFAULT_METHOD

    try:
        get_estimator(method)
    except ValueError:
        raise fail(f"--method (={method!r}) must be one of {estimator_names()} or a plug-in 'module:function'") from None
    if family is not None and family not in FAMILIES:
        raise fail(f"--family (={family!r}) must be one of {list(FAMILIES)}")
    if schedule is not None and schedule not in {"adaptive", "frontier", "fixed"}:
        raise fail(f"--schedule (={schedule!r}) must be one of ['adaptive', 'frontier', 'fixed']")
    if switch is not None and (method not in {"mis", "lpe"} or not (switch == "tune" or switch.isdigit())):
        raise fail(f"--switch (={switch!r}) takes a number of tokens or 'tune', with --method mis or lpe")
    if method == "is" and proposal != "tune":
        try:
            proposal = Proposal.parse(proposal).key  # stored in its canonical form
        except ValueError as e:
            raise fail(f"--proposal: {e}") from None
    tuning = (method == "is" and proposal == "tune") or switch == "tune"
    if reference_engine is not None and engine is None:
        raise fail("--reference-engine needs --engine too (the engine serving the target)")
    if tuning and calibration < 1:
        raise fail(f"--calibration (={calibration}) must be >= 1")
    use_threads(threads)
    inputs = resolve(organism=organism, reference=reference, target=target, prompts=prompts, judge=judge,
                     max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, batch_size=batch_size,
                     device=device, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision, limit=limit,
                     pool=pool, compile=compile_)
    if tuning and calibration >= len(inputs.prompts):
        raise fail(f"--calibration (={calibration}) must leave prompts to score (have {len(inputs.prompts)})")
    settings: dict = {}
    described = method
    if default and switch is None:  # the best measured configuration (estimators/defaults.py)
        from ..estimators.defaults import default_settings

        defaults, described = default_settings(len(inputs.prompts), calibration)
        switch = str(defaults["switch_after"])
    if method == "is":
        settings["proposal"] = proposal
    if method in {"mis", "lpe"} and schedule is not None:
        settings["schedule"] = schedule
    if method == "lpe" and family is not None:
        settings["family"] = family
    if switch is not None and switch != "tune":
        settings["switch_after"] = int(switch)
    _warn_if_unfit(method, inputs, organism)
    extra = {}
    if engine is not None:
        inputs.sampler, extra["engine"] = _with_engine(engine, inputs, method, settings, proposal, reference_engine)
    store = open_store(run, runs_dir, inputs, "estimate", **extra)
    if engine is not None:
        store.record_estimate("engine-identity", inputs.sampler.identity)
    console.print(f"run [bold]{store.name}[/] ({store.path})")
    if default:
        console.print(f"method: {described}")
    if pool is not None:
        pool.expect(budget * len(inputs.prompts), store.count())
    all_prompts = inputs.prompts
    tuning = (method == "is" and proposal == "tune") or switch == "tune"
    searched: dict = {}
    if tuning:
        inputs.prompts, searched = _tune(inputs, store, calibration, budget, settings, method, seed)
        described += f" (chose {searched.get('switch_after', searched.get('proposal'))})"
    estimates = []
    warned = False
    try:
        with progress_bar(f"{method}: {len(inputs.prompts)} prompts × {budget:,}", len(inputs.prompts) * budget) as bar:
            source = StoreSource(store, inputs.sampler, inputs.judge, progress=bar)

            finished = 0

            def done(i: int, est) -> None:  # every prompt's estimator runs at once, their draws batched together
                nonlocal warned, finished
                store.record_estimate(method, est, prompt_id=est.prompt_id)
                finished += 1
                bar(max(0, budget - est.total_rollouts))  # the budget it left unspent
                bar.at_least(finished * budget)  # a resumed run: rollouts already stored never ticked
                if not warned and est.upper_bound_only:
                    warned = True
                    console.print(f"[yellow]warning:[/] {_no_hit_hint(method, est, organism)}")

            estimates = estimate_many(method, source, inputs.prompts, budget, on_done=done, **settings)
    except (NonFiniteLogitsError, EngineError, OutOfMemoryAtOneRowError) as e:
        raise fail(str(e)) from None
    shown = _examples(store, inputs, estimates, examples)
    _print_table(estimates, inputs.truth, inputs.prompts, shown)
    from ..report import run_summary

    summary = run_summary(estimates, described, calibration_rollouts=searched.get("rollouts", 0))
    out.print(summary)
    if tuning:
        settings = {**settings, "calibration_prompts": sorted({p.id for p in all_prompts} - {p.id for p in inputs.prompts})}
    payload = {"run": store.name, "method": method, "method_description": described, "budget": budget,
               "settings": settings, "summary": summary,
               "estimates": [{**e.to_dict(), "prompt": inputs.prompts.by_id(e.prompt_id).preview(200),
                              "examples": shown.get(e.prompt_id, [])} for e in estimates]}
    if inputs.truth:
        from ..report import error_summary

        payload["vs_truth"] = error_summary(estimates, inputs.truth)
        s = payload["vs_truth"]
        if s["median_abs_log10_error"] is not None:
            unflagged = "" if s["coverage_unflagged"] is None else f", {s['coverage_unflagged']:.0%} among unflagged"
            console.print(f"vs ground truth: median |log10(est/truth)| = {s['median_abs_log10_error']:.3f}, "
                          f"interval coverage {s['coverage']:.0%}{unflagged} over {s['prompts']} prompts")
    if pool is not None:
        payload["workers"] = pool.workers_summary()
    write_json(json_out, payload)
    console.print(f"report: tailscope report {store.name}" + (f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""))
    store.close()


def _with_engine(spec: str, inputs, method: str, settings: dict, proposal: str, reference_spec: str | None = None):
    """Wrap the sampler in a HybridSampler after the identity check(s); say which rollouts stay in our loop."""
    from ..engines import EngineError, HybridSampler, engine_route, make_engine
    from ..path import Proposal

    from_reference = (method == "is" and reference_spec is not None and proposal != "tune"
                      and engine_route(Proposal.parse(proposal), reference_engine=True) == "reference")
    uses = {"naive": True, "is": ";switch=" in proposal or proposal == "tune" or from_reference,
            "mis": "switch_after" in settings, "lpe": "switch_after" in settings}.get(method, False)
    if not uses:
        console.print(f"[yellow]--method {method} without a switching proposal (--switch N, or an IS proposal "
                      "with switch=) needs both models on every token: our loop decodes it; the engine is not used.[/]")
    if reference_spec is not None and not from_reference:
        console.print("[yellow]--reference-engine serves only rollouts drawn from the reference alone "
                      "(--method is --proposal alpha=0); this run draws none.[/]")
    try:
        pair = inputs.sampler.pair
        ref = None if reference_spec is None else make_engine(reference_spec, pair, which="reference")
        hybrid = HybridSampler(inputs.sampler, make_engine(spec, pair), reference_engine=ref)
        identity = hybrid.check(inputs.prompts)
    except (EngineError, ValueError) as e:
        raise fail(str(e)) from None
    for which, name in (("target", spec), ("reference", reference_spec)):
        if which in identity:
            report = identity[which]
            console.print(f"engine {name}: serves the {which} (largest per-token log-prob gap "
                          f"{max(report['max_gap_scored'], report['max_gap_sampled']):.2g} nats over "
                          f"{report['tokens']} tokens)")
    return hybrid, hybrid.engine_config()


def _tune(inputs, store, calibration: int, budget: int, settings: dict, method: str, seed: int):
    """Set aside ``calibration`` prompts (the seeded draw of ``calibration_split``) for the search
    (the IS proposal, or the path's switch point); return the prompts left to score."""
    from ..estimators import StoreSource
    from ..estimators.tuning import TUNE, calibration_split, tune_settings
    from ..prompts import PromptSet

    prompts = list(inputs.prompts)
    if calibration < 1 or calibration >= len(prompts):
        raise fail(f"--calibration (={calibration}) must leave prompts to score (have {len(prompts)})")
    held = calibration_split(prompts, calibration, seed=seed)
    rounds = 2  # the searches' default number of cross-entropy rounds
    per_prompt = max(50, budget // 2) if method == "is" else budget
    what, key = ("proposal", "proposal") if method == "is" else ("switch point", "switch_after")
    # an upper bound: a round that stays where it was reuses its rollouts
    with progress_bar(f"choosing the {what} on {len(held)} calibration prompts", rounds * len(held) * per_prompt) as bar:
        source = StoreSource(store, inputs.sampler, inputs.judge, progress=bar)
        chosen, record = tune_settings(method, {**settings, key: TUNE}, source, inputs.sampler.scorer(), held, budget,
                                       rounds=rounds)
    settings[key] = chosen[key]
    shown = proposal_label(chosen[key]) if method == "is" else chosen[key]
    console.print(f"{what} chosen on calibration prompts {[p.id for p in held]} "
                  f"({record['rollouts']:,} rollouts, not scored): [bold]{shown}[/]")
    return PromptSet([p for p in prompts if p not in held]), record


def _warn_if_unfit(method: str, inputs, organism: str | None) -> None:
    """Before spending anything: an organism whose reference shows the behaviour less than its target
    (a model before training) gives path methods nothing to find."""
    if method == "naive" or not inputs.alpha_truth:
        return
    ids = [p.id for p in inputs.prompts if p.id in inputs.alpha_truth and "0" in inputs.alpha_truth[p.id]]
    rarer = [i for i in ids if float(inputs.alpha_truth[i]["0"]) < inputs.truth.get(i, 0.0)]
    if ids and len(rarer) * 2 > len(ids):
        console.print(f"[yellow]warning:[/] on {len(rarer)} of {len(ids)} prompts the reference of {organism} "
                      "shows the behaviour less often than the target (it is the model before training): "
                      f"{method} walks from the reference and will see few or no hits. To surface the behaviour, "
                      f"use `tailscope sweep --organism {organism}`; to measure it, `--method naive` with a large "
                      "--budget.")


def _no_hit_hint(method: str, est, organism: str | None) -> str:
    where = f"--organism {organism}" if organism else "--reference A --target B ..."
    if method == "naive":
        return (f"no hit on {est.prompt_id} in {est.total_rollouts:,} rollouts: the rate is only bounded "
                f"(< {est.interval[1]:.2g}). `--method mis` needs far fewer rollouts when the reference shows "
                "the behaviour more often than the target.")
    return (f"no rollout at any path point showed the behaviour on {est.prompt_id} "
            f"({est.total_rollouts:,} rollouts): {method} needs hits between the reference and the target, so the "
            f"answer is only a bound (< {est.interval[1]:.2g}). If the reference never shows it (a model before "
            f"training), `tailscope sweep {where}` amplifies past the target to surface it; otherwise raise --budget.")


def _examples(store, inputs, estimates, k: int) -> dict[str, list[dict]]:
    """Up to k completions per estimated prompt, flagged ones first, from the run's stored verdicts."""
    if k < 1:
        return {}
    return {e.prompt_id: store.examples(e.prompt_id, inputs.judge, k) for e in estimates}


def _print_table(estimates, truth, prompts, examples: dict[str, list[dict]]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="per-prompt estimates of the target's rate (flags: reasons not to trust an interval)",
                  show_lines=bool(examples))
    cols = ["prompt", "text", "hits", "rollouts", "estimate [95% interval]", "truth", "est/truth", "flags"]
    if examples:
        cols.append("example (hits first)")
    for col in cols:  # a flag is a name: one per line, never broken inside
        table.add_column(col, overflow="fold", no_wrap=col == "flags", min_width=12 if col == "flags" else None)
    for e in estimates:
        t = truth.get(e.prompt_id)
        ratio = "" if t is None or e.upper_bound_only or not e.rate or not t else f"{e.rate / t:.2g}×"
        number = e.describe().split(" (flagged")[0]
        row = [e.prompt_id, prompts.by_id(e.prompt_id).preview(60), str(e.hits), f"{e.total_rollouts:,}",
               number, "" if t is None else f"{t:.2g}", ratio, Text("\n".join(e.flags), style="red")]
        if examples:
            row.append("\n".join(("[red]hit[/] " if x["flagged"] else "") + repr(x["text"][:120])
                                  for x in examples.get(e.prompt_id, [])))
        table.add_row(*row)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
