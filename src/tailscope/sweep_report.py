"""The HTML section of a logit diff amplification sweep: rate vs amplification, coherence, examples.

Used by ``tailscope report`` for sweep runs and by the demo (beside its estimates); the page itself
is :func:`tailscope.report.write_report`'s.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_sweep", "sweep_section"]


def plot_sweep(points: Sequence[Mapping[str, Any]], out: Path, exact_rate: float | None = None) -> Path:
    """Rate vs amplification a with exact intervals; a point without hits is drawn as its upper bound."""
    from .report import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for p in points:
        a, (lo, hi) = p["amplification"], p["interval"]
        if p["hits"]:
            ax.errorbar([a], [p["rate"]], yerr=[[p["rate"] - lo], [hi - p["rate"]]], fmt="o", color="C0", capsize=2)
        else:
            ax.plot([a], [hi], "v", color="C0", mfc="none", ms=6)
    if exact_rate:
        ax.axhline(exact_rate, color="k", ls=":", lw=1, label=f"exact rate at a = 0 ({exact_rate:.2g})")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yscale("log")
    ax.set_xlabel("amplification a (α = 1 + a)")
    ax.set_ylabel("behaviour rate (▽: upper bound, no hits)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def sweep_section(points: Sequence[Mapping[str, Any]], img_dir: Path, *, title: str,
                  exact_rate: float | None = None, examples: int = 3) -> str:
    """An HTML block: the sweep's table, its plot and flagged examples per amplification."""
    from .report import _img

    img_dir.mkdir(parents=True, exist_ok=True)
    png = plot_sweep(points, img_dir / "sweep.png", exact_rate)
    rows = []
    if exact_rate is not None:
        rows.append(f"<tr><td>exact, a = 0</td><td></td><td></td><td>{exact_rate:.2g}</td>"
                    f"<td>{1 / exact_rate:,.0f}</td><td></td><td></td><td></td></tr>" if exact_rate > 0 else "")
    for p in points:
        lo, hi = p["interval"]
        rate = f"{p['rate']:.2g} [{lo:.2g}, {hi:.2g}]" if p["hits"] else f"&lt; {hi:.2g} (0 hits)"
        per_hit = f"{1 / p['rate']:,.0f}" if p["hits"] and p["rate"] > 0 else "–"
        shown = "".join(f"<div class=ex>{html.escape(x['prompt_id'])}#{html.escape(str(x['seed_index']))}: "
                        f"{html.escape(x['text'][:300])}</div>" for x in p.get("examples", [])[:examples])
        after = p["logprob_after_per_token"]
        rows.append(f"<tr><td>{p['amplification']:g}</td><td>{p['rollouts']:,}</td><td>{p['hits']}</td>"
                    f"<td>{rate}</td><td>{per_hit}</td><td>{'' if math.isnan(after) else f'{after:.2f}'}</td>"
                    f"<td>{p['mean_length']:.0f}</td><td class=t>{shown}</td></tr>")
    return f"""<h2>{html.escape(title)}</h2>
<p>Logit diff amplification samples l_after + a (l_after − l_before): a larger a makes what training
changed more common. The rate at a &gt; 0 shows that the behaviour exists and what it looks like; it is
not the target's rate (that needs an estimate). Coherence: the target's mean log-probability per token
of the amplified replies (closer to 0 reads more like the target).</p>
<table><tr><th>a</th><th>rollouts</th><th>hits</th><th>rate [95% interval]</th><th>rollouts per hit</th>
<th>log p_after/token</th><th>reply tokens</th><th>flagged completions</th></tr>
{''.join(rows)}</table>
<figure>{_img(png)}</figure>"""
