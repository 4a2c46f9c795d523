"""RunStore: one SQLite file per run holding its config, rollouts, verdicts and estimates.

The store is the cache of every estimator: :meth:`RunStore.get_or_sample` returns the stored
rollouts of a (prompt, proposal) first and samples only the missing seed indices, committing each
batch as it lands. A run killed at any moment (kill -9) loses at most the batch in flight; rerunning
the same call resumes it, and since a rollout depends only on (seed, proposal, prompt, seed index),
the result equals an uninterrupted run's. The file is in WAL mode, so readers (``tailscope runs
show``, another estimator) can read while a run writes.
"""

from ._config import ConfigMismatchError, RunStoreError, config_differences, run_config, sampler_settings
from ._db import list_runs, resolve_run
from ._runstore import RunStore

__all__ = [
    "ConfigMismatchError",
    "RunStore",
    "RunStoreError",
    "config_differences",
    "list_runs",
    "resolve_run",
    "run_config",
    "sampler_settings",
]
