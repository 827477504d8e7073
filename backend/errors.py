"""Error types shared by the service, the job manager, the task runner, the server and the client.

Every bad input is a ValueError (the HTTP server answers 400 with its message); an id that names
nothing is a NotFoundError, still a ValueError so callers need one except clause, but the server
answers 404 for it.
"""
from __future__ import annotations


class NotFoundError(ValueError):
    """An unknown model, image, task or job id."""
