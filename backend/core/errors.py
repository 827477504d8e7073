"""Error types shared by the service, the job manager, the task runner, the server and the client.

Every bad input is a ValueError (the HTTP server answers 400 with its message); an id that names
nothing is a NotFoundError, still a ValueError so callers need one except clause, but the server
answers 404 for it.
"""
from __future__ import annotations


class NotFoundError(ValueError):
    """An unknown model, image, task or job id."""


class BusyError(RuntimeError):
    """Too much work is queued on the device (or for one session), or every background-task worker
    is busy (backend.service.tasks.TasksBusy): try again after `retry_after` seconds. Not a
    ValueError: the request was fine, the server is full (HTTP 429 + Retry-After)."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = float(retry_after)


class Cancelled(Exception):
    """Work stopped early because whoever asked for it is gone (a cancelled task, a disconnected
    HTTP client, a superseded app run, a stop asked of the trainer or the evaluation). The one
    cancellation signal: the service's scopes and analyses, the feature lens, the evaluation and the
    trainer all raise it, and the task runner records it as "cancelled". Nobody waits for an answer,
    so it is never reported to a user."""


class DeadlineExceeded(Cancelled):
    """Work stopped because it ran past its deadline (HTTP 503 with the deadline in the message)."""


def short(value, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters, for error messages that quote bad input: a 20 MB
    string must not come back as a 20 MB error (and a long list is summarised by its length)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    if isinstance(value, (str, bytes)) and len(value) > limit:  # never build the repr of a huge string
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(r):,} characters)"
