"""A causal LM seen as a function of its input tokens, with every model call counted.

METHODS.md §3 needs three views of a model M on inputs x of fixed length: the last position's
logits, the gradient of the target logit M_t(x) with respect to the one-hot input (taken
through ``inputs_embeds`` = one-hot @ embedding matrix), and the final activation that the
unembedding multiplies. Each forward pass over one input counts as one call and each backward
pass as one more, so that every estimator can be held to the same budget.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

__all__ = ["BudgetExceededError", "LowProbModel", "TargetGrad"]


class BudgetExceededError(RuntimeError):
    """An estimator asked for more model calls than its budget allows."""


@dataclass(frozen=True)
class TargetGrad:
    """Forward-and-backward results for a batch of inputs (n of them, length k, vocab V)."""

    target_logit: torch.Tensor  # (n,) float64
    argmax: torch.Tensor  # (n,) long
    grad: torch.Tensor  # (n, k, V) float32: dM_t / d onehot(x)[i, v]


def _compiled(fn):
    """``torch.compile(fn)``, falling back to ``fn`` for good the first time compilation fails."""
    state = {"fn": None}

    def call(x: torch.Tensor) -> torch.Tensor:
        if state["fn"] is None:
            state["fn"] = torch.compile(fn, dynamic=False)
        if state["fn"] is fn:
            return fn(x)
        try:
            return state["fn"](x)
        except Exception as exc:  # noqa: BLE001 - any backend failure (also on a new shape) means eager mode
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); using eager mode",
                          stacklevel=2)
            state["fn"] = fn
            return fn(x)

    return call


class LowProbModel:
    """Wrap a transformers causal LM (or any module with the same calling convention).

    Args:
        model: a causal LM accepting ``input_ids`` or ``inputs_embeds`` and returning ``.logits``;
            it must expose ``get_input_embeddings()`` and ``get_output_embeddings()``.
        batch_size: inputs per forward pass.
        budget: the most calls allowed before :class:`BudgetExceededError`; None for no limit.
        lean: compute ``logits``/``argmax`` of plain Llama models with
            :class:`~tailscope.lowprob.fastpath.LlamaLastLogits` (same function, 1.3-1.8x faster than
            the transformers forward at the same batch on the benchmark models); other models use their own forward.
        compile: also ``torch.compile`` that lean forward (another 1.4-1.5x; needs a C++ compiler, and
            falls back to eager mode when compilation fails).
    """

    def __init__(self, model, *, batch_size: int = 4096, budget: int | None = None, lean: bool = False,
                 compile: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` (={batch_size}) must be a positive integer")
        self.model = model.eval()
        self.batch_size = batch_size
        self.budget = budget
        self.calls = 0
        self._unembed = model.get_output_embeddings()
        if self._unembed is None or not hasattr(self._unembed, "weight"):
            raise ValueError(f"{type(model).__name__} has no output embedding (`get_output_embeddings()` is None)")
        self._param_dtype = next(model.parameters()).dtype
        self._lean = None
        if lean:
            from .fastpath import LlamaLastLogits, supports

            if supports(model):
                lean_model = LlamaLastLogits(model)
                self._lean = lean_model
                if compile:
                    self._lean = _compiled(lean_model)

    @property
    def embedding(self) -> torch.Tensor:
        """The input embedding matrix (V_in, d)."""
        return self.model.get_input_embeddings().weight

    @property
    def unembedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_U of shape (V, d), bias of shape (V,)) so that logits = act @ W_Uᵀ + bias, float64."""
        weight = self._unembed.weight.detach().to(torch.float64)
        bias = getattr(self._unembed, "bias", None)
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
        return weight, bias

    @property
    def vocab_size(self) -> int:
        return self._unembed.weight.shape[0]

    @property
    def input_vocab_size(self) -> int:
        return self.embedding.shape[0]

    def reset(self, budget: int | None = None) -> None:
        """Set the call counter to zero with a new budget."""
        self.calls = 0
        self.budget = budget

    def _charge(self, n: int) -> None:
        if self.budget is not None and self.calls + n > self.budget:
            raise BudgetExceededError(f"{self.calls} calls used, {n} more requested, budget is {self.budget}")
        self.calls += n

    def _forward(self, **kwargs) -> torch.Tensor:
        if self._lean is not None and set(kwargs) == {"input_ids"}:
            return self._lean(kwargs["input_ids"])
        try:
            out = self.model(**kwargs, logits_to_keep=1)
        except TypeError:  # models without `logits_to_keep`
            out = self.model(**kwargs)
        return out.logits[:, -1, :]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Last-position logits (n, V) as float32; n calls."""
        self._charge(len(x))
        chunks = []
        # the lean path runs under no_grad: inference tensors do not mix with torch.compile
        with torch.no_grad() if self._lean is not None else torch.inference_mode():
            for xb in x.split(self.batch_size):
                chunks.append(self._forward(input_ids=xb).float())
        return torch.cat(chunks)

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        """The temperature-0 next token for each input (n,); n calls."""
        return self.logits(x).argmax(-1)

    def activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final pre-unembedding activations (n, d), logits (n, V)), both float64; n calls.

        The activation is read with a hook on the unembedding's input, so it is exactly the vector
        that the unembedding multiplies (after the final norm), for any architecture.
        """
        self._charge(len(x))
        seen: list[torch.Tensor] = []
        handle = self._unembed.register_forward_hook(lambda _m, args, _out: seen.append(args[0][:, -1, :]))
        acts, logits = [], []
        try:
            with torch.inference_mode():
                for xb in x.split(self.batch_size):
                    logits.append(self._forward(input_ids=xb).to(torch.float64))
                    acts.append(seen.pop().to(torch.float64))
        finally:
            handle.remove()
        return torch.cat(acts), torch.cat(logits)

    def target_grad(self, x: torch.Tensor, target: int) -> TargetGrad:
        """M_t(x), argmax and dM_t/d onehot(x) for each input; 2n calls (forward and backward)."""
        if not 0 <= target < self.vocab_size:
            raise ValueError(f"`target` (={target}) is not a token id of a {self.vocab_size}-token model")
        self._charge(2 * len(x))
        weight = self.embedding.detach()
        values, argmaxes, grads = [], [], []
        for xb in x.split(self.batch_size):
            onehot = torch.nn.functional.one_hot(xb, weight.shape[0]).to(self._param_dtype).requires_grad_(True)
            with torch.enable_grad():
                logits = self._forward(inputs_embeds=onehot @ weight)
                (grad,) = torch.autograd.grad(logits[:, target].sum(), onehot)
            values.append(logits[:, target].detach().to(torch.float64))
            argmaxes.append(logits.detach().argmax(-1))
            grads.append(grad.float())
        return TargetGrad(torch.cat(values), torch.cat(argmaxes), torch.cat(grads))
