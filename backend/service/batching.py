"""Dynamic batching: one-image requests of different users that arrive within a short window and
are compatible (same model, same attack spec) run as one batched forward / backward pass.

On a GPU a batch of 32 images costs about what one image costs, so 30 students exploring different
images cost a few batched calls instead of 30. On a CPU the cost grows with the batch, so batching
saves little and adds the window's latency: it is off there unless ROBUSTLENS_BATCH_WINDOW_MS is set.
The batch function must give each item the result it would get alone (the attacks seed their random
starts per image, and models are in eval mode, so a batch result equals the per-image result up to
floating-point summation order).
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Hashable

from backend.service import flight

BatchFn = Callable[[Hashable, list], list]


def batch_window_s(device: str) -> float:
    """The batching window: ROBUSTLENS_BATCH_WINDOW_MS if set, else 4 ms on CUDA and 0 (off) on CPU;
    always 0 when coalescing is turned off (ROBUSTLENS_COALESCE=0)."""
    if not flight.coalescing_enabled():
        return 0.0
    env = os.environ.get("ROBUSTLENS_BATCH_WINDOW_MS")
    if env not in (None, ""):
        ms = float(env)
        if not 0 <= ms <= 1000:
            raise ValueError(f"ROBUSTLENS_BATCH_WINDOW_MS must be in 0..1000, got {env!r}")
        return ms / 1000
    return 0.004 if str(device).startswith("cuda") else 0.0


class _Batch:
    __slots__ = ("items", "closed", "done", "results", "error")

    def __init__(self):
        self.items: list = []
        self.closed = False
        self.done = threading.Event()
        self.results: list | None = None
        self.error: BaseException | None = None


class Batcher:
    """submit(group, item) -> fn(group, [items])[i] for the i-th item that joined the batch.

    The first caller of a group opens a batch, waits `window_s` for others to join (at most
    `max_batch` items), then runs fn for all of them; the others wait for it. The batch runs under
    the opener's priority and session but not its stop event: one user leaving must not cancel
    the other users' items.
    """

    def __init__(self, fn: BatchFn, window_s: float = 0.0, max_batch: int = 32):
        self.fn, self.window_s, self.max_batch = fn, float(window_s), int(max_batch)
        self._open: dict[Hashable, _Batch] = {}
        self._lock = threading.Lock()
        self.calls = 0  # batched calls made (for tests and benchmarks)

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def submit(self, group: Hashable, item: Any) -> Any:
        with self._lock:
            b = self._open.get(group)
            opener = b is None
            if opener:
                b = self._open[group] = _Batch()
            i = len(b.items)
            b.items.append(item)
            if len(b.items) >= self.max_batch:  # full: nobody else joins, the opener runs it now
                b.closed = True
                del self._open[group]
        if opener:
            self._run(group, b)
        else:
            sc = flight.current()
            while not b.done.wait(0.05):
                sc.check()
        if b.error is not None:
            raise b.error
        return b.results[i]

    def _run(self, group: Hashable, b: _Batch) -> None:
        deadline = time.monotonic() + self.window_s
        while time.monotonic() < deadline and not b.closed:
            time.sleep(min(0.001, max(0.0, deadline - time.monotonic())))
        with self._lock:
            if not b.closed:
                b.closed = True
                del self._open[group]
        sc = flight.current()
        try:
            with flight.scope(sc.priority, sc.session, threading.Event()):
                results = self.fn(group, list(b.items))
            if len(results) != len(b.items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(b.items)} items")
            b.results = results
            self.calls += 1
        except BaseException as e:  # every waiter gets the error, not only the opener
            b.error = e
        finally:
            b.done.set()
