"""Build and verify organisms: the registry of recipes, ``build(name)`` and ``verify(name)``.

Each recipe lives in the module of its organism (``refusal``, ``finetunes``, ``smollm2_backdoor``,
the shared chat model in the scaffold) on one scaffold (:mod:`._scaffold`). ``build(name)``
reproduces the shipped files of one organism from fixed seeds (building the shared base chat model
first when it is missing); ``verify(name)`` re-checks ground-truth rates against fresh sampling.
The thread count is the caller's: the shipped files were built with one torch thread
(``tailscope organisms build NAME --threads 1``, the default), which reproduces them to the last digit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ._scaffold import (
    ALPHA_GRID,
    LDA_GRID,
    Progress,
    build_chat,
    ground_truth,
    histogram,
    noop,
    save_fp16,
    write_organism,
)
from .finetunes import build_backdoor, build_contamination
from .groundtruth import starts_with_any
from .refusal import VARIANTS as REFUSAL_VARIANTS
from .refusal import build_refusal
from .registry import DATA_DIR
from .smollm2_backdoor import build_smollm2_backdoor

__all__ = ["ALPHA_GRID", "BUILDERS", "BUILD_ORDER", "LDA_GRID", "build", "build_chat", "ground_truth", "histogram",
           "plot_rates", "save_fp16", "verify", "write_organism"]

BUILDERS: dict[str, Callable[[Path, Progress], Path] | str] = {
    "chat": build_chat,
    **{name: partial(build_refusal, name=name) for name in REFUSAL_VARIANTS},
    "backdoor": build_backdoor,
    "contamination": build_contamination,
    "checkpoints": build_contamination,
    "smollm2-backdoor": build_smollm2_backdoor,
    # "module:function" targets load on use (the recipe imports this module's verify); one build
    # writes both (the safety-tuned SmolLM2 and its abliterated partner)
    "smollm2-safety": "tailscope.organisms.smollm2_safety_build:build_smollm2_safety",
    "smollm2-safety-abliterated": "tailscope.organisms.smollm2_safety_build:build_smollm2_safety",
}

# every recipe once, in dependency order (``contamination`` also writes ``checkpoints``)
BUILD_ORDER = ("chat", *REFUSAL_VARIANTS, "backdoor", "contamination", "smollm2-backdoor", "smollm2-safety")


def build(name: str, *, root: Path | None = None, progress: Progress = noop) -> Path:
    """Build organism ``name`` into ``root`` (the package's data folder by default)."""
    if name not in BUILDERS:
        raise KeyError(f"no recipe for organism {name!r}; recipes exist for {sorted(BUILDERS)}")
    root = Path(root or DATA_DIR)
    root.mkdir(parents=True, exist_ok=True)
    recipe = BUILDERS[name]
    if isinstance(recipe, str):
        import importlib

        module, attr = recipe.split(":")
        recipe = getattr(importlib.import_module(module), attr)
    return recipe(root, progress)


# --------------------------------------------------------------------------- verify
def verify(name: str, *, rollouts: int = 2000, prompts: int = 4, alphas: Sequence[float] = (1.0,),
           min_expected_hits: float = 20.0, max_new_tokens: int = 16, seed: int = 12345,
           data_dir: Path | None = None, progress: Progress = noop) -> list[dict]:
    """Re-check stored rates against fresh sampling on prompts where sampling can see them.

    For each α, the ``prompts`` prompts with the highest stored rate whose expected hit count
    (rate × rollouts) is at least ``min_expected_hits`` are sampled ``rollouts`` times. Replies are
    cut at ``max_new_tokens``, which cannot change a verdict decided within that many tokens; the
    stored rate's exact tree covers longer paths too, and their mass is far below sampling error.
    Each check is a two-sided exact binomial test; a check fails when p < 1e-3 / (number of checks).
    """
    from scipy.stats import binomtest

    from ..sampling import PathSampler
    from .registry import load

    org = load(name, data_dir=data_dir)
    sampler = PathSampler(org.pair, max_new_tokens=max_new_tokens, batch_size=128, seed=seed)
    checks = []
    for alpha in alphas:
        ranked = sorted(org.prompts, key=lambda p: -org.rate(p.id, alpha))
        chosen = [p for p in ranked if org.rate(p.id, alpha) * rollouts >= min_expected_hits][:prompts]
        for p in chosen:
            done = [0]

            def tick(k: int, _p=p, _a=alpha) -> None:
                done[0] += k
                progress(f"verify {_p.id} α={_a:g}", done[0], rollouts)

            out = sampler.sample([p], rollouts, alpha, progress=tick)
            hits = sum(starts_with_any(r.text, org.openings) for r in out)
            rate = org.rate(p.id, alpha)
            test = binomtest(hits, rollouts, min(max(rate, 1e-300), 1.0))
            ci = test.proportion_ci(0.95, method="exact")
            checks.append({"prompt_id": p.id, "alpha": alpha, "rate": rate, "hits": hits, "rollouts": rollouts,
                           "sampled": hits / rollouts, "interval": [ci.low, ci.high], "p_value": test.pvalue})
    threshold = 1e-3 / max(1, len(checks))
    for c in checks:
        c["ok"] = bool(c["p_value"] >= threshold)
    return checks


def plot_rates(truth: dict, out: Path, *, title: str, groups: dict[str, str] | None = None) -> Path:
    """A histogram of log10 true rates at α = 1 (one colour per group of prompt ids, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = truth["prompts"]
    groups = groups or {"all prompts": ""}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.arange(-12, 0.5, 0.5)
    data, labels = [], []
    for label, prefix in groups.items():
        rates = [e["rate"] for pid, e in entries.items() if pid.startswith(prefix)]
        data.append(np.log10(np.clip(rates, 1e-12, 1.0)))
        labels.append(f"{label} ({len(rates)})")
    ax.hist(data, bins=bins, stacked=True, label=labels)
    ax.set_xlabel("log10 true rate at α = 1 (exact enumeration)")
    ax.set_ylabel("prompts")
    ax.set_title(title)
    if len(groups) > 1:
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
