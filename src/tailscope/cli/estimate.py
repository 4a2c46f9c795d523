"""`tailscope estimate` (rare-rate estimates per prompt) and `tailscope report RUN` (HTML report)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from ._common import console, fail, out, progress_bar
from ._setup import open_store, resolve


def estimate(
    method: str = typer.Option("mis", "--method", "-m", help="naive | is | mis | lpe"),
    budget: int = typer.Option(1000, "--budget", help="Rollouts per prompt (never exceeded)."),
    organism: Optional[str] = typer.Option(None, "--organism", help="A bundled organism: fills models, prompts, judge."),
    target: Optional[str] = typer.Option(None, "--target", "-B", help="The model whose rate is estimated (α = 1)."),
    reference: Optional[str] = typer.Option(None, "--reference", "-A", help="The less-safe variant (α = 0)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p"),
    judge: Optional[str] = typer.Option(None, "--judge", "-j", help="refusal | regex:PAT | contains:TEXT | hf:PATH | http:URL | python:mod:fn"),
    proposal: str = typer.Option("a=0", "--proposal", help="IS proposal, e.g. 'a=0', 'a=0;mix=0.5', 'a=0;switch=8', or 'tune' (cross-entropy search on a calibration split)."),
    switch: Optional[str] = typer.Option(None, "--switch", help="MIS/LPE: draw only the first N reply tokens at each path point, the rest from the target; 'tune' picks N by the cross-entropy search on a calibration split."),
    calibration: int = typer.Option(4, "--calibration", help="With --proposal tune or --switch tune: prompts set aside (never scored) for the search."),
    family: Optional[str] = typer.Option(None, "--family", help="LPE fit: log-quadratic (default, on the last 5 points with hits) | log-linear | logit-linear | logit-quadratic"),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="LPE/MIS walk: adaptive (MIS default) | frontier (LPE default) | fixed"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N prompts."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: float = typer.Option(1.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(128, "--batch-size", help="Rows decoded together (memory grows with it)."),
    device: str = typer.Option("cpu", "--device"),
    dtype: str = typer.Option("float32", "--dtype"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    run: Optional[str] = typer.Option(None, "--run", help="Run name (resumes if it exists); default: from the config."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the estimates as JSON here."),
) -> None:
    """Estimate how often the target does the rare thing, per prompt, with intervals and rollout counts."""
    from ..estimators import FAMILIES, METHODS, StoreSource, estimate as run_estimator
    from ..path import NonFiniteLogitsError

    if method not in METHODS:
        raise fail(f"--method (={method!r}) must be one of {sorted(METHODS)}")
    if family is not None and family not in FAMILIES:
        raise fail(f"--family (={family!r}) must be one of {list(FAMILIES)}")
    if schedule is not None and schedule not in {"adaptive", "frontier", "fixed"}:
        raise fail(f"--schedule (={schedule!r}) must be one of ['adaptive', 'frontier', 'fixed']")
    if budget < 1:
        raise fail(f"--budget (={budget}) must be >= 1")
    if switch is not None and (method not in {"mis", "lpe"} or not (switch == "tune" or switch.isdigit())):
        raise fail(f"--switch (={switch!r}) takes a number of tokens or 'tune', with --method mis or lpe")
    inputs = resolve(organism=organism, reference=reference, target=target, prompts=prompts, judge=judge,
                     max_new_tokens=max_new_tokens, seed=seed, temperature=temperature, batch_size=batch_size,
                     device=device, dtype=dtype, trust_remote_code=trust_remote_code, limit=limit)
    settings: dict = {}
    if method == "is":
        settings["proposal"] = proposal
    if method in {"mis", "lpe"} and schedule is not None:
        settings["schedule"] = schedule
    if method == "lpe" and family is not None:
        settings["family"] = family
    if switch is not None and switch != "tune":
        settings["switch_after"] = int(switch)
    store = open_store(run, runs_dir, inputs, "estimate")
    console.print(f"run [bold]{store.name}[/] ({store.path})")
    all_prompts = inputs.prompts
    tuning = (method == "is" and proposal == "tune") or switch == "tune"
    if tuning:
        inputs.prompts = _tune(inputs, store, calibration, budget, settings, method)
    estimates = []
    try:
        with progress_bar(f"{method}: prompts", len(inputs.prompts)) as advance:
            source = StoreSource(store, inputs.sampler, inputs.judge)
            for prompt in inputs.prompts:
                est = run_estimator(method, source, prompt, budget, **settings)
                store.record_estimate(method, est, prompt_id=prompt.id)
                estimates.append(est)
                advance()
    except NonFiniteLogitsError as e:
        raise fail(str(e)) from None
    _print_table(estimates, inputs.truth, inputs.prompts)
    if tuning:
        settings = {**settings, "calibration_prompts": sorted({p.id for p in all_prompts} - {p.id for p in inputs.prompts})}
    payload = {"run": store.name, "method": method, "budget": budget, "settings": settings,
               "estimates": [e.to_dict() for e in estimates]}
    if inputs.truth:
        from ..report import error_summary

        payload["vs_truth"] = error_summary(estimates, inputs.truth)
        s = payload["vs_truth"]
        if s["median_abs_log10_error"] is not None:
            console.print(f"vs ground truth: median |log10(est/truth)| = {s['median_abs_log10_error']:.3f}, "
                          f"interval coverage {s['coverage']:.0%} over {s['prompts']} prompts")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=1) + "\n")
        console.print(f"wrote {json_out}")
    console.print(f"report: tailscope report {store.name}" + (f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""))
    store.close()


def _tune(inputs, store, calibration: int, budget: int, settings: dict, method: str):
    """Set aside every k-th prompt for the search (the IS proposal, or the path's switch point);
    return the prompts left to score."""
    from ..estimators import StoreSource
    from ..estimators.tuning import tune_proposal, tune_switch
    from ..prompts import PromptSet

    prompts = list(inputs.prompts)
    if calibration < 1 or calibration >= len(prompts):
        raise fail(f"--calibration (={calibration}) must leave prompts to score (have {len(prompts)})")
    step = len(prompts) // calibration
    held = prompts[::step][:calibration]
    source = StoreSource(store, inputs.sampler, inputs.judge)
    with console.status(f"searching on {len(held)} calibration prompts"):
        if method == "is":
            search = tune_proposal(source, inputs.sampler.scorer(), held, per_prompt=max(50, budget // 2))
            settings["proposal"] = chosen = search.proposal.key
        else:
            walk = {k: v for k, v in settings.items() if k == "schedule"}
            search = tune_switch(source, inputs.sampler.scorer(), held, budget, **walk)
            settings["switch_after"] = chosen = search.switch_after
    console.print(f"{'proposal' if method == 'is' else 'switch point'} chosen on calibration prompts "
                  f"{[p.id for p in held]} ({search.rollouts} rollouts, not scored): [bold]{chosen}[/]")
    return PromptSet([p for p in prompts if p not in held])


def _print_table(estimates, truth, prompts) -> None:
    from rich.table import Table

    table = Table(title="per-prompt estimates of the target's rate")
    for col in ("prompt", "text", "hits", "rollouts", "estimate [95% interval]", "truth", "est/truth"):
        table.add_column(col, overflow="fold")
    for e in estimates:
        t = truth.get(e.prompt_id)
        ratio = "" if t is None or e.upper_bound_only or not e.rate or not t else f"{e.rate / t:.2g}×"
        table.add_row(e.prompt_id, prompts.by_id(e.prompt_id).preview(40), str(e.hits), str(e.total_rollouts),
                      e.describe(), "" if t is None else f"{t:.2g}", ratio)
    out.print(table)


def report(
    run: str = typer.Argument(..., help="Run name or path."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for the report (default: next to the run)."),
) -> None:
    """Write an HTML report (with plots) of a run's estimates."""
    from ..estimators import Estimate
    from ..report import write_report
    from ..store import RunStore, RunStoreError

    try:
        store = RunStore.open(run, root=runs_dir, readonly=True)
    except RunStoreError as e:
        raise fail(str(e)) from None
    rows = store.estimates()
    if not rows:
        raise fail(f"run {store.name} holds no estimates yet (run `tailscope estimate ... --run {store.name}`)")
    latest: dict[tuple, Estimate] = {}
    for row in rows:
        est = Estimate.from_dict(row["data"])
        latest[(est.method, est.prompt_id)] = est
    config = store.config
    truth, alpha_truth = {}, {}
    org_name = (config.get("extra") or {}).get("organism")
    if org_name:
        truth, alpha_truth = _organism_truth(org_name, config)
    dest = output or store.path.with_suffix("")
    page = write_report(list(latest.values()), dest, title=f"tailscope report: {store.name}", truth=truth,
                        alpha_truth=alpha_truth, config=config)
    store.close()
    console.print(f"wrote {page}")


def _organism_truth(name: str, config: dict) -> tuple[dict, dict]:
    import json as _json

    from ..organisms import DATA_DIR

    path = DATA_DIR / name / "ground_truth.json"
    card = DATA_DIR / name / "card.json"
    if not path.exists():
        return {}, {}
    meta = _json.loads(card.read_text())
    sampling = config.get("sampling", {})
    if config.get("judge") != meta.get("judge_spec") or sampling.get("max_new_tokens") != meta.get("max_new_tokens") \
            or not math.isclose(sampling.get("temperature", 1.0), 1.0):
        return {}, {}
    data = _json.loads(path.read_text())["prompts"]
    return {k: float(v["rate"]) for k, v in data.items()}, {k: v.get("alpha_rates", {}) for k, v in data.items()}


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
    app.command("report")(report)
