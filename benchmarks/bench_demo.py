"""How long `make demo` takes from a fresh clone, and what the thread count does to it.

Clones the repository into a temporary directory, times `make setup` and then `make demo` (the
demo picks its torch thread count for the machine), then runs the demo again from empty run
stores with one torch thread, for the ratio. Writes benchmarks/results/demo.json; the README's
`bench:demo` block is rendered from it. Run it on an idle machine:

    flock -x /work/cpu.lock python benchmarks/bench_demo.py

``--loaded`` measures the other case, a machine that other jobs share: a smaller demo (2 prompts,
100 rollouts each) from empty run stores, once with the thread count the CLI chooses and once with
one thread per core, in this checkout; it writes benchmarks/results/demo_loaded.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float | None = None) -> float | None:
    """Seconds the command took; None if it had not finished after ``timeout`` seconds (it is stopped)."""
    start = time.perf_counter()
    with log.open("a") as f:
        try:
            subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo.json")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary clone.")
    parser.add_argument("--loaded", action="store_true", help="Measure the thread choice on a shared machine.")
    args = parser.parse_args()
    if args.loaded:
        return loaded(args.out.with_name("demo_loaded.json"))

    from tailscope.cli._common import _busy_cores

    busy = _busy_cores(1.0)
    work = Path(tempfile.mkdtemp(prefix="tailscope-demo-"))
    clone = work / "tailscope"
    log = work / "log.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TAILSCOPE_THREADS", "VIRTUAL_ENV")}
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    setup = _timed(["make", "setup"], clone, env, log)
    demo = _timed(["make", "demo"], clone, env, log)
    said = re.search(r"done in \d+ s \((\d+) torch thread", log.read_text())
    auto_threads = int(said.group(1)) if said else None
    shutil.rmtree(clone / "runs", ignore_errors=True)
    one = _timed([str(clone / ".venv" / "bin" / "tailscope"), "demo", "--threads", "1", "--runs-dir", "runs-1"],
                 clone, env, log)
    import torch

    result = {
        "command": "python benchmarks/bench_demo.py",
        "commit": commit,
        "setup_s": round(setup, 1),
        "demo_s": round(demo, 1),
        "total_s": round(setup + demo, 1),
        "demo_threads": auto_threads,
        "demo_one_thread_s": round(one, 1),
        "one_thread_vs_chosen": round(one / demo, 2),
        "machine": {"cores": os.cpu_count(), "busy_cores_at_start": round(busy, 2), 
                    "torch": torch.__version__, "python": sys.version.split()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def loaded(out: Path) -> None:
    from tailscope.cli._common import _busy_cores, choose_threads

    import torch

    cores = os.cpu_count() or 1
    busy = _busy_cores(1.0)
    chosen, _ = choose_threads(None)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TAILSCOPE_THREADS")}
    work = Path(tempfile.mkdtemp(prefix="tailscope-demo-loaded-"))
    tailscope = str(Path(sys.executable).parent / "tailscope")
    small = ["demo", "--limit", "2", "--budget", "100"]
    times: dict[str, float | None] = {}
    for label, threads in (("chosen", []), ("all_cores", ["--threads", str(cores)])):
        # the second run is stopped at 10x the first: enough to show a collapse without waiting it out
        limit = None if label == "chosen" else 10 * times["chosen"]
        times[label] = _timed([tailscope, *small, *threads, "--runs-dir", f"runs-{label}", "--out", f"rep-{label}"],
                              work, env, work / "log.txt", timeout=limit)
    said = re.search(r"done in \d+ s \((\d+) torch thread", (work / "log.txt").read_text())
    chosen = int(said.group(1)) if said else chosen  # what the demo itself chose
    result = {"command": "python benchmarks/bench_demo.py --loaded", "demo": " ".join(small),
              "chosen_threads": chosen, "chosen_s": round(times["chosen"], 1),
              "all_cores_threads": cores,
              "all_cores_s": None if times["all_cores"] is None else round(times["all_cores"], 1),
              "all_cores_stopped_after_s": None if times["all_cores"] is not None else round(10 * times["chosen"], 1),
              "all_cores_vs_chosen": None if times["all_cores"] is None else round(times["all_cores"] / times["chosen"], 2),
              "machine": {"cores": cores, "busy_cores_at_start": round(busy, 2), "busy_cores_at_end": round(_busy_cores(1.0), 2),
                          "torch": torch.__version__}}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
