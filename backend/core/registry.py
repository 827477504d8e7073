"""A registry of named, declared components: the one mechanism behind every extension point.

The architectures (backend.core.archs, built-ins in backend/core/architectures/), the data sets
(backend.core.datasets, backend/core/dataset_specs/), the attacks (backend.attacks.registry,
backend/attacks/methods/), the saliency methods (backend.explain.saliency_registry,
backend/explain/saliency_methods/) and the training methods (backend.train.registry,
backend/train/methods/) are each one `Registry` whose built-ins are found the same way:

- each extension point names its folder (`package`, a dotted package name). On the first read
  (`names`, `get`, `find`, `register`, or `load()`), the registry imports that package and every
  module in it whose name does not start with "_" (pkgutil, in name order); each such module
  registers its entry (`REGISTRY.register(Entry(...))` at its end). Adding a module to the folder
  adds the entry: there is no list to edit, and the registry module never imports its entries (the
  entries import it), so no import cycle;
- `register(item, replace=False)`: ValueError when the item is not of the declared type or its
  name is taken (unless replace; a built-in's name is taken even before the first read); `check`
  (given at construction) then validates it before it is stored. Returns the item;
- `get(name)`: ValueError "unknown <kind> 'x'; known: a, b" (the service turns it into a 400);
- `names()`: in the `order` key's order (ties: registration order); `find(name)`: the entry or None;
- `unregister(name)`: drop an entry (tests that registered a toy one).

Loading succeeds once: a module that fails to import raises from that read, and the next read tries
again. Thread-safe (a lock around the dict; the app's sessions and a training job's thread read it
at once). Torch-free.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


def discover(package: str) -> list[str]:
    """Import `package` and every module in its folder whose name does not start with "_", in name
    order; returns the imported modules' dotted names. Imports are idempotent, so a second call only
    looks the modules up again."""
    pkg = importlib.import_module(package)
    paths = getattr(pkg, "__path__", None)
    if paths is None:
        raise ValueError(f"{package!r} is a module, not a package (a folder of entry modules)")
    out = []
    for m in sorted(pkgutil.iter_modules(paths), key=lambda m: m.name):
        if not m.name.startswith("_"):
            out.append(importlib.import_module(f"{package}.{m.name}").__name__)
    return out


class Registry(Generic[T]):
    def __init__(self, kind: str, item_type: type, *, package: str | None = None, unknown: str | None = None,
                 order: Callable[[Any], Any] | None = None, check: Callable[[Any], None] | None = None):
        """kind: what an entry is called in messages ("architecture"); item_type: the entries' type;
        package: the folder of built-in entry modules (None: no built-ins); unknown: the phrase for an
        unknown name (default kind; "attack method"); order: sort key of names(); check: raises
        ValueError for an invalid entry."""
        self.kind, self.item_type, self.unknown, self.package = kind, item_type, unknown or kind, package
        self._order, self._check = order, check
        self._items: dict[str, T] = {}
        self._lock = threading.RLock()
        self._loaded = package is None
        self._loading: set[int] = set()  # the threads importing the built-ins now

    def load(self) -> None:
        """Import the built-in entry modules now (done once it has succeeded). A read made by a
        built-in module while this thread imports it returns at once; another thread's read imports
        too, which Python's import locks make wait until the modules are complete, so it never sees
        a half-filled registry."""
        me = threading.get_ident()
        if self._loaded or me in self._loading:
            return
        assert self.package is not None
        self._loading.add(me)
        try:
            discover(self.package)
            self._loaded = True
        finally:
            self._loading.discard(me)

    def register(self, item: T, replace: bool = False) -> T:
        """Add `item` under item.name and return it."""
        if not isinstance(item, self.item_type):
            raise ValueError(f"a {self.kind} entry must be a {self.item_type.__name__}, got {type(item).__name__}")
        self.load()  # a built-in's name is taken even before the first read
        name = getattr(item, "name")
        with self._lock:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self._check is not None:
                self._check(item)
            self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Drop an entry (tests that registered a toy one); unknown names are ignored."""
        with self._lock:
            self._items.pop(name, None)

    def names(self) -> list[str]:
        self.load()
        with self._lock:
            items = list(self._items.values())
        if self._order is not None:
            items.sort(key=self._order)  # stable: ties keep registration order
        return [getattr(i, "name") for i in items]

    def find(self, name: Any) -> T | None:
        self.load()
        with self._lock:
            return self._items.get(name) if isinstance(name, str) else None

    def get(self, name: Any) -> T:
        item = self.find(name)
        if item is None:
            raise ValueError(f"unknown {self.unknown} {name!r}; known: {', '.join(self.names())}")
        return item
