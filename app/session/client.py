"""The app's one backend client, shared by every session, and the error boundary around its calls.

`get_client()` is the only `st.cache_resource` in the app: the client (and, in-process, the Service
with its loaded models) is immutable shared infrastructure. Everything a user chooses lives in
`st.session_state`. The cache key holds the environment that decides what `make_client()` builds,
so a test (or a server) that points the app somewhere else gets a client for that place.

Pages call the operations as typed methods of `backend()` (an AppClient: `backend().attack(...)`, the
signatures and defaults of backend.service.api), which turns every failure into an `st.error` message
and a None result, so a bad upload, an out-of-range parameter or a stopped backend never takes the
page down: the user reads what went wrong and the rest of the page keeps working.

Boundary: over HTTP (BACKEND_URL set) the app loads the HTTP client and the torch-free error types
only; backend.service (and with it torch) is imported when the in-process client is built.

Sessions (issue 13 item 1, issue 14 fair sharing): inside a script run `get_client()` returns a
`SessionClient`, the shared client seen by that Streamlit session. Each of its in-process calls runs under
`backend.service.flight.scope(session=<the session's id>)`, so the device lock takes the sessions in turn
(and a task started from it runs as that session), and with a `watch` on the run's script requests:
once Streamlit has asked this run to stop (the browser left) or to rerun the whole script (a widget
changed), the call's cancellation checks (between batches, models, lock polls) end it within one
unit of work and it frees the device lock; Streamlit then ends the run at once, as its next `st`
call would. Over HTTP (issue 21) the same holds through the wire: each call sends the session's id
as X-RobustLens-Session (so the server's fair lock and per-session cap see one student, not the whole
Streamlit process) and a superseded run closes its request's connection, which stops the work on
the server. Tasks a session started are cancelled by `SessionTasks` once the Streamlit runtime has
not listed the session as connected for SESSION_GONE_S seconds.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial

import streamlit as st

from backend.core.errors import BusyError, Cancelled, DeadlineExceeded
from backend.core.runtime import quiet_openmp
from backend.service.api import Api, Operation
from backend.transport.client import BackendUnavailable

# Before anything imports torch (the in-process Service, below): OpenMP threads that spin while they
# wait make every forward pass of the interactive pages ~100x slower whenever the cores are shared (a
# training job, a second user's embedding, the HTTP server); measured on this 2-core machine under
# load: 1.6 s instead of 8 ms for one width-16 forward pass with 2 threads. Passive waiting has no such
# cliff. The app's entry point imports this module first.
quiet_openmp()

log = logging.getLogger(__name__)

_ENV_KEYS = ("BACKEND_URL", "ROBUSTLENS_TOKEN", "ROBUSTLENS_CHECKPOINTS", "RSUPCON_DATA",
             "ROBUSTLENS_JOB_DATA")


def _env_key() -> tuple:
    return tuple(os.environ.get(k) for k in _ENV_KEYS)


@st.cache_resource(show_spinner="Starting the backend...", max_entries=4)
def _make_client(env_key: tuple):
    # env_key only keys the cache; make_client reads the same variables itself.
    from backend.transport.client import make_client

    client = make_client()
    service = getattr(client, "service", None)  # in-process: warm UMAP and the reference maps now
    if service is not None:
        from backend.service import warm_up_enabled  # already loaded: the in-process client holds a Service

        if warm_up_enabled():
            service.warm_up()
            from app.session import prewarm  # the home view and the Lesson, in the background (issue 14)

            prewarm.start(client)
    return client


def get_client():
    """The shared client (InProcessClient, or HttpClient when BACKEND_URL is set); inside a script
    run, wrapped as this session's SessionClient."""
    client = _make_client(_env_key())
    ctx = _script_ctx()
    if ctx is None or not getattr(ctx, "session_id", None):
        return client
    return SessionClient(client, ctx)


def _script_ctx():
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return None
    return get_script_run_ctx(suppress_warning=True)


