"""The service layer: the Service facade and what it is built from (model and image stores, analyses,
background tasks, training jobs, the fair device lock, batching, cost estimates).

`from backend.service import Service` loads the facade (and torch) on first use only, so that light
modules of this package (flight, errors of jobs) can be imported by an HTTP-only app without torch.
"""
from __future__ import annotations

__all__ = ["Service", "warm_up_enabled"]


def __getattr__(name: str):
    if name in __all__:
        from backend.service import facade

        return getattr(facade, name)
    raise AttributeError(f"module 'backend.service' has no attribute {name!r}")
