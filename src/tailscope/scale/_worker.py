"""The worker: one process holding one model pair and a PathSampler, driven by the pool.

The class is plain Python; the pool turns it into a Ray actor (``ray.remote(SamplerWorker)``) so
that importing :mod:`tailscope.scale` needs no Ray. A worker never touches the run store: it gets
units (a batch of requests at one proposal) and returns their rollouts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from ._spec import PairSpec, SamplerSettings, WorkerLoadError

__all__ = ["SamplerWorker"]


class SamplerWorker:
    """Loads its pair on first use (so a load failure is an error of a call, which the pool can
    name), then samples units and scores completions.

    Args:
        index: the worker's slot in the pool (for messages and throughput).
        spec, settings: what to load and how to sample.
        device: this worker's device (``cuda`` when it was given GPUs).
        threads: torch threads for this process, when the caller chose a number.
    """

    def __init__(self, index: int, spec: PairSpec, settings: SamplerSettings, device: str = "cpu",
                 threads: int | None = None):
        if threads is not None:  # this process's own setup, asked for by the caller
            import torch

            torch.set_num_threads(int(threads))
        self.index, self.spec, self.settings, self.device = index, spec, settings, device
        self._sampler: Any = None

    def where(self) -> str:
        return f"worker {self.index} (pid {os.getpid()} on {socket.gethostname()})"

    def _loaded(self) -> Any:
        if self._sampler is None:
            from ..models import ModelPair
            from ..sampling import PathSampler

            which, name = "reference", self.spec.reference
            try:
                reference = self.spec.load_reference(self.device)
                which, name = "target", self.spec.target
                target = self.spec.load_target(self.device, reference)
                which, name = "pair", f"{self.spec.reference} + {self.spec.target}"
                pair = ModelPair(reference, target)
            except Exception as e:  # any failure to load is reported the same way, with its cause
                raise WorkerLoadError(f"{self.where()} could not load the {which} model {name!r} on "
                                      f"{self.device}: {type(e).__name__}: {e}") from None
            self._sampler = PathSampler(pair, **self.settings.kwargs())
        return self._sampler

    def load(self) -> dict[str, Any]:
        """Load the pair; return the run-config settings it fixes (weights fingerprints and all)."""
        from ..store import sampler_settings

        return sampler_settings(self._loaded())

    def sample(self, requests: Sequence[Any], proposal: str, grid: tuple[float, ...]) -> tuple[list[Any], float]:
        """One unit: exactly one sampler batch. Returns its rollouts and the seconds it took."""
        sampler = self._loaded()
        start = time.perf_counter()
        (batch,) = list(sampler.iter_batches(list(requests), proposal, logprob_grid=grid))
        return batch, time.perf_counter() - start

    def token_logprobs(self, prompts: Sequence[Any], completions: Sequence[Sequence[int]],
                       alphas: Sequence[float], proposals: Sequence[str], batch_size: int) -> list[Any]:
        """Teacher-forced per-token log-probabilities (see :meth:`~tailscope.scoring.Scorer.token_logprobs`)."""
        scorer = self._loaded().scorer(batch_size=batch_size)
        return scorer.token_logprobs(list(prompts), list(completions), list(alphas), list(proposals))
