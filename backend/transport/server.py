"""FastAPI mapping of the Service: `python -m backend.transport.server [--host 127.0.0.1] [--port 8765]
[--checkpoints DIR] [--data DIR] [--token TOKEN]`.

One route per Service method: GET for reads, POST with a pydantic body for actions (the upload takes
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
from backend.service import budget, flight
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
from backend.transport.schemas import (
    AttackBody,
    CorruptionCurveBody,
    CorruptionViewBody,
    CurveBody,
    EmbedBody,
    ExplainBody,
    JobBody,
    LensBody,
    MetricsBody,
    PredictBody,
    SanityBody,
    TaskBody,
    ThumbnailsBody,
    VisBody,
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

    async def heavy(request: Request, priority: int, fn, *args):
        """fn(*args) on the heavy-work threads under a scope (priority, the request's session, a
        deadline); when the client disconnects, the scope is cancelled and the work stops at its
        next check (between batches, or while it waits for the device)."""
        session = session_of(request)
        admission.enter(session)
        stop = threading.Event()

        def work():
            with flight.scope(priority, session, stop, timeout_s):
                return fn(*args)

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
        svc._validate_task(kind, params)  # the cheap checks first: a bad value is a 400 naming it
        budget.check_sync(svc, kind, params, timeout_s)

    fg, bg = flight.INTERACTIVE, flight.BACKGROUND

    @app.get("/health")
    def health():
        return {"ok": True, "version": __version__, "auth": bool(token)}

    @app.get("/models")
    def list_models():
        return WireResponse(svc.list_models())

    @app.get("/models/{model_id}")
    def model_card(model_id: str):
        return WireResponse(svc.model_card(model_id))

    @app.get("/images/sources")
    def image_sources(dataset: str | None = None):
        return WireResponse(svc.image_sources(dataset))

    @app.get("/classes")
    def classes(dataset: str | None = None):
        return WireResponse(svc.classes() if dataset is None else svc.classes(dataset))

    @app.get("/images")
    def list_images(source: str = "samples", class_name: str | None = None, offset: int = 0, limit: int = 48,
                    dataset: str | None = None):
        return WireResponse(svc.list_images(source, class_name, offset, limit, dataset))

    @app.get("/random_image")
    def random_image(source: str = "samples", class_name: str | None = None, seed: int | None = None,
                     dataset: str | None = None):
        return WireResponse(svc.random_image(source, class_name, seed, dataset))

    @app.post("/images/upload")
    async def upload_image(request: Request, dataset: str | None = None):
        data = await read_upload(request, cap)
        return WireResponse(await run_in_threadpool(svc.upload_image, data, dataset))

    @app.post("/images/thumbnails")  # many small pictures in one request (the embedding explorer's tooltips)
    def thumbnails(b: ThumbnailsBody):
        return WireResponse(svc.thumbnails(b.image_ids, b.side))

    @app.get("/images/{image_id:path}")  # path: an id may name its data set, "imagenet/samples:3"
    def get_image(image_id: str):
        return WireResponse(svc.get_image(image_id))

    @app.post("/predict")
    async def predict(b: PredictBody, request: Request):
        return await heavy(request, fg, svc.predict, b.image_id, b.model_ids, b.topk)

    @app.post("/attack")
    async def attack(b: AttackBody, request: Request):
        return await heavy(request, fg, svc.attack, b.image_id, b.spec, b.model_ids, b.mode, b.source_model,
                           b.saliency, b.target)

    @app.post("/explain")
    async def explain(b: ExplainBody, request: Request):
        return await heavy(request, fg, svc.explain, b.image_id, b.model_id, b.method, b.target, b.spec, b.params)

    @app.post("/saliency_metrics")
    async def saliency_metrics(b: MetricsBody, request: Request):
        return await heavy(request, fg, svc.saliency_metrics, b.image_id, b.model_id, b.method, b.spec)

    @app.post("/sanity_check")
    async def sanity_check(b: SanityBody, request: Request):
        return await heavy(request, fg, svc.sanity_check, b.image_id, b.model_id, b.method)

    @app.post("/embed")
    async def embed(b: EmbedBody, request: Request):
        await run_in_threadpool(sync_budget, "embed", b.model_dump())
        return await heavy(request, bg, svc.embed, b.model_id, b.n, b.spec, b.method, b.seed, b.source)

    @app.post("/robustness_curve")
    async def robustness_curve(b: CurveBody, request: Request):
        await run_in_threadpool(sync_budget, "robustness_curve", b.model_dump())
        return await heavy(request, bg, svc.robustness_curve, b.model_ids, b.method, b.eps_list, b.n, b.steps,
                           b.source, b.seed)

    @app.post("/corruption_view")
    async def corruption_view(b: CorruptionViewBody, request: Request):
        await run_in_threadpool(sync_budget, "corruption_view", b.model_dump())
        return await heavy(request, fg, svc.corruption_view, b.image_id, b.model_ids, b.corruptions, b.severities,
                           b.saliency, b.seed)

    @app.post("/corruption_curve")
    async def corruption_curve(b: CorruptionCurveBody, request: Request):
        await run_in_threadpool(sync_budget, "corruption_curve", b.model_dump())
        return await heavy(request, bg, svc.corruption_curve, b.model_ids, b.corruptions, b.n, b.source, b.seed)

    @app.post("/feature_lens")
    async def feature_lens(b: LensBody, request: Request):
        return await heavy(request, fg, svc.feature_lens, b.image_id, b.target_class, b.model_ids, b.eps, b.steps,
                           b.norm)

    @app.post("/class_visualisation")
    async def class_visualisation(b: VisBody, request: Request):
        await run_in_threadpool(sync_budget, "class_visualisation", b.model_dump())
        return await heavy(request, bg, svc.class_visualisation, b.target_class, b.model_ids, b.steps, b.seed)

    @app.post("/tasks")
    def start_task(b: TaskBody, request: Request):
        with flight.scope(session=session_of(request)):  # the task takes its turns as this session
            return {"task_id": svc.start_task(b.kind, b.params)}

    @app.get("/tasks/{task_id}")
    def task_status(task_id: str):
        return WireResponse(svc.task_status(task_id))

    @app.post("/tasks/{task_id}/cancel")
    def cancel_task(task_id: str):
        return WireResponse(svc.cancel_task(task_id))

    @app.post("/jobs")
    def start_job(b: JobBody):
        return WireResponse(svc.start_job(b.config))

    @app.get("/jobs")
    def list_jobs():
        return WireResponse(svc.list_jobs())

    @app.get("/jobs/{job_id}")
    def job_status(job_id: str):
        return WireResponse(svc.job_status(job_id))

    @app.get("/jobs/{job_id}/events")
    def job_events(job_id: str, since: int = 0):
        return WireResponse(svc.job_events(job_id, since))

    @app.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        return WireResponse(svc.cancel_job(job_id))

    @app.post("/jobs/{job_id}/resume")
    def resume_job(job_id: str):
        return WireResponse(svc.resume_job(job_id))

    @app.get("/jobs/{job_id}/log")
    def job_log(job_id: str, tail: int = 100):
        return {"log": svc.job_log(job_id, tail)}

    @app.get("/limits")
    def limits():
        return WireResponse(svc.limits())

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


def build(argv: list[str] | None = None):
    """(args, service, app, the default-view thread or None) from the command line, nothing served yet."""
    p = argparse.ArgumentParser(prog="python -m backend.transport.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--checkpoints", default=None, help="checkpoints folder (default $ROBUSTLENS_CHECKPOINTS "
                                                       "or <repo>/checkpoints)")
    p.add_argument("--data", default=None, help="CIFAR-10 data root (default $RSUPCON_DATA or ../shared)")
    p.add_argument("--token", default=None, help="bearer token (default $ROBUSTLENS_TOKEN)")
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
        from backend.transport import home
        from backend.transport.client import InProcessClient

        prewarm = home.start(InProcessClient(service))  # background: the app's home view, into the caches
    return args, service, create_app(service, token=token), prewarm


def main(argv: list[str] | None = None) -> None:
    args, _, app, _ = build(argv)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
