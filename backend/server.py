"""FastAPI mapping of the Service: `python -m backend.server [--host 127.0.0.1] [--port 8765]
[--checkpoints DIR] [--data DIR] [--token TOKEN]`.

One route per Service method: GET for reads, POST with a pydantic body for actions (the upload takes
the raw file bytes or a multipart form with one file; the size cap is enforced while reading).
Errors: ValueError -> 400, unknown ids (NotFoundError) -> 404, a body that fails validation -> 422,
an upload over the cap -> 413; each with a readable "detail" string. Arrays travel as
{"dtype","shape","b64"} (see backend.client.to_wire). The server binds to 127.0.0.1 unless told
otherwise, and refuses a non-local bind without a bearer token (ROBUSTLENS_TOKEN or --token); with a
token set, every route except GET /health needs `Authorization: Bearer <token>`.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
from typing import Any, Literal

# Idle OpenMP threads sleep instead of spinning (set before torch loads, as the trainer does): on a
# shared CPU, spinning workers of one process stall the others' compute many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from . import __version__
from .client import to_wire
from .errors import NotFoundError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MULTIPART_OVERHEAD = 64 * 1024  # bytes a multipart envelope may add around the file


class WireResponse(JSONResponse):
    """JSON with numpy arrays encoded by to_wire (routes return it directly, so FastAPI's own
    encoder, which knows no numpy, is bypassed); NaN allowed (a rank correlation of a constant map
    is NaN, and the Python client reads it back as NaN, the same as in-process)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(to_wire(content), allow_nan=True, separators=(",", ":")).encode()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictBody(_Body):
    image_id: str
    model_ids: list[str] | None = None
    topk: int = 5


class AttackBody(_Body):
    image_id: str
    spec: dict
    model_ids: list[str] | None = None
    mode: Literal["whitebox", "transfer"] = "whitebox"
    source_model: str | None = None
    saliency: str | None = None
    target: int | None = None


class ExplainBody(_Body):
    image_id: str
    model_id: str
    method: str = "integrated_gradients"
    target: int | None = None
    spec: dict | None = None
    params: dict | None = None


class MetricsBody(_Body):
    image_id: str
    model_id: str
    method: str = "integrated_gradients"
    spec: dict | None = None


class SanityBody(_Body):
    image_id: str
    model_id: str
    method: str = "gradient"


class EmbedBody(_Body):
    model_id: str
    n: int = 500
    spec: dict | None = None
    method: Literal["umap", "pca"] = "umap"
    seed: int = 0
    source: str = "test"


class CurveBody(_Body):
    model_ids: list[str] | None = None
    method: Literal["pgd", "fgsm"] = "pgd"
    eps_list: list[float] | None = None
    n: int = 100
    steps: int = 10
    source: str = "test"
    seed: int = 0


class LensBody(_Body):
    image_id: str
    target_class: int
    model_ids: list[str] | None = None
    eps: float = 16 / 255
    steps: int = 60


class VisBody(_Body):
    target_class: int
    model_ids: list[str] | None = None
    steps: int = 100
    seed: int = 0


class TaskBody(_Body):
    kind: str
    params: dict = {}


class JobBody(_Body):
    config: dict


class _TooLarge(ValueError):
    """An upload over the size cap (413)."""


def _readable(errors: list) -> str:
    """FastAPI's validation errors as one line per problem: 'body.topk: Input should be a valid integer'."""
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" + (f" (got {e['input']!r})" if "input" in e and
                                                            not isinstance(e["input"], (dict, list)) else ""))
    return "; ".join(parts) or "invalid request"