def superseded(requests) -> bool:
    """True once Streamlit has asked the script run behind `requests` (its ScriptRequests) to stop
    (the session left) or to rerun the whole script: the run ends at its next `st` call, so its
    backend work is moot. A fragment's timed rerun (the task poller) does not supersede a run.

    Streamlit has no public API for this: it reads ScriptRequests' private `_state` and `_rerun_data`
    without taking their lock (as ScriptRunner's own fast path does), here and in run_going only
    (docs/ARCHITECTURE.md). Any change in those internals makes this False (nothing is cancelled), not
    an error; tests/test_app_sessions.py (test_superseded_reads_streamlits_requests) fails then."""
    if requests is None:
        return False
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

        state = requests._state
        if state == ScriptRequestType.STOP:
            return True
        if state == ScriptRequestType.RERUN:
            data = requests._rerun_data
            # a fragment's own timed rerun (not st.rerun(scope="fragment")) leaves the script run going
            return not (bool(data.fragment_id_queue) and not data.is_fragment_scoped_rerun)
    except Exception:
        return False
    return False


def run_going(requests) -> bool:
    """True while the script run behind `requests` has not ended (Streamlit sets STOP when a run
    ends with no rerun pending, or when the session leaves); False when it cannot be told."""
    if requests is None:
        return False
    try:
        from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

        return requests._state != ScriptRequestType.STOP
    except Exception:
        return False


