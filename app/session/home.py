"""The home page's default view and the attack controls' first values, for the app's widgets:
backend.transport.home (torch-free; the backend server runs the same computation at launch),
re-exported here because the app reaches the backend through app.session only (tests/test_layers.py)."""
from __future__ import annotations

from backend.transport.home import default_spec, default_view, input_side, param_default, start

__all__ = ["default_spec", "default_view", "input_side", "param_default", "start"]
