"""Clients of the Service: in-process (default) or over HTTP (when BACKEND_URL is set).

Both are a backend.service.api.Api: the operations declared there, with the same signatures and
defaults, returning the same types and values:
numpy arrays travel over HTTP as {"dtype", "shape", "b64"} (backend.transport.codec: raw little-endian
bytes, so floats are bit-exact) and are rebuilt here. Every bad input raises ValueError with the server's message
(unknown ids: NotFoundError, a ValueError); a server that cannot be reached raises BackendUnavailable;
a busy server (429) is retried a few times after its Retry-After, then raises BusyError.
The progress/should_stop callbacks of the task operations exist in-process only; over HTTP use the
task API (start_task / task_status / cancel_task). Each HTTP call follows its operation's declared route.

Callers that serve many users through one HttpClient (the Streamlit app: one client for every
browser session) open a `call_scope(session, watch)` around each call: the request carries that
session's X-RobustLens-Session (the server's fairness key and per-session cap), and while it is in
flight `watch()` is polled; once it is True (the asker is gone) the request is abandoned and its
connection closed, which the server reads as a disconnect and stops the work, and the call raises
Cancelled.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from backend.core.errors import BusyError, Cancelled, NotFoundError
from backend.service.api import HOOKS, Api, Operation
from backend.transport.codec import from_wire, to_wire

log = logging.getLogger(__name__)

class BackendUnavailable(RuntimeError):
    """The HTTP backend could not be reached (not running, wrong BACKEND_URL, or timed out)."""


# (session, watch) of the calls made in this context (see call_scope); None: the client's defaults.
_CALL: contextvars.ContextVar[tuple[str | None, Callable[[], bool] | None] | None] = contextvars.ContextVar(
    "robustlens_http_call", default=None)
WATCH_EVERY_S = 0.05  # how often a watched request in flight polls its watch


@contextmanager
def call_scope(session: str | None = None, watch: Callable[[], bool] | None = None) -> Iterator[None]:
    """HttpClient calls made inside run as `session` (sent as X-RobustLens-Session instead of the
    client's default) and are abandoned, raising Cancelled, once `watch()` is True: the request's
    connection is closed, so the server stops its work (see the module docstring)."""
    if session is not None and (not isinstance(session, str) or not session.strip()):
        raise ValueError(f"session must be a non-empty string, got {session!r}")
    token = _CALL.set((session.strip()[:64] if session else None, watch))
    try:
        yield
    finally:
        _CALL.reset(token)


class InProcessClient(Api):
    """The Service in this process: calls go straight through (no copies beyond the service's)."""

    transport = "inprocess"

    def __init__(self, service):
        self.service = service

    def dispatch(self, op: Operation, args: dict) -> Any:
        return getattr(self.service, op.name)(**args)

    def health(self) -> dict:
        return {"ok": True, "transport": self.transport, "models": len(self.service.list_models())}

    def close(self) -> None:
        self.service.close()


class HttpClient(Api):
    """The Service behind `python -m backend.transport.server`, over httpx.

    base_url: e.g. "http://127.0.0.1:8765"; token: sent as `Authorization: Bearer <token>`;
    timeout: seconds per request (attacks on many models can take a while on a CPU);
    http: an httpx.Client to use instead of a new one (tests pass FastAPI's TestClient);
    session: sent as X-RobustLens-Session, the key the server shares the device fairly by (default
    $ROBUSTLENS_SESSION, else the server uses the client's address; a call_scope's session replaces it
    for the calls inside); busy_retries: how many times a
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
        self._owned = http is None  # a watched call needs its own transport (below); a given one is used as is
        self._timeout = httpx.Timeout(timeout, connect=5.0)
        if http is None:
            http = httpx.Client(base_url=self.base_url, timeout=self._timeout)
        http.headers.update(headers)
        self._http = http
        self._httpx = httpx
        self._aio: tuple[asyncio.AbstractEventLoop, Any] | None = None  # (loop, AsyncClient), on first use
        self._aio_lock = threading.Lock()

    def _async(self) -> tuple[asyncio.AbstractEventLoop, Any]:
        """An event loop on a daemon thread with an httpx.AsyncClient: a request sent there can be
        cancelled from the caller's thread (cancelling it closes its connection), which a blocking
        request on the synchronous client cannot."""
        with self._aio_lock:
            if self._aio is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="robustlens-http-client", daemon=True).start()
                # the pool holds as many connections as the server admits heavy requests by default
                limits = self._httpx.Limits(max_connections=64, max_keepalive_connections=16)

                async def make():
                    return self._httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout,
                                                   headers=dict(self._http.headers), limits=limits)

                self._aio = (loop, asyncio.run_coroutine_threadsafe(make(), loop).result())
            return self._aio

    def _send(self, method: str, path: str, watch: Callable[[], bool] | None, **kw):
        """One request: on the synchronous client, or, with a watch, on the async one, polling the
        watch while it is in flight (Cancelled once the watch is True; the connection is closed)."""
        if watch is None or not self._owned:
            return self._http.request(method, path, **kw)
        if watch():
            raise Cancelled("cancelled before it was sent: the page that asked for it has moved on")
        loop, aclient = self._async()
        fut = asyncio.run_coroutine_threadsafe(aclient.request(method, path, **kw), loop)
        while True:
            try:
                return fut.result(timeout=WATCH_EVERY_S)
            except TimeoutError:
                if watch():
                    fut.cancel()  # cancels the request's task: httpx closes its connection
                    log.info("%s %s abandoned: its page has moved on", method, path)
                    raise Cancelled("cancelled: the page that asked for this has moved on") from None

    def _call(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
              content: bytes | None = None, headers: dict | None = None, retries: int | None = None) -> Any:
        """One route; a 429 is retried `retries` times (default busy_retries), then raises BusyError."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        body = to_wire(json) if json is not None else None
        retries = self.busy_retries if retries is None else int(retries)
        session, watch = _CALL.get() or (None, None)
        if session:
            headers = {**(headers or {}), "X-RobustLens-Session": session}
        for attempt in range(retries + 1):
            try:
                r = self._send(method, path, watch, params=params or None, json=body, content=content,
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
            _sleep(wait, watch)
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
        with self._aio_lock:
            aio, self._aio = self._aio, None
        if aio is not None:
            loop, aclient = aio
            asyncio.run_coroutine_threadsafe(aclient.aclose(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)

    # ---- the operations, each by its declared route (backend.service.api) ----------------------
    def health(self) -> dict:
        return self._call("GET", "/health")

    def dispatch(self, op: Operation, args: dict) -> Any:
        if op.path is None or op.verb is None:
            raise ValueError(f"{op.name} has no route: run it as a task, start_task({op.name!r}, params)")
        args = dict(args)
        for h in HOOKS:
            if args.pop(h, None) is not None:
                raise ValueError(f"{h} exists in-process only; over HTTP run {op.name} as a task (start_task)")
        path = op.path.replace(":path}", "}").format(**{k: _seg(args.pop(k)) for k in op.path_params})
        headers, content, json = None, None, None
        query: dict | None
        if op.raw is not None:
            content = args.pop(op.raw)
            if not isinstance(content, (bytes, bytearray, memoryview)):
                raise ValueError(f"{op.raw} must be bytes, got {type(content).__name__}")
            content, headers = bytes(content), {"Content-Type": "application/octet-stream"}
        if op.verb == "GET" or op.raw is not None:
            query = args  # the rest: query parameters
        else:
            query, json = None, (args or None)  # the rest: the JSON body
        out = self._call(op.verb, path, params=query, json=json, content=content, headers=headers,
                         retries=op.retries)
        return out[op.wrap] if op.wrap else out


def _sleep(seconds: float, watch: Callable[[], bool] | None) -> None:
    """time.sleep(seconds), ended early by Cancelled once `watch()` is True."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if watch is not None and watch():
            raise Cancelled("cancelled while waiting to retry: the page that asked for this has moved on")
        time.sleep(min(left, WATCH_EVERY_S) if watch is not None else left)


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
