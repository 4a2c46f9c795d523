"""Serving engines for the target-only part of decoding (docs/engines.md).

An :class:`Engine` continues token-id prefixes from one model at a temperature and returns the new
token ids with their log-probabilities. :class:`HybridSampler` puts one behind our loop: the
path-mixed opening of a switching proposal in the loop, the tail on the engine; the importance
weights stay exactly the loop's. Implementations: :class:`HTTPEngine` (any OpenAI-compatible
``/v1/completions`` server, several URLs load-balanced) and :class:`VLLMEngine` (``vllm.LLM``
in-process). Without an engine, :class:`~tailscope.sampling.PathSampler` itself is the fallback.
"""

from ._base import (
    Continuation,
    Engine,
    EngineError,
    EngineIdentityError,
    EngineRequestError,
    EngineResponseError,
    EngineUnavailableError,
    pure_sampling,
)
from ._http import HTTPEngine
from ._hybrid import HybridSampler, engine_route
from ._identity import check_identity, teacher_forced
from ._server import VLLMServer, engine_python, free_port
from ._spec import export_for_engine, make_engine
from ._vllm import VLLMEngine

__all__ = [
    "Continuation",
    "Engine",
    "EngineError",
    "EngineIdentityError",
    "EngineRequestError",
    "EngineResponseError",
    "EngineUnavailableError",
    "HTTPEngine",
    "HybridSampler",
    "VLLMEngine",
    "VLLMServer",
    "check_identity",
    "engine_python",
    "engine_route",
    "export_for_engine",
    "free_port",
    "make_engine",
    "pure_sampling",
    "teacher_forced",
]
