"""FastAPI mapping of the Service: `python -m backend.transport.server [--host 127.0.0.1] [--port 8765]
[--checkpoints DIR] [--data DIR] [--token TOKEN]`.

One route per operation, built from its declaration (backend.service.api): GET with query parameters
for reads, POST with a pydantic body made from the operation's signature for actions (the upload takes
the raw file bytes or a multipart form with one file; the size cap is enforced while reading).
Errors: ValueError -> 400, unknown ids (NotFoundError) -> 404, a body that fails validation (or
holds a non-finite number) -> 422, an upload or JSON body over its cap -> 413, a full queue
(BusyError) -> 429 with Retry-After, a request past its deadline -> 503; each with a short readable
"detail" string (bad input is quoted by a short prefix only) and each listed in the OpenAPI schema.

Sharing one server (a classroom): heavy routes run in their own thread pool under a work scope
(backend.service.flight): the session is the X-RobustLens-Session header (else the client's address),
attack lab routes are interactive and the many-image ones (embed, curves, class visualisation)
background, so the device lock serves predicts first; a client that disconnects cancels what it
started within one batch, and a synchronous request that would take minutes on a CPU is refused
(backend.service.budget) with a pointer to the task API. Arrays travel as
{"dtype","shape","b64"} (see backend.transport.codec). The server binds to 127.0.0.1 unless told
otherwise, and refuses a non-local bind without a bearer token (ROBUSTLENS_TOKEN or --token); with a
token set, every route except GET /health needs `Authorization: Bearer <token>`.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import math
import os
import threading
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from backend import __version__
from backend.core.errors import BusyError, Cancelled, DeadlineExceeded, NotFoundError, short
from backend.core.runtime import quiet_openmp
from backend.service import api, budget, flight
from backend.transport.codec import to_wire
from backend.transport.http_guard import (
    ERROR_RESPONSES,
    Admission,
    Guard,
    TooLarge,
    error_response,
    read_upload,
    readable_errors,
    session_of,
)

# None of the imports above loads torch; the Service does: idle OpenMP threads must sleep instead
# of spinning (on a shared CPU spinning workers of one process stall the others' compute).
quiet_openmp()

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MIN_TOKEN_CHARS = 16            # a non-local bind needs a token nobody guesses

class WireResponse(JSONResponse):
    """JSON with numpy arrays encoded by to_wire (routes return it directly, so FastAPI's own
    encoder, which knows no numpy, is bypassed); NaN allowed (a rank correlation of a constant map
    is NaN, and the Python client reads it back as NaN, the same as in-process)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(to_wire(content), allow_nan=True, separators=(",", ":")).encode()


