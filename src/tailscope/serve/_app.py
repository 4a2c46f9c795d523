"""The OpenAI-compatible HTTP API over one :class:`~tailscope.serve.Engine` (FastAPI).

Routes: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (both with ``stream: true`` as server-sent events), ``GET /health``.
Every failure is an OpenAI-style error body with its status; a bad request never reaches the
models and never stops the server.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as _e:  # the server is an optional extra
    from ._errors import missing_extra

    raise missing_extra(_e.name or "fastapi") from None

from ._engine import Engine
from ._errors import ServeError
from ._format import Formatter
from ._jobs import ChoiceDone, JobDone, JobFailed, TokenEvent
from ._protocol import ChatRequest, CompletionRequest

__all__ = ["create_app"]


def _sse(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


def create_app(engine: Engine, *, api_key: str | None = None):
    """A FastAPI app serving ``engine`` (started with the app, and stopped with it unless it was running before).

    With ``api_key``, every ``/v1`` request needs ``Authorization: Bearer <api_key>``.
    """
    @asynccontextmanager
    async def lifespan(_app):
        owned = not engine.running  # an engine the app started, the app stops (after its batch ends)
        engine.start()
        yield
        if owned:
            engine.close()

    app = FastAPI(title="tailscope", summary=f"the logit path of {engine.name}", lifespan=lifespan)

    def error(e: ServeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(ServeError)
    async def _serve_error(_request, e: ServeError):
        return error(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(ServeError(400, f"invalid request: {where or 'body'}: {first.get('msg', 'malformed')}",
                                param=where or None))

    @app.exception_handler(HTTPException)
    async def _http(_request, e: HTTPException):
        return error(ServeError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None))

    @app.exception_handler(Exception)
    async def _crash(_request, e: Exception):
        return error(ServeError(500, f"internal error: {type(e).__name__}: {e}"))

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), api_key):
            raise ServeError(401, "missing or wrong API key: send `Authorization: Bearer <key>` (the key the "
                             "server was started with)", code="invalid_api_key")

    def model_card() -> dict[str, Any]:
        return {"id": engine.name, "object": "model", "created": 0, "owned_by": "tailscope",
                "tailscope": {"alpha": engine.alpha, "reference": engine.pair.reference.name,
                              "target": engine.pair.target.name, "context_length": engine.context_length}}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "batches": engine.batches, "waiting": engine.waiting}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorized)])
    async def model(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return model_card()

    def check_model(name: str) -> None:
        if name != engine.name:
            raise ServeError(404, f"model {name!r} is not served here; this server serves {engine.name!r} "
                             "(see /v1/models)", code="model_not_found", param="model")

    async def generate(kind: str, req: CompletionRequest | ChatRequest):
        check_model(req.model)
        specs = req.specs(alpha=engine.alpha, max_tokens=engine.max_tokens)
        n = specs[0].n
        fmt = Formatter(kind, engine.name, specs[0].alpha, engine.token_text, specs[0].logprobs)
        events = engine.events(*specs, fit=req.asked_max_tokens is None)
        if not req.stream:
            done: list[tuple[int, Any]] = []
            prompt_tokens = 0
            try:
                async for k, event in events:
                    if isinstance(event, JobFailed):
                        raise event.error
                    if isinstance(event, ChoiceDone):
                        done.append((k * n + event.choice.index, event.choice))
                    elif isinstance(event, JobDone):
                        prompt_tokens += event.prompt_tokens
            finally:
                await events.aclose()
            return fmt.response(sorted(done, key=lambda d: d[0]), prompt_tokens)
        # wait for the first event so a request that fails at once gets its status, not a broken stream
        first = await anext(events)
        if isinstance(first[1], JobFailed):
            await events.aclose()
            raise first[1].error
        return StreamingResponse(stream(fmt, n, first, events, req.include_usage), media_type="text/event-stream")

    async def stream(fmt: Formatter, n: int, first, events: AsyncIterator, include_usage: bool):
        offsets: dict[int, int] = {}
        prompt_tokens = completion_tokens = 0
        if fmt.kind == "chat":
            for i in range(n):
                yield _sse(fmt.chunk(i, "", role=True))

        async def all_events():
            yield first
            async for item in events:
                yield item

        try:
            async for k, event in all_events():
                if isinstance(event, TokenEvent):
                    index = k * n + event.choice
                    completion_tokens += 1
                    yield _sse(fmt.chunk(index, event.text, token=event.token_id, logprob=event.logprob,
                                         top=event.top, offset=offsets.get(index, 0)))
                    offsets[index] = offsets.get(index, 0) + len(event.text)
                elif isinstance(event, ChoiceDone):
                    index = k * n + event.choice.index
                    if event.rest:
                        yield _sse(fmt.chunk(index, event.rest))
                    yield _sse(fmt.chunk(index, "", finish=event.choice))
                elif isinstance(event, JobDone):
                    prompt_tokens += event.prompt_tokens
                elif isinstance(event, JobFailed):
                    yield _sse(event.error.body())
                    return
            if include_usage:
                yield _sse(fmt.usage_chunk(prompt_tokens, completion_tokens))
            yield b"data: [DONE]\n\n"
        finally:
            await events.aclose()

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(req: CompletionRequest):
        return await generate("completion", req)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(req: ChatRequest):
        return await generate("chat", req)

    return app
