"""Streamlit sessions and the backend (issue 13 item 1, issue 14 fair sharing): each session's backend
calls run in a flight scope with that session's id; a rerun (or the session leaving) supersedes the
run's interactive call, which ends within one unit of work and frees the device lock; a session that
has left gets its background tasks cancelled.

The script run's side is Streamlit's own ScriptRequests object (what AppSession uses to ask a run to
rerun or stop); the backend is the real Service on tiny checkpoints. Threads are ordered with
events and the lock's state; time bounds are generous."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests
from streamlit.testing.v1 import AppTest

from app.session import client as app_client
from backend.core.errors import Cancelled
from backend.service import Service, flight
from backend.transport.client import InProcessClient
from tests.helpers import serving, tiny_checkpoint_root  # noqa: F401 (fixture)


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached")
        time.sleep(0.01)


@pytest.fixture
def svc(tiny_checkpoint_root, tmp_path):  # noqa: F811
    s = Service(tiny_checkpoint_root, jobs_root=tmp_path / "jobs")
    yield s
    s.close()


def fake_ctx(session_id: str, yield_check=lambda: None):
    """What app.client reads from Streamlit's ScriptRunContext: the session id, the run's requests."""
    return SimpleNamespace(session_id=session_id, script_requests=ScriptRequests(), yield_check=yield_check)


def test_calls_run_in_a_scope_with_the_sessions_id():
    class Recorder:
        transport = "inprocess"

        def predict(self, *a, **k):
            sc = flight.current()
            return sc.session, sc.priority

    a, b = (app_client.SessionClient(Recorder(), fake_ctx(s)) for s in ("session-a", "session-b"))
    assert a.predict("x") == ("session-a", flight.INTERACTIVE)
    assert b.predict("x") == ("session-b", flight.INTERACTIVE)
    assert a.transport == "inprocess"  # attributes pass through
    assert flight.current().session == "-"  # nothing leaks out of the call


def test_get_client_in_a_script_run_is_the_sessions_client(monkeypatch):
    """Through Streamlit itself (AppTest): the page's client is a SessionClient bound to the run's
    session id (AppTest names every session "test session id") and its script requests."""
    monkeypatch.setattr(app_client, "_make_client", lambda env_key: SimpleNamespace(transport="fake"))

    def script():
        import streamlit as st
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        from app.session.client import get_client

        c, ctx = get_client(), get_script_run_ctx()
        st.write(f"{type(c).__name__}|{getattr(c, 'session_id', '')}|{ctx.session_id}|"
                 f"{getattr(c, '_requests', None) is ctx.script_requests}|{c.transport}")

    at = AppTest.from_function(script).run(timeout=30)
    assert not at.exception
    kind, sid, ctx_sid, same_requests, transport = at.markdown[0].value.split("|")
    assert kind == "SessionClient" and sid == ctx_sid and sid
    assert same_requests == "True" and transport == "fake"
    assert isinstance(app_client.get_client(), SimpleNamespace)  # outside a script run: the plain client


def test_superseded_reads_streamlits_requests():
    req = ScriptRequests()
    assert not app_client.superseded(req)
    req.request_rerun(RerunData(fragment_id_queue=["poller"]))  # the task poller's timed rerun
    assert not app_client.superseded(req)
    req = ScriptRequests()
    req.request_rerun(RerunData())  # a widget changed: the whole script reruns
    assert app_client.superseded(req)
    req = ScriptRequests()
    req.request_stop()  # the session left
    assert app_client.superseded(req)
    assert not app_client.superseded(None)


def test_run_going_is_false_once_the_run_has_ended():
    req = ScriptRequests()
    req.request_rerun(RerunData())
    req.on_scriptrunner_ready()  # the run starts
    assert app_client.run_going(req)
    req.on_scriptrunner_ready()  # it ended with no rerun pending: Streamlit sets STOP
    assert not app_client.run_going(req) and not app_client.run_going(None)


def test_calls_carry_a_hold_while_the_run_goes_on():
    ctx = fake_ctx("s1")

    class Recorder:
        def predict(self, **kw):
            return flight.current().hold()

    assert app_client.SessionClient(Recorder(), ctx).predict("samples:0") is True


def _start_long_call(sc, svc, what: str):
    """Start a 500-step class visualisation through session client `sc` in a thread and wait until it
    holds the device; returns (the thread, the dict that gets its "value" or "error")."""
    out: dict = {}

    def run():
        try:
            out["value"] = sc.class_visualisation(3, ["tiny-ce"], steps=500)
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: svc.lock._owner is not None or not t.is_alive(), what=what)
    return t, out


def _long_call_then(svc, ctx, supersede):
    """Run a 500-step class visualisation through the session's client in a thread, wait until it is
    on the device, supersede it; returns (what the thread raised or returned, seconds it took to end)."""
    t, out = _start_long_call(app_client.SessionClient(InProcessClient(svc), ctx), svc, "the call on the device")
    t0 = time.monotonic()
    supersede(ctx.script_requests)
    t.join(60)
    return out, time.monotonic() - t0, t


@pytest.mark.parametrize("how", ["rerun", "stop"])
def test_a_rerun_or_leaving_supersedes_the_running_call_and_frees_the_lock(svc, how):
    ctx = fake_ctx("s1")
    out, took, t = _long_call_then(
        svc, ctx, (lambda r: r.request_rerun(RerunData())) if how == "rerun" else (lambda r: r.request_stop()))
    assert not t.is_alive(), "the superseded call kept running"
    assert "value" not in out, "the call ran to its end although its run was superseded"
    assert isinstance(out["error"], Cancelled)
    assert took < 20  # generous: it ends within 10 steps of PGD on a tiny model
    assert svc.lock._owner is None and svc.lock.waiting() == 0
    # the device is free for the next run: a predict answers
    assert svc.predict("samples:0", ["tiny-ce"])["results"]["tiny-ce"]["probs"].shape == (10,)


def test_a_superseded_call_ends_the_script_run_as_streamlit_would(svc):
    """Inside Streamlit the cancelled call raises the run's RerunException (ctx.yield_check), so
    the page does not show an error for work nobody is waiting for."""
    def yield_check():
        raise RerunException(RerunData())

    out, _, t = _long_call_then(svc, fake_ctx("s1", yield_check), lambda r: r.request_rerun(RerunData()))
    assert not t.is_alive()
    assert isinstance(out["error"], RerunException)


def test_a_fragment_rerun_does_not_cancel_the_running_call():
    """The task poller's timed fragment rerun must not cancel the page's call."""
    ctx = fake_ctx("s1")
    ctx.script_requests.request_rerun(RerunData(fragment_id_queue=["poller"]))

    class Work:
        def predict(self, **kw):
            for _ in range(5):
                flight.check()
            return "done"

    assert app_client.SessionClient(Work(), ctx).predict("samples:0") == "done"


def test_tasks_of_a_session_that_left_are_cancelled(svc, monkeypatch):
    left = set()
    watcher = app_client.SessionTasks(connected=lambda s: s not in left, gone_s=0.3, every_s=0.05)
    monkeypatch.setattr(app_client, "SESSION_TASKS", watcher)
    raw = InProcessClient(svc)
    gone = app_client.SessionClient(raw, fake_ctx("leaves"))
    stays = app_client.SessionClient(raw, fake_ctx("stays"))
    t_gone = gone.start_task("class_visualisation", {"target_class": 3, "steps": 500})
    t_stays = stays.start_task("class_visualisation", {"target_class": 4, "steps": 500})
    assert svc.tasks._tasks[t_gone].session == "leaves"  # the task runs as its session (round robin)
    try:
        time.sleep(0.5)  # both connected: nothing is cancelled
        assert svc.task_status(t_gone)["state"] == "running" and not watcher.cancelled
        left.add("leaves")
        wait_for(lambda: svc.task_status(t_gone)["state"] != "running", what="the left session's task ending")
        assert svc.task_status(t_gone)["state"] == "cancelled"
        assert watcher.cancelled == [t_gone]
        assert svc.task_status(t_stays)["state"] == "running"
    finally:
        svc.tasks.cancel(t_stays, wait_s=20)
        svc.tasks.cancel(t_gone, wait_s=20)


def test_a_session_back_within_the_grace_keeps_its_tasks():
    up = {"s": True}
    cancelled = []
    watcher = app_client.SessionTasks(connected=lambda s: up["s"], gone_s=5.0, every_s=3600)
    watcher.track(SimpleNamespace(cancel_task=cancelled.append), "t1", "s")
    up["s"] = False
    assert watcher.sweep(now=100.0) == []
    assert watcher.sweep(now=102.0) == []  # a network blip: disconnected 2 s
    up["s"] = True
    assert watcher.sweep(now=103.0) == []  # reconnected: the clock starts again
    up["s"] = False
    assert watcher.sweep(now=104.0) == [] and watcher.sweep(now=109.5) == ["t1"]
    assert cancelled == ["t1"]


def test_session_connected_asks_the_streamlit_runtime(monkeypatch):
    from streamlit import runtime

    monkeypatch.setattr(runtime, "exists", lambda: True)
    monkeypatch.setattr(runtime, "get_instance", lambda: SimpleNamespace(is_active_session=lambda s: s == "on"))
    assert app_client._session_connected("on") and not app_client._session_connected("off")
    monkeypatch.setattr(runtime, "exists", lambda: False)
    assert app_client._session_connected("off")  # no runtime (AppTest): nothing is cancelled


def test_an_app_that_talks_http_loads_no_torch(tmp_path):
    """With BACKEND_URL set, the app's session layer (its client, task queue, state), its widgets and
    the HTTP client it builds load neither torch nor the service (only its torch-free declaration of the
    operations, backend.service.api and operations/): the boundary is the wire. Also the class-name
    fallback (backend unreachable) stays torch-free. OpenMP's passive wait is set on import."""
    code = """
import sys
import streamlit as st
import pkgutil, importlib, app.widgets
from app.session import client, state, tasks  # noqa: F401
for m in pkgutil.iter_modules(app.widgets.__path__):  # the pages' building blocks too
    importlib.import_module("app.widgets." + m.name)
c = client.get_client()
assert type(c).__name__ == "HttpClient", type(c)
names = client.classes()  # nothing listens there: the error is shown, CIFAR-10's names come back
assert len(names) == 10 and names[0] == "airplane", names
import os
assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
loaded = [m for m in ("torch", "backend.service.facade", "backend.core.data") if m in sys.modules]
loaded += sorted(m for m in sys.modules if m.startswith("backend.service.")
                 and m != "backend.service.api" and not m.startswith("backend.service.operations"))
print("LOADED", loaded)
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(BACKEND_URL="http://127.0.0.1:9", ROBUSTLENS_WARM_UP="0")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LOADED []" in r.stdout, r.stdout + r.stderr[-2000:]


@pytest.fixture
def http_server(svc):
    """The real FastAPI app over `svc`, served by uvicorn on 127.0.0.1 (a free port) in a thread."""


    from backend.transport.server import create_app

    app = create_app(svc)
    with serving(app) as url:
        yield app, url


def test_http_sessions_reach_the_server_apart_and_a_rerun_cancels_the_request_in_flight(svc, http_server,
                                                                                       monkeypatch):
    """issue 21: in HTTP mode one HttpClient serves every browser of the Streamlit process. Each
    session's calls must reach the server under that session's key (the fair lock's and the
    per-session cap's), and a rerun of one session must stop its request on the server (the work
    ends early and frees the device) while the other session's request is served."""
    from backend.transport.client import HttpClient

    app, url = http_server
    monkeypatch.delenv("ROBUSTLENS_SESSION", raising=False)
    seen, ended = [], {}
    predict, classvis = svc.predict, svc.class_visualisation

    def recording_predict(*a, **k):  # what the server's work scope says about who asks
        seen.append(flight.current().session)
        return predict(*a, **k)

    def recording_classvis(*a, **k):
        try:
            out = classvis(*a, **k)
            ended["how"] = "finished"
            return out
        except Cancelled:
            ended["how"] = "cancelled"
            raise

    monkeypatch.setattr(svc, "predict", recording_predict)
    monkeypatch.setattr(svc, "class_visualisation", recording_classvis)
    shared = HttpClient(url, timeout=60)  # what the app's cache_resource holds: one for all sessions
    try:
        a_ctx, b_ctx = fake_ctx("session-a"), fake_ctx("session-b")
        a, b = app_client.SessionClient(shared, a_ctx), app_client.SessionClient(shared, b_ctx)
        assert a.predict("samples:0", ["tiny-ce"])["results"]["tiny-ce"]["probs"].shape == (10,)
        assert b.predict("samples:1", ["tiny-ce"])["results"]["tiny-ce"]["probs"].shape == (10,)
        assert seen == ["session-a", "session-b"]

        t, out = _start_long_call(a, svc, "session a's request on the device")
        assert app.state.admission.in_flight == 1
        t0 = time.monotonic()
        a_ctx.script_requests.request_rerun(RerunData())  # session a's user changed a widget
        t.join(30)
        assert not t.is_alive() and isinstance(out.get("error"), Cancelled), out
        assert time.monotonic() - t0 < 5
        wait_for(lambda: "how" in ended, what="the server's work ending")
        assert ended["how"] == "cancelled", "the server ran the superseded request to its end"
        wait_for(lambda: app.state.admission.in_flight == 0, what="the server's request ending")
        # session b was not touched: its next request is served, under its own key
        assert b.predict("samples:2", ["tiny-ce"])["results"]["tiny-ce"]["probs"].shape == (10,)
        assert seen[-1] == "session-b"
    finally:
        shared.close()