def create_app(service=None, token: str | None = None, max_upload_bytes: int | None = None, *,
               request_timeout_s: float | None = None, max_inflight: int | None = None,
               max_per_session: int | None = None, **service_kwargs) -> FastAPI:
    """The FastAPI app over `service` (default: Service(**service_kwargs)). token: require
    `Authorization: Bearer <token>` on every route except /health. request_timeout_s: deadline of
    one heavy request (default $ROBUSTLENS_REQUEST_TIMEOUT_S or 60; longer work belongs in a task);
    max_inflight / max_per_session: heavy requests in progress before 429 (default
    $ROBUSTLENS_MAX_INFLIGHT or 64, $ROBUSTLENS_MAX_PER_SESSION or 8)."""
    if service is None:
        from backend.service import Service

        service = Service(**service_kwargs)
    svc = service
    cap = int(max_upload_bytes or svc.limits()["upload"]["max_bytes"])
    timeout_s = float(request_timeout_s or os.environ.get("ROBUSTLENS_REQUEST_TIMEOUT_S") or 60)
    admission = Admission(int(max_inflight or os.environ.get("ROBUSTLENS_MAX_INFLIGHT") or 64),
                          int(max_per_session or os.environ.get("ROBUSTLENS_MAX_PER_SESSION") or 8))
    # Heavy work gets its own threads: requests waiting for the device never take the threads that
    # /health, /models or a task's status need.
    limiter = anyio.CapacityLimiter(admission.total)
    app = FastAPI(title="RobustLens backend", version=__version__, default_response_class=WireResponse,
                  description="HTTP mapping of backend.service.Service (see docs/ARCHITECTURE.md).",
                  responses=ERROR_RESPONSES)
    app.state.service, app.state.admission = svc, admission
    app.add_middleware(Guard, token=token)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError):
        return error_response(404, str(exc))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return error_response(400, str(exc))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return error_response(413, str(exc))

    @app.exception_handler(BusyError)
    async def busy(request: Request, exc: BusyError):
        return error_response(429, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})

    @app.exception_handler(Cancelled)
    async def stopped(request: Request, exc: Cancelled):
        return error_response(503, str(exc) if isinstance(exc, DeadlineExceeded) else f"stopped: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods; list them all
            # the routes of the first path template that matches (GET /images/{image_id} also
            # matches /images/upload, but that resource is the POST route's)
            hits = [r for r in app.router.routes if r.matches(request.scope)[0] != Match.NONE]
            path = getattr(hits[0], "path", None) if hits else None
            methods = {m for r in hits if getattr(r, "path", None) == path for m in (getattr(r, "methods", None) or ())}
            headers["Allow"] = ", ".join(sorted(methods))
        return error_response(exc.status_code, str(exc.detail), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return error_response(422, readable_errors(exc.errors()))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    async def heavy(request: Request, priority: int, fn):
        """fn() on the heavy-work threads under a scope (priority, the request's session, a
        deadline); when the client disconnects, the scope is cancelled and the work stops at its
        next check (between batches, or while it waits for the device)."""
        session = session_of(request)
        admission.enter(session)
        stop = threading.Event()

        def work():
            with flight.scope(priority, session, stop, timeout_s):
                return fn()

        def finished(t: asyncio.Future) -> None:
            admission.leave(session)
            if not t.cancelled():
                t.exception()  # retrieved: an abandoned request's Cancelled is expected, not an error

        job = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
        job.add_done_callback(finished)
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=0.1)
                if done:
                    return WireResponse(job.result())
                if await request.is_disconnected():
                    stop.set()
                    log.info("client left %s (session %s): its work is cancelled", request.url.path, session)
                    return JSONResponse({"detail": "client disconnected"}, status_code=499)
        except asyncio.CancelledError:  # the server is shutting down, or the connection task went away
            stop.set()
            raise

    def sync_budget(kind: str, params: dict) -> None:
        svc.validate(kind, params)  # the cheap checks first: a bad value is a 400 naming it
        budget.check_sync(svc, kind, params, timeout_s)

    @app.get("/health")
    def health():
        return {"ok": True, "version": __version__, "auth": bool(token)}

    priority = {api.INTERACTIVE: flight.INTERACTIVE, api.BACKGROUND: flight.BACKGROUND}

    def route(op: api.Operation) -> None:
        """The route of one declared operation: path parameters, then query parameters (GET, and the
        upload's), or a JSON body (POST); the work runs by its cost class."""
        async def endpoint(request: Request, **kw):
            body = kw.pop("body", None)
            args = {**kw, **(body.model_dump() if body is not None else {})}
            if op.raw is not None:
                args[op.raw] = await read_upload(request, cap)
            if op.budget:
                await run_in_threadpool(sync_budget, op.name, args)
            fn = getattr(svc, op.name)
            if op.cost == api.LIGHT:  # no device work: a plain thread, as the caller's session (tasks take turns)
                def light():
                    with flight.scope(session=session_of(request)):
                        return fn(**args)
                out = await run_in_threadpool(light)
                return WireResponse({op.wrap: out} if op.wrap else out)
            return await heavy(request, priority[op.cost], lambda: fn(**args))

        P = inspect.Parameter
        params = [P("request", P.POSITIONAL_OR_KEYWORD, annotation=Request)]
        for name in op.path_params:
            params.append(P(name, P.KEYWORD_ONLY, annotation=str))
        if op.verb == "GET" or op.raw is not None:
            for name in op.wire_params:
                if name not in op.path_params and name != op.raw:
                    params.append(P(name, P.KEYWORD_ONLY, annotation=op.hints.get(name, str),
                                    default=op.signature.parameters[name].default))
        elif set(op.wire_params) - set(op.path_params):
            params.append(P("body", P.KEYWORD_ONLY, annotation=op.body_model()))
        endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        endpoint.__name__ = op.name
        app.add_api_route(op.path, endpoint, methods=[op.verb], name=op.name, description=op.doc)

    for op in api.operations().values():
        if op.path is not None:
            route(op)

    return app


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-local bind without a token of at least MIN_TOKEN_CHARS non-blank characters
    (anyone on the network could run the backend, and a short token is guessed)."""
    if host in LOCAL_HOSTS:
        return
    if not token or not token.strip():
        raise SystemExit(f"refusing to bind to {short(host, 60)} without a bearer token: set ROBUSTLENS_TOKEN or "
                         "pass --token (or bind to 127.0.0.1)")
    if token != token.strip() or any(c.isspace() for c in token) or len(token) < MIN_TOKEN_CHARS:
        raise SystemExit(f"refusing to bind to {short(host, 60)}: the bearer token must be at least "
                         f"{MIN_TOKEN_CHARS} characters with no spaces (got {len(token)}); e.g. "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(24))'`")


PREWARM = "app.session.prewarm:start"  # the app's home view and Lesson (its policy lives in the app)


def build(argv: list[str] | None = None):
    """(args, service, app, the prewarm thread or None) from the command line, nothing served yet."""
    p = argparse.ArgumentParser(prog="python -m backend.transport.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--checkpoints", default=None, help="checkpoints folder (default $ROBUSTLENS_CHECKPOINTS "
                                                       "or <repo>/checkpoints)")
    p.add_argument("--data", default=None, help="data root (default $RSUPCON_DATA or ../shared)")
    p.add_argument("--token", default=None, help="bearer token (default $ROBUSTLENS_TOKEN)")
    p.add_argument("--prewarm", default=PREWARM,
                   help="module:function called at launch with an in-process client, returning a thread: the "
                        f"views a client will ask for first, computed into the caches (default {PREWARM}; "
                        "'none': nothing)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    token = args.token or os.environ.get("ROBUSTLENS_TOKEN") or None
    check_bind(args.host, token)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.service import Service, warm_up_enabled

    service = Service(checkpoint_root=args.checkpoints, data_root=args.data)
    prewarm = None
    if warm_up_enabled():
        service.warm_up()  # background: UMAP JIT and the reference maps' refits
        if args.prewarm != "none":
            from backend.transport.client import InProcessClient

            prewarm = _named(args.prewarm)(InProcessClient(service))
    return args, service, create_app(service, token=token), prewarm


def _named(ref: str):
    """The function `module:function` names. A name, not an import: the default is the app's policy
    (app.session.home), which the backend's layers do not import (tests/test_layers.py)."""
    import importlib

    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise SystemExit(f"--prewarm {ref!r}: no such function ({e})") from None


def main(argv: list[str] | None = None) -> None:
    args, _, app, _ = build(argv)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