def create_app(service=None, token: str | None = None, max_upload_bytes: int | None = None,
               **service_kwargs) -> FastAPI:
    """The FastAPI app over `service` (default: Service(**service_kwargs)). token: require
    `Authorization: Bearer <token>` on every route except /health."""
    if service is None:
        from .service import Service

        service = Service(**service_kwargs)
    svc = service
    cap = int(max_upload_bytes or svc.limits()["upload"]["max_bytes"])
    app = FastAPI(title="RobustLens backend", version=__version__, default_response_class=WireResponse,
                  description="HTTP mapping of backend.service.Service (see docs/ARCHITECTURE.md).")
    app.state.service = svc

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token and request.url.path != "/health":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(_TooLarge)
    async def too_large(request: Request, exc: _TooLarge):
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _readable(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

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
    def image_sources():
        return WireResponse(svc.image_sources())

    @app.get("/classes")
    def classes():
        return WireResponse(svc.classes())

    @app.get("/images")
    def list_images(source: str = "samples", class_name: str | None = None, offset: int = 0, limit: int = 48):
        return WireResponse(svc.list_images(source, class_name, offset, limit))

    @app.get("/random_image")
    def random_image(source: str = "samples", class_name: str | None = None, seed: int | None = None):
        return WireResponse(svc.random_image(source, class_name, seed))

    @app.post("/images/upload")
    async def upload_image(request: Request):
        data = await _read_upload(request, cap)
        return WireResponse(await run_in_threadpool(svc.upload_image, data))

    @app.get("/images/{image_id}")
    def get_image(image_id: str):
        return WireResponse(svc.get_image(image_id))

    @app.post("/predict")
    def predict(b: PredictBody):
        return WireResponse(svc.predict(b.image_id, b.model_ids, b.topk))

    @app.post("/attack")
    def attack(b: AttackBody):
        return WireResponse(svc.attack(b.image_id, b.spec, b.model_ids, b.mode, b.source_model, b.saliency, b.target))

    @app.post("/explain")
    def explain(b: ExplainBody):
        return WireResponse(svc.explain(b.image_id, b.model_id, b.method, b.target, b.spec, b.params))

    @app.post("/saliency_metrics")
    def saliency_metrics(b: MetricsBody):
        return WireResponse(svc.saliency_metrics(b.image_id, b.model_id, b.method, b.spec))

    @app.post("/sanity_check")
    def sanity_check(b: SanityBody):
        return WireResponse(svc.sanity_check(b.image_id, b.model_id, b.method))

    @app.post("/embed")
    def embed(b: EmbedBody):
        return WireResponse(svc.embed(b.model_id, b.n, b.spec, b.method, b.seed, b.source))

    @app.post("/robustness_curve")
    def robustness_curve(b: CurveBody):
        return WireResponse(svc.robustness_curve(b.model_ids, b.method, b.eps_list, b.n, b.steps, b.source, b.seed))

    @app.post("/feature_lens")
    def feature_lens(b: LensBody):
        return WireResponse(svc.feature_lens(b.image_id, b.target_class, b.model_ids, b.eps, b.steps))

    @app.post("/class_visualisation")
    def class_visualisation(b: VisBody):
        return WireResponse(svc.class_visualisation(b.target_class, b.model_ids, b.steps, b.seed))

    @app.post("/tasks")
    def start_task(b: TaskBody):
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


async def _read_upload(request: Request, cap: int) -> bytes:
    """The uploaded file's bytes: the raw body, or the single file of a multipart form. The body
    is read chunk by chunk and refused (413) as soon as it passes the cap, so a huge upload never
    sits in memory."""
    ctype = request.headers.get("content-type", "")
    limit = cap + (MULTIPART_OVERHEAD if ctype.startswith("multipart/") else 0)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(_too_large(int(declared), cap))
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(_too_large(size, cap, more=True))
        body.append(chunk)
    data = b"".join(body)
    if not ctype.startswith("multipart/"):
        return data

    async def replay():
        return {"type": "http.request", "body": data, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    files = [v for v in form.values() if hasattr(v, "read")]
    if len(files) != 1:
        raise ValueError(f"a multipart upload must hold exactly one file, got {len(files)}")
    return await files[0].read()


def _too_large(size: int, cap: int, more: bool = False) -> str:
    return (f"upload too large: {'more than ' if more else ''}{size:,} bytes, the limit is {cap:,} bytes "
            f"({cap / 2**20:.1f} MiB)")


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-local bind without a token (anyone on the network could run the backend)."""
    if host not in LOCAL_HOSTS and not token:
        raise SystemExit(f"refusing to bind to {host!r} without a bearer token: set ROBUSTLENS_TOKEN or pass "
                         "--token (or bind to 127.0.0.1)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m backend.server", description=__doc__.split("\n\n")[0])
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
    import uvicorn

    from .service import Service, warm_up_enabled

    service = Service(checkpoint_root=args.checkpoints, data_root=args.data)
    if warm_up_enabled():
        service.warm_up()  # background: UMAP JIT and the reference maps' refits
    app = create_app(service, token=token)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
