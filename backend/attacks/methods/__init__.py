"""The attacks, one module each. Every module here not starting with "_" is imported when backend.attacks
is, and registers its attack (backend.attacks.registry): adding a module adds the attack, no list to edit."""
from __future__ import annotations

import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
