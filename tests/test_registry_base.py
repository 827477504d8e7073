"""backend.core.registry.Registry, the shape behind the architecture, data-set, attack and saliency
registries: checks, messages, order, and the lazy built-ins."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from backend.core.registry import Registry


@dataclass(frozen=True)
class Entry:
    name: str
    order: int = 0


def test_add_get_names_and_the_messages():
    def check(e: Entry) -> None:
        if e.order < 0:
            raise ValueError("order must be >= 0")

    reg: Registry[Entry] = Registry("widget", Entry, unknown="widget kind", order=lambda e: (e.order, e.name),
                                    check=check)
    reg.add(Entry("b", 1))
    reg.add(Entry("a", 2))
    reg.add(Entry("c", 1))
    assert reg.names() == ["b", "c", "a"]  # the order key, then the name
    assert reg.get("a") == Entry("a", 2) and reg.find("zz") is None and reg.find(3) is None
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add(Entry("a", 5))
    assert reg.get("a").order == 2  # a refused add changes nothing
    reg.add(Entry("a", 0), replace=True)
    assert reg.names()[0] == "a"
    with pytest.raises(ValueError, match="order must be >= 0"):
        reg.add(Entry("d", -1))
    assert "d" not in reg.names()
    with pytest.raises(ValueError, match="must be a Entry, got str"):
        reg.add("e")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown widget kind 'x'; known: a, b, c"):
        reg.get("x")
    reg.remove("a")
    reg.remove("never there")
    assert reg.names() == ["b", "c"]


def test_builtins_load_once_on_the_first_read_and_retry_after_a_failure():
    calls = []
    outcomes = [None, "raise"]  # pop(): an import error first, then success

    def builtins():
        calls.append(1)
        if outcomes.pop() == "raise":
            raise ImportError("a built-in module failed to import")
        reg.add(Entry("builtin"))
        assert reg.names() == ["user", "builtin"]  # a read while loading does not load again

    reg: Registry[Entry] = Registry("widget", Entry, builtins=builtins)
    reg.add(Entry("user"))  # add does not load (built-in modules add while being imported)
    assert calls == []
    with pytest.raises(ImportError):
        reg.names()
    assert reg.names() == ["user", "builtin"] and len(calls) == 2
    reg.get("builtin")
    assert len(calls) == 2


def test_a_read_from_another_thread_waits_for_the_builtins():
    """While one thread loads the built-ins, another thread's read must not see a half-filled
    registry (it runs the idempotent builtins too; the "import lock" below makes it wait)."""
    import threading

    import_lock, started, release, done = threading.Lock(), threading.Event(), threading.Event(), []

    def builtins():  # like an import: one thread runs the module, the others wait for it, then no-op
        with import_lock:
            if not done:
                started.set()
                release.wait(10)
                reg.add(Entry("builtin"))
                done.append(1)

    reg: Registry[Entry] = Registry("widget", Entry, builtins=builtins)
    seen: dict[str, list[str]] = {}
    first = threading.Thread(target=lambda: seen.__setitem__("first", reg.names()))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=lambda: seen.__setitem__("second", reg.names()))
    second.start()
    second.join(0.2)
    release.set()
    first.join(10)
    second.join(10)
    assert seen == {"first": ["builtin"], "second": ["builtin"]}
