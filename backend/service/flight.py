"""Sharing one device among many users: work scopes, a fair priority lock, single-flight.

A *scope* describes who is asking for the work running in this thread: its priority (interactive
requests before background batches), its session (for round-robin fairness), a stop event and a
deadline. The HTTP server opens one per heavy request and sets the stop event when the client
disconnects; the task runner opens one per task (background priority, the task's cancel event).
Code deep inside the service calls `check()` / `should_stop()` between batches and the device lock
checks the scope while it waits, so abandoned work ends within one batch and never holds the lock.

`FairLock` replaces the per-device RLock: reentrant, and when it is released the next owner is the
waiter with the best (priority, least recently served session, arrival) - so a student's predict
waits for at most one batch of another student's curve, and one session cannot starve the others.
A background waiter that has waited `age_s` is treated as interactive, so it is never starved.
One interactive request is often many short acquisitions in sequence (an attack over five models
takes the lock per model and step; a Streamlit page makes several calls). So that such a request
waits for at most one background unit in all, not one per acquisition, an interactive release
opens a short grace window (`grace_s`, ROBUSTLENS_LOCK_GRACE_MS, default 100 ms) in which a
background waiter does not take the lock; any interactive work that comes within it goes first.
A request whose scope has a `hold` predicate (an app page run, whose calls are separated by drawing)
keeps background waiters back while the predicate is true, for at most `hold_s` (ROBUSTLENS_LOCK_HOLD_S,
default 2 s) after its last release; a background waiter older than `age_s` ignores both.

One request may spread its work over several threads under a single acquisition: its thread
holds the lock in `sharing()`, and the threads it starts from inside (with the context copied,
`contextvars.copy_context().run`) are the lock's *guests*: their acquisitions pass through while
the host holds it (the attack lab's update attacks each model on its own thread, see
backend.service.engine.Engine.per_model). Nobody else runs on the device meanwhile.

`SingleFlight` computes identical concurrent requests (same cache key) once: the first caller
computes, the others wait for its result; a follower whose leader was cancelled computes itself.
"""
from __future__ import annotations

import contextvars
import itertools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from backend.core.errors import BusyError, Cancelled, DeadlineExceeded

INTERACTIVE, BACKGROUND = 0, 1


@dataclass
class Scope:
    """Who the work in this thread is for. deadline: time.monotonic() value, or None; watch: an
    optional cheap predicate polled with the stop event (True = the asker is gone: sets stop), for
    askers that cannot set an event themselves (a Streamlit script run that is superseded); hold: an
    optional cheap predicate, True while the request this work belongs to is still going between its
    lock acquisitions (a Streamlit script run drawing the page between two calls): see FairLock."""
    priority: int = INTERACTIVE
    session: str = "-"
    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    watch: Callable[[], bool] | None = None
    hold: Callable[[], bool] | None = None

    def cancelled(self) -> bool:
        if self.stop.is_set():
            return True
        if self.watch is not None and self.watch():
            self.stop.set()
            return True
        return self.deadline is not None and time.monotonic() > self.deadline

    def error(self) -> Cancelled:
        if self.stop.is_set():
            return Cancelled("cancelled: the client that asked for this is gone")
        return DeadlineExceeded("the request ran past its deadline and was stopped; use fewer models or images, "
                                "or run it as a background task (POST /tasks)")

    def check(self) -> None:
        if self.cancelled():
            raise self.error()


_DEFAULT = Scope()
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar("robustlens_scope", default=_DEFAULT)
# (lock, mark of the host's sharing block): set by FairLock.sharing in the host's context, so threads
# started from a copy of it are guests of that lock while the host holds it in that block
_guest: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("robustlens_lock_guest", default=None)


def current() -> Scope:
    return _current.get()


@contextmanager
def scope(priority: int | None = None, session: str | None = None, stop: threading.Event | None = None,
          timeout_s: float | None = None, watch: Callable[[], bool] | None = None,
          hold: Callable[[], bool] | None = None):
    """Run the body under a scope. Arguments left out are inherited from the enclosing scope, so
    a task started with its own stop event keeps the caller's session. A new stop event starts a
    new cancellation domain: the outer scope's watch and hold are inherited only with its stop."""
    outer = current()
    deadline = outer.deadline
    if timeout_s is not None:
        mine = time.monotonic() + float(timeout_s)
        deadline = mine if deadline is None else min(deadline, mine)
    sc = Scope(outer.priority if priority is None else priority, outer.session if session is None else session,
               stop if stop is not None else (outer.stop if outer is not _DEFAULT else threading.Event()),
               deadline, watch if watch is not None else (outer.watch if stop is None else None),
               hold if hold is not None else (outer.hold if stop is None else None))
    token = _current.set(sc)
    try:
        yield sc
    finally:
        _current.reset(token)


