"""One request's models side by side on the CPU (Engine.per_model, FairLock.sharing).

The attack lab's update and the saliency studio's maps run each model's work on its own thread with one
intra-op thread, under one acquisition of the device lock. What must hold: the same numbers as one
model after another, the lock's guests pass through while their host holds it and nobody else gets
in, the request's scope (cancellation) reaches the threads, the thread setting is restored, and the
side-by-side path is not taken where it would make others wait longer. Threads are ordered with
events, never with sleeps; nothing here asserts a wall-clock time."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from backend.core.errors import Cancelled
from backend.service import Service, flight
from tests.helpers import tiny_checkpoint_root  # noqa: F401 (fixture)

PGD = {"method": "pgd", "eps": 8 / 255, "step_size": 2 / 255, "steps": 3}


@pytest.fixture
def svc(tiny_checkpoint_root, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("ROBUSTLENS_MODEL_PARALLEL", raising=False)
    threads = torch.get_num_threads()
    s = Service(tiny_checkpoint_root, jobs_root=tmp_path / "jobs", device="cpu", threads=2)
    yield s
    s.close()
    torch.set_num_threads(threads)


def _fresh(svc):
    svc.caches.clear()
    return svc


# ---- the lock --------------------------------------------------------------------------------------
def test_a_hosts_guests_pass_through_and_nobody_else_gets_in():
    import contextvars

    lock = flight.FairLock()
    inside, outsider_in = [], threading.Event()

    def outsider():
        with lock:
            outsider_in.set()

    with lock.sharing():
        other = threading.Thread(target=outsider)  # no copied context: not a guest
        other.start()
        deadline = time.monotonic() + 20
        while lock.waiting() != 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)

        def guest():
            with lock:  # would wait forever (the host holds it) if it were not a guest
                with lock:
                    inside.append(threading.get_ident())

        t = threading.Thread(target=contextvars.copy_context().run, args=(guest,))
        t.start()
        t.join(20)
        assert not t.is_alive() and len(inside) == 1 and inside[0] != threading.get_ident()
        assert not outsider_in.is_set()  # the guest's release did not hand the lock to the outsider
    other.join(20)
    assert outsider_in.is_set()
    with lock:  # and the lock is whole again
        pass


def test_a_guest_after_its_host_released_queues_like_anyone():
    import contextvars

    lock = flight.FairLock()
    with lock.sharing():
        ctx = contextvars.copy_context()
    lock.acquire()  # someone else (this thread again, outside sharing) holds it now
    got = threading.Event()
    t = threading.Thread(target=ctx.run, args=(lambda: (lock.acquire(), got.set(), lock.release()),))
    t.start()
    deadline = time.monotonic() + 20
    while lock.waiting() != 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not got.is_set()
    lock.release()
    t.join(20)
    assert got.is_set()


def test_busy_sees_an_owner_or_a_waiter_but_not_this_thread():
    lock = flight.FairLock()
    assert not lock.busy()
    with lock:
        assert not lock.busy()  # held by the asking thread itself
        seen = []
        t = threading.Thread(target=lambda: seen.append(lock.busy()))
        t.start()
        t.join(20)
        assert seen == [True]


# ---- the engine ------------------------------------------------------------------------------------
def test_side_by_side_only_on_a_free_cpu_with_threads_and_models(svc, monkeypatch):
    e = svc.engine
    assert e.side_by_side(3) == 2 and e.side_by_side(2) == 2
    assert e.side_by_side(1) == 0 and e.side_by_side(0) == 0
    monkeypatch.setenv("ROBUSTLENS_MODEL_PARALLEL", "0")
    assert e.side_by_side(3) == 0
    monkeypatch.delenv("ROBUSTLENS_MODEL_PARALLEL")
    torch.set_num_threads(1)
    assert e.side_by_side(3) == 0
    torch.set_num_threads(2)
    seen = []
    with svc.lock:  # another request holds the device: its waiters would wait for all the models
        t = threading.Thread(target=lambda: seen.append(e.side_by_side(3)))
        t.start()
        t.join(20)
    assert seen == [0]
    monkeypatch.setattr(e, "device", "cuda")
    assert e.side_by_side(3) == 0


def test_per_model_runs_each_pending_model_on_its_own_thread_with_one_intra_op_thread(svc):
    seen, me = {}, threading.get_ident()

    def fn(m):
        with svc.lock:  # a guest: passes through
            seen[m] = (threading.get_ident(), torch.get_num_threads())
        return {"m": m}

    out = svc.engine.per_model(["a", "b", "c"], fn, pending=lambda m: m != "b")
    assert out == {"a": {"m": "a"}, "b": {"m": "b"}, "c": {"m": "c"}} and list(out) == ["a", "b", "c"]
    assert seen["b"][0] == me  # not pending: computed here, afterwards
    assert seen["a"][0] != me and seen["c"][0] != me and seen["a"][1] == seen["c"][1] == 1
    assert torch.get_num_threads() == 2


def test_per_model_raises_the_first_error_and_restores_the_threads(svc):
    def fn(m):
        if m == "b":
            raise ValueError("model b is broken")
        return {}

    with pytest.raises(ValueError, match="model b is broken"):
        svc.engine.per_model(["a", "b", "c"], fn)
    assert torch.get_num_threads() == 2
    with svc.lock:  # released
        pass
    assert not svc.lock.busy()


def test_per_model_threads_see_the_requests_scope(svc):
    stop = threading.Event()
    stop.set()

    def fn(m):
        flight.check()
        return {}

    with flight.scope(stop=stop):
        with pytest.raises(Cancelled):
            svc.engine.per_model(["a", "b"], fn)


# ---- the service: the same numbers either way ------------------------------------------------------
def _attack_arrays(result):
    return {m: (r["adv_pixels"], r["adv"]["probs"], r["clean"]["probs"], r["saliency_clean"], r["saliency_adv"])
            for m, r in result["results"].items()}


def test_an_attack_over_models_side_by_side_equals_one_after_another(svc, monkeypatch):
    calls = []
    real = svc.engine.per_model

    def spy(ids, fn, pending=None):
        ids = list(ids)
        calls.append(svc.engine.side_by_side(sum(1 for m in ids if pending is None or pending(m))))
        return real(ids, fn, pending)

    monkeypatch.setattr(svc.engine, "per_model", spy)
    side = _attack_arrays(_fresh(svc).attack("samples:3", PGD, None, saliency="gradcam"))
    monkeypatch.setenv("ROBUSTLENS_MODEL_PARALLEL", "0")
    seq = _attack_arrays(_fresh(svc).attack("samples:3", PGD, None, saliency="gradcam"))
    assert calls == [2, 0]  # the first really ran side by side, the second one after another
    assert list(side) == list(seq) == ["tiny-rsupcon", "tiny-pgd", "tiny-ce"]
    for m in seq:
        for a, b in zip(side[m], seq[m]):
            assert np.array_equal(a, b), m
    assert any(not np.array_equal(side[m][0], side["tiny-ce"][0]) for m in side)  # each model's own attack


def test_saliency_maps_side_by_side_equal_one_after_another(svc, monkeypatch):
    side = _fresh(svc).saliency_maps("samples:1", None, "integrated_gradients", PGD, "shared")
    monkeypatch.setenv("ROBUSTLENS_MODEL_PARALLEL", "0")
    seq = _fresh(svc).saliency_maps("samples:1", None, "integrated_gradients", PGD, "shared")
    assert side["top"] == seq["top"]
    for m, r in seq["results"].items():
        assert np.array_equal(side["results"][m]["clean"], r["clean"])
        assert np.array_equal(side["results"][m]["adv"], r["adv"])
        assert side["results"][m]["target_adv"] == r["target_adv"]


def test_a_cached_attack_is_not_recomputed_on_threads(svc, monkeypatch):
    _fresh(svc).attack("samples:2", PGD, None)
    took = []
    real = svc.engine.side_by_side
    monkeypatch.setattr(svc.engine, "side_by_side", lambda n: took.append(n) or real(n))
    svc.attack("samples:2", PGD, None)
    assert took == [0]  # nothing pending: no threads started


def test_the_feature_lens_side_by_side_equals_one_after_another(svc, monkeypatch):
    side = _fresh(svc).feature_lens("samples:4", 2, None, None, 8, "l2")
    monkeypatch.setenv("ROBUSTLENS_MODEL_PARALLEL", "0")
    seq = _fresh(svc).feature_lens("samples:4", 2, None, None, 8, "l2")
    assert list(side) == list(seq)
    for m, r in seq.items():
        assert np.array_equal(side[m]["pixels"], r["pixels"]) and np.array_equal(side[m]["path"], r["path"])
        assert side[m]["target_prob"] == r["target_prob"]