class SessionClient(Api):
    """The shared client as one Streamlit script run sees it (see the module docstring).

    Each operation of an in-process client runs under a flight scope (over HTTP the work runs in the
    server's process, under the server's scope, and the call runs in a backend.transport.client.call_scope:
    it sends the session's id as X-RobustLens-Session, and a superseded run closes its request's
    connection, which stops the work on the server): interactive, the session's id, a fresh stop event,
    a watch for this run being superseded and a hold while the run goes on (the device lock keeps
    background batches back between the page's calls, while the page draws, so one page update waits
    for at most one background batch). A call that the watch cancelled ends the script run
    (Streamlit's RerunException / StopException) instead of showing an error. `start_task` also hands
    the new task to SESSION_TASKS."""

    def __init__(self, client, ctx):
        self._client, self._ctx = client, ctx
        self.session_id = str(ctx.session_id)
        self._requests = getattr(ctx, "script_requests", None)

    @property
    def raw(self):
        return self._client

    @property
    def transport(self) -> str | None:
        return getattr(self._client, "transport", None)

    @property
    def base_url(self) -> str | None:
        return getattr(self._client, "base_url", None)

    def superseded(self) -> bool:
        return superseded(self._requests)

    def dispatch(self, op: Operation, args: dict):
        out = self.scoped(getattr(self._client, op.name), **args)
        if op.name == "start_task":
            SESSION_TASKS.track(self._client, out, self.session_id)
        return out

    def scoped(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) as this session's run: in its flight scope in-process, in its call_scope
        over HTTP (see the class docstring)."""
        if self.transport == "http":
            return self._remote(fn, args, kwargs)
        return self._in_scope(fn, args, kwargs)

    def _remote(self, fn, args, kwargs):
        """Over HTTP: the call carries this session's id (the server's fairness key and per-session
        cap) and is abandoned (its connection closed, so the server stops the work) once the run is
        superseded, as in-process."""
        from backend.transport.client import call_scope

        with call_scope(self.session_id, watch=self.superseded):
            return self._ended_if_superseded(fn, args, kwargs)

    def _ended_if_superseded(self, fn, args, kwargs):
        try:
            return fn(*args, **kwargs)
        except Cancelled:
            if self.superseded():
                getattr(self._ctx, "yield_check", lambda: None)()  # raises: this run ends now
            raise

    def _in_scope(self, fn, args, kwargs):
        from backend.service import flight  # in-process only: the Service's module is loaded already

        with flight.scope(flight.INTERACTIVE, self.session_id, threading.Event(),
                          watch=partial(superseded, self._requests), hold=partial(run_going, self._requests)):
            return self._ended_if_superseded(fn, args, kwargs)


def _session_connected(session_id: str) -> bool:
    """Whether the Streamlit runtime lists the session as connected. Without a runtime (AppTest,
    a bare script) nothing can be known: treated as connected, so nothing is cancelled."""
    try:
        from streamlit import runtime

        if not runtime.exists():
            return True
        return bool(runtime.get_instance().is_active_session(session_id))
    except Exception:
        return True


# A session the runtime has not listed as connected for this long has left (closed tab, reload:
# a reload is a new session); its tasks are cancelled. Streamlit keeps a disconnected session for a
# reconnect, so a network blip shorter than this keeps its tasks.
SESSION_GONE_S = float(os.environ.get("ROBUSTLENS_SESSION_GONE_S") or 2.0)


class SessionTasks:
    """Background tasks per session; a daemon thread cancels those of sessions that have left.

    Streamlit has no "session closed" callback, so this polls (every `every_s`) whether each
    session with tasks is still connected (`connected`, default: the Streamlit runtime's
    is_active_session); after `gone_s` seconds of not connected, every task it started is cancelled
    through the client (in-process or HTTP), which frees the device within one batch. A task's
    record is dropped then, or with its session's; finished tasks cost one small tuple until then."""

    def __init__(self, connected=_session_connected, gone_s: float | None = None, every_s: float = 0.5):
        self.connected, self.every_s = connected, every_s
        self.gone_s = SESSION_GONE_S if gone_s is None else gone_s
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple] = {}  # task_id -> (client, session)
        self._gone_since: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.cancelled: list[str] = []  # task ids this asked to cancel (for tests and logs)

    def track(self, client, task_id: str, session: str) -> None:
        with self._lock:
            self._tasks[str(task_id)] = (client, session)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="robustlens-session-tasks", daemon=True)
                self._thread.start()

    def sweep(self, now: float | None = None) -> list[str]:
        """One pass: cancel the tasks of sessions gone for gone_s; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            sessions = {s for _, s in self._tasks.values()}
        gone = set()
        for s in sessions:
            if self.connected(s):
                self._gone_since.pop(s, None)
            elif now - self._gone_since.setdefault(s, now) >= self.gone_s:
                gone.add(s)
        with self._lock:
            doomed = [(tid, c, s) for tid, (c, s) in self._tasks.items() if s in gone]
            for tid, _, _ in doomed:
                del self._tasks[tid]
            for s in gone:
                self._gone_since.pop(s, None)
        for tid, client, session in doomed:
            self.cancelled.append(tid)
            try:
                if getattr(client, "transport", None) == "http":
                    from backend.transport.client import call_scope

                    with call_scope(session):  # as the session: a balancer sends it to the replica holding the task
                        client.cancel_task(tid)
                else:
                    client.cancel_task(tid)
            except Exception:
                pass
        if doomed:
            log.info("cancelled %d task(s) of %d session(s) that left", len(doomed), len(gone))
        return [tid for tid, _, _ in doomed]

    def _loop(self) -> None:
        while True:
            time.sleep(self.every_s)
            try:
                self.sweep()
            except Exception:
                log.exception("session task sweep failed")
            with self._lock:
                if not self._tasks:
                    self._thread = None
                    return


SESSION_TASKS = SessionTasks()


def backend_key() -> str:
    """A short string naming the backend, for keying st.cache_data results per backend."""
    return "|".join(str(v) for v in _env_key())


def explain_error(e: BaseException) -> str:
    """One clear sentence for the user about a failed backend call."""
    if isinstance(e, BusyError):
        return (f"The backend is busy serving other users and did not get to this request: {e}. "
                "Try again in a few seconds.")
    if isinstance(e, (BackendUnavailable, ConnectionError)):
        url = os.environ.get("BACKEND_URL", "")
        return (f"The backend is not reachable{f' at {url}' if url else ''}: {e}. Start it with "
                "`python -m backend.transport.server` (or unset BACKEND_URL to run it inside the app), then retry.")
    if isinstance(e, ValueError):
        return str(e)
    return f"Unexpected backend error ({type(e).__name__}): {e}"


class AppClient(Api):
    """The operations as a page calls them (`backend().attack(...)`): through this session's client
    (get_client()), each failure shown as one clear message in `where` (default: st) and the result
    None; quiet=True logs the failure without showing it (for optional decorations of a page). A busy
    backend (BusyError: the device queue is full) is retried twice, with "busy, retrying" shown."""

    def __init__(self, where=None, quiet: bool = False):
        self.where, self.quiet = where, quiet

    def dispatch(self, op: Operation, args: dict):
        try:
            client = get_client()
            for attempt in range(3):
                try:
                    return getattr(client, op.name)(**args)
                except BusyError as e:
                    if attempt == 2:
                        raise
                    if not self.quiet:
                        st.toast("The backend is busy, retrying...", icon=":material/hourglass_top:")
                    time.sleep(min(max(getattr(e, "retry_after", 1.0), 0.1), 5.0))
        except Exception as e:  # the UI boundary: every failure becomes a message, the page lives on
            if isinstance(e, Cancelled) and not isinstance(e, DeadlineExceeded):
                return None  # this run was superseded (or the session left): nothing to tell anyone
            if not isinstance(e, ValueError):
                log.exception("backend call %s failed", op.name)
            if not self.quiet:
                (self.where or st).error(explain_error(e), icon=":material/error:")
            return None


def backend(where=None, quiet: bool = False) -> AppClient:
    """The operations for a page: `backend().predict(image_id, ids)`; see AppClient."""
    return AppClient(where, quiet)


@st.cache_data(show_spinner=False, max_entries=2048)
def _image(backend: str, image_id: str) -> dict:
    # Pure: an image id names fixed pixels (uploads are named by their content hash).
    return get_client().get_image(image_id)


def get_image(image_id: str, where=None, quiet: bool = False) -> dict | None:
    """The image dict {"image_id", "label", "class_name", "pixels" (S,S,3) uint8} (S: the data set's image
    size), cached per backend."""
    try:
        return _image(backend_key(), image_id)
    except Exception as e:
        if not quiet:
            (where or st).error(explain_error(e), icon=":material/error:")
        return None


@st.cache_data(show_spinner=False, max_entries=8)
def _classes(backend: str, dataset: str | None = None) -> list[str]:
    client = get_client()
    return list(client.classes() if dataset is None else client.classes(dataset))


def classes(dataset: str | None = None) -> list[str]:
    """Class names of a data set (default: the one the user chose, see current_dataset) in label order;
    falls back to the registry's list if the backend cannot be asked."""
    ds = dataset or current_dataset()
    try:
        return _classes(backend_key(), None if ds == DEFAULT_DATASET else ds)
    except Exception as e:
        st.error(explain_error(e), icon=":material/error:")
        from backend.core.datasets import find_dataset  # the torch-free registry (an HTTP app has no torch)

        spec = find_dataset(ds) or find_dataset(DEFAULT_DATASET)
        return list(spec.classes) if spec is not None else []


