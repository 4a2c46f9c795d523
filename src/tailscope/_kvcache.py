"""The KV cache of the decoding loop: transformers' cache API, and a cache that grows in place.

:func:`forward_step` and :func:`output_cache` speak the cache API of the installed transformers:
the ``cache`` keyword and output field where the model has them (transformers ≥ 5.2x, where
``past_key_values`` is deprecated and removed in 5.40), ``past_key_values`` before.

:func:`preallocate` is the sampler's answer to O(length²) concatenation.

:func:`compiled_forward` is the opt-in ``torch.compile`` of a model's forward for the decode steps
(dynamic shapes: rows drop and the cache grows without recompiling each step).

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, copying the
whole cache every token. After the prompt is prefilled, :func:`preallocate` moves each layer's
keys and values into a buffer with room for the reply and switches the layer to an in-place
update. Caches of any other kind (older transformers, sliding windows, quantized caches) are left
as they are.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["cache_keyword", "compile_failed", "compiled_forward", "forward_step", "output_cache", "preallocate"]

_KEYWORD: dict[type, str] = {}
_COMPILED_ATTR = "_tailscope_compiled_forward"  # on a model: (backend, its compiled forward)


def cache_keyword(model: Any) -> str:
    """The name under which ``model.forward`` takes a KV cache: ``cache`` or ``past_key_values``."""
    kind = type(model)
    if kind not in _KEYWORD:
        params = inspect.signature(model.forward).parameters
        _KEYWORD[kind] = "cache" if "cache" in params else "past_key_values"
    return _KEYWORD[kind]


def forward_step(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any = None,
                 *, forward: Callable[..., Any] | None = None):
    """One forward pass with a KV cache: a prefill when ``cache`` is None, else a decode step;
    ``forward`` stands in for the model's own call (:func:`compiled_forward`)."""
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
    if cache is not None:
        kwargs[cache_keyword(model)] = cache
    return (forward or model)(**kwargs)


def compiled_forward(model: Any, *, backend: Any = None) -> Callable[..., Any]:
    """``torch.compile(model.forward, dynamic=True)``, made once per model and shared by every sampler
    of it (``backend``: torch.compile's, default inductor; None takes the one the model was compiled
    with). If compiling fails, the model decodes eagerly from then on and the error is raised
    (:func:`compile_failed` tells it apart): part of the step may have run and written to the cache,
    so the caller draws the whole batch again (the sampler does).

    The first calls compile (minutes on a CPU); the compiled kernels agree with eager ones to float
    rounding, not bit for bit."""
    made = getattr(model, _COMPILED_ATTR, None)
    if made is not None:
        if backend is not None and made[0] != backend:
            raise ValueError(f"this model's decode step is already compiled with backend {made[0]!r}, not {backend!r}")
        return made[1]
    if not isinstance(model, torch.nn.Module):  # a role of a shared base switches adapters in Python
        raise ValueError(f"torch.compile of the decode step needs a plain model, not {type(model).__name__}; "
                         "load the pair with share=False to compile it")
    backend = "inductor" if backend is None else backend
    eager, compiled = model.forward, torch.compile(model.forward, dynamic=True, backend=backend)
    failed = False

    def forward(**kwargs: Any) -> Any:
        nonlocal failed
        if failed:  # compilation failed earlier: eager from then on
            return eager(**kwargs)
        try:
            return compiled(**kwargs)
        except Exception as exc:
            if compile_failed(exc):  # tracing or code generation: eager from now on, said once
                warnings.warn(f"torch.compile of the decode step failed ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); decoding eagerly", stacklevel=2)
                failed = True
            raise

    # kept on the model itself: the closure refers to the model, a cycle the collector frees with it
    object.__setattr__(model, _COMPILED_ATTR, (backend, forward))
    return forward


def compile_failed(error: BaseException) -> bool:
    """Whether ``error`` is torch.compile failing to compile (not an error of the computation itself)."""
    dynamo = getattr(getattr(torch, "_dynamo", None), "exc", None)
    return dynamo is not None and isinstance(error, dynamo.TorchDynamoException)


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned, under either field name."""
    return out["cache"] if "cache" in out.keys() else out["past_key_values"]

try:  # transformers >= 4.56 keeps per-layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers: no preallocation
    DynamicLayer = None  # type: ignore[assignment,misc]


if DynamicLayer is not None:

    class _GrowingLayer(DynamicLayer):  # type: ignore[misc,valid-type]
        """A dynamic layer whose keys/values are views into a buffer with spare room."""

        def _adopt(self, room: int) -> None:
            n = self.keys.shape[-2]
            shape = (*self.keys.shape[:-2], n + room, self.keys.shape[-1])
            self._kbuf = self.keys.new_empty(shape)
            self._vbuf = self.values.new_empty((*self.values.shape[:-2], n + room, self.values.shape[-1]))
            self._kbuf[..., :n, :] = self.keys
            self._vbuf[..., :n, :] = self.values
            self._n = n
            self._view()

        def _view(self) -> None:
            self.keys = self._kbuf[..., : self._n, :]
            self.values = self._vbuf[..., : self._n, :]

        def update(self, key_states, value_states, *args, **kwargs):
            k = key_states.shape[-2]
            if self._n + k > self._kbuf.shape[-2]:  # out of room: grow by doubling
                self._adopt_grow(self._n + k)
            self._kbuf[..., self._n : self._n + k, :] = key_states
            self._vbuf[..., self._n : self._n + k, :] = value_states
            self._n += k
            self._view()
            return self.keys, self.values

        def _adopt_grow(self, need: int) -> None:
            cap = max(need, 2 * self._kbuf.shape[-2])
            kb = self._kbuf.new_empty((*self._kbuf.shape[:-2], cap, self._kbuf.shape[-1]))
            vb = self._vbuf.new_empty((*self._vbuf.shape[:-2], cap, self._vbuf.shape[-1]))
            kb[..., : self._n, :] = self._kbuf[..., : self._n, :]
            vb[..., : self._n, :] = self._vbuf[..., : self._n, :]
            self._kbuf, self._vbuf = kb, vb

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._kbuf = self._kbuf[indices, ...]
            self._vbuf = self._vbuf[indices, ...]
            self._view()

        def crop(self, max_length: int) -> None:
            if max_length < 0:
                max_length = self._n - abs(max_length)
            self._n = min(self._n, max_length)
            self._view()


def preallocate(cache, room: int) -> bool:
    """Give every plain dynamic layer of ``cache`` room for ``room`` more positions; True if it did."""
    layers = getattr(cache, "layers", None)
    if DynamicLayer is None or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    if any(not getattr(layer, "is_initialized", False) or layer.keys.dim() != 4 for layer in layers):
        return False
    for layer in layers:
        layer.__class__ = _GrowingLayer
        layer._adopt(room)
    return True
