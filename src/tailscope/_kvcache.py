"""A KV cache that grows in place: the sampler's answer to O(length²) concatenation.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, copying the
whole cache every token. After the prompt is prefilled, :func:`preallocate` moves each layer's
keys and values into a buffer with room for the reply and switches the layer to an in-place
update. Caches of any other kind (older transformers, sliding windows, quantized caches) are left
as they are.
"""

from __future__ import annotations

import torch

__all__ = ["preallocate"]

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
