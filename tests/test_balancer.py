"""Several backend replicas behind nginx (issue 21 item 4): scripts/classroom.py's nginx_config keys
each request on X-RobustLens-Session with a consistent hash, so one app session's requests all go
to one replica, and a rerun that abandons a request stops its work on that replica through the
balancer. Runs Debian's nginx on 127.0.0.1 in front of two real servers over tiny models; skipped,
saying why, where nginx is not installed (.ci/run installs it)."""
from __future__ import annotations

import functools
import importlib.util
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

from app.session import client as app_client
from backend.core.errors import Cancelled
from backend.service import Service, flight
from backend.transport.client import HttpClient
from tests.helpers import tiny_checkpoint_root  # noqa: F401 (fixture)
from tests.test_app_sessions import fake_ctx, wait_for

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _classroom():
    spec = importlib.util.spec_from_file_location("scripts_classroom", SCRIPTS / "classroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nginx_config_refuses_bad_input_naming_it():
    conf = _classroom().nginx_config
    with pytest.raises(ValueError, match="at least one backend"):
        conf([])
    with pytest.raises(ValueError, match="'127.0.0.1:99999'"):
        conf(["127.0.0.1:99999"])
    with pytest.raises(ValueError, match="'a:1; evil'"):
        conf(["a:1; evil"])
    with pytest.raises(ValueError, match="got 0, 9"):
        conf(["127.0.0.1:8765"], read_timeout_s=0)
    text = conf(["127.0.0.1:8765", "127.0.0.1:8766"])
    assert "hash $http_x_robustlens_session consistent;" in text
    assert text.count("server 127.0.0.1:876") == 2


def _recording(svc, rec):
    """svc's predict and class_visualisation, recording the session each predict runs as and how
    each class visualisation ended (wrapped: the task API reads the methods' signatures)."""
    predict, classvis = svc.predict, svc.class_visualisation

    @functools.wraps(predict)
    def recording_predict(*a, **k):
        rec["sessions"].append(flight.current().session)
        return predict(*a, **k)

    @functools.wraps(classvis)
    def recording_classvis(*a, **k):
        try:
            r = classvis(*a, **k)
            rec["classvis"].append("finished")
            return r
        except Cancelled:
            rec["classvis"].append("cancelled")
            raise

    return recording_predict, recording_classvis


@pytest.fixture
def replicas(tiny_checkpoint_root, tmp_path):  # noqa: F811
    """Two real servers (uvicorn threads, each its own Service) and, per replica, the sessions its
    predict saw and how its class visualisations ended."""
    import uvicorn

    from backend.transport.server import create_app

    out = []
    for i in range(2):
        svc = Service(tiny_checkpoint_root, jobs_root=tmp_path / f"jobs{i}")
        rec = {"svc": svc, "sessions": [], "classvis": []}
        svc.predict, svc.class_visualisation = _recording(svc, rec)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        rec.update(server=server, thread=thread, addr=f"127.0.0.1:{port}")
        out.append(rec)
    try:
        for r in out:
            wait_for(lambda r=r: r["server"].started, what="a replica starting")
        yield out
    finally:
        for r in out:
            r["server"].should_exit = True
        for r in out:
            r["thread"].join(timeout=10)
            r["svc"].close()


@pytest.fixture
def balancer(replicas, tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)")
    port = free_port()
    run = tmp_path / "nginx"
    run.mkdir()
    conf = run / "nginx.conf"
    conf.write_text(_classroom().nginx_config([r["addr"] for r in replicas], f"127.0.0.1:{port}", prefix=run))
    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run / k).mkdir()
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        def up():
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, what="nginx answering")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_one_session_sticks_to_one_replica_and_a_rerun_stops_its_work_there(replicas, balancer):
    shared = HttpClient(balancer, timeout=60)  # the app's one client, as in HTTP mode
    try:
        names = [f"student-{i}" for i in range(8)]
        ctxs = {n: fake_ctx(n) for n in names}
        sessions = {n: app_client.SessionClient(shared, ctxs[n]) for n in names}
        for _ in range(3):
            for n in names:
                assert sessions[n].predict("samples:0", ["tiny-ce"])["results"]["tiny-ce"]["probs"].shape == (10,)
        where = {n: {i for i, r in enumerate(replicas) if n in r["sessions"]} for n in names}
        assert all(len(w) == 1 for w in where.values()), f"a session was served by both replicas: {where}"
        for i, r in enumerate(replicas):
            assert r["sessions"], f"replica {i} got no session: {where}"
            for n in set(r["sessions"]):
                assert r["sessions"].count(n) == 3  # every one of that session's requests

        # a rerun abandons the session's long request: through nginx, its replica stops the work
        n = names[0]
        home = replicas[next(iter(where[n]))]
        out = {}

        def run():
            try:
                out["value"] = sessions[n].class_visualisation(3, ["tiny-ce"], steps=500)
            except BaseException as e:
                out["error"] = e

        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: home["svc"].lock._owner is not None or not t.is_alive(), what="the request on its replica")
        ctxs[n].script_requests.request_rerun(RerunData())
        t.join(30)
        assert not t.is_alive() and isinstance(out.get("error"), Cancelled), out
        wait_for(lambda: home["classvis"], what="the replica's work ending")
        assert home["classvis"] == ["cancelled"]
    finally:
        shared.close()