def should_stop() -> bool:
    """True once the current scope is cancelled or past its deadline (poll it between batches)."""
    return current().cancelled()


def check() -> None:
    """Raise Cancelled / DeadlineExceeded if the current scope is."""
    current().check()


@dataclass(eq=False)
class _Waiter:
    priority: int
    session: str
    seq: int
    since: float


class FairLock:
    """A reentrant lock whose waiters are served by priority, then session round robin, then arrival.

    max_waiting: more waiters than this raise BusyError (the caller answers 429); age_s: a waiter
    older than this counts as interactive (and is not held back); grace_s: after an interactive owner
    releases, background waiters wait this long for interactive work to come back before they take
    the lock; hold_s: how long a scope's `hold` keeps them back after its last release (see the
    module docstring). Waiting threads re-check their scope every `poll_s`, so a cancelled request
    leaves the queue promptly (Cancelled) instead of running when its turn comes.
    """

    def __init__(self, max_waiting: int | None = None, age_s: float = 10.0, poll_s: float = 0.05,
                 grace_s: float | None = None, hold_s: float | None = None):
        self.max_waiting = int(max_waiting or os.environ.get("ROBUSTLENS_MAX_WAITING") or 128)
        self.age_s, self.poll_s = age_s, poll_s
        if grace_s is None:
            grace_s = float(os.environ.get("ROBUSTLENS_LOCK_GRACE_MS") or 100) / 1000.0
        self.grace_s = max(0.0, float(grace_s))
        if hold_s is None:
            hold_s = float(os.environ.get("ROBUSTLENS_LOCK_HOLD_S") or 2.0)
        self.hold_s = max(0.0, float(hold_s))
        self._holds: dict[str, tuple[Callable[[], bool], float]] = {}  # session -> (request going?, until)
        self._owner_priority = INTERACTIVE
        self._grace_until = 0.0  # time.monotonic(): background waiters hold back until then
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._sharing: object | None = None  # the mark of the owner's sharing() block, while in one
        self._depth = 0
        self._waiters: list[_Waiter] = []
        self._served: dict[str, int] = {}  # session -> the grant number it last got (round robin)
        self._grants = itertools.count(1)
        self._seq = itertools.count()

    def _effective(self, w: _Waiter, now: float) -> int:
        return INTERACTIVE if now - w.since > self.age_s else w.priority

    def _next(self, now: float) -> _Waiter:
        def rank(w: _Waiter):
            return self._effective(w, now), self._served.get(w.session, 0), w.seq
        return min(self._waiters, key=rank)

    def _held_back(self, priority: int, now: float) -> float:
        """Seconds a taker of this (effective) priority must still wait (grace window, or an interactive
        request that holds the device between its acquisitions); 0: may take it now."""
        if priority == INTERACTIVE:
            return 0.0
        if self._grace_until > now:
            return self._grace_until - now
        for session, (going, until) in list(self._holds.items()):
            try:
                alive = now < until and going()
            except Exception:
                alive = False
            if alive:
                return min(self.poll_s, until - now)  # re-check the predicate soon
            del self._holds[session]
        return 0.0

    def _take(self, me: int, session: str, priority: int) -> None:
        self._owner, self._depth, self._owner_priority = me, 1, priority
        self._served[session] = next(self._grants)
        if len(self._served) > 4096:  # forget the oldest sessions (bounded memory over a long run)
            for s, _ in sorted(self._served.items(), key=lambda kv: kv[1])[:2048]:
                del self._served[s]

    def _is_guest(self, me: int) -> bool:
        """True when thread `me` runs work of the thread that holds this lock in sharing() (call with _cond held)."""
        g = _guest.get()
        return g is not None and g[0] is self and self._sharing is g[1] and self._owner != me

    def acquire(self, _rejoin: bool = False) -> None:
        me, sc = threading.get_ident(), current()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            if self._is_guest(me):  # the host holds it for this thread's work: pass through
                return
            if not _rejoin:
                sc.check()
            if self._owner is None and not self._waiters and not self._held_back(sc.priority, time.monotonic()):
                self._take(me, sc.session, sc.priority)
                return
            if len(self._waiters) >= self.max_waiting and not _rejoin:
                raise BusyError(f"the device is busy: {len(self._waiters)} requests are waiting (limit "
                                f"{self.max_waiting}); try again in a few seconds", retry_after=2.0)
            w = _Waiter(sc.priority, sc.session, next(self._seq), time.monotonic())
            self._waiters.append(w)
            try:
                while True:
                    now, timeout = time.monotonic(), self.poll_s
                    if self._owner is None and self._next(now) is w:
                        hold = self._held_back(self._effective(w, now), now)
                        if not hold:
                            self._take(me, sc.session, sc.priority)
                            return
                        timeout = min(timeout, hold)  # wake when the grace window ends
                    if sc.cancelled() and not _rejoin:
                        raise sc.error()
                    self._cond.wait(timeout)
            finally:
                self._waiters.remove(w)
                self._cond.notify_all()  # the best waiter may have changed

    def release(self) -> None:
        with self._cond:
            if self._is_guest(threading.get_ident()):
                return
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                if self._owner_priority == INTERACTIVE:
                    # the same request's next acquisition (or anyone's interactive work) comes first
                    now, sc = time.monotonic(), current()
                    self._grace_until = now + self.grace_s
                    if sc.hold is not None and self.hold_s:
                        self._holds[sc.session] = (sc.hold, now + self.hold_s)
                self._cond.notify_all()

    def yield_to_waiters(self) -> None:
        """Inside a long unit of work that holds the lock once: let waiting requests go first, then
        queue for it again like anyone else (the holder's session was just served, so others win)."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me or self._depth != 1 or not self._waiters:
                return
            self._owner, self._depth = None, 0
            self._cond.notify_all()
        # rejoin: not refused when full or cancelled, because the caller's `with` block will release
        # it; the caller checks for cancellation right after
        self.acquire(_rejoin=True)

    @contextmanager
    def yielding_at(self, module):
        """For background work that holds the lock once for a long unit (an attack batch of many steps):
        before each forward pass of `module` (an nn.Module; one attack step) made by this thread, let
        waiting requests go first (yield_to_waiters), so a waiting request waits for one step, not for
        the whole batch. Passes by other threads through the same module are not touched; interactive
        work does not yield (it is what the others wait for)."""
        me = threading.get_ident()

        def before_forward(_module, _args) -> None:
            if threading.get_ident() == me and current().priority == BACKGROUND:
                self.yield_to_waiters()

        handle = module.register_forward_pre_hook(before_forward)
        try:
            yield self
        finally:
            handle.remove()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiters)

    def busy(self) -> bool:
        """True when another thread holds the lock or anyone waits for it (a snapshot)."""
        with self._cond:
            return bool(self._waiters) or (self._owner is not None and self._owner != threading.get_ident())

    @contextmanager
    def sharing(self):
        """Hold the lock (acquire; reentrant) for the body, which may run parts of this request on other
        threads started with a copy of this thread's context (contextvars.copy_context().run): their
        acquisitions of this lock pass through while this thread holds it, and so does their scope
        (cancellation, deadline, priority). The body must wait for those threads before it ends: a
        guest that acquires after the host released waits like anyone else."""
        with self:
            mark, outer = object(), self._sharing  # this acquisition's mark: a later one of the host is not it
            with self._cond:
                self._sharing = mark
            token = _guest.set((self, mark))
            try:
                yield self
            finally:
                _guest.reset(token)
                with self._cond:
                    self._sharing = outer


class _Call:
    __slots__ = ("done", "value", "error")

    def __init__(self):
        self.done, self.value, self.error = threading.Event(), None, None


class SingleFlight:
    """Run `fn` once for concurrent callers with the same key (see the module docstring).
    enabled=False (ROBUSTLENS_COALESCE=0) computes every call, for measuring what this saves."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._lock = threading.Lock()
        self._calls: dict = {}
        self.shared = 0  # calls answered by another caller's computation (for tests and benchmarks)

    def do(self, key, fn):
        if not self.enabled:
            return fn()
        while True:
            with self._lock:
                call = self._calls.get(key)
                leader = call is None
                if leader:
                    call = self._calls[key] = _Call()
            if leader:
                try:
                    call.value = fn()
                    return call.value
                except BaseException as e:
                    call.error = e
                    raise
                finally:
                    with self._lock:
                        del self._calls[key]
                    call.done.set()
            sc = current()
            while not call.done.wait(0.05):
                sc.check()  # a follower whose own client left stops waiting
            if isinstance(call.error, Cancelled):
                continue  # the leader's client left, not ours: compute it ourselves
            if call.error is not None:
                raise call.error
            with self._lock:
                self.shared += 1
            return call.value

    def in_flight(self) -> int:
        with self._lock:
            return len(self._calls)


def coalescing_enabled() -> bool:
    """ROBUSTLENS_COALESCE=0 turns single-flight and dynamic batching off (for benchmarks)."""
    return os.environ.get("ROBUSTLENS_COALESCE", "1") != "0"
