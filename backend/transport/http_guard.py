"""The HTTP server's guards, apart from its routes: the error answers and their OpenAPI schema, the
body cap and finite-number check, the bearer token check, the fairness key (session), the
admission bound of heavy requests (429 beyond it) and the capped reading of an upload (413).
Used by backend/transport/server.py only."""
from __future__ import annotations

import hmac
import json
import math
import threading

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from backend.core.errors import BusyError, short

MAX_JSON_BYTES = 256 * 1024     # no legitimate JSON body here comes near this (the biggest is a job config)
MAX_DETAIL_CHARS = 1000         # an error message never grows with the input that caused it
SESSION_HEADER = "x-robustlens-session"
UPLOAD_PATH = "/images/upload"
MULTIPART_OVERHEAD = 64 * 1024  # bytes a multipart envelope may add around the file


class ErrorBody(BaseModel):
    """Every error answer: one readable sentence."""
    detail: str


_ERR = {"model": ErrorBody}
ERROR_RESPONSES = {400: {**_ERR, "description": "bad input (a ValueError naming the bad value)"},
                   401: {**_ERR, "description": "missing or wrong bearer token (only when the server has one)"},
                   404: {**_ERR, "description": "unknown model, image, task or job id"},
                   413: {**_ERR, "description": "body or upload over its size limit"},
                   422: {**_ERR, "description": "body or query does not match the schema, or holds a "
                                                "non-finite number"},
                   429: {**_ERR, "description": "the server is busy (too many queued requests); retry "
                                                "after the Retry-After header's seconds",
                         "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                     "description": "seconds to wait"}}},
                   503: {**_ERR, "description": "the request ran past its deadline and was stopped"}}


def readable_errors(errors: list) -> str:
    """FastAPI's validation errors as one line per problem: 'body.topk: Input should be a valid integer'
    (bad input quoted by a short prefix; at most 5 problems listed)."""
    parts = []
    for e in errors[:5]:
        loc = ".".join(short(p, 40) if not isinstance(p, str) else p[:40] for p in e.get("loc", ()))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" + (f" (got {short(e['input'], 60)})" if "input" in e and
                                                            not isinstance(e["input"], (dict, list)) else ""))
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return _cap("; ".join(parts) + more or "invalid request")


def _cap(detail: str) -> str:
    """An error detail of bounded size (messages quote input; a message must not echo megabytes)."""
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS] + "... (cut)"


def error_response(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": _cap(detail)}, status_code=status, headers=headers)


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise _NonFinite(text)
    return v


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str):
    raise _NonFinite(name)


def check_finite_json(body: bytes) -> str | None:
    """None when body is JSON with only finite numbers (or not JSON at all: FastAPI answers that);
    else the message for a 422. Python's json reads NaN, Infinity and 1e400 (= inf) as floats, and
    a non-finite number crashes int() deep in a config; no field here means anything non-finite."""
    try:
        json.loads(body, parse_float=_finite, parse_constant=_reject_constant)
    except _NonFinite as e:
        return (f"body: numbers must be finite, got {short(str(e), 30)} (NaN, Infinity and numbers too large "
                "for a float are refused)")
    except (ValueError, RecursionError):
        return None  # not JSON (or too deep): left to FastAPI's own validation
    return None


def session_of(request: Request) -> str:
    """The fairness key: the X-RobustLens-Session header, else the client's address."""
    sid = request.headers.get(SESSION_HEADER, "").strip()[:64]
    return sid or (request.client.host if request.client else "-")


class Guard:
    """Pure ASGI middleware (so a disconnect reaches the routes, unlike BaseHTTPMiddleware): bearer
    token (scheme case-insensitive, RFC 7235), then the JSON body cap (413) and the finite-number
    check (422), reading the body once and replaying it to the route."""

    def __init__(self, app, token: str | None = None, max_json: int = MAX_JSON_BYTES):
        self.app, self.token, self.max_json = app, token, max_json

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and scope["path"] != "/health" and not _token_ok(headers.get("authorization", ""), self.token):
            resp = error_response(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                          {"WWW-Authenticate": "Bearer"})
            return await resp(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH") or scope["path"] == UPLOAD_PATH:
            return await self.app(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_json:
            too_large = error_response(413, _too_large("request body", int(declared), self.max_json))
            return await too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_json:
                too_large = error_response(413, _too_large("request body", size, self.max_json, True))
                return await too_large(scope, receive, send)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        bad = check_finite_json(body) if body else None
        if bad:
            return await error_response(422, bad)(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        return await self.app(scope, replay, send)


def _token_ok(header: str, token: str) -> bool:
    scheme, _, got = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(got.strip().encode(), token.encode())


def _too_large(what: str, size: int, cap: int, more: bool = False) -> str:
    """The 413 sentence for a JSON body or an upload of `size` bytes over `cap` (more: at least that many)."""
    mib = f" ({cap / 2**20:.1f} MiB)" if what == "upload" else ""
    return f"{what} too large: {'more than ' if more else ''}{size:,} bytes, the limit is {cap:,} bytes{mib}"


class Admission:
    """Bounds the heavy requests in flight: `total` for the server, `per_session` for one session.
    Beyond them a request is refused at once (BusyError -> 429) instead of queueing without end."""

    def __init__(self, total: int, per_session: int):
        self.total, self.per_session = total, per_session
        self._lock = threading.Lock()
        self._n = 0
        self._by: dict[str, int] = {}

    def enter(self, session: str) -> None:
        with self._lock:
            if self._n >= self.total:
                raise BusyError(f"the server is busy: {self._n} requests are in progress (limit {self.total}); "
                                "retry in a few seconds", retry_after=2)
            if self._by.get(session, 0) >= self.per_session:
                raise BusyError(f"this session already has {self._by[session]} requests in progress (limit "
                                f"{self.per_session}); wait for them", retry_after=1)
            self._n += 1
            self._by[session] = self._by.get(session, 0) + 1

    @property
    def in_flight(self) -> int:
        return self._n

    def leave(self, session: str) -> None:
        with self._lock:
            self._n -= 1
            self._by[session] -= 1
            if not self._by[session]:
                del self._by[session]


class TooLarge(ValueError):
    """An upload over the size cap (413)."""


async def read_upload(request: Request, cap: int) -> bytes:
    """The uploaded file's bytes: the raw body, or the single file of a multipart form. The body
    is read chunk by chunk and refused (413) as soon as it passes the cap, so a huge upload never
    sits in memory."""
    ctype = request.headers.get("content-type", "")
    limit = cap + (MULTIPART_OVERHEAD if ctype.startswith("multipart/") else 0)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(_too_large("upload", int(declared), cap))
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(_too_large("upload", size, cap, more=True))
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
