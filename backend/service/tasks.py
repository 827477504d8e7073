"""Cancellable background tasks in a small thread pool, with progress and results kept for a while.

A task is a function `fn(progress, should_stop) -> dict` where `progress(done, total)` reports how
far it is and `should_stop()` turns True once the task is cancelled; the function checks it between
batches and returns early (or raises errors.Cancelled). The runner bounds how many tasks run at once
(default 2): starting more raises TasksBusy (an errors.BusyError: HTTP 429) rather than queueing
silently behind a long robustness curve; the caller tries again later.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from backend.core.errors import BusyError, Cancelled, DeadlineExceeded, NotFoundError, short
from backend.service import flight

log = logging.getLogger(__name__)

TaskFn = Callable[[Callable[[int, int], None], Callable[[], bool]], dict]


class TasksBusy(BusyError):
    """Every task worker is busy: `running` tasks already run (the runner's limit). Not an error of
    the request; start it again once one has finished (the app's task queue waits and retries)."""

    def __init__(self, message: str, running: int, retry_after: float = 2.0):
        super().__init__(message, retry_after=retry_after)
        self.running = int(running)


@dataclass
class _Task:
    task_id: str
    kind: str
    params: dict
    state: str = "running"  # running | done | failed | cancelled
    done: int = 0
    total: int = 0
    result: dict | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    session: str = "-"


class TaskRunner:
    """Runs at most `max_running` tasks at once on daemon threads.

    Finished tasks stay readable for `keep_s` seconds and at most `keep` of them are kept (oldest
    dropped first), so an abandoned browser tab cannot grow memory without bound.
    """

    def __init__(self, max_running: int = 2, keep: int = 32, keep_s: float = 1800.0):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self.max_running, self.keep, self.keep_s = max_running, keep, keep_s
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="robustlens-task")
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, kind: str, params: dict, fn: TaskFn) -> str:
        """Start `fn` in the background; returns the task id. TasksBusy when the runner is full."""
        with self._lock:
            self._expire()
            running = [t for t in self._tasks.values() if t.state == "running"]
            if len(running) >= self.max_running:
                raise TasksBusy(
                    f"too many background tasks: {len(running)} already running (limit {self.max_running}); "
                    f"wait for one to finish or cancel it ({', '.join(t.task_id for t in running)})", len(running))
            task = _Task(uuid.uuid4().hex[:12], kind, dict(params), session=flight.current().session)
            self._tasks[task.task_id] = task
        self._pool.submit(self._run, task, fn)
        return task.task_id

    def _run(self, task: _Task, fn: TaskFn) -> None:
        def progress(done: int, total: int) -> None:
            task.done, task.total = int(done), int(total)

        try:
            # Background priority: the device lock serves interactive requests before this task's
            # next batch; the task's session takes its turn with the other sessions'.
            with flight.scope(flight.BACKGROUND, task.session, task.stop):
                result = fn(progress, task.stop.is_set)
            state = "cancelled" if task.stop.is_set() else "done"
            task.result = result if state == "done" else None
        except DeadlineExceeded as e:
            state, task.error = "failed", str(e)
        except Cancelled:
            state = "cancelled"
        except ValueError as e:  # the user's input or situation (named in the message): no traceback
            log.warning("task %s (%s) failed: %s", task.task_id, task.kind, e)
            state, task.error = "failed", str(e) or type(e).__name__
        except Exception as e:  # a task's failure is reported through its status, not lost in a thread
            log.exception("task %s (%s) failed", task.task_id, task.kind)
            state, task.error = "failed", str(e) or type(e).__name__
        with self._lock:
            task.state, task.finished = state, time.time()

    def status(self, task_id: str) -> dict:
        """{"task_id","kind","state","done","total","result","error"}; ValueError for an unknown id."""
        with self._lock:
            self._expire()
            task = self._tasks.get(task_id) if isinstance(task_id, str) else None
            if task is None:
                raise NotFoundError(f"unknown task id {short(task_id)} (finished tasks are kept for "
                                       f"{self.keep_s:.0f} s)")
            return {"task_id": task.task_id, "kind": task.kind, "state": task.state, "done": task.done,
                    "total": task.total, "result": task.result, "error": task.error}

    def cancel(self, task_id: str, wait_s: float = 0.0) -> dict:
        """Ask a task to stop; optionally wait up to wait_s seconds for it to notice. Returns status."""
        self.status(task_id)  # validates the id
        with self._lock:
            task = self._tasks[task_id]
            if task.state == "running":
                task.stop.set()
        deadline = time.time() + wait_s
        while task.state == "running" and time.time() < deadline:
            time.sleep(0.02)
        return self.status(task_id)

    def _expire(self) -> None:
        now = time.time()
        finished = [t for t in self._tasks.values() if t.state != "running"]
        for t in finished:
            if now - (t.finished or now) > self.keep_s:
                del self._tasks[t.task_id]
        finished = [t for t in self._tasks.values() if t.state != "running"]
        for t in finished[:max(0, len(finished) - self.keep)]:
            del self._tasks[t.task_id]

    def shutdown(self) -> None:
        """Cancel running tasks and stop the pool (used when a Service is closed)."""
        with self._lock:
            for t in self._tasks.values():
                t.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

