"""`tailscope lowprob ...`: low-probability estimation over input distributions (METHODS.md §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import _options as opt
from ._common import use_threads, write_json

DEFAULT_TRUTH = "src/tailscope/lowprob/data/ground_truth"


def _split(value: str, known: list[str], what: str) -> list[str]:
    names = known if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise typer.BadParameter(f"unknown {what} {unknown}; choose from {known} or 'all'")
    return names


def register(app: typer.Typer) -> None:
    lowprob = typer.Typer(help="Estimate rare argmax tokens over input distributions (Wu & Hilton).",
                          no_args_is_help=True)
    app.add_typer(lowprob, name="lowprob")

    @lowprob.command("build-models")
    def build_models(
        out: Path = typer.Option(Path("src/tailscope/lowprob/data"), help="Where to write tokenizer and models."),
        models: str = typer.Option("all", help="Comma-separated model names (L1, L2, L4) or 'all'."),
        threads: Optional[int] = opt.threads(),
    ) -> None:
        """Train the benchmark tokenizer and models on the standard library's source (seeded).

        The shipped models were trained with `--threads 1`, which reproduces them to the last digit."""
        from tailscope.lowprob.recipe import MODEL_SPECS, build_all

        use_threads(threads)

        build_all(out, names=_split(models, list(MODEL_SPECS), "models"))

    @lowprob.command("ground-truth")
    def ground_truth(
        models: str = typer.Option("all", help="Comma-separated benchmark models or 'all'."),
        distributions: str = typer.Option("all", help="Comma-separated distributions or 'all'."),
        inputs: int = typer.Option(2**24, help="Draws per (model, distribution) pair."),
        chunk_size: int = typer.Option(2**16, help="Draws per saved chunk."),
        out: Path = typer.Option(Path(DEFAULT_TRUTH), help="Directory of the count files."),
        threads: Optional[int] = opt.threads(),
        seed: int = opt.seed(),
        batch_size: int = typer.Option(256, help="Inputs per forward pass (small batches stay in cache: "
                                                 "256 ran ~2x faster than 8192 on these models)."),
        lean: bool = typer.Option(True, help="Lean Llama forward, last position only (same function, faster)."),
        compile_: bool = typer.Option(True, "--compile/--no-compile", help="torch.compile the lean forward."),
    ) -> None:
        """Count the argmax over many draws, round-robin over pairs; stop and rerun to continue."""
        import torch
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from tailscope.lowprob import zoo
        from tailscope.lowprob.distributions import DISTRIBUTIONS
        from tailscope.lowprob.groundtruth import extend_ground_truth, ground_truth_path, load_ground_truth
        from tailscope.lowprob.lm import LowProbModel

        use_threads(threads)
        model_list = _split(models, zoo.model_names(), "models")
        dist_list = _split(distributions, list(DISTRIBUTIONS), "distributions")
        tokenizer = zoo.load_tokenizer()
        lms = {m: LowProbModel(zoo.load_model(m), batch_size=batch_size, lean=lean, compile=compile_)
               for m in model_list}
        dists = {d: zoo.load_distribution(d, tokenizer=tokenizer) for d in dist_list}
        pairs = [(m, d) for m in model_list for d in dist_list]

        def done(pair: tuple[str, str]) -> int:
            path = ground_truth_path(out, *pair)
            return load_ground_truth(path).inputs if path.exists() else 0

        progress_by_pair = {p: done(p) for p in pairs}
        total = len(pairs) * inputs
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn()) as progress:
            task = progress.add_task("brute force", total=total,
                                     completed=sum(min(v, inputs) for v in progress_by_pair.values()))
            while True:
                pending = [p for p in pairs if progress_by_pair[p] < inputs]
                if not pending:
                    break
                pair = min(pending, key=lambda p: progress_by_pair[p])
                progress.update(task, description=f"{pair[0]}/{pair[1]}")
                truth = extend_ground_truth(lms[pair[0]], dists[pair[1]], ground_truth_path(out, *pair),
                                            model=pair[0], inputs=inputs, chunk_size=chunk_size, seed=seed,
                                            max_chunks=1)
                progress.advance(task, truth.inputs - progress_by_pair[pair])
                progress_by_pair[pair] = truth.inputs

    @lowprob.command("evaluate")
    def evaluate(
        models: str = typer.Option("all", help="Comma-separated benchmark models or 'all'."),
        distributions: str = typer.Option("all", help="Comma-separated distributions or 'all'."),
        budget: int = typer.Option(2**12, help="Model calls per estimate (forward and backward passes count)."),
        targets: int = typer.Option(8, help="Targets per pair (≥ 16 ground-truth hits, spread in log p)."),
        max_probability: float = typer.Option(5e-4, help="Rarest-first targets at most this frequent."),
        seed: int = opt.seed(),
        truth_dir: Path = typer.Option(Path(DEFAULT_TRUTH), help="Ground truth directory."),
        cache: Path = typer.Option(Path("benchmarks/results/lowprob_estimates"), help="Estimate cache directory."),
        out: Path = typer.Option(Path("benchmarks/results/lowprob.json"), "--json", metavar="PATH",
                                 help="Where the JSON results go."),
        plot: Path = typer.Option(Path("benchmarks/results/lowprob.png"), help="PNG plot."),
        score_only: bool = typer.Option(False, help="Score cached estimates; run no estimator."),
        also: list[Path] = typer.Option([], "--also", help="Further estimate caches (e.g. another target set) "
                                        "whose estimates are scored together with --cache's."),
        threads: Optional[int] = opt.threads(),
    ) -> None:
        """Run every method on every pair at the same budget and score it against ground truth."""
        import json

        import torch
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from tailscope.lowprob import zoo
        from tailscope.lowprob.distributions import DISTRIBUTIONS
        from tailscope.lowprob.evaluation import METHODS, run_pair, score, select_targets
        from tailscope.lowprob.groundtruth import ground_truth_path, load_ground_truth
        from tailscope.lowprob.lm import LowProbModel
        from tailscope.lowprob.report import plot_results, results_table, summarise

        use_threads(threads)
        console = Console()
        model_list = _split(models, zoo.model_names(), "models")
        dist_list = _split(distributions, list(DISTRIBUTIONS), "distributions")
        tokenizer = zoo.load_tokenizer()
        pairs = []
        for m in model_list:
            for d in dist_list:
                path = ground_truth_path(truth_dir, m, d)
                if not path.exists():
                    console.print(f"[yellow]skipping {m}/{d}: no ground truth at {path}[/yellow]")
                    continue
                cache_file = cache / f"{m}__{d}.json"
                truth = load_ground_truth(path)
                if cache_file.exists():
                    chosen = sorted({r["target"] for r in json.loads(cache_file.read_text())})
                else:
                    chosen = select_targets(truth, count=targets, max_probability=max_probability)
                pairs.append((m, d, truth, chosen, cache_file))
        if not score_only:
            lms: dict[str, LowProbModel] = {}
            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as progress:
                task = progress.add_task("estimates", total=sum(len(p[3]) * len(METHODS) for p in pairs))
                for m, d, _truth, chosen, cache_file in pairs:
                    progress.update(task, description=f"{m}/{d}")
                    if m not in lms:
                        lms[m] = LowProbModel(zoo.load_model(m), batch_size=2048)
                    lm = lms[m]
                    dist = zoo.load_distribution(d, tokenizer=tokenizer)
                    run_pair(lm, dist, chosen, cache_file, budget=budget, seed=seed,
                             on_done=lambda *_: progress.advance(task))
        results = []
        for m, d, truth, chosen, cache_file in pairs:
            files = [f for f in [cache_file, *(a / cache_file.name for a in also)] if f.exists()]
            if not files:
                continue
            rows, seen = [], set()
            for f in files:
                for r in json.loads(f.read_text()):
                    key = (r["method"], r["target"], r["budget"], r["seed"])
                    if key not in seen:
                        seen.add(key)
                        rows.append(r)
            chosen = sorted({r["target"] for r in rows if r["budget"] == budget and r["seed"] == seed})
            results.append({
                "model": m, "distribution": d, "ground_truth_inputs": truth.inputs,
                "targets": [{"token": t, "text": tokenizer.decode([t]), "probability": truth.probability(t),
                             "hits": truth.counts[t]} for t in chosen],
                "scores": score(rows, truth, budget=budget, seed=seed),
            })
        report = {"budget": budget, "seed": seed, "pairs": results, "summary": summarise(results)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        console.print(results_table(report))
        plot_results(report, plot)
        console.print(f"wrote {out} and {plot}")

    @lowprob.command("estimate")
    def estimate_one(
        target: str = typer.Argument(..., help="Target token: its text (one token) or `#id`."),
        model: str = typer.Option("L2", help="A benchmark model (L1, L2, L4) or a transformers checkpoint directory."),
        distribution: str = typer.Option("hex", help="A registered distribution."),
        corpus: list[Path] = typer.Option([], help="Text files for the token-frequency table (needed for a "
                                          "checkpoint that is not a benchmark model)."),
        method: str = typer.Option("itgis", help="naive, itgis, mhis, qld or gld."),
        budget: int = typer.Option(2**12, help="Model calls (forward and backward passes count)."),
        seed: int = opt.seed(),
        threads: Optional[int] = opt.threads(),
        json_out: Optional[Path] = opt.json_out(),
    ) -> None:
        """Estimate P(argmax = target) for one model, distribution and target; prints JSON."""
        import json

        import torch

        from tailscope.lowprob import zoo
        from tailscope.lowprob.distributions import build_distribution, count_tokens
        from tailscope.lowprob.estimators import ESTIMATORS, estimate
        from tailscope.lowprob.lm import LowProbModel

        use_threads(threads)
        if method not in ESTIMATORS:
            raise typer.BadParameter(f"unknown method {method!r}; choose from {sorted(ESTIMATORS)}")
        if model in zoo.model_names():
            tokenizer, net = zoo.load_tokenizer(), zoo.load_model(model)
            counts = zoo.load_counts()
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not corpus:
                raise typer.BadParameter(f"{model!r} is not a benchmark model: pass --corpus files to count tokens")
            tokenizer = AutoTokenizer.from_pretrained(model)
            net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
            counts = count_tokens(tokenizer, [p.read_text(encoding="utf-8", errors="replace") for p in corpus])
        if target.startswith("#"):
            token = int(target[1:])
        else:
            ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise typer.BadParameter(f"target {target!r} is {len(ids)} tokens, not one; pass `#id` instead")
            token = ids[0]
        dist = build_distribution(distribution, tokenizer, counts)
        result = estimate(method, LowProbModel(net), dist, token, budget, seed=seed)
        typer.echo(json.dumps(result.to_dict(), indent=2))
        if json_out is not None and str(json_out) != "-":
            write_json(json_out, result.to_dict())
