"""Sampling on many workers with Ray: one driver (the only writer of the run store), many pairs.

:class:`RaySampler` has the interface of :class:`~tailscope.sampling.PathSampler` that the run
store and the estimators use (``iter_batches``, ``sample``, ``scorer``, the settings), so every
estimator and every store guarantee works unchanged on a cluster: the store asks for exactly the
missing rollouts, the sampler cuts them into units (one sampler batch each), Ray workers each
holding one model pair sample them, and the driver commits each unit as it lands. Adaptive choices
(path walks, switch searches) stay on the driver. Needs the ``ray`` extra: ``pip install
'tailscope[ray]'``. See docs/scale.md.
"""

from ._pool import RaySampler, WorkerStats
from ._scorer import RemoteScorer
from ._spec import PairSpec, SamplerSettings, WorkerError, WorkerLoadError, require_ray

__all__ = [
    "PairSpec",
    "RaySampler",
    "RemoteScorer",
    "SamplerSettings",
    "WorkerError",
    "WorkerLoadError",
    "WorkerStats",
    "require_ray",
]
