"""Sharing one device (issue 13): the fair priority lock, work scopes, single-flight, dynamic batching.

Threads are ordered with events and the lock's own queue length, never with sleeps that hope the
scheduler went one way; nothing here asserts a wall-clock time."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from backend.core.errors import BusyError, Cancelled, DeadlineExceeded
from backend.service import Service, flight
from backend.service.batching import Batcher
from tests.helpers import tiny_checkpoint_root  # noqa: F401 (fixture)

PGD = {"method": "pgd", "eps": 8 / 255, "steps": 3}


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def queue(lock, order, jobs):
    """Start one thread per (priority, session, name), each queued on lock in this order; returns them."""
    threads = []
    for pr, session, name in jobs:
        def run(pr=pr, session=session, name=name):
            with flight.scope(pr, session):
                with lock:
                    order.append(name)
        n = lock.waiting()
        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda n=n: lock.waiting() == n + 1)  # queued before the next one starts
        threads.append(t)
    return threads


def test_interactive_goes_before_background_and_sessions_take_turns():
    lock, order = flight.FairLock(), []
    lock.acquire()  # the device is busy: everyone below queues
    threads = queue(lock, order, [(flight.BACKGROUND, "teacher", "curve-1"),
                                  (flight.BACKGROUND, "teacher", "curve-2"),
                                  (flight.INTERACTIVE, "a", "a-1"), (flight.INTERACTIVE, "a", "a-2"),
                                  (flight.INTERACTIVE, "a", "a-3"), (flight.INTERACTIVE, "b", "b-1"),
                                  (flight.INTERACTIVE, "c", "c-1")])
    lock.release()
    for t in threads:
        t.join(10)
    # interactive first; among them a's queue does not starve b and c (round robin by session,
    # arrival within a session); the background batches last, in order
    assert order == ["a-1", "b-1", "c-1", "a-2", "a-3", "curve-1", "curve-2"]


def test_background_waiter_is_not_starved_forever():
    lock, order = flight.FairLock(age_s=0.0), []  # every waiter is "old": plain arrival order
    lock.acquire()
    threads = queue(lock, order, [(flight.BACKGROUND, "t", "bg"), (flight.INTERACTIVE, "s", "fg")])
    lock.release()
    for t in threads:
        t.join(10)
    assert order == ["bg", "fg"]


def _background_units(lock, unit_s, session="teacher"):
    """A thread that holds `lock` in units of unit_s seconds at background priority and re-queues at
    once after each (a robustness curve's batches); returns (thread, units done, stop, started)."""
    units, stop, started = [0], threading.Event(), threading.Event()

    def run():
        with flight.scope(flight.BACKGROUND, session):
            while not stop.is_set():
                with lock:
                    started.set()
                    time.sleep(unit_s)
                    units[0] += 1

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert started.wait(10)
    return th, units, stop


@pytest.mark.parametrize("gap_s", [0.0, 0.003])
def test_an_interactive_sequence_waits_for_at_most_one_background_unit(gap_s):
    """Issue 14 (bench/fair_lock_handover.py): a request made of N short sequential acquisitions
    (an attack over five models: a step, a model at a time), with a little work between them outside
    the lock, waits for the background unit in progress and then keeps the device: the lock is not
    handed to the waiting background thread between two of its acquisitions."""
    lock = flight.FairLock()
    th, units, stop = _background_units(lock, 0.03)
    try:
        with flight.scope(flight.INTERACTIVE, "student"):
            before = units[0]
            for i in range(10):
                with lock:
                    time.sleep(0.002)
                    if i == 9:
                        during = units[0] - before
                time.sleep(gap_s)
    finally:
        stop.set()
        th.join(10)
    assert during <= 1, f"{during} background units ran inside one interactive request"


def test_a_held_request_keeps_background_back_between_calls_until_it_ends():
    """An app page run (scope with `hold`) makes calls separated by drawing the page (here 0.3 s,
    longer than the grace window): background batches wait while the run goes on, so the page
    waits for at most the unit in progress; when the run ends the background goes on at once."""
    lock = flight.FairLock()
    th, units, stop = _background_units(lock, 0.03)
    going = threading.Event()
    going.set()
    try:
        with flight.scope(flight.INTERACTIVE, "page", hold=going.is_set):
            before = units[0]
            for i in range(4):
                with lock:
                    if i == 3:
                        during = units[0] - before
                time.sleep(0.3)  # drawing, outside the lock
            ended = units[0]
        assert units[0] - ended == 0  # still held: the run has not ended yet (0.3 s < hold_s)
        going.clear()  # the run ended
        wait_for(lambda: units[0] > ended, timeout=5)
    finally:
        stop.set()
        th.join(10)
    assert during <= 1, f"{during} background units ran inside one page run"


def _background_taker(lock) -> tuple[threading.Event, threading.Thread]:
    """A started thread that takes `lock` once at background priority; the event is set when it has."""
    got = threading.Event()

    def bg():
        with flight.scope(flight.BACKGROUND, "teacher"):
            with lock:
                got.set()

    t = threading.Thread(target=bg)
    t.start()
    return got, t


def test_a_hold_expires_after_hold_s():
    """A request that keeps its hold but makes no more calls holds background back only hold_s."""
    lock = flight.FairLock(hold_s=0.2)
    with flight.scope(flight.INTERACTIVE, "page", hold=lambda: True):
        with lock:
            pass
    got, t = _background_taker(lock)
    assert got.wait(5)
    t.join(5)


def test_background_takes_the_lock_once_interactive_work_stops():
    """The grace window after an interactive release only holds background back while interactive
    work keeps coming: afterwards the waiting background unit runs (within a generous bound)."""
    lock = flight.FairLock()
    lock.acquire()  # interactive (the default scope)
    got, t = _background_taker(lock)
    wait_for(lambda: lock.waiting() == 1)
    lock.release()
    assert got.wait(5)
    t.join(5)


def test_a_steady_interactive_stream_does_not_starve_background():
    """Interactive requests back to back, each within the grace window of the last: a background
    waiter still gets the device once it has waited age_s (here 0.3 s)."""
    lock = flight.FairLock(age_s=0.3)
    got, stop = threading.Event(), threading.Event()

    def bg():
        with flight.scope(flight.BACKGROUND, "teacher"):
            with lock:
                got.set()

    def fg():
        with flight.scope(flight.INTERACTIVE, "student"):
            while not stop.is_set():
                with lock:
                    time.sleep(0.005)

    f = threading.Thread(target=fg)
    f.start()
    t = threading.Thread(target=bg)
    t.start()
    try:
        assert got.wait(10)
    finally:
        stop.set()
        f.join(10)
        t.join(10)


def _stepping_batch(lock, model, max_steps=200_000, priority=flight.BACKGROUND):
    """A thread that holds `lock` once for a long batch of forward passes of `model` (an attack's
    steps) inside lock.yielding_at(model); returns (thread, steps done, inside the batch, stop)."""
    steps, inside, stop = [0], threading.Event(), threading.Event()
    x = torch.zeros(1, 4)

    def run():
        with flight.scope(priority, "teacher"):
            with lock, lock.yielding_at(model):
                inside.set()
                while steps[0] < max_steps and not stop.is_set():
                    model(x)
                    steps[0] += 1
            inside.clear()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    wait_for(inside.is_set)
    return th, steps, inside, stop


def test_a_background_batch_lets_a_waiter_in_at_its_next_step():
    """Issue 14: a request waits for one attack step of another session's background batch, not for
    the batch (without the per-step yield the predict below would wait for all 200,000 steps)."""
    lock, model = flight.FairLock(), torch.nn.Linear(4, 2)
    th, steps, inside, stop = _stepping_batch(lock, model)
    try:
        with flight.scope(flight.INTERACTIVE, "student"):
            with lock:
                still_in_batch, at = inside.is_set(), steps[0]
                model(torch.zeros(1, 4))  # this thread's passes through the hooked model do not yield
                model(torch.zeros(1, 4))
                assert steps[0] == at, "the background batch ran while the interactive request held the lock"
    finally:
        stop.set()
        th.join(10)
    assert still_in_batch and at < 200_000
    assert not model._forward_pre_hooks  # the hook is gone with the batch


def test_interactive_work_does_not_yield_at_its_steps():
    """The same long batch run by an interactive request keeps the device: a background waiter that
    queued during it gets the lock only when it ends."""
    lock, model = flight.FairLock(), torch.nn.Linear(4, 2)
    th, steps, inside, stop = _stepping_batch(lock, model, priority=flight.INTERACTIVE)
    got = []

    def background():
        with flight.scope(flight.BACKGROUND, "other"):
            with lock:
                got.append((inside.is_set(), steps[0]))

    b = threading.Thread(target=background)
    b.start()
    wait_for(lambda: lock.waiting() == 1)
    queued_at = steps[0]
    wait_for(lambda: steps[0] > queued_at + 100)  # many steps with a waiter queued
    stop.set()
    b.join(20)
    th.join(10)
    assert got and got[0][0] is False and got[0][1] == steps[0]


def test_lock_is_reentrant_and_refuses_foreign_release():
    lock = flight.FairLock()
    with lock:
        with lock:
            assert lock._depth == 2
        done = []
        t = threading.Thread(target=lambda: done.append(pytest.raises(RuntimeError, lock.release)))
        t.start()
        t.join(5)
        assert done
    assert lock._owner is None


def test_a_cancelled_waiter_leaves_the_queue_and_the_lock_stays_usable():
    lock = flight.FairLock()
    lock.acquire()
    stop, errors = threading.Event(), []

    def waiter():
        with flight.scope(stop=stop):
            try:
                with lock:
                    errors.append("ran")
            except Cancelled as e:
                errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    wait_for(lambda: lock.waiting() == 1)
    stop.set()
    t.join(10)
    assert isinstance(errors[0], Cancelled) and lock.waiting() == 0
    lock.release()
    with lock:  # nobody left holding it
        pass


def test_deadline_is_its_own_error():
    with flight.scope(timeout_s=0.0):
        time.sleep(0.01)
        with pytest.raises(DeadlineExceeded, match="deadline"):
            flight.check()
    flight.check()  # outside the scope: nothing to stop


def test_a_full_queue_is_busy_not_a_hang():
    lock = flight.FairLock(max_waiting=2)
    lock.acquire()
    stop = threading.Event()
    threads = []
    for _ in range(2):
        def run():
            with flight.scope(stop=stop):
                try:
                    with lock:
                        pass
                except Cancelled:
                    pass
        n = lock.waiting()
        threads.append(threading.Thread(target=run))
        threads[-1].start()
        wait_for(lambda n=n: lock.waiting() == n + 1)
    got = []
    t = threading.Thread(target=lambda: got.append(pytest.raises(BusyError, lock.acquire).value))
    t.start()
    t.join(10)
    assert got and got[0].retry_after > 0
    stop.set()
    for t in threads:
        t.join(10)
    lock.release()


def test_single_flight_computes_once_and_a_cancelled_leader_hands_over():
    sf, calls, gate = flight.SingleFlight(), [], threading.Event()

    def compute():
        calls.append(1)
        gate.wait(10)
        return {"value": 42}

    out = []
    threads = [threading.Thread(target=lambda: out.append(sf.do("k", compute))) for _ in range(6)]
    threads[0].start()
    wait_for(lambda: len(calls) == 1)
    for t in threads[1:]:
        t.start()
    wait_for(lambda: sf.shared == 0 and sf.in_flight() == 1)
    time.sleep(0.1)  # let the followers reach their wait (if one were late it would simply find the call)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and out == [{"value": 42}] * 6 and sf.shared == 5

    # the leader's client leaves: a follower whose client is still there computes it itself
    started, release = threading.Event(), threading.Event()

    def leader_work():
        started.set()
        release.wait(10)
        raise Cancelled("leader's client left")

    lead_err, follow = [], []
    t1 = threading.Thread(target=lambda: lead_err.append(pytest.raises(Cancelled, sf.do, "j", leader_work)))
    t1.start()
    started.wait(10)
    t2 = threading.Thread(target=lambda: follow.append(sf.do("j", lambda: "mine")))
    t2.start()
    time.sleep(0.05)
    release.set()
    t1.join(10)
    t2.join(10)
    assert lead_err and follow == ["mine"]


def test_single_flight_off_computes_every_call():
    sf, calls = flight.SingleFlight(enabled=False), []
    for _ in range(3):
        sf.do("k", lambda: calls.append(1))
    assert len(calls) == 3


def test_batcher_joins_items_within_the_window_and_keeps_their_order():
    calls = []

    def double(group, items):
        calls.append((group, list(items)))
        return [group * 100 + v * 2 for v in items]

    b = Batcher(double, window_s=0.5, max_batch=4)
    out = {}
    threads = [threading.Thread(target=lambda v=v: out.__setitem__(v, b.submit(1, v))) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # max_batch=4 closes the batch as soon as the 4th item joins: one call, whatever the timing
    assert out == {v: 100 + 2 * v for v in range(4)} and len(calls) == 1
    assert b.submit(2, 5) == 210 and calls[-1] == (2, [5])  # another group: its own batch


def test_batcher_gives_every_item_the_error():
    def fail(group, items):
        raise ValueError("bad batch")

    b = Batcher(fail, window_s=0.2, max_batch=2)
    errs = []
    threads = [threading.Thread(target=lambda: errs.append(pytest.raises(ValueError, b.submit, "g", 1)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errs) == 2


# ---- the service ---------------------------------------------------------------------------------
@pytest.fixture
def svc(tiny_checkpoint_root, tmp_path):  # noqa: F811
    s = Service(tiny_checkpoint_root, jobs_root=tmp_path / "jobs")
    yield s
    s.close()


def _count_attacks(monkeypatch):
    import backend.service.facade as service_mod

    calls, real = [], service_mod.attacks.run_attack

    def counting(*a, **k):
        calls.append(a[1].shape[0])
        return real(*a, **k)

    monkeypatch.setattr(service_mod.attacks, "run_attack", counting)
    return calls


@pytest.mark.parametrize("coalesce", [True, False])
def test_a_class_following_its_teacher_costs_one_attack(svc, monkeypatch, coalesce):
    calls = _count_attacks(monkeypatch)
    svc.engine.flight.enabled = coalesce
    results = []
    with svc.lock:  # the device is busy while the class asks: every request is in flight at once
        threads = [threading.Thread(target=lambda: results.append(svc.attack("samples:3", PGD, ["tiny-ce"])))
                   for _ in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: svc.lock.waiting() == (1 if coalesce else 6))
        if coalesce:
            wait_for(lambda: svc.engine.flight.in_flight() >= 1)
            time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert len(results) == 6
    first = results[0]["results"]["tiny-ce"]["adv_pixels"]
    assert all(np.array_equal(r["results"]["tiny-ce"]["adv_pixels"], first) for r in results)
    if coalesce:
        assert calls == [1]
    else:  # computed by each: the first result is cached only after the others were already waiting
        assert len(calls) == 6


def test_batched_attacks_equal_one_image_attacks(svc, monkeypatch, tiny_checkpoint_root):  # noqa: F811
    alone = {i: svc.attack(f"samples:{i}", PGD, ["tiny-pgd"])["results"]["tiny-pgd"] for i in range(4)}
    monkeypatch.setenv("ROBUSTLENS_BATCH_WINDOW_MS", "300")
    batched_svc = Service(tiny_checkpoint_root, jobs_root=svc._jobs_root)
    try:
        assert batched_svc.engine.attack_batcher.enabled
        calls = _count_attacks(monkeypatch)
        out = {}
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(
            i, batched_svc.attack(f"samples:{i}", PGD, ["tiny-pgd"])["results"]["tiny-pgd"])) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(calls) == 4 and len(calls) < 4  # four images, fewer attack calls
        for i in range(4):
            a, b = alone[i], out[i]
            assert b["linf"] <= 8 / 255 + 1e-6
            # per-image seeds: the same attack, up to float summation order in a batched conv
            assert np.mean(np.isclose(a["adv_pixels"], b["adv_pixels"], atol=1e-4)) > 0.98
            assert a["adv"]["pred"] == b["adv"]["pred"]
    finally:
        batched_svc.close()


def test_background_task_yields_to_interactive_predicts(svc):
    """While a long class visualisation task runs, predicts still answer (the task gives the device
    up every 10 steps, and interactive requests go first)."""
    task = svc.start_task("class_visualisation", {"target_class": 3, "steps": 500})
    wait_for(lambda: svc.lock._owner is not None)  # the task is on the device
    for i in range(3):
        out = svc.predict(f"samples:{i}", ["tiny-ce"])
        assert out["results"]["tiny-ce"]["probs"].shape == (10,)
    assert svc.cancel_task(task)["state"] in ("cancelled", "done")


def test_work_stops_when_its_scope_is_cancelled(svc):
    stop = threading.Event()
    stop.set()
    with flight.scope(stop=stop):
        with pytest.raises(Cancelled):
            svc.robustness_curve(["tiny-ce"], eps_list=[0, 8 / 255], n=4, steps=2, source="samples")
        with pytest.raises(Cancelled):
            svc.attack("samples:0", PGD, ["tiny-ce", "tiny-pgd"])
    # nothing half-done was cached: the same call outside the scope computes a full answer
    out = svc.robustness_curve(["tiny-ce"], eps_list=[0, 8 / 255], n=4, steps=2, source="samples")
    assert out["tiny-ce"]["n"] == 4
