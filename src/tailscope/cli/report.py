"""`tailscope report RUN`: an HTML page of a stored run (its estimates, or its sweep), readable alone."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import console, fail, write_json


def report(
    run: str = typer.Argument(..., help="Run name (in --runs-dir) or path to a run file."),
    runs_dir: Path = opt.runs_dir(),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for the report (default: next to the run)."),
    examples: int = typer.Option(2, "--examples", help="Completions shown per prompt (hits first)."),
    json_out: Optional[Path] = opt.json_out(),
) -> None:
    """Write an HTML report (with plots, prompts and example completions) of a run."""
    from ..estimators import Estimate
    from ..report import write_report
    from ..store import RunStore, RunStoreError
    from ..sweep_report import sweep_section

    try:
        store = RunStore.open(run, root=runs_dir, readonly=True)
    except RunStoreError as e:
        raise fail(str(e)) from None
    with store:
        config = store.config
        kind = (config.get("extra") or {}).get("kind") or ("demo" if (config.get("extra") or {}).get("demo") else "")
        rows = store.estimates()
        sweeps = [r["data"] for r in rows if r["name"] == "sweep"]
        latest: dict[tuple, Estimate] = {}
        for row in rows:
            if row["name"] != "sweep":
                est = Estimate.from_dict(row["data"])
                latest[(est.method, est.prompt_id)] = est
        if not latest and not sweeps:
            raise fail(_nothing_yet(store.name, kind, runs_dir))
        prompts = store.prompts()
        judge = config.get("judge")
        shown = {pid: store.examples(pid, judge, examples) for (_, pid) in latest if pid} if judge and examples else {}
    truth, alpha_truth = {}, {}
    org_name = (config.get("extra") or {}).get("organism")
    if org_name:
        truth, alpha_truth = _organism_truth(org_name, config)
    dest = output or store.path.with_suffix("")
    sections = []
    if sweeps:
        by_a = {p["amplification"]: p for p in sweeps}  # the latest sweep at each amplification
        sections.append(sweep_section([by_a[a] for a in sorted(by_a)], Path(dest) / "img",
                                      title="Logit diff amplification"))
    page = write_report(list(latest.values()), dest, title=f"tailscope report: {store.name}", truth=truth,
                        alpha_truth=alpha_truth, config=config, sections=sections,
                        prompts={pid: p.preview(300) for pid, p in prompts.items()}, examples=shown)
    console.print(f"wrote {page}")
    write_json(json_out, {"run": store.name, "report": str(page), "estimates": [e.to_dict() for e in latest.values()],
                          "sweep": sweeps})


def _nothing_yet(name: str, kind: str, runs_dir: Path) -> str:
    where = f" --runs-dir {runs_dir}" if str(runs_dir) != "runs" else ""
    if kind == "sweep":
        return (f"run {name} holds no finished sweep yet: rerun the same `tailscope sweep ... --run {name}{where}` "
                "to finish it (its rollouts are reused)")
    if kind == "sample":
        return (f"run {name} holds rollouts but no estimates; `tailscope runs show {name}{where}` lists them, "
                f"`tailscope estimate ... --run NEW` estimates rates")
    return (f"run {name} holds no estimates yet: rerun the same `tailscope estimate ... --run {name}{where}` "
            "to finish it (its rollouts are reused)")


def _organism_truth(name: str, config: dict) -> tuple[dict, dict]:
    from ..organisms import DATA_DIR

    path = DATA_DIR / name / "ground_truth.json"
    card = DATA_DIR / name / "card.json"
    if not path.exists():
        return {}, {}
    meta = json.loads(card.read_text())
    sampling = config.get("sampling", {})
    if config.get("judge") != meta.get("judge_spec") or sampling.get("max_new_tokens") != meta.get("max_new_tokens") \
            or not math.isclose(sampling.get("temperature", 1.0), 1.0):
        return {}, {}
    data = json.loads(path.read_text())["prompts"]
    return {k: float(v["rate"]) for k, v in data.items()}, {k: v.get("alpha_rates", {}) for k, v in data.items()}


def register(app: typer.Typer) -> None:
    app.command("report")(report)
