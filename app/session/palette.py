"""Class colours for the widgets, read from the dataset registry (backend.core.datasets).

The registry is torch-free, so an app that talks to its backend over HTTP stays free of torch.
"""
from __future__ import annotations

from backend.core.datasets import class_colours, palette

__all__ = ["class_colours", "palette"]
