"""Start (and stop) vLLM's OpenAI-compatible server from its own environment, on 127.0.0.1.

``make engine-env`` builds that environment (.venv-engine: vLLM's CPU build pins its own
transformers). The server is started the way that works there, ``python -m
vllm.entrypoints.openai.api_server``, with the flags that make its samples and log-probabilities
the model's own: float32, log-probabilities after temperature, float64 sampling noise, and none of
the checkpoint's generation defaults.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ._base import EngineUnavailableError

__all__ = ["VLLMServer", "engine_python", "free_port"]

EXACT_FLAGS = ("--dtype", "float32", "--logprobs-mode", "processed_logprobs", "--use-fp64-gumbel",
               "--generation-config", "vllm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def engine_python(root: str | Path | None = None) -> Path:
    """The engine environment's python: $TAILSCOPE_ENGINE_PYTHON, else .venv-engine in ``root`` (the repo)."""
    env = os.environ.get("TAILSCOPE_ENGINE_PYTHON")
    path = Path(env) if env else Path(root or Path.cwd()) / ".venv-engine" / "bin" / "python"
    if not path.exists():
        raise EngineUnavailableError(f"no engine environment at {path}: run `make engine-env` (or set "
                                     "TAILSCOPE_ENGINE_PYTHON to a python that has vLLM)")
    return path


@dataclass
class VLLMServer:
    """A vLLM server process serving ``model`` (a checkpoint directory) as ``name``."""

    model: str
    name: str
    python: Path
    port: int = field(default_factory=free_port)
    log: Path | None = None
    max_model_len: int | None = None  # None: the checkpoint's own limit
    extra: tuple[str, ...] = ()
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 600.0) -> VLLMServer:
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model),
               "--served-model-name", self.name, "--host", "127.0.0.1", "--port", str(self.port),
               *(("--max-model-len", str(self.max_model_len)) if self.max_model_len else ()), *EXACT_FLAGS, *self.extra]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineUnavailableError(f"the vLLM server exited with code {self.process.returncode} "
                                             f"while starting (log: {self.log}){self._tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        raise EngineUnavailableError(f"the vLLM server did not come up in {timeout:.0f} s (log: {self.log})")

    def _tail(self, lines: int = 4) -> str:
        if not self.log or not Path(self.log).exists():
            return ""
        last = [x for x in Path(self.log).read_text(errors="replace").splitlines() if x.strip()][-lines:]
        return ":\n  " + "\n  ".join(last) if last else ""

    def stop(self) -> None:
        """Stop the server and its workers (it leads its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, 15)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, 9)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """Kill it at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(timeout=30)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
