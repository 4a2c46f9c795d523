"""Memory does not grow with the budget: requests are made a batch at a time, not all up front.

Each run is a subprocess that reports its own peak resident memory once its run store holds 512
rollouts, so both runs are measured at the same point of their work whatever the machine's load.
Before requests were streamed, a naive run at --budget 1e8 built 10^8 request objects (6.6 GB)
before it stored its first rollout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

STORED = 512  # rollouts in the run store when a run reports
DEADLINE = 300.0  # seconds a run is given to store them

_RUNNER = textwrap.dedent("""
    import glob, os, resource, sqlite3, sys, threading, time

    runs, stored, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])

    def count():
        total = 0
        for path in glob.glob(os.path.join(runs, "*.sqlite")):
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                    total += conn.execute("SELECT COUNT(*) FROM rollouts").fetchone()[0]
            except sqlite3.Error:
                pass
        return total

    def report():
        print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "STORED", count(), flush=True)
        os._exit(0)

    def watch():
        while time.time() < deadline and count() < stored:
            time.sleep(0.2)
        report()

    threading.Thread(target=watch, daemon=True).start()
    from tailscope.cli import app
    app(sys.argv[4:], standalone_mode=False)
    watch()
""")


def _peak_kb(runs: str, args: list[str]) -> int:
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TAILSCOPE_THREADS": "1", "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "TMPDIR")}}
    done = subprocess.run([sys.executable, "-c", _RUNNER, runs, str(STORED), str(DEADLINE), *args,
                           "--runs-dir", runs], capture_output=True, text=True, timeout=DEADLINE + 120, env=env)
    reports = [line.split() for line in done.stdout.splitlines() if line.startswith("PEAK_KB")]
    assert reports, done.stdout + done.stderr
    _, peak, _, stored = reports[0]
    assert int(stored) >= STORED, f"the run stored {stored} rollouts in {DEADLINE:.0f} s"
    return int(peak)


def test_naive_memory_is_flat_in_the_budget(tiny_dirs, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\n")
    common = ["estimate", "--method", "naive", "--reference", str(tiny_dirs["ref"]), "--target", str(tiny_dirs["tgt"]),
              "--prompts", str(prompts), "--judge", "regex:[aeiou]{2}", "--max-new-tokens", "4"]
    small = _peak_kb(str(tmp_path / "small"), [*common, "--budget", "1e3"])
    large = _peak_kb(str(tmp_path / "large"), [*common, "--budget", "1e8"])
    assert large < 2 * small, f"peak resident memory {large / 1024:.0f} MB at 1e8 vs {small / 1024:.0f} MB at 1e3"
