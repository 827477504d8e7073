"""A registry of named, declared components: the one shape behind the architecture, data-set, attack
and saliency-method registries (backend.core.archs, backend.core.datasets, backend.attacks.registry,
backend.explain.saliency_registry). Each of those keeps its own public functions and its own checks
of what a valid entry is; this class holds the entries and says the same things the same way:

- `add(item, replace=False)`: ValueError when the item is not of the declared type or its
  name is taken (unless replace); `check` (given at construction) then validates it before it is stored;
- `get(name)`: ValueError "unknown <kind> 'x'; known: a, b" (the service turns it into a 400);
- `names()`: registration order, or the `order` key's; `find(name)`: the entry or None;
- `builtins`: a callable run before the first read (or by `load()`) until it has succeeded once,
  which imports the modules that register the built-in entries (import cycles keep it lazy; `add`
  does not run it, since those modules call `add` while they are being imported). It must be
  idempotent (imports are).

Thread-safe (a lock around the dict; the app's sessions and a training job's thread read it at once).
Torch-free.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, item_type: type, *, unknown: str | None = None,
                 order: Callable[[Any], Any] | None = None, check: Callable[[Any], None] | None = None,
                 builtins: Callable[[], None] | None = None):
        """kind: what an entry is called in messages ("architecture"); unknown: the phrase for an
        unknown name (default kind; "attack method"); order: sort key of names(); check: raises
        ValueError for an invalid entry; builtins: registers the built-in entries, run once."""
        self.kind, self.item_type, self.unknown = kind, item_type, unknown or kind
        self._order, self._check, self._builtins = order, check, builtins
        self._items: dict[str, T] = {}
        self._lock = threading.RLock()
        self._loaded = builtins is None
        self._loading: set[int] = set()  # the threads running builtins now

    def load(self) -> None:
        """Register the built-in entries now (done once it has succeeded). A read made by a built-in
        module while this thread imports it returns at once; another thread's read runs the imports
        too, which Python's import locks make wait until the modules are complete, so it never sees
        a half-filled registry."""
        me = threading.get_ident()
        if self._loaded or me in self._loading:
            return
        assert self._builtins is not None
        self._loading.add(me)
        try:
            self._builtins()
            self._loaded = True
        finally:
            self._loading.discard(me)

    def add(self, item: T, replace: bool = False) -> T:
        """Register `item` under item.name and return it."""
        if not isinstance(item, self.item_type):
            raise ValueError(f"a {self.kind} entry must be a {self.item_type.__name__}, got {type(item).__name__}")
        name = getattr(item, "name")
        with self._lock:
            if name in self._items and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if self._check is not None:
                self._check(item)
            self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Drop an entry (tests that registered a toy one); unknown names are ignored."""
        with self._lock:
            self._items.pop(name, None)

    def names(self) -> list[str]:
        self.load()
        with self._lock:
            items = list(self._items.values())
        if self._order is not None:
            items.sort(key=self._order)
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