def test_the_task_of_a_session_that_left_is_cancelled_on_its_replica(replicas, balancer, monkeypatch, tmp_path):
    """The app cancels a departed session's tasks from its sweeper thread (no script run): the cancel
    must carry that session's key too, or nginx (which spreads requests without a key round-robin)
    may send it to a replica that does not hold the task. nginx's access log shows the key."""
    shared = HttpClient(balancer, timeout=60)
    try:
        left = set()
        watcher = app_client.SessionTasks(connected=lambda s: s not in left, gone_s=0.2, every_s=0.05)
        monkeypatch.setattr(app_client, "SESSION_TASKS", watcher)
        sc = app_client.SessionClient(shared, fake_ctx("student-x"))
        tid = sc.start_task("class_visualisation", {"target_class": 3, "steps": 500})
        assert sc.task_status(tid)["state"] in ("queued", "running")
        left.add("student-x")
        wait_for(lambda: watcher.cancelled == [tid], what="the sweeper cancelling the task")
        wait_for(lambda: sc.task_status(tid)["state"] not in ("queued", "running"), what="the task ending")
        assert sc.task_status(tid)["state"] == "cancelled"
        log = tmp_path / "nginx" / "access.log"

        def cancels():  # nginx logs a request once its answer is sent, which may be after the task ended
            return [line for line in log.read_text().splitlines() if f"/tasks/{tid}/cancel" in line]

        wait_for(cancels, what="the cancel in nginx's access log")
        lines = cancels()
        assert all("session=student-x " in line and '" 200 ' in line for line in lines), lines
    finally:
        shared.close()


def test_the_classroom_script_stops_what_it_started_on_sigterm(tiny_checkpoint_root, tmp_path):  # noqa: F811
    """`kill` (SIGTERM) on scripts/classroom.py stops its backend and app too (they run in their own sessions, so
    nothing else would), and frees their ports for the next class."""
    import os
    import signal
    import sys
    import time

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    children: list[int] = []
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "classroom.py"), "--port", str(ports[0]),
                             "--backend-port", str(ports[1]), "--checkpoints", str(tiny_checkpoint_root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "ROBUSTLENS_THREADS": "1"})
    try:
        lines = []
        deadline = time.monotonic() + 240
        while not any("stops the class" in ln for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            lines.append(proc.stdout.readline())
        run = next(ln for ln in lines if "logs in " in ln).rsplit("logs in ", 1)[1].strip()
        children = [int(p) for p in subprocess.run(["pgrep", "-f", "--", f"--port {ports[1]}|--server.port {ports[0]}"],
                                                   capture_output=True, text=True).stdout.split()]
        assert len(children) == 2, children  # the backend and the app
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in children):
            assert time.monotonic() < deadline, "the backend or the app outlived the classroom script"
            time.sleep(0.2)
        for port in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))  # free again
        assert Path(run).is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children:  # a failed run must not leave servers behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    from backend.core.runtime import pid_alive

    return pid_alive(pid)
