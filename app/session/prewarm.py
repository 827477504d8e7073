"""Precompute the home page's default view in the background: backend.transport.home (the rule, the
default spec and the computation, shared with the backend server, which runs it at launch)."""
from __future__ import annotations

from backend.transport.home import default_spec, default_view, input_side, start  # noqa: F401
