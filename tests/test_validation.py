"""The shared helpers of backend.core.validation and backend.core.runtime (written once, used by every layer)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from backend.core.runtime import torch_threads, usable_cores
from backend.core.validation import check_int, is_integer, parse_int_at_least


def test_check_int_accepts_integers_in_range_only():
    assert check_int("n", 3, 1, 5) == 3 and check_int("n", np.int64(5), 1, 5) == 5
    assert type(check_int("n", np.int32(2), 1, 5)) is int
    for bad in (True, 2.0, "3", None, 0, 6, [3]):
        with pytest.raises(ValueError, match=r"n must be an integer in 1\.\.5, got "):
            check_int("n", bad, 1, 5)
    assert not is_integer(False) and is_integer(np.uint8(1))
    assert check_int("batch_size", 10**9, 1) == 10**9  # no upper bound
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        check_int("batch_size", 0, 1)


def test_the_error_quotes_a_huge_value_by_a_prefix():
    with pytest.raises(ValueError) as e:
        check_int("seed", "x" * 10**6, 0, 9)
    assert len(str(e.value)) < 200


def test_parse_int_at_least():
    assert parse_int_at_least("--epochs", "4", 1) == 4
    with pytest.raises(ValueError, match="expected an integer, got 'four'"):
        parse_int_at_least("--epochs", "four", 1)
    with pytest.raises(ValueError, match="--epochs must be >= 1, got 0"):
        parse_int_at_least("--epochs", "0", 1)


def test_cores_and_threads(monkeypatch):
    cores = usable_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert torch_threads(3) == 3
    monkeypatch.setenv("ROBUSTLENS_THREADS", "2")
    assert torch_threads(None, env="ROBUSTLENS_THREADS") == 2 and torch_threads(5, env="ROBUSTLENS_THREADS") == 5
    monkeypatch.delenv("ROBUSTLENS_THREADS")
    assert torch_threads(None, env="ROBUSTLENS_THREADS") == cores
    assert torch_threads(None, share=10**6) == 1  # never 0


def test_runtime_and_validation_are_torch_free_and_quiet_openmp_keeps_a_setting():
    code = ("import os, sys\n"
            "from backend.core import runtime, validation\n"
            "runtime.quiet_openmp()\n"
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["PASSIVE", "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # a deployment's own choice wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["ACTIVE", "False"], out.stderr


def test_pid_alive_tells_a_reused_pid_from_the_process_that_held_it():
    import time

    from backend.core.runtime import pid_alive, process_start_time

    me = os.getpid()
    started = process_start_time(me)
    assert started is not None and started <= time.time() + 2  # this process began in the past
    assert pid_alive(me) and pid_alive(me, since=time.time())  # already running now
    assert not pid_alive(me, since=started - 3600)  # "the process that ran an hour before this one started"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not pid_alive(gone.pid) and process_start_time(gone.pid) is None


def test_wait_for_url_answers_true_once_up_false_when_the_server_dies_or_time_runs_out(tmp_path):
    import socket
    import time

    from backend.core.runtime import wait_for_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert wait_for_url(url, dead, time.monotonic() + 60) is False  # at once: its server is gone
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_url(url + "missing", server, time.monotonic() + 1.0) is False  # 404 until the deadline
        assert wait_for_url(url, server, time.monotonic() + 60) is True
    finally:
        server.kill()
        server.wait()
