#!/usr/bin/env bash
# Issue "abliteration": LPE on the refusal organism with an abliterated copy of its target as the
# reference, against the organism's own less-safe reference, in the AUROC harness.
#   bash benchmarks/abliterated_reference.sh            # fast suite (16 prompts, 24-token replies)
# Writes benchmarks/results/auroc_fast-ref-refusal-abliterated.{json,png} and the checkpoint under
# runs/refusal-abliterated (rebuilt only when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TS=${TS:-.venv/bin/tailscope}
work=runs/abliteration-inputs
mkdir -p "$work"
# search prompts: 64 fresh harmful requests of the organism's 16 categories (none of its evaluation
# prompts); harmless: 48 requests of its corpus
$PY - "$work" <<'PYEOF'
import json, random, sys
from pathlib import Path
from tailscope.organisms import corpus, load
from tailscope.organisms.refusal import eval_prompts
out = Path(sys.argv[1])
used = {p.text for p in load("refusal").prompts}
fresh = [r for r in eval_prompts(per_category=8, seed=99) if r["prompt"] not in used]
rng = random.Random(5)
by_cat = {}
for r in fresh:
    by_cat.setdefault(r["category"], []).append(r)
with (out / "harmful.jsonl").open("w") as f:
    for cat in sorted(by_cat):
        for r in by_cat[cat][:4]:
            f.write(json.dumps({"id": "search-" + r["id"], "prompt": r["prompt"]}) + "\n")
rng = random.Random(11)
(out / "harmless.txt").write_text("\n".join(corpus.harmless_request(rng)[2] for _ in range(48)) + "\n")
PYEOF
if [ ! -f runs/refusal-abliterated/config.json ]; then
  $TS abliterate --model src/tailscope/organisms/data/refusal/target --harmful "$work/harmful.jsonl" \
    --harmless "$work/harmless.txt" --out runs/refusal-abliterated --max-kl 0.3 \
    --refusal-opening "No, I can't" --refusal-opening "Sorry, I won't" --refusal-opening "I can't help"
fi
$TS evaluate auroc --fast --reference runs/refusal-abliterated
