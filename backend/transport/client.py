"""Clients of the Service: in-process (default) or over HTTP (when BACKEND_URL is set).

Both expose the Service's methods with the same signatures and return the same types and values:
numpy arrays travel over HTTP as {"dtype", "shape", "b64"} (backend.transport.codec: raw little-endian
bytes, so floats are bit-exact) and are rebuilt here. Every bad input raises ValueError with the server's message
(unknown ids: NotFoundError, a ValueError); a server that cannot be reached raises BackendUnavailable;
a busy server (429) is retried a few times after its Retry-After, then raises BusyError.
The progress/should_stop callbacks of robustness_curve exist in-process only; over HTTP use the
task API (start_task / task_status / cancel_task).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from backend.core.errors import BusyError, NotFoundError
from backend.transport.codec import from_wire, to_wire

log = logging.getLogger(__name__)

# The Service methods both clients expose (the contract in docs/ARCHITECTURE.md and service.py).
API = ("list_models", "model_card", "image_sources", "classes", "list_images", "get_image", "thumbnails",
       "random_image", "upload_image", "predict", "attack", "explain", "saliency_metrics", "sanity_check", "embed",
       "robustness_curve", "feature_lens", "class_visualisation", "start_task", "task_status",
       "cancel_task", "start_job", "list_jobs", "job_status", "job_events", "cancel_job", "resume_job",
       "job_log", "limits")


class BackendUnavailable(RuntimeError):
    """The HTTP backend could not be reached (not running, wrong BACKEND_URL, or timed out)."""


class InProcessClient:
    """The Service in this process: calls go straight through (no copies beyond the service's)."""

    transport = "inprocess"

    def __init__(self, service):
        self.service = service

    def __getattr__(self, name: str):
        if name in API:
            return getattr(self.service, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(API))

    def health(self) -> dict:
        return {"ok": True, "transport": self.transport, "models": len(self.service.list_models())}

    def close(self) -> None:
        self.service.close()


class HttpClient:
    """The Service behind `python -m backend.transport.server`, over httpx.

    base_url: e.g. "http://127.0.0.1:8765"; token: sent as `Authorization: Bearer <token>`;
    timeout: seconds per request (attacks on many models can take a while on a CPU);
    http: an httpx.Client to use instead of a new one (tests pass FastAPI's TestClient);
    session: sent as X-RobustLens-Session, the key the server shares the device fairly by (default
    $ROBUSTLENS_SESSION, else the server uses the client's address); busy_retries: how many times a
    429 is retried (after the server's Retry-After, at most max_wait_s each) before BusyError.
    """

    transport = "http"

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 120.0, http=None, *,
                 session: str | None = None, busy_retries: int = 3, max_wait_s: float = 5.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self.busy_retries, self.max_wait_s = int(busy_retries), float(max_wait_s)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        session = session or os.environ.get("ROBUSTLENS_SESSION") or None
        if session:
            headers["X-RobustLens-Session"] = session
        if http is None:
            http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0))
        http.headers.update(headers)
        self._http = http
        self._httpx = httpx

    def _call(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
              content: bytes | None = None, headers: dict | None = None, retries: int | None = None) -> Any:
        """One route; a 429 is retried `retries` times (default busy_retries), then raises BusyError."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        body = to_wire(json) if json is not None else None
        retries = self.busy_retries if retries is None else int(retries)
        for attempt in range(retries + 1):
            try:
                r = self._http.request(method, path, params=params or None, json=body, content=content,
                                       headers=headers)
            except self._httpx.TransportError as e:  # connect refused, DNS, timeouts, broken connections
                raise BackendUnavailable(f"backend at {self.base_url} is unavailable ({type(e).__name__}: {e}); "
                                         "start it with `python -m backend.transport.server` "
                                         "or unset BACKEND_URL") from e
            if r.status_code != 429:
                break
            wait = _retry_after(r, self.max_wait_s)
            if attempt == retries:
                raise BusyError(f"{_detail(r)} (still busy after {retries} retries)" if retries else _detail(r),
                                retry_after=wait)
            log.info("backend busy on %s %s: retrying in %.1f s", method, path, wait)
            time.sleep(wait)
        if r.status_code >= 400:
            detail = _detail(r)
            if r.status_code == 404:
                raise NotFoundError(detail)
            if r.status_code in (401, 403):
                raise PermissionError(detail)
            if r.status_code >= 500:
                raise RuntimeError(f"backend error {r.status_code}: {detail}")
            raise ValueError(detail)
        return from_wire(r.json())

    def close(self) -> None:
        self._http.close()

    # ---- the Service API, route by route -------------------------------------------------------
    def health(self) -> dict:
        return self._call("GET", "/health")

    def list_models(self) -> list[dict]:
        return self._call("GET", "/models")

    def model_card(self, model_id: str) -> dict:
        return self._call("GET", f"/models/{_seg(model_id)}")

    def image_sources(self, dataset: str | None = None) -> dict:
        return self._call("GET", "/images/sources", params={"dataset": dataset})

    def classes(self, dataset: str | None = None) -> list[str]:
        return self._call("GET", "/classes", params={"dataset": dataset})

    def list_images(self, source: str = "samples", class_name: str | None = None, offset: int = 0,
                    limit: int = 48, dataset: str | None = None) -> dict:
        return self._call("GET", "/images", params={"source": source, "class_name": class_name,
                                                    "offset": offset, "limit": limit, "dataset": dataset})

    def get_image(self, image_id: str) -> dict:
        return self._call("GET", f"/images/{_seg(image_id)}")

    def thumbnails(self, image_ids: list[str], side: int = 32) -> dict:
        return self._call("POST", "/images/thumbnails", json={"image_ids": image_ids, "side": side})

    def random_image(self, source: str = "samples", class_name: str | None = None,
                     seed: int | None = None, dataset: str | None = None) -> dict:
        return self._call("GET", "/random_image", params={"source": source, "class_name": class_name,
                                                          "seed": seed, "dataset": dataset})

    def upload_image(self, data: bytes, dataset: str | None = None) -> dict:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"upload must be bytes, got {type(data).__name__}")
        return self._call("POST", "/images/upload", content=bytes(data), params={"dataset": dataset},
                          headers={"Content-Type": "application/octet-stream"})

    def predict(self, image_id: str, model_ids: list[str] | None = None, topk: int = 5) -> dict:
        return self._call("POST", "/predict", json={"image_id": image_id, "model_ids": model_ids, "topk": topk})

    def attack(self, image_id: str, spec: dict, model_ids: list[str] | None = None, mode: str = "whitebox",
               source_model: str | None = None, saliency: str | None = None, target: int | None = None) -> dict:
        return self._call("POST", "/attack", json={"image_id": image_id, "spec": spec, "model_ids": model_ids,
                                                   "mode": mode, "source_model": source_model,
                                                   "saliency": saliency, "target": target})

    def explain(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                target: int | None = None, spec: dict | None = None, params: dict | None = None) -> dict:
        return self._call("POST", "/explain", json={"image_id": image_id, "model_id": model_id, "method": method,
                                                    "target": target, "spec": spec, "params": params})

    def saliency_metrics(self, image_id: str, model_id: str, method: str = "integrated_gradients",
                         spec: dict | None = None) -> dict:
        return self._call("POST", "/saliency_metrics", json={"image_id": image_id, "model_id": model_id,
                                                             "method": method, "spec": spec})

    def sanity_check(self, image_id: str, model_id: str, method: str = "gradient") -> dict:
        return self._call("POST", "/sanity_check", json={"image_id": image_id, "model_id": model_id,
                                                         "method": method})

    def embed(self, model_id: str, n: int = 500, spec: dict | None = None, method: str = "umap",
              seed: int = 0, source: str = "test") -> dict:
        return self._call("POST", "/embed", json={"model_id": model_id, "n": n, "spec": spec, "method": method,
                                                  "seed": seed, "source": source})

    def robustness_curve(self, model_ids: list[str] | None = None, method: str = "pgd",
                         eps_list: list[float] | None = None, n: int = 100, steps: int = 10,
                         source: str = "test", seed: int = 0) -> dict:
        return self._call("POST", "/robustness_curve", json={
            "model_ids": model_ids, "method": method, "eps_list": eps_list, "n": n, "steps": steps,
            "source": source, "seed": seed})

    def feature_lens(self, image_id: str, target_class: int, model_ids: list[str] | None = None,
                     eps: float | None = None, steps: int = 60, norm: str = "linf") -> dict:
        return self._call("POST", "/feature_lens", json={"image_id": image_id, "target_class": target_class,
                                                         "model_ids": model_ids, "eps": eps, "steps": steps,
                                                         "norm": norm})

    def class_visualisation(self, target_class: int, model_ids: list[str] | None = None, steps: int = 100,
                            seed: int = 0) -> dict:
        return self._call("POST", "/class_visualisation", json={"target_class": target_class,
                                                                "model_ids": model_ids, "steps": steps,
                                                                "seed": seed})

    def start_task(self, kind: str, params: dict) -> str:
        # not retried: with every task worker busy (429) the caller decides when to try again (the
        # app's task queue waits for its next poll), as in-process, where TasksBusy comes at once
        return self._call("POST", "/tasks", json={"kind": kind, "params": params}, retries=0)["task_id"]

    def task_status(self, task_id: str) -> dict:
        return self._call("GET", f"/tasks/{_seg(task_id)}")

    def cancel_task(self, task_id: str) -> dict:
        return self._call("POST", f"/tasks/{_seg(task_id)}/cancel")

    def start_job(self, config: dict) -> dict:
        return self._call("POST", "/jobs", json={"config": config})

    def list_jobs(self) -> list[dict]:
        return self._call("GET", "/jobs")

    def job_status(self, job_id: str) -> dict:
        return self._call("GET", f"/jobs/{_seg(job_id)}")

    def job_events(self, job_id: str, since: int = 0) -> list[dict]:
        return self._call("GET", f"/jobs/{_seg(job_id)}/events", params={"since": since})

    def cancel_job(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{_seg(job_id)}/cancel")

    def resume_job(self, job_id: str) -> dict:
        return self._call("POST", f"/jobs/{_seg(job_id)}/resume")

    def job_log(self, job_id: str, tail: int = 100) -> str:
        return self._call("GET", f"/jobs/{_seg(job_id)}/log", params={"tail": tail})["log"]

    def limits(self) -> dict:
        return self._call("GET", "/limits")


def _detail(r) -> str:
    """The error answer's one readable sentence (its "detail"; the raw text of a non-JSON answer)."""
    try:
        detail = r.json().get("detail", r.text)
    except ValueError:
        detail = r.text
    return detail if isinstance(detail, str) else str(detail)


def _retry_after(r, cap: float) -> float:
    try:
        return min(max(float(r.headers.get("retry-after", "1")), 0.1), cap)
    except ValueError:
        return 1.0


def _seg(value: Any) -> str:
    """A path segment: ids are validated by the service; here only make them safe to put in a URL."""
    from urllib.parse import quote

    if not isinstance(value, str) or not value:
        raise ValueError(f"id must be a non-empty string, got {value!r}")
    return quote(value, safe=":")


def make_client(**service_kwargs):
    """HttpClient(BACKEND_URL, token=ROBUSTLENS_TOKEN) when BACKEND_URL is set, else
    InProcessClient(Service(**service_kwargs))."""
    url = os.environ.get("BACKEND_URL", "").strip()
    if url:
        return HttpClient(url, token=os.environ.get("ROBUSTLENS_TOKEN") or None)
    from backend.service import Service

    return InProcessClient(Service(**service_kwargs))
