"""The Lesson's steps and the service calls behind them (backend.transport.lesson, torch-free), re-exported
because the app reaches the backend through app.session only (tests/test_layers.py)."""
from __future__ import annotations

from backend.transport.lesson import EMBED_N, STEP_KEYS, STEPS, lesson_view, models_of, requests

__all__ = ["EMBED_N", "STEP_KEYS", "STEPS", "lesson_view", "models_of", "requests"]