def _gate_script():
    import streamlit as st

    from app.session import access, state

    if access.admitted():
        st.write("IN")
        state.sync_url({"image": "samples:1"})


def test_a_classroom_app_lets_in_only_the_link_with_the_class_key(monkeypatch):
    """issue 21: with ROBUSTLENS_CLASS_KEY set the app opens only from the teacher's link, and the
    key stays in the URL the pages write (a reload keeps working)."""
    monkeypatch.setenv("ROBUSTLENS_CLASS_KEY", "k3y-of-the-class")
    for link, admitted in (({}, False), ({"key": "guess"}, False), ({"key": "k3y-of-the-class"}, True)):
        at = AppTest.from_function(_gate_script)
        for k, v in link.items():
            at.query_params[k] = v
        at.run(timeout=30)
        assert not at.exception
        assert bool(at.markdown) and at.markdown[0].value == "IN" if admitted else not at.markdown, link
        if admitted:
            got = {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()}
            assert got == {"key": "k3y-of-the-class", "image": "samples:1"}, got
        else:
            assert "link your teacher handed out" in at.error[0].value
    monkeypatch.delenv("ROBUSTLENS_CLASS_KEY")
    assert AppTest.from_function(_gate_script).run(timeout=30).markdown[0].value == "IN"  # no key set: open
