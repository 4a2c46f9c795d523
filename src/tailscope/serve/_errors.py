"""Errors a client can act on, in the OpenAI error shape (``{"error": {message, type, param, code}}``)."""

from __future__ import annotations

from typing import Any

__all__ = ["ServeError", "missing_extra"]


class ServeError(Exception):
    """A request the server will not run, or a failure while running it.

    ``status`` is the HTTP status (4xx: the request was at fault, and says how to fix it);
    ``code`` is a short machine-readable reason such as ``model_not_found``.
    """

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def missing_extra(package: str) -> ImportError:
    """The error for a missing optional dependency of the server and the inspect_ai provider."""
    return ImportError(f"`tailscope serve` needs the `{package}` package: pip install 'tailscope[serve]'")
