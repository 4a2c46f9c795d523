"""Where a model writes into its residual stream (METHODS.md §4).

Abliteration edits every matrix that writes into the residual stream: the token embedding (and
GPT-2's position embedding), every attention output projection and every MLP down projection.
They are found by the standard module names of two families:

* Llama, Qwen2/3, Mistral, Gemma: ``model.embed_tokens``, ``model.layers[i].self_attn.o_proj``,
  ``model.layers[i].mlp.down_proj`` (``nn.Linear``, weight ``(out, in)``);
* GPT-2: ``transformer.wte``, ``transformer.wpe``, ``transformer.h[i].attn.c_proj``,
  ``transformer.h[i].mlp.c_proj`` (``Conv1D``, weight ``(in, out)``).

Embeddings are ``(vocab, hidden)``. Anything else is refused with an error naming the module
that was looked for and not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ResidualLayout", "UnsupportedArchitectureError", "Writer", "residual_layout"]


class UnsupportedArchitectureError(ValueError):
    """The model does not have the modules abliteration knows how to edit."""


@dataclass(frozen=True)
class Writer:
    """One module whose output is added to the residual stream.

    ``residual_axis`` is the axis of ``module.weight`` that lives in the residual space: 0 for
    ``nn.Linear`` (out, in), 1 for GPT-2's ``Conv1D`` (in, out) and for embeddings (vocab, hidden).
    """

    name: str
    module: nn.Module
    residual_axis: int


@dataclass(frozen=True)
class ResidualLayout:
    """The decoder layers of a model and the modules that write into its residual stream."""

    family: str
    body: nn.Module
    layers: tuple[nn.Module, ...]
    writers: tuple[Writer, ...]
    embedding: nn.Module
    hidden_size: int
    approximate: str | None = None

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _get(root: nn.Module, path: str) -> nn.Module | None:
    node: Any = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _writer(model: nn.Module, name: str, cls: str) -> Writer:
    module = _get(model, name)
    if module is None:
        raise UnsupportedArchitectureError(
            f"{cls} has no module `{name}`: abliteration edits the modules that write into the residual "
            "stream and knows the Llama/Qwen/Mistral/Gemma names (model.layers[i].self_attn.o_proj, "
            "model.layers[i].mlp.down_proj) and the GPT-2 names (transformer.h[i].attn.c_proj, .mlp.c_proj)"
        )
    if isinstance(module, nn.Embedding):
        axis = 1
    elif isinstance(module, nn.Linear):
        axis = 0
    elif type(module).__name__ == "Conv1D":
        axis = 1
    else:
        raise UnsupportedArchitectureError(
            f"{cls}.{name} is a {type(module).__name__}; abliteration edits nn.Linear, GPT-2 Conv1D and "
            "nn.Embedding weights only"
        )
    return Writer(name, module, axis)


def residual_layout(model: nn.Module) -> ResidualLayout:
    """Find the decoder layers and the residual-stream writers of ``model``.

    Raises:
        UnsupportedArchitectureError: naming the module that was looked for and is missing.
    """
    cls = type(model).__name__
    for prefix in ("model", "model.language_model"):
        layers = _get(model, f"{prefix}.layers")
        if isinstance(layers, nn.ModuleList):
            body = _get(model, prefix)
            names = [f"{prefix}.embed_tokens"]
            for i in range(len(layers)):
                names += [f"{prefix}.layers.{i}.self_attn.o_proj", f"{prefix}.layers.{i}.mlp.down_proj"]
            writers = tuple(_writer(model, n, cls) for n in names)
            # Gemma 2/3 normalise each sublayer's output before adding it to the residual stream;
            # the norm's per-coordinate gain breaks the orthogonality the weight edit gives
            approximate = None
            if len(layers) and hasattr(layers[0], "post_feedforward_layernorm"):
                approximate = ("post-sublayer norms (Gemma 2/3) rescale each write per coordinate, so the "
                               "weight edit removes the direction only approximately")
            return ResidualLayout("llama", body, tuple(layers), writers, writers[0].module,
                                  writers[0].module.weight.shape[1], approximate)
    layers = _get(model, "transformer.h")
    if isinstance(layers, nn.ModuleList):
        names = ["transformer.wte", "transformer.wpe"]
        for i in range(len(layers)):
            names += [f"transformer.h.{i}.attn.c_proj", f"transformer.h.{i}.mlp.c_proj"]
        writers = tuple(_writer(model, n, cls) for n in names)
        return ResidualLayout("gpt2", _get(model, "transformer"), tuple(layers), writers, writers[0].module,
                              writers[0].module.weight.shape[1])
    raise UnsupportedArchitectureError(
        f"{cls} has neither `model.layers` (Llama, Qwen2/3, Mistral, Gemma) nor `transformer.h` (GPT-2): "
        "abliteration does not know which of its modules write into the residual stream"
    )