DEFAULT_DATASET = "cifar10"  # what image ids without a data set mean (backend.service.stores)


def all_models() -> list[dict]:
    """Every model card, rsupcon first; [] (with the error shown) when the backend cannot list them.

    Not cached here: a finished training job must appear on the next rerun."""
    out = backend().list_models()
    return list(out) if out else []


def card_dataset(card: dict) -> str:
    return str(card.get("dataset") or DEFAULT_DATASET)


def zoo_datasets(cards: list[dict]) -> list[str]:
    """The data sets the models are for, in the cards' order (rsupcon's first)."""
    return list(dict.fromkeys(card_dataset(c) for c in cards))


def current_dataset(cards: list[dict] | None = None) -> str:
    """The data set the pages show: the "ds" param (the sidebar's choice, or a link's) when the zoo
    holds models of several data sets, else the one they are for (cifar10 without models)."""
    sets = zoo_datasets(all_models() if cards is None else cards)
    if len(sets) <= 1:
        return sets[0] if sets else DEFAULT_DATASET
    from app.session import state

    return state.get("ds", sets[0], choices=sets)


def models() -> list[dict]:
    """The cards of the models for the chosen data set (current_dataset), rsupcon first; [] (with the
    error shown) when the backend cannot list them. all_models() has every card."""
    cards = all_models()
    ds = current_dataset(cards)
    return [c for c in cards if card_dataset(c) == ds]
