"""The saliency methods, one module each. Every module here not starting with "_" is imported the first
time the registry (backend.explain.saliency_registry) is read, and registers its method: adding a
module adds the method, no list to edit."""
from __future__ import annotations

import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
